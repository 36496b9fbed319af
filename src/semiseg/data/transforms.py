"""Weak geometric pipelines (W-U, W-C) and the UniMatch strong photometric view.

docs/datasets.md: weak views, padding and the validity mask, the strong view.

A weak pipeline turns a raw `Sample` (uint8 H x W x 3 image, uint8 H x W mask or
None) into a `WeakView` of S x S tensors. The image stays uint8 and unnormalised
so that the strong photometric augmentation can run on the weak crop;
`semiseg.data.views` normalises afterwards.

Padding: bottom/right only; image 0, mask 255 (never 0, which would train and score
padding as background), validity False. The validity mask comes from the crop geometry,
never from a mask file, so unlabeled data needs no masks. Crop offsets are
uniform integers in 0 … h − S, so an image at least as large as the crop is
never padded (CPS's release draws up to h − S + 1 and pads a 1-px border now and then).

Resizing works on torch tensors with `F.interpolate` (half-pixel centres,
`align_corners=False`), chosen per pipeline to follow the library each
released code base resizes with:

- W-U (UniMatch resizes with PIL): image bilinear with `antialias=True`, which
  is torch's reimplementation of PIL's bilinear filter (it widens the filter
  when downscaling); mask `nearest-exact`, which samples at pixel centres as
  PIL's NEAREST does.
- W-C (CPS resizes with OpenCV): image bilinear with `antialias=False` like
  `cv2.INTER_LINEAR`; mask `nearest` (floor(dst · src/dst)) like
  `cv2.INTER_NEAREST`.

The image is interpolated in float32, then rounded and clamped back to uint8.
All randomness comes from torch's global RNG, so DataLoader worker seeding
makes the pipelines reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from semiseg.data.sample import IGNORE_INDEX
from semiseg.errors import SemisegError

CPS_SCALES = (0.5, 0.75, 1.0, 1.5, 1.75, 2.0)


@dataclass
class WeakView:
    image: torch.Tensor  # uint8 3 x S x S, raw values (not normalised), 0 on padding
    mask: Optional[torch.Tensor]  # long S x S, 255 on padding; None for unlabeled input
    valid: torch.Tensor  # bool S x S, False exactly on padding


def _randint(low: int, high: int) -> int:
    """Uniform integer in [low, high], both ends inclusive, from torch's RNG."""
    return int(torch.randint(low, high + 1, (1,)).item())


def _to_tensors(image: np.ndarray, mask: Optional[np.ndarray]):
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 H x W x 3, got {image.dtype} {image.shape}")
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
    if mask is None:
        return img, None
    if mask.dtype != np.uint8 or mask.shape != image.shape[:2]:
        raise ValueError(f"mask must be uint8 {image.shape[:2]}, got {mask.dtype} {mask.shape}")
    return img, torch.from_numpy(np.ascontiguousarray(mask))[None]


def _resize(image, mask, size: Tuple[int, int], antialias: bool, mask_mode: str):
    """Image bilinear (float, rounded back to uint8), mask by nearest neighbour."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, mask
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=antialias)
    image = out[0].round_().clamp_(0, 255).to(torch.uint8)
    if mask is not None:
        mask = F.interpolate(mask[None].float(), size=size, mode=mask_mode)[0].to(torch.uint8)
    return image, mask


def _pad_crop(image, mask, crop: int):
    """Pad bottom/right to >= crop, then a uniform crop with offsets in 0 … h − S (docs/datasets.md: padding)."""
    h, w = image.shape[-2:]
    big_h, big_w = max(h, crop), max(w, crop)
    valid = torch.zeros(big_h, big_w, dtype=torch.bool)
    valid[:h, :w] = True
    if (big_h, big_w) != (h, w):
        padded = image.new_zeros(3, big_h, big_w)
        padded[:, :h, :w] = image
        image = padded
        if mask is not None:
            padded = mask.new_full((1, big_h, big_w), IGNORE_INDEX)
            padded[:, :h, :w] = mask
            mask = padded
    y = _randint(0, big_h - crop)
    x = _randint(0, big_w - crop)
    image = image[:, y : y + crop, x : x + crop]
    valid = valid[y : y + crop, x : x + crop]
    if mask is not None:
        mask = mask[:, y : y + crop, x : x + crop]
    return image, mask, valid


def _hflip(image, mask, valid=None, p: float = 0.5):
    if torch.rand(()).item() < p:
        image = image.flip(-1)
        mask = None if mask is None else mask.flip(-1)
        valid = None if valid is None else valid.flip(-1)
    return image, mask, valid


def _view(image, mask, valid) -> WeakView:
    return WeakView(
        image=image.contiguous(),
        mask=None if mask is None else mask[0].long(),
        valid=valid.contiguous(),
    )


def _check_crop(crop_size) -> int:
    if int(crop_size) != crop_size or crop_size < 1:
        raise SemisegError(f"crop_size must be a positive integer, got {crop_size!r}")
    return int(crop_size)


class WeakUniMatch:
    """W-U (docs/datasets.md: weak views): random long side, pad, uniform S x S crop, then hflip p = 0.5."""

    def __init__(self, crop_size: int, scale_range: Sequence[float] = (0.5, 2.0)):
        self.crop_size = _check_crop(crop_size)
        lo, hi = (float(s) for s in scale_range)
        if not 0 < lo <= hi:
            raise SemisegError(f"scale_range must satisfy 0 < lo <= hi, got {tuple(scale_range)}")
        self.scale_range = (lo, hi)

    def output_size(self, h: int, w: int) -> Tuple[int, int]:
        """Draw the resized (h', w'): L' uniform in [⌊lo·L⌋, ⌊hi·L⌋], short side int(short·L'/L + 0.5)."""
        long_side = max(h, w)
        lo = max(1, math.floor(self.scale_range[0] * long_side))
        hi = max(lo, math.floor(self.scale_range[1] * long_side))
        new_long = _randint(lo, hi)
        new_short = max(1, int(min(h, w) * new_long / long_side + 0.5))
        return (new_long, new_short) if h > w else (new_short, new_long)

    def __call__(self, image: np.ndarray, mask: Optional[np.ndarray] = None) -> WeakView:
        img, msk = _to_tensors(image, mask)
        size = self.output_size(*img.shape[-2:])
        img, msk = _resize(img, msk, size, antialias=True, mask_mode="nearest-exact")
        img, msk, valid = _pad_crop(img, msk, self.crop_size)
        img, msk, valid = _hflip(img, msk, valid)
        return _view(img, msk, valid)


class WeakCPS:
    """W-C (docs/datasets.md: weak views): hflip p = 0.5, a scale from a set, size (int(h·s), int(w·s)), pad,
    random S x S crop."""

    def __init__(self, crop_size: int, scales: Sequence[float] = CPS_SCALES):
        self.crop_size = _check_crop(crop_size)
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or min(self.scales) <= 0:
            raise SemisegError(f"WeakCPS needs at least one positive scale, got {tuple(scales)}")

    def __call__(self, image: np.ndarray, mask: Optional[np.ndarray] = None) -> WeakView:
        img, msk = _to_tensors(image, mask)
        img, msk, _ = _hflip(img, msk)  # CPS flips first; nearest resizing does not commute with flips
        s = self.scales[_randint(0, len(self.scales) - 1)]
        h, w = img.shape[-2:]
        size = (max(1, int(h * s)), max(1, int(w * s)))
        img, msk = _resize(img, msk, size, antialias=False, mask_mode="nearest")
        img, msk, valid = _pad_crop(img, msk, self.crop_size)
        return _view(img, msk, valid)


class WeakU2PL:
    """W-P (docs/datasets.md: weak views): with p = 0.5 a scale s ~ U(lo, 1), otherwise s ~ U(1, hi); size
    (int(h·s), int(w·s)) (image bilinear without antialiasing, mask nearest); hflip p = 0.5; pad; random
    S x S crop. No photometric change."""

    def __init__(self, crop_size: int, scale_range: Sequence[float] = (0.5, 2.0)):
        self.crop_size = _check_crop(crop_size)
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if not 0 < lo <= 1.0 <= hi:
            raise SemisegError(f"the u2pl weak pipeline needs data.scale_range [lo, hi] with 0 < lo <= 1 <= hi, "
                               f"got {list(scale_range)}")
        self.lo, self.hi = lo, hi

    def scale(self) -> float:
        low, high = (self.lo, 1.0) if torch.rand(()).item() < 0.5 else (1.0, self.hi)
        return float(torch.empty(()).uniform_(low, high).item())

    def __call__(self, image: np.ndarray, mask: Optional[np.ndarray] = None) -> WeakView:
        img, msk = _to_tensors(image, mask)
        s = self.scale()
        h, w = img.shape[-2:]
        img, msk = _resize(img, msk, (max(1, int(h * s)), max(1, int(w * s))), antialias=False, mask_mode="nearest")
        img, msk, _ = _hflip(img, msk)
        img, msk, valid = _pad_crop(img, msk, self.crop_size)
        return _view(img, msk, valid)


def blur_kernel_size(sigma: float, max_side: Optional[int] = None) -> int:
    """Odd kernel covering ±3σ; capped at 2·side − 1 (reflect padding must stay inside the image)."""
    k = 2 * math.ceil(3 * sigma) + 1
    if max_side is not None:
        k = min(k, 2 * max_side - 1)
    return max(k, 1)


class StrongPhotometric:
    """UniMatch's strong photometric view (docs/datasets.md) on a uint8 3 x H x W tensor -> uint8 3 x H x W.

    1. with p_jitter, `v2.ColorJitter(brightness, contrast, saturation, hue)` (the four factors in random order);
    2. with p_gray, grayscale replicated to 3 channels (`RandomGrayscale`);
    3. with p_blur, a Gaussian blur with σ ~ U(blur_sigma).

    UniMatch blurs with PIL's `GaussianBlur(radius=σ)`; PIL's radius *is* the standard deviation
    (approximated by three box blurs). We use torchvision's sampled Gaussian with that σ and an odd
    kernel covering ±3σ (> 99.7 % of the mass); the two differ only by PIL's box approximation and
    border handling (torchvision reflects). The CutMix box of step 4 is drawn by the caller
    (`semiseg.components.cutmix.unimatch_box`). Geometry is untouched, so every strong view of a
    weak crop stays pixel-aligned with it.
    """

    def __init__(self, p_jitter=0.8, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.25,
                 p_gray=0.2, p_blur=0.5, blur_sigma=(0.1, 2.0)):
        self.p_jitter, self.p_gray, self.p_blur = float(p_jitter), float(p_gray), float(p_blur)
        self.jitter = v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"StrongPhotometric expects a uint8 3 x H x W tensor, got {image.dtype} {tuple(image.shape)}")
        out = image
        if torch.rand(()).item() < self.p_jitter:
            out = self.jitter(out)
        if torch.rand(()).item() < self.p_gray:
            out = TF.rgb_to_grayscale(out, num_output_channels=3)
        if torch.rand(()).item() < self.p_blur:
            sigma = torch.empty(()).uniform_(*self.blur_sigma).item()
            k = blur_kernel_size(sigma, min(out.shape[-2:]))
            out = TF.gaussian_blur(out, [k, k], [sigma, sigma])
        return out.contiguous()


WEAK_PIPELINES = ("unimatch", "cps", "u2pl")


def build_weak(name: str, crop_size: int, scale_range: Sequence[float] = (0.5, 2.0)):
    """The weak pipeline by name: "unimatch" (W-U), "cps" (W-C) or "u2pl" (W-P).

    For "cps", `scale_range` keeps the members of the CPS set {0.5, 0.75, 1.0, 1.5, 1.75, 2.0} that lie
    inside [lo, hi] (the default keeps all six).
    """
    if name == "unimatch":
        return WeakUniMatch(crop_size, scale_range)
    if name == "cps":
        lo, hi = scale_range
        scales = tuple(s for s in CPS_SCALES if lo <= s <= hi)
        if not scales:
            raise SemisegError(f"scale_range {tuple(scale_range)} keeps none of the CPS scales {CPS_SCALES}")
        return WeakCPS(crop_size, scales)
    if name == "u2pl":
        return WeakU2PL(crop_size, scale_range)
    raise SemisegError(f"unknown weak pipeline {name!r}: choose one of {', '.join(WEAK_PIPELINES)}")
