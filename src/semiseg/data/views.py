"""Datasets that make the views a method asks for (methods.md §0.3-§0.6).

- `LabeledDataset`: one weak view of a labeled sample (image + mask).
- `UnlabeledDataset`: one weak view plus `num_strong` strong photometric copies of that same
  weak crop, each with its own G1 CutMix box (§0.5 step 4, §0.6), and the validity mask.

Unlabeled data never needs masks (pitfall P30): `UnlabeledDataset` ignores `sample.mask`
and the validity mask comes from the crop geometry (§0.3). Sources built for unlabeled
lists do not open mask files at all, so a list naming missing masks (or none) works.

Images come out ImageNet-normalised float (§0.4); the strong copies are made on the raw
uint8 weak crop first, then normalised, so they share its geometry pixel for pixel.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.utils.data import Dataset

from semiseg.components.cutmix import unimatch_box
from semiseg.data.normalize import normalize
from semiseg.data.sample import Source
from semiseg.data.transforms import StrongPhotometric, WeakView
from semiseg.errors import SemisegError

WeakPipeline = Callable[..., WeakView]


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
                " run `semiseg data check`"
            )
        view = self.weak(sample.image, sample.mask)
        return {"image": _normalised(view.image), "mask": view.mask, "index": index}


class UnlabeledDataset(Dataset):
    """Weak view + `num_strong` strong copies of an unlabeled sample.

    Returns dict(image_w=float 3 x S x S, image_s=float (num_strong, 3, S, S), box=bool (num_strong, S, S),
    valid=bool S x S, index=int); with num_strong = 0 only image_w, valid and index. Each strong copy is an
    independent `strong` augmentation (default `StrongPhotometric()`) of the same weak crop, and each has
    its own G1 box drawn with probability `box_p`.
    """

    def __init__(self, source: Source, weak: WeakPipeline, num_strong: int,
                 strong: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, box_p: float = 0.5):
        if int(num_strong) != num_strong or num_strong < 0:
            raise SemisegError(f"num_strong must be a non-negative integer, got {num_strong!r}")
        self.source, self.weak, self.num_strong = source, weak, int(num_strong)
        self.strong = StrongPhotometric() if strong is None else strong
        self.box_p = float(box_p)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        sample = self.source.load(index)
        view = self.weak(sample.image, None)  # never the mask: validity comes from the geometry (P30)
        out = {"image_w": _normalised(view.image), "valid": view.valid, "index": index}
        if self.num_strong:
            size = view.image.shape[-1]
            strong, boxes = [], []
            for _ in range(self.num_strong):  # UniMatch order: photometric, then the box, per copy
                strong.append(self.strong(view.image))
                boxes.append(unimatch_box(size, self.box_p))
            out["image_s"] = _normalised(torch.stack(strong))
            out["box"] = torch.stack(boxes)
        return out
