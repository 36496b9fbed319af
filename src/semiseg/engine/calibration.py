"""Expected calibration error over val pixels (docs/benchmarks.md: calibration).

The confidence of a pixel is its top class probability p̂ and it is correct when that class is the
ground truth. Pixels fall into B equal-width bins of p̂ over (0, 1]; with n_b pixels in bin b,
their mean confidence conf_b and accuracy acc_b,

    ECE = Σ_b (n_b / n) · |acc_b − conf_b|

Three sums per bin (count, confidence, correct) are all a rank has to keep, so shards add up
exactly across ranks like the confusion matrix does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from semiseg.labels import IGNORE_INDEX


class CalibrationBins:
    """Per-bin pixel count, summed confidence and summed correctness (float64 sums)."""

    def __init__(self, num_bins: int = 15, ignore_index: int = IGNORE_INDEX, device="cpu"):
        self.num_bins = int(num_bins)
        self.ignore_index = int(ignore_index)
        self.sums = torch.zeros(3, self.num_bins, dtype=torch.float64, device=device)

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """`probs` (C, H, W) class probabilities of one image, `target` (H, W) class ids."""
        confidence, pred = probs.float().max(dim=0)
        valid = target != self.ignore_index
        confidence, correct = confidence[valid].double(), (pred[valid] == target[valid]).double()
        # bin b holds p̂ in (b/B, (b+1)/B]; p̂ = 0 cannot occur for a probability vector's maximum
        index = (torch.ceil(confidence * self.num_bins).long() - 1).clamp_(0, self.num_bins - 1)
        self.sums[0].index_add_(0, index, torch.ones_like(confidence))
        self.sums[1].index_add_(0, index, confidence)
        self.sums[2].index_add_(0, index, correct)

    def all_reduce(self) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.sums, op=dist.ReduceOp.SUM)

    def ece(self) -> float:
        """The expected calibration error in % (0 when no pixel was counted)."""
        count, confidence, correct = self.sums.cpu()
        total = float(count.sum())
        if total == 0:
            return 0.0
        return 100.0 * float((confidence - correct).abs().sum()) / total
