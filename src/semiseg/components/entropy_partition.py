"""U2PL's entropy-based split of unlabeled pixels into reliable and unreliable ones (docs/methods/u2pl.md).

- `drop_percent`: the schedule α_t = α0·(1 − t/T).
- `pixel_entropy`: H_i = −Σ_c p_ic·log p_ic.
- `percentile`: P_q of a 1-D tensor, as `numpy.percentile` (method 'linear') computes it.
- `reliable_partition`: from one sort of the valid entropies, the two thresholds
  P_α(H) and γ = P_{100−α}(H) and the three masks built from them:
  - `keep`, for the unsupervised loss: 1[H < γ] (α > 0), every valid pixel (α = 0);
  - `reliable`, the low-entropy contrastive candidates: 1[H ≤ P_α(H)];
  - `unreliable`, the high-entropy contrastive negatives: 1[H ≥ P_{100−α}(H)].
- `loss_keep_mask` and `contrastive_partition` return only the masks that one use needs.

Percentiles run on the tensor's device with a sort (`torch.quantile` has an input-size limit) and
read the number of valid pixels as a tensor, so nothing here waits on the device.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


def drop_percent(step: int, total: int, alpha0: float = 20.0) -> float:
    """α_t = α0·(1 − t/T): the percentage of valid unlabeled pixels dropped at step t of T (docs/methods/u2pl.md).

    Evaluated from the training progress at every step. Steps past T give α = 0.
    """
    if total <= 0:
        raise ValueError(f"drop_percent: total steps must be positive, got {total}")
    if step < 0:
        raise ValueError(f"drop_percent: step must be non-negative, got {step}")
    progress = min(step / total, 1.0)
    return alpha0 * (1.0 - progress)


def pixel_entropy(probs: torch.Tensor) -> torch.Tensor:
    """H_i = −Σ_c p_ic·log p_ic over dim 1 of (B, C, H, W) probabilities, in fp32 (docs/methods/u2pl.md).

    Uses 0·log 0 = 0, so one-hot rows give exactly 0 and no NaN. Returns (B, H, W).
    """
    probs = probs.float()
    return -torch.special.xlogy(probs, probs).sum(dim=1)


def _check_q(q: float) -> None:
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile: q must lie in [0, 100], got {q}")


def _interpolate_sorted(sorted_values: torch.Tensor, count: torch.Tensor, q: float) -> torch.Tensor:
    """numpy.percentile's 'linear' rule on the first `count` entries of an ascending 1-D tensor.

    With the virtual index v = (n − 1)·q/100 (in float64), i = ⌊v⌋ and g = v − i:
        P_q = x_i + (x_{i+1} − x_i)·g          if g < 0.5
        P_q = x_{i+1} − (x_{i+1} − x_i)·(1 − g) if g ≥ 0.5
    and P_q = x_{n−1} when v ≥ n − 1. The two-sided form is numpy's `_lerp`; it makes the
    result bit-identical to numpy for the same dtype. `count` is a 0-d integer tensor (no host sync).
    """
    last = (count - 1).clamp_min(0)
    virtual = (count - 1).double() * (q / 100.0)
    lower = virtual.floor().clamp_min(0.0).long().clamp_max(last)
    upper = (lower + 1).clamp_max(last)
    gamma = virtual - lower.double()
    below = sorted_values.index_select(0, lower.reshape(1)).squeeze(0)
    above = sorted_values.index_select(0, upper.reshape(1)).squeeze(0)
    step = above - below
    from_below = below + step * gamma.to(sorted_values.dtype)
    from_above = above - step * (1.0 - gamma).to(sorted_values.dtype)
    return torch.where(gamma >= 0.5, from_above, from_below)


def percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """P_q(values): the q-th percentile (q in [0, 100]) of a 1-D tensor, as `numpy.percentile` (default 'linear').

    Computed on the tensor's device with a sort; returns a 0-d tensor of the input's dtype.
    Raises ValueError on an empty tensor (callers guard it).
    """
    _check_q(q)
    if values.dim() != 1:
        raise ValueError(f"percentile: expected a 1-D tensor, got shape {tuple(values.shape)}")
    if values.numel() == 0:
        raise ValueError("percentile: the tensor is empty, so it has no percentile")
    sorted_values = torch.sort(values).values
    count = torch.tensor(values.numel(), device=values.device)
    return _interpolate_sorted(sorted_values, count, q)


class EntropyPartition(NamedTuple):
    """The masks and thresholds of `reliable_partition` (masks: bool, shaped like the entropy map)."""

    keep: torch.Tensor  # unsupervised-loss mask: valid ∧ H < γ (α > 0); valid (α = 0)
    reliable: torch.Tensor  # valid ∧ H ≤ P_α(H)
    unreliable: torch.Tensor  # valid ∧ H ≥ P_{100−α}(H)
    low_threshold: torch.Tensor  # P_α(H) over the valid pixels, 0-d fp32; NaN if none is valid
    high_threshold: torch.Tensor  # γ = P_{100−α}(H) over the valid pixels, 0-d fp32; NaN if none is valid


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 100.0:
        raise ValueError(f"entropy partition: alpha must lie in [0, 100] (a percentage), got {alpha}")


def _empty_partition(entropy: torch.Tensor) -> EntropyPartition:
    none = torch.zeros(entropy.shape, dtype=torch.bool, device=entropy.device)
    nan = torch.full((), math.nan, dtype=torch.float32, device=entropy.device)
    return EntropyPartition(none, none.clone(), none.clone(), nan, nan.clone())


def reliable_partition(entropy: torch.Tensor, valid: torch.Tensor, alpha: float,
                       population: torch.Tensor | None = None) -> EntropyPartition:
    """Split the valid pixels of the local batch by entropy percentiles (docs/methods/u2pl.md).

    `population`: the 1-D entropies the percentiles are taken over, when not the valid pixels of
    `entropy` (U2PL passes the valid entropies of the whole global batch, gathered from every rank).

    Over the valid pixels only (`valid`: bool or 0/1, same shape as `entropy`):
        P_low  = P_α(H),  γ = P_high = P_{100−α}(H)   (numpy 'linear' percentiles)
        keep       = valid ∧ H < γ    for α > 0;  keep = valid for α = 0 (nothing dropped)
        reliable   = valid ∧ H ≤ P_α(H)
        unreliable = valid ∧ H ≥ P_{100−α}(H)

    α = 0: the literal 1[H < P_100(H)] = 1[H < max H] would still drop the maximum-entropy
    pixel(s), and every valid pixel when all entropies tie, so `keep` is all valid pixels instead.
    The contrastive sets keep their inclusive inequalities at α = 0: `reliable` is then the
    minimum-entropy pixel(s) and `unreliable` the maximum-entropy pixel(s).
    For α > 0, pixels tied at γ are all dropped from `keep` (strict inequality), as the spec states.

    No valid pixel: all masks False and both thresholds NaN.
    """
    _check_alpha(alpha)
    valid = valid.bool()
    if valid.shape != entropy.shape:
        raise ValueError(f"entropy partition: valid {tuple(valid.shape)} must match entropy {tuple(entropy.shape)}")
    if entropy.numel() == 0:
        return _empty_partition(entropy)
    with torch.no_grad():
        entropy = entropy.detach().float()
        if population is None:
            flat_valid = valid.reshape(-1)
            population = torch.where(flat_valid, entropy.reshape(-1), torch.full_like(entropy.reshape(-1), math.inf))
            count = flat_valid.sum()
        else:
            population = population.detach().float().reshape(-1)
            count = torch.tensor(population.numel(), device=population.device)
            if population.numel() == 0:
                return _empty_partition(entropy)
        sorted_values = torch.sort(population).values
        has_valid = count > 0
        nan = torch.full_like(sorted_values[0], math.nan)
        low = torch.where(has_valid, _interpolate_sorted(sorted_values, count, alpha), nan)
        high = torch.where(has_valid, _interpolate_sorted(sorted_values, count, 100.0 - alpha), nan)
        keep = valid.clone() if alpha == 0 else valid & (entropy < high)
        reliable = valid & (entropy <= low)
        unreliable = valid & (entropy >= high)
    return EntropyPartition(keep, reliable, unreliable, low, high)


def loss_keep_mask(entropy: torch.Tensor, valid: torch.Tensor, alpha: float) -> torch.Tensor:
    """m_i = v_i·1[H_i < γ], γ = P_{100−α}(H) over the valid pixels: the α % highest-entropy pixels dropped.

    The unsupervised-loss mask of docs/methods/u2pl.md. α = 0 keeps every valid pixel (see
    `reliable_partition`). Bool, shaped like `entropy`.
    """
    return reliable_partition(entropy, valid, alpha).keep


def contrastive_partition(entropy: torch.Tensor, valid: torch.Tensor,
                          alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(reliable, unreliable) = (v ∧ H ≤ P_α(H), v ∧ H ≥ P_{100−α}(H)), percentiles over the valid pixels.

    The unlabeled candidate and negative sets of U2PL's contrastive loss (docs/methods/u2pl.md).
    Bool masks shaped like `entropy`; both inequalities are inclusive, also at α = 0.
    """
    partition = reliable_partition(entropy, valid, alpha)
    return partition.reliable, partition.unreliable
