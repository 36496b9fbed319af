"""CPCL's collaborative pseudo-labels: intersection and union labels of two branches (docs/methods/cpcl.md).

From the mixed, gradient-free teacher logits z̃_1 (branch 1, conservative) and z̃_2 (branch 2,
progressive), with ŷ_k = argmax softmax(z̃_k) and c_k = max softmax(z̃_k):

- `disagreement_matrix`: K[a, b] = #{valid pixels with ŷ_1 = a and ŷ_2 = b}, summed over ranks, + I
  (rows: branch 1, columns: branch 2);
- `disagreement_weights`: the class-wise disagreement indicator ω from K;
- `collaborative_labels`: ŷ∩ (agreement only), ŷ∪ (disagreements resolved by ω, a tie goes to ŷ_2),
  the confidence weights β∩ and β∪, ω and the logged `overlap`;

No host synchronisation: the counts are scattered into a fixed number of bins on the logits'
device (invalid pixels go to a spare bin that is dropped), every choice is a `torch.where`.
Counts are int64; ω and `overlap` are float64 (fp32 on MPS, which lacks float64); the per-pixel
weights are fp32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..collectives import all_reduce_sum
from ..labels import IGNORE_INDEX

_OMEGA_EPS = 1e-6  # ω_c = I_c / (Σ_c' I_c' + 1e-6)              (docs/methods/cpcl.md, step 2)


def _reduction_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


@torch.no_grad()
def disagreement_matrix(pred1: torch.Tensor, pred2: torch.Tensor, valid: torch.Tensor,
                        num_classes: int) -> torch.Tensor:
    """K (C, C) int64: K[a, b] = #{valid pixels with ŷ_1 = a, ŷ_2 = b} over all ranks, + 1[a = b].

    `pred1`, `pred2` (B, H, W) int64 in 0 … C−1; `valid` (B, H, W) bool (or 0/1). Only valid pixels
    count (docs/methods/cpcl.md, step 2, DECISION). The counts are summed over ranks with
    `all_reduce_sum` before the identity is added, once (DECISION: ω over the global batch).
    """
    c = int(num_classes)
    spare = c * c  # the bin of invalid pixels
    index = pred1.reshape(-1).long() * c + pred2.reshape(-1).long()
    index = torch.where(valid.reshape(-1).bool(), index, torch.full_like(index, spare))
    # A bincount with a fixed number of bins. torch.bincount on CUDA reads min and max back to the host
    # to size its output; scatter_add_ into a preallocated tensor does not.
    counts = torch.zeros(spare + 1, dtype=torch.long, device=index.device)
    counts.scatter_add_(0, index, torch.ones_like(index))
    matrix = counts[:spare].reshape(c, c).contiguous()
    all_reduce_sum(matrix)
    return matrix + torch.eye(c, dtype=matrix.dtype, device=matrix.device)


@torch.no_grad()
def disagreement_weights(matrix: torch.Tensor) -> torch.Tensor:
    """ω (C,): I_c = (col_c − K[c,c])/col_c + (row_c − K[c,c])/row_c, ω_c = I_c / (Σ I + 1e-6).

    Rows are branch 1, columns branch 2 (docs/methods/cpcl.md, step 2). With K from
    `disagreement_matrix` every row and column sum is ≥ 1. float64 (fp32 on MPS).
    """
    k = matrix.to(_reduction_dtype(matrix.device))
    diagonal = k.diagonal()
    rows, cols = k.sum(dim=1), k.sum(dim=0)
    indicator = (cols - diagonal) / cols + (rows - diagonal) / rows
    return indicator / (indicator.sum() + _OMEGA_EPS)


class CollaborativeLabels(NamedTuple):
    """The outputs of `collaborative_labels` for B images of H×W pixels, all without gradient.

    - intersection (B, H, W) int64: ŷ_1 where the branches agree, 255 where they disagree or on invalid pixels.
    - union (B, H, W) int64: ŷ_1 where they agree; else ŷ_1 if ω[ŷ_1] > ω[ŷ_2], otherwise ŷ_2 (a tie too);
      255 on invalid pixels.
    - beta_inter (B, H, W) fp32: (c1 + c2)/2 (on every pixel; the loss drops the 255 ones).
    - beta_union (B, H, W) fp32: (c1 + c2)/2 where they agree, else the confidence of the branch chosen for ŷ∪.
    - omega (C,) float64 (fp32 on MPS): the class-wise disagreement indicator ω.
    - overlap 0-d float64 (fp32 on MPS): Σ_c K[c,c] / Σ K, K with its identity (the logged agreement).
    - matrix (C, C) int64: K over the global batch, identity included.
    """

    intersection: torch.Tensor
    union: torch.Tensor
    beta_inter: torch.Tensor
    beta_union: torch.Tensor
    omega: torch.Tensor
    overlap: torch.Tensor
    matrix: torch.Tensor


@torch.no_grad()
def collaborative_labels(logits1: torch.Tensor, logits2: torch.Tensor, valid: torch.Tensor,
                         num_classes: int) -> CollaborativeLabels:
    """CPCL's pseudo-intersection and pseudo-union labels with their weights (docs/methods/cpcl.md, steps 1-5, 8).

    `logits1`, `logits2` (B, C, H, W): the mixed teacher logits of branch 1 and branch 2 (any float
    dtype; softmax in fp32); `valid` (B, H, W) bool marks real pixels. Nothing is differentiated.
    """
    if logits1.shape != logits2.shape or logits1.shape[1] != num_classes:
        raise ValueError(f"collaborative_labels: logits {tuple(logits1.shape)} and {tuple(logits2.shape)} "
                         f"must match and have {num_classes} channels")
    conf1, pred1 = logits1.detach().float().softmax(dim=1).max(dim=1)
    conf2, pred2 = logits2.detach().float().softmax(dim=1).max(dim=1)
    valid = valid.bool()
    matrix = disagreement_matrix(pred1, pred2, valid, num_classes)
    omega = disagreement_weights(matrix)
    ignore = torch.full_like(pred1, IGNORE_INDEX)

    agree = pred1 == pred2
    take_first = agree | (omega[pred1] > omega[pred2])  # a tie goes to ŷ_2 (step 4)
    intersection = torch.where(agree & valid, pred1, ignore)
    union = torch.where(valid, torch.where(take_first, pred1, pred2), ignore)

    mean = (conf1 + conf2) / 2
    beta_union = torch.where(agree, mean, torch.where(take_first, conf1, conf2))
    overlap = matrix.diagonal().sum().to(omega.dtype) / matrix.sum().to(omega.dtype)
    return CollaborativeLabels(intersection, union, mean, beta_union, omega, overlap, matrix)

