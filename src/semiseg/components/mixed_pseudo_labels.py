"""Pseudo-label supervision of CutMixed strong views, shared by FixMatch, UniMatch and UniMatch V2.

A strong view k of unlabeled image i carries its own box; inside the box the image comes from the
partner (docs/method_interface.md, partner rules), so the targets there must too:

    L_s^k = masked CE( f(x_s^k), ŷ^k, w^k, v^k ),   ŷ^k, w^k, v^k = ŷ, w, v mixed by box k

with w the selection's per-pixel weight (1[q ≥ τ], or CSL's soft weights: components/selection.py;
masked CE: components/losses.py, normalised by all valid pixels). The partner's pseudo-labels are the
rolled (or flipped) maps of the same weak forward.
"""

from __future__ import annotations

import torch

from .cutmix import mix
from .losses import masked_ce


def mix_strong_views(images: torch.Tensor, boxes: torch.Tensor, rule: str = "roll") -> torch.Tensor:
    """(B, K, 3, S, S) strong views with (B, K, S, S) boxes -> the K mixed batches concatenated, (K·B, 3, S, S)."""
    return torch.cat([mix(images[:, k], boxes[:, k], rule=rule) for k in range(images.shape[1])])


def mixed_pseudo_label_loss(logits: torch.Tensor, pseudo: torch.Tensor, weight: torch.Tensor,
                            valid: torch.Tensor, box: torch.Tensor, rule: str = "roll") -> torch.Tensor:
    """L_s of one strong view: masked CE against ŷ, w and v, each mixed by `box` like the image."""
    return masked_ce(logits, mix(pseudo, box, rule=rule), mix(weight, box, rule=rule), mix(valid, box, rule=rule))


def mixed_pseudo_label_losses(logits_per_view, pseudo: torch.Tensor, weight: torch.Tensor, valid: torch.Tensor,
                              boxes: torch.Tensor, rule: str = "roll") -> list[torch.Tensor]:
    """[L_s^k for each strong view k]: `logits_per_view[k]` against the targets mixed by `boxes[:, k]`."""
    return [mixed_pseudo_label_loss(logits, pseudo, weight, valid, boxes[:, k], rule)
            for k, logits in enumerate(logits_per_view)]
