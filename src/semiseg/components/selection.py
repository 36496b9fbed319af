"""Pseudo-labels and their selection from teacher/weak-view predictions.

A selection turns the weak-view (or teacher) logits into pseudo-labels ŷ and a per-pixel weight w ∈ [0, 1]
that the unsupervised losses multiply the CE with (docs/methods/csl.md: the selector of every method):

- `threshold`: w = 1[q ≥ τ], q the top softmax probability (FixMatch, UniMatch, UniMatch V2);
- `csl`: CSL's per-image confidence-separable weights (`components/csl_selection.py`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .csl_selection import csl_weights

SELECTIONS = ("threshold", "csl")


@torch.no_grad()
def pseudo_labels(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ŷ, q) = (argmax, max) of softmax(sg(z)), in fp32 (docs/distributed.md: mixed precision)."""
    probs = logits.detach().float().softmax(dim=1)
    confidence, label = probs.max(dim=1)
    return label, confidence


def select_by_threshold(confidence: torch.Tensor, threshold: float) -> torch.Tensor:
    """m = 1[q ≥ τ] (FixMatch / UniMatch), as a float mask."""
    return (confidence >= threshold).float()


class Selected(NamedTuple):
    """ŷ (B, H, W) int64, w (B, H, W) fp32 in [0, 1] (0 on invalid pixels for `csl`), both without gradient."""

    pseudo: torch.Tensor
    weight: torch.Tensor


@torch.no_grad()
def select_pseudo_labels(logits: torch.Tensor, valid: torch.Tensor, params) -> Selected:
    """ŷ and w by `params.selection` (`threshold` with `params.threshold`, or `csl` with `params.csl_*`)."""
    if params.selection == "csl":
        probs = logits.detach().float().softmax(dim=1)
        chosen = csl_weights(probs, valid, alpha=params.csl_alpha, g_alpha=params.csl_g_alpha,
                             select=params.csl_select, select_lambda=params.csl_select_lambda,
                             compiled=params.csl_compile)
        return Selected(probs.argmax(dim=1), chosen.weights)
    label, confidence = pseudo_labels(logits)
    return Selected(label, select_by_threshold(confidence, params.threshold))


def reliable_ratio(weight: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The share of valid pixels with full weight w = 1 (logged as `mask_ratio`)."""
    valid = valid.float()
    return (((weight >= 1).float() * valid).sum() / valid.sum().clamp_min(1)).detach()
