"""Losses shared by the methods (methods.md §0.7). All computed in fp32."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.sample import IGNORE_INDEX


def supervised_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean CE over the labeled pixels whose label is not 255 (0 if there are none)."""
    return F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)


def masked_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L_u = Σ m_i·v_i·CE_i / max(1, Σ v_i)  (§0.7).

    The denominator counts all valid pixels, selected or not, so the loss
    shrinks when few pixels pass the selection (as UniMatch does).
    `weight` is a 0/1 mask or a soft weight in [0, 1]; `valid` marks real
    (non-padding) pixels of the crop.
    """
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    valid = valid.float()
    return (ce * weight.float() * valid).sum() / valid.sum().clamp_min(1.0)
