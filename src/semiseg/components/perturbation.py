"""Feature perturbations applied between an encoder and its decoder.

Models take `perturb`: a function from the list of encoder features to a new list that the
decoder then sees (`DeepLabV3Plus.forward(x, perturb=...)`, `DPTSegmenter.forward(x, perturb=...)`).

- UniMatch V1's FP stream (docs/methods/unimatch.md): every feature map f becomes cat(f, Dropout2d(0.5)(f)),
  so the decoder runs on a doubled batch whose second half is the perturbed copy.
- UniMatch V2's complementary channel dropout (docs/methods/unimatch_v2.md): for the doubled strong
  batch [x_s1; x_s2] of n pairs, view s1 of pair i keeps the channels that view s2 of pair i drops
  (both scaled by 2), and ⌊n·0.5⌋ randomly chosen pairs are left unperturbed.

All randomness comes from torch's global RNG.
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

FP_DROPOUT = 0.5  # UniMatch V1: nn.Dropout2d(0.5) on the layer1 and layer4 features
UNPERTURBED_PAIR_FRACTION = 0.5  # UniMatch V2: half of the strong pairs get no channel dropout


def append_dropped_copy(features: List[torch.Tensor], p: float = FP_DROPOUT) -> List[torch.Tensor]:
    """[cat(f, Dropout2d(p)(f)) for f in features]: whole channels zeroed per sample, kept ones scaled 1/(1−p)."""
    return [torch.cat([f, F.dropout2d(f, p, training=True)]) for f in features]


def unperturbed_pairs(num_pairs: int, fraction: float = UNPERTURBED_PAIR_FRACTION, device=None) -> torch.Tensor:
    """Bool (num_pairs,): exactly ⌊num_pairs·fraction⌋ pairs, chosen by a random permutation, are True."""
    chosen = torch.zeros(num_pairs, dtype=torch.bool, device=device)
    chosen[torch.randperm(num_pairs, device=device)[: int(num_pairs * fraction)]] = True
    return chosen


def complementary_channel_masks(unperturbed: torch.Tensor, channels: int, dtype=torch.float32) -> torch.Tensor:
    """[m1; m2] (2n, channels): m1 ∈ {0, 2} i.i.d. with P(2) = 0.5 and m2 = 2 − m1; rows of the
    `unperturbed` pairs are 1 in both."""
    n = unperturbed.shape[0]
    m1 = torch.randint(0, 2, (n, channels), device=unperturbed.device).to(dtype) * 2.0
    m2 = 2.0 - m1
    m1[unperturbed] = 1.0
    m2[unperturbed] = 1.0
    return torch.cat([m1, m2])


def complementary_channel_dropout(features: List[torch.Tensor],
                                  unperturbed_fraction: float = UNPERTURBED_PAIR_FRACTION) -> List[torch.Tensor]:
    """Features of the doubled batch [x_s1; x_s2] (2n, D, h, w) times [m1; m2] broadcast over positions.

    One mask pair per distinct channel count: for ViT features (all of width D) the same mask
    multiplies every level, as in V2; CNN levels of different widths each get their own masks,
    with the same unperturbed pairs.
    """
    n2 = features[0].shape[0]
    if n2 % 2:
        raise ValueError(f"complementary dropout needs the doubled batch [x_s1; x_s2], got batch {n2}")
    unperturbed = unperturbed_pairs(n2 // 2, unperturbed_fraction, features[0].device)
    masks: Dict[int, torch.Tensor] = {}
    out = []
    for f in features:
        d = f.shape[1]
        if d not in masks:
            masks[d] = complementary_channel_masks(unperturbed, d, f.dtype)
        out.append(f * masks[d].view(n2, d, *([1] * (f.dim() - 2))))
    return out
