"""Datasets that make the views a method asks for (docs/datasets.md: weak views, padding, the strong view).

- `LabeledDataset`: one weak view of a labeled sample (image + mask).
- `UnlabeledDataset`: one weak view plus `num_strong` strong photometric copies of that same
  weak crop, the validity mask, and `num_boxes` CutMix boxes from the box generator it is given
  (the method declares both: docs/method_interface.md, views). An optional alternative view may
  replace one strong copy and its box per sample (`StrongReplacement`, with a `cover` mask).

Unlabeled data never needs masks: `UnlabeledDataset` ignores `sample.mask`
and the validity mask comes from the crop geometry (docs/datasets.md). Sources built for unlabeled
lists do not open mask files at all, so a list naming missing masks (or none) works.

Images come out ImageNet-normalised float; the strong copies are made on the raw
uint8 weak crop first, then normalised, so they share its geometry pixel for pixel.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch.utils.data import Dataset

from semiseg.data.normalize import normalize
from semiseg.data.sample import Source
from semiseg.data.transforms import StrongPhotometric, WeakView
from semiseg.errors import SemisegError

WeakPipeline = Callable[..., WeakView]
BoxGenerator = Callable[[int, int], torch.Tensor]


class StrongReplacement(NamedTuple):
    """What an alternative view returns in place of strong copy k and box k of a sample.

    image: uint8 3 x S x S, made from the weak crop (so pixel-aligned with it); box: bool S x S CutMix box
    (all False = no box); cover: bool S x S, a per-pixel mask the method reads (`batch["cover"]`).
    """

    image: torch.Tensor
    box: torch.Tensor
    cover: torch.Tensor


# `alternative(weak uint8 3 x S x S) -> None | StrongReplacement`, drawing from torch's global RNG;
# None keeps the standard strong copy and box.
AlternativeView = Callable[[torch.Tensor], Optional[StrongReplacement]]


def _normalised(image: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, S, S) -> ImageNet-normalised float."""
    return normalize(image.float().div_(255.0))


class LabeledDataset(Dataset):
    """dict(image=float 3 x S x S normalised, mask=long S x S (255 = ignore and padding), index=int)."""

    def __init__(self, source: Source, weak: WeakPipeline):
        self.source, self.weak = source, weak

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        sample = self.source.load(index)
        if sample.mask is None:
            raise SemisegError(f"labeled sample {sample.name!r} has no mask: give every line of the labeled list a mask")
        if sample.mask.shape != sample.image.shape[:2]:
            raise SemisegError(
                f"sample {sample.name!r}: mask {sample.mask.shape} and image {sample.image.shape[:2]} differ in size;"
                " run `semiseg data check CONFIG` (the run's config file) to list every such file"
            )
        view = self.weak(sample.image, sample.mask)
        return {"image": _normalised(view.image), "mask": view.mask, "index": index}


class UnlabeledDataset(Dataset):
    """Weak view + `num_strong` strong copies of an unlabeled sample, + `num_boxes` CutMix boxes.

    Returns dict(image_w=float 3 x S x S, valid=bool S x S, index=int), plus image_s=float
    (num_strong, 3, S, S) when num_strong > 0 and box=bool (num_boxes, S, S) when num_boxes > 0. Each
    strong copy is an independent `strong` augmentation (default `StrongPhotometric()`) of the same weak
    crop. Box k is `box(S, S)`; it is drawn right after strong copy k (the order UniMatch draws them
    in), the boxes beyond the strong copies after all of them.

    With an `alternative` view, at the turn of strong copy k = `alternative_index` the alternative is
    called first with the uint8 weak crop: None keeps the standard copy k and box k (drawn next, as
    without it); a `StrongReplacement` takes their place. The sample then also holds cover=bool S x S:
    the replacement's cover, all False when the standard copy was kept.
    """

    def __init__(self, source: Source, weak: WeakPipeline, num_strong: int,
                 strong: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 box: Optional[BoxGenerator] = None, num_boxes: int = 0,
                 alternative: Optional[AlternativeView] = None, alternative_index: int = 1):
        for name, value in (("num_strong", num_strong), ("num_boxes", num_boxes),
                            ("alternative_index", alternative_index)):
            if int(value) != value or value < 0:
                raise SemisegError(f"{name} must be a non-negative integer, got {value!r}")
        if num_boxes and box is None:
            raise SemisegError("num_boxes > 0 needs a box generator")
        if alternative is not None and not (alternative_index < num_strong and alternative_index < num_boxes):
            raise SemisegError(f"an alternative view replaces strong copy {alternative_index} and its box: it needs "
                               f"num_strong and num_boxes > {alternative_index}, got {num_strong} and {num_boxes}")
        self.source, self.weak, self.num_strong = source, weak, int(num_strong)
        self.strong = StrongPhotometric() if strong is None else strong
        self.box, self.num_boxes = box, int(num_boxes)
        self.alternative, self.alternative_index = alternative, int(alternative_index)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        sample = self.source.load(index)
        view = self.weak(sample.image, None)  # never the mask: validity comes from the geometry
        out = {"image_w": _normalised(view.image), "valid": view.valid, "index": index}
        height, width = view.image.shape[-2:]
        strong, boxes = [], []
        cover = None if self.alternative is None else torch.zeros(height, width, dtype=torch.bool)
        for k in range(max(self.num_strong, self.num_boxes)):
            if self.alternative is not None and k == self.alternative_index:
                replacement = self.alternative(view.image)
                if replacement is not None:
                    image, box, cover = _checked(replacement, height, width)
                    strong.append(image)
                    boxes.append(box)
                    continue
            if k < self.num_strong:
                strong.append(self.strong(view.image))
            if k < self.num_boxes:
                boxes.append(self.box(height, width))
        if strong:
            out["image_s"] = _normalised(torch.stack(strong))
        if boxes:
            out["box"] = torch.stack(boxes)
        if cover is not None:
            out["cover"] = cover
        return out


def _checked(replacement, height: int, width: int) -> StrongReplacement:
    """An alternative view's (image, box, cover), with the dtypes and shapes of a standard copy and box."""
    image, box, cover = replacement
    if image.dtype != torch.uint8 or tuple(image.shape) != (3, height, width):
        raise SemisegError(f"an alternative view returned an image {image.dtype} {tuple(image.shape)}; "
                           f"expected uint8 (3, {height}, {width})")
    for name, mask in (("box", box), ("cover", cover)):
        if mask.dtype != torch.bool or tuple(mask.shape) != (height, width):
            raise SemisegError(f"an alternative view returned a {name} {mask.dtype} {tuple(mask.shape)}; "
                               f"expected bool ({height}, {width})")
    return StrongReplacement(image, box, cover)
