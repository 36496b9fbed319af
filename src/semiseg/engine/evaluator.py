"""Evaluation modes and the sharded val loop (docs/datasets.md: evaluation modes).

`predict_logits` implements the four modes (`original`, `center_crop`, `resize`,
`sliding_window`) for any number of classes, every sliding window full-size (UniMatch V1's
release hard-codes 19 classes and truncates the border windows); `evaluate` gives val image i
to rank i mod W with no padding, so no image counts twice (docs/distributed.md: sharded
evaluation), and sums one confusion matrix per rank.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from semiseg.data.normalize import normalize, to_tensor
from semiseg.engine.calibration import CalibrationBins
from semiseg.engine.metrics import ConfusionMatrix, format_iou_table
from semiseg.errors import SemisegError

log = logging.getLogger(__name__)

MODES = ("original", "center_crop", "resize", "sliding_window")
Forward = Callable[[torch.Tensor], torch.Tensor]


class Region(NamedTuple):
    """The part of the ground truth a prediction covers: rows top..top+height, cols left..left+width."""

    top: int
    left: int
    height: int
    width: int

    def crop(self, x):
        """Crop the last two dims (mask H x W, or image ... x H x W) to this region."""
        return x[..., self.top : self.top + self.height, self.left : self.left + self.width]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Starts r0 = 0, r_{k+1} = min(r_k + s, L - S) until r_k = L - S: full windows, last on the border.

    A length shorter than the window gives [0] (the caller pads to the window).
    """
    if window < 1 or stride < 1:
        raise SemisegError(f"window ({window}) and stride ({stride}) must be >= 1")
    last = max(length - window, 0)
    starts = [0]
    while starts[-1] < last:
        starts.append(min(starts[-1] + stride, last))
    return starts


def _run(forward: Forward, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    out = forward(x)
    expected = (x.shape[0], num_classes, x.shape[2], x.shape[3])
    if tuple(out.shape) != expected:
        raise SemisegError(
            f"model output shape {tuple(out.shape)} != expected {expected} (N, C, h, w at input size)"
        )
    return out


def _resize_size(h: int, w: int, multiple: Optional[int], resize_to) -> tuple[int, int]:
    if resize_to is not None:
        return int(resize_to[0]), int(resize_to[1])
    if not multiple or multiple < 1:
        raise SemisegError("mode 'resize' needs resize_multiple (e.g. 14 for ViT/14) or resize_to=(h, w)")
    rh = max(1, math.floor(h / multiple + 0.5)) * multiple
    rw = max(1, math.floor(w / multiple + 0.5)) * multiple
    return rh, rw


def _sliding_window(forward, image, num_classes, crop_size, window_batch, stride_ratio):
    """N same-size images at once: each forward takes max(1, window_batch // N) window positions of every image
    (one image: window_batch windows), and each image's windows are summed in the same order for any N."""
    n, _, h, w = image.shape
    s = crop_size
    stride = max(1, int(s * stride_ratio))
    ph, pw = max(h, s), max(w, s)
    if (ph, pw) != (h, w):  # pad bottom/right with 0 (normalised space), crop back afterwards (docs/datasets.md)
        image = F.pad(image, (0, pw - w, 0, ph - h), value=0.0)
    boxes = [(r, c) for r in window_starts(ph, s, stride) for c in window_starts(pw, s, stride)]
    acc = torch.zeros(n, num_classes, ph, pw, dtype=torch.float32, device=image.device)
    per_forward = max(1, window_batch // n)
    for i in range(0, len(boxes), per_forward):
        chunk = boxes[i : i + per_forward]
        batch = torch.cat([image[:, :, r : r + s, c : c + s] for r, c in chunk], dim=0)
        probs = _run(forward, batch, num_classes).float().softmax(dim=1)
        for k, (r, c) in enumerate(chunk):
            acc[:, :, r : r + s, c : c + s] += probs[k * n : (k + 1) * n]
    return acc[:, :, :h, :w]


def predict_logits(
    forward: Forward,
    image: torch.Tensor,
    num_classes: int,
    mode: str,
    crop_size: Optional[int] = None,
    resize_multiple: Optional[int] = None,
    resize_to: Optional[Sequence[int]] = None,
    window_batch: int = 8,
    stride_ratio: float = 2 / 3,
) -> tuple[torch.Tensor, Region]:
    """Scores (N, C, h', w') for normalised (N, 3, H, W) images of one size (evaluation: N = 1) and the GT
    `Region` they cover; each image's scores are those it gets alone (`semiseg predict` batches images).

    `sliding_window` returns the per-window softmax probabilities summed in fp32 (only
    their argmax is meaningful); the other modes return the model's logits.
    """
    if image.dim() != 4 or image.shape[0] < 1:
        raise SemisegError(f"predict_logits expects images (N, 3, H, W), got {tuple(image.shape)}")
    _, _, h, w = image.shape
    full = Region(0, 0, h, w)
    if mode in ("center_crop", "sliding_window") and (not crop_size or crop_size < 1):
        raise SemisegError(f"mode '{mode}' needs crop_size (the window / crop side S)")
    if mode == "original":
        return _run(forward, image, num_classes), full
    if mode == "center_crop":  # central S x S; a dimension smaller than S is kept, never padded (docs/datasets.md)
        ch, cw = min(crop_size, h), min(crop_size, w)
        region = Region((h - ch) // 2, (w - cw) // 2, ch, cw)
        return _run(forward, region.crop(image), num_classes), region
    if mode == "resize":  # bilinear, align_corners=True, both ways (docs/datasets.md: evaluation modes)
        size = _resize_size(h, w, resize_multiple, resize_to)
        x = F.interpolate(image, size=size, mode="bilinear", align_corners=True)
        out = _run(forward, x, num_classes)
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        return out, full
    if mode == "sliding_window":
        out = _sliding_window(forward, image, num_classes, crop_size, max(1, window_batch), stride_ratio)
        return out, full
    raise SemisegError(f"unknown eval mode '{mode}'; choose one of {', '.join(MODES)}")


@dataclass
class EvalResult:
    """Confusion matrix and scores (miou / miou_present / ece in %) over the images counted."""

    confusion: np.ndarray
    iou: np.ndarray
    miou: float
    miou_present: float
    num_images: int
    class_names: Optional[list[str]] = field(default=None, repr=False)
    ece: Optional[float] = None
    calibration: Optional[np.ndarray] = field(default=None, repr=False)  # (3, bins): count, Σ confidence, Σ correct

    def table(self, name: str = "mIoU") -> str:
        return format_iou_table({name: self.iou}, self.class_names)


def class_probabilities(scores: torch.Tensor, mode: str) -> torch.Tensor:
    """Probabilities (1, C, h, w) from `predict_logits`' scores: a softmax of logits, or for
    `sliding_window` the summed window probabilities divided by the number of windows per pixel."""
    scores = scores.float()
    if mode == "sliding_window":
        return scores / scores.sum(dim=1, keepdim=True)
    return scores.softmax(dim=1)


def evaluate(
    forward: Forward,
    source,
    num_classes: int,
    mode: str,
    crop_size: Optional[int] = None,
    resize_multiple: Optional[int] = None,
    resize_to: Optional[Sequence[int]] = None,
    device="cpu",
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
    class_names: Optional[Sequence[str]] = None,
    window_batch: int = 8,
) -> EvalResult:
    """Evaluate `forward` on every labeled image of `source`; rank r takes images i with i % W == r.

    The matrices are summed over ranks (one all_reduce) when a process group of size W is up;
    without one the result is this rank's share, so callers/tests can sum shares themselves.
    """
    if mode not in MODES:
        raise SemisegError(f"unknown eval mode '{mode}'; choose one of {', '.join(MODES)}")
    if not 0 <= rank < world_size:
        raise SemisegError(f"rank {rank} is outside world size {world_size}")
    device = torch.device(device)
    cm = ConfusionMatrix(num_classes, device=device)
    calibration = CalibrationBins(device=device)
    indices = range(rank, len(source), world_size)
    if progress and rank == 0:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"eval ({mode})", dynamic_ncols=True)
    count = 0
    with torch.inference_mode():
        for i in indices:
            sample = source.load(i)
            if sample.mask is None:
                raise SemisegError(f"val image '{sample.name}' (index {i}) has no mask; val sets must be labeled")
            if sample.mask.shape != sample.image.shape[:2]:
                raise SemisegError(
                    f"val image '{sample.name}': mask shape {sample.mask.shape} != image {sample.image.shape[:2]}"
                )
            image = normalize(to_tensor(sample.image)).unsqueeze(0).to(device)
            scores, region = predict_logits(
                forward, image, num_classes, mode, crop_size=crop_size, resize_multiple=resize_multiple,
                resize_to=resize_to, window_batch=window_batch,
            )
            target = region.crop(torch.from_numpy(np.ascontiguousarray(sample.mask)).to(device))
            try:
                cm.update(scores.argmax(dim=1)[0], target)
            except SemisegError as e:
                raise SemisegError(f"val image '{sample.name}': {e}") from None
            calibration.update(class_probabilities(scores, mode)[0], target)
            count += 1

    if world_size > 1 and dist.is_available() and dist.is_initialized():
        if dist.get_world_size() != world_size:
            raise SemisegError(f"world_size {world_size} != process group size {dist.get_world_size()}")
        cm.all_reduce()
        calibration.all_reduce()
        n = torch.tensor([count], dtype=torch.int64, device=device)
        dist.all_reduce(n, op=dist.ReduceOp.SUM)
        count = int(n.item())

    names = list(class_names) if class_names is not None else None
    absent = cm.absent_classes()
    if absent and count and rank == 0:
        labels = [names[c] if names else str(c) for c in absent]
        log.warning("classes with zero union score 0 in mIoU: %s", ", ".join(labels))
    return EvalResult(cm.to_numpy(), cm.iou(), cm.miou(), cm.miou_present(), count, names, calibration.ece(),
                      calibration.sums.cpu().numpy())
