"""DUEB's energy term E(z, y) (docs/methods/dueb.md).

- `released_energy` (default): E = log Σ_{i∈Ω} exp(p_i[y_i]) with p = softmax(z), one scalar per call
  over the batch given. E ∈ [log|Ω|, log|Ω| + 1] and ∂E/∂p_i[y_i] = exp(p_i[y_i]) / Σ_j exp(p_j[y_j]) > 0,
  so minimising E lowers the true-class probability (a confidence penalty).
- `free_energy_margin` (`dueb.energy: margin`): the in-distribution free-energy margin
  scale·mean_Ω max(0, F_i − m_in)² with F_i = −logsumexp_c z_i,c.

Ω = {i : y_i ≠ 255 and v_i = 1}. Both are computed in fp32 with autocast off, return a 0-d fp32 tensor,
and give 0 with a graph when Ω is empty.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..labels import target_region


def _check(logits: torch.Tensor, target: torch.Tensor, valid: Optional[torch.Tensor]) -> None:
    if logits.dim() != 4:
        raise ValueError(f"energy: logits must be (B, C, H, W), got {tuple(logits.shape)}")
    b, _, h, w = logits.shape
    if tuple(target.shape) != (b, h, w):
        raise ValueError(f"energy: target must be (B, H, W) = {(b, h, w)}, got {tuple(target.shape)}")
    if valid is not None and tuple(valid.shape) != (b, h, w):
        raise ValueError(f"energy: valid must be (B, H, W) = {(b, h, w)}, got {tuple(valid.shape)}")




def released_energy(logits: torch.Tensor, target: torch.Tensor, valid: Optional[torch.Tensor] = None,
                    drop_exact_zero: bool = False) -> torch.Tensor:
    """E = log Σ_{i∈Ω} exp(softmax(z_i)[y_i]) over all pixels of the batch given (docs/methods/dueb.md).

    `drop_exact_zero=True` (only under `dueb.energy/aleatoric: released` compat) also drops the pixels
    whose p_i[y_i] is exactly 0.0, as the release's masking does. Each term exp(p) lies in [1, e], so
    the sum is ≥ 1 whenever Ω is not empty and needs no max-shift; an empty Ω gives 0 with a graph.
    """
    _check(logits, target, valid)
    mask = target_region(target, valid)
    y = torch.where(mask, target, torch.zeros_like(target)).long().unsqueeze(1)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        p_true = logits.float().softmax(dim=1).gather(1, y).squeeze(1)
        if drop_exact_zero:
            mask = mask & (p_true != 0.0)
        total = (p_true.exp() * mask.float()).sum()
        # Ω ≠ ∅ ⇒ total ≥ 1 and the clamp is the identity; Ω = ∅ ⇒ log 1 = 0, still attached to the graph
        return total.clamp_min(1.0).log()


def free_energy_margin(logits: torch.Tensor, target: torch.Tensor, valid: Optional[torch.Tensor] = None,
                       margin_in: float = -25.0, scale: float = 0.1) -> torch.Tensor:
    """L = scale·(1/|Ω|)·Σ_{i∈Ω} max(0, F_i − m_in)², F_i = −logsumexp_c z_i,c (docs/methods/dueb.md).

    m_in = `margin_in` (−25), scale = `energy_margin_scale` (0.1). The target only defines Ω.
    """
    _check(logits, target, valid)
    weight = target_region(target, valid).float()
    with torch.autocast(device_type=logits.device.type, enabled=False):
        free_energy = -torch.logsumexp(logits.float(), dim=1)
        hinge = (free_energy - margin_in).clamp_min(0.0).square()
        return scale * (hinge * weight).sum() / weight.sum().clamp_min(1.0)
