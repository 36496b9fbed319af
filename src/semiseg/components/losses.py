"""Losses shared by the methods (each method page in docs/methods/ states its loss). All computed in fp32."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..labels import IGNORE_INDEX


def supervised_ce(logits: torch.Tensor, target: torch.Tensor,
                  class_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean CE over the labeled pixels whose label is not 255 (0 if there are none); with `class_weight` w,
    the weighted mean Σ w_{y_i}·CE_i / Σ w_{y_i} (PyTorch's)."""
    return F.cross_entropy(logits.float(), target, weight=class_weight, ignore_index=IGNORE_INDEX)


def masked_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L_u = Σ m_i·v_i·CE_i / max(1, Σ v_i)  (docs/methods/fixmatch.md).

    The denominator counts all valid pixels, selected or not, so the loss
    shrinks when few pixels pass the selection (as UniMatch does).
    `weight` is a 0/1 mask or a soft weight in [0, 1]; `valid` marks real
    (non-padding) pixels of the crop. A target of 255 (e.g. CPCL's pseudo-intersection
    where the branches disagree) adds 0 but counts in the denominator when valid.
    """
    ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none")
    valid = valid.float()
    return (ce * weight.float() * valid).sum() / valid.sum().clamp_min(1.0)


def ohem_ce(logits: torch.Tensor, target: torch.Tensor, threshold: float, min_kept: int,
            class_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Online hard example mining CE (docs/methods/supervised.md; `ProbOhemCrossEntropy2d` of CPS / UniMatch).

    P_i = softmax(z_i)[y_i] over the N valid pixels (y ≠ 255). If N < K = `min_kept`, plain CE
    over them; otherwise keep the pixels with P_i ≤ max(threshold, P_(K)) (P_(K): the K-th
    smallest; K = 0: the threshold alone) and take the (class-weighted) mean CE over the kept
    pixels. The selection carries no gradient. K is per call: callers pass min_kept_per_image · B,
    so the selection does not change with the per-GPU batch (docs/methods/supervised.md).
    """
    logits = logits.float()
    valid = target != IGNORE_INDEX
    num_valid = int(valid.sum())
    if num_valid > 0 and num_valid >= min_kept:
        with torch.no_grad():
            safe_target = torch.where(valid, target, torch.zeros_like(target))
            prob = logits.softmax(dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
            cut = torch.tensor(threshold, device=prob.device)
            if min_kept > 0:
                cut = torch.clamp(prob[valid].kthvalue(min_kept).values, min=threshold)
            keep = valid & (prob <= cut)
        target = torch.where(keep, target, torch.full_like(target, IGNORE_INDEX))
    return F.cross_entropy(logits, target, weight=class_weight, ignore_index=IGNORE_INDEX)


def masked_softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean Teacher's consistency (docs/methods/mean_teacher.md):
    Σ_i v_i·Σ_c (softmax(z_s) − sg(softmax(z_t)))² / (C·max(1, Σ v)),
    i.e. the mean over the B·C·H·W elements of the valid pixels."""
    p_s = student_logits.float().softmax(dim=1)
    p_t = teacher_logits.detach().float().softmax(dim=1)
    valid = valid.float()
    squared = ((p_s - p_t) ** 2).sum(dim=1)
    return (squared * valid).sum() / (valid.sum().clamp_min(1.0) * student_logits.shape[1])
