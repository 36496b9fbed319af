"""Dataset-level confusion matrix and IoU (docs/datasets.md: evaluation modes).

One C x C int64 matrix N[g, p] is accumulated over every valid pixel of the val
set with `torch.bincount` (no histogram binning: a value >= C is an error, not
silently counted as the last class as the released `np.histogram` code does),
summed across ranks once, then turned into IoUs.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from semiseg.errors import SemisegError


class ConfusionMatrix:
    """Accumulates N[g, p] over pixels whose target != ignore_index."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device="cpu"):
        if num_classes < 1:
            raise SemisegError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.device = torch.device(device)
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=self.device)

    def reset(self) -> None:
        self.matrix.zero_()

    def _check_range(self, values: torch.Tensor, what: str) -> None:
        bad = (values < 0) | (values >= self.num_classes)
        if bool(bad.any()):
            value = int(values[bad][0].item())
            raise SemisegError(
                f"{what} value {value} is outside the class range 0..{self.num_classes - 1} "
                f"(C = {self.num_classes}, ignore = {self.ignore_index}); check the label mapping"
            )

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one prediction/target pair (integer tensors of equal shape) to the matrix."""
        if pred.shape != target.shape:
            raise SemisegError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        if pred.is_floating_point() or target.is_floating_point():
            raise SemisegError("prediction and target must be integer tensors (class ids), not floats")
        pred = pred.to(self.device).reshape(-1).long()
        target = target.to(self.device).reshape(-1).long()
        self._check_range(pred, "prediction")
        valid = target != self.ignore_index
        target, pred = target[valid], pred[valid]
        self._check_range(target, "target")
        c = self.num_classes
        counts = torch.bincount(target * c + pred, minlength=c * c)
        self.matrix += counts.view(c, c)

    def all_reduce(self) -> None:
        """SUM the matrix over ranks when torch.distributed is initialised with world size > 1."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def to_numpy(self) -> np.ndarray:
        """The matrix as an int64 numpy array (on CPU)."""
        return self.matrix.detach().cpu().numpy().astype(np.int64)

    def union(self) -> np.ndarray:
        m = self.to_numpy()
        return m.sum(axis=1) + m.sum(axis=0) - np.diag(m)

    def iou(self) -> np.ndarray:
        """Per-class IoU as float64; a class with zero union scores 0 (UniMatch convention)."""
        m = self.to_numpy()
        inter = np.diag(m).astype(np.float64)
        union = self.union().astype(np.float64)
        return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)

    def miou(self) -> float:
        """Plain mean IoU over all C classes, in % (absent classes count as 0)."""
        return float(self.iou().mean() * 100.0)

    def miou_present(self) -> float:
        """Mean IoU over classes with union > 0, in % (CPS-family convention); NaN if none."""
        present = self.union() > 0
        if not present.any():
            return float("nan")
        return float(self.iou()[present].mean() * 100.0)

    def absent_classes(self) -> list[int]:
        """Class ids with zero union (never in the ground truth nor predicted)."""
        return [int(c) for c in np.flatnonzero(self.union() == 0)]

    def pixel_accuracy(self) -> float:
        """Fraction of valid pixels predicted correctly, in %; NaN if there are none."""
        m = self.to_numpy()
        total = m.sum()
        return float(np.trace(m) / total * 100.0) if total > 0 else float("nan")


def format_iou_table(
    ious_by_run: Mapping[str, np.ndarray],
    class_names: Optional[Sequence[str]] = None,
    gain: bool = False,
    decimals: int = 2,
) -> str:
    """Aligned plain-text table: one row per class plus an mIoU row, one column per run.

    IoUs are fractions (as from `ConfusionMatrix.iou`) and are printed in %. With exactly
    two runs and `gain=True` a last column shows second - first (e.g. fixmatch - supervised).
    """
    if not ious_by_run:
        raise SemisegError("format_iou_table needs at least one run")
    runs = list(ious_by_run)
    arrays = [np.asarray(ious_by_run[r], dtype=np.float64).reshape(-1) * 100.0 for r in runs]
    n = arrays[0].size
    if any(a.size != n for a in arrays):
        raise SemisegError(f"runs have different class counts: {[a.size for a in arrays]}")
    names = [f"class {i}" for i in range(n)] if class_names is None else [str(c) for c in class_names]
    if len(names) != n:
        raise SemisegError(f"{len(names)} class names given for {n} classes")
    if gain and len(runs) != 2:
        raise SemisegError(f"gain=True needs exactly two runs, got {len(runs)}")

    headers = ["class"] + runs + (["gain"] if gain else [])
    columns = [a.tolist() + [float(a.mean())] for a in arrays]
    if gain:
        columns.append([b - a for a, b in zip(columns[0], columns[1])])
    rows = [[name] for name in names + ["mIoU"]]
    for j, col in enumerate(columns):
        signed = gain and j == len(columns) - 1
        for i, v in enumerate(col):
            rows[i].append(f"{v:+.{decimals}f}" if signed else f"{v:.{decimals}f}")

    widths = [max(len(headers[k]), *(len(r[k]) for r in rows)) for k in range(len(headers))]

    def line(cells):
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first] + rest).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    out = [line(headers), rule] + [line(r) for r in rows[:-1]] + [rule, line(rows[-1])]
    return "\n".join(out)
