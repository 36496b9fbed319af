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

from semiseg.errors import SemisegError
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


def reliability_diagram(sums, path, title: str = "reliability") -> None:
    """A PNG of the per-bin accuracy against the mean confidence (the gap to the diagonal is the
    miscalibration; bar width = bin, shade = share of pixels) from `CalibrationBins.sums` (3, B)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SemisegError("the reliability diagram needs matplotlib: pip install 'semiseg[report]'") from None
    from semiseg.bench.report_figures import new_figure, save

    count, confidence, correct = (torch.as_tensor(s, dtype=torch.float64) for s in sums)
    bins = count.numel()
    total = float(count.sum()) or 1.0
    seen = count > 0
    accuracy = torch.where(seen, correct / count.clamp(min=1), torch.zeros_like(count))
    mean_conf = torch.where(seen, confidence / count.clamp(min=1), torch.zeros_like(count))
    ece = 100.0 * float((confidence - correct).abs().sum()) / total
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    figure = new_figure(3.6, 3.6)
    axes = figure.subplots()
    axes.bar(edges[:-1].numpy(), accuracy.numpy(), width=1.0 / bins, align="edge", color="C0",
             edgecolor="black", linewidth=0.3, label="accuracy")
    axes.bar(edges[:-1].numpy(), (mean_conf - accuracy).numpy(), bottom=accuracy.numpy(), width=1.0 / bins,
             align="edge", color="C3", alpha=0.35, edgecolor="none", label="gap to the mean confidence")
    axes.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--")
    share = (count / total).numpy()
    for left, fraction in zip(edges[:-1].numpy(), share):
        if fraction > 0:
            axes.text(left + 0.5 / bins, 0.01, f"{100 * fraction:.0f}", ha="center", fontsize=5, rotation=90)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence (numbers: % of pixels)", fontsize=7)
    axes.set_ylabel("accuracy", fontsize=7)
    axes.set_title(f"{title}: ECE {ece:.2f} %", fontsize=8)
    axes.tick_params(labelsize=6)
    axes.legend(fontsize=6, loc="upper left", frameon=False)
    save(figure, path)
