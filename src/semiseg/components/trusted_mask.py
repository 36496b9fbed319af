"""Trusted Mask Perturbation (TMP), CSL's second strong view (docs/methods/csl.md: TMP).

Two halves:

- In the data pipeline, `TrustedMaskView` is the `Views.alternative` of the second strong view: with
  probability `prob` a sample's x_s2 is a TMP view (photometric only, no CutMix box) and carries a
  block cover mask K; otherwise the standard strong view and its box are kept and K = 0. The batch
  holds K as `batch["unlabeled"]["cover"]` (docs/method_interface.md: Views).
- In the training step, once the per-pixel weights are known, `trusted_region` gives the hidden region
  R = K ∧ reliable ∧ valid, and `apply_trusted_mask` hides it: `zero` fill (R set to 0 in normalised
  space, the mean colour; targets unchanged) or `partner` fill (a CutMix restricted to R).

All randomness comes from torch's global RNG, in a fixed order per call: the TMP coin, then the
photometric draws (`StrongPhotometric`), then the cover cells. The data pipeline calls the view under
each sample's own seed, so the views of step t do not depend on the world size, the loader workers or
a resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import torch

from semiseg.components.cutmix import mix
from semiseg.data.transforms import StrongPhotometric
from semiseg.data.views import StrongReplacement

FILLS = ("zero", "partner")


def cells_per_side(size: int, block_size: int) -> int:
    """G = round(size / block_size), at least 1 (Python's round: halves go to the even integer)."""
    return max(1, round(size / block_size))


def block_cover(height: int, width: int, block_size: int = 32, cover_ratio: float = 0.7) -> torch.Tensor:
    """The block cover mask K, bool (height, width).

    G_h x G_w cells (G = `cells_per_side`), each covered independently with probability `cover_ratio`
    (one `torch.rand(G_h, G_w)` draw), upsampled by nearest neighbour: pixel (r, c) belongs to cell
    (⌊r·G_h/height⌋, ⌊c·G_w/width⌋).
    """
    g_h, g_w = cells_per_side(height, block_size), cells_per_side(width, block_size)
    cells = torch.rand(g_h, g_w) < cover_ratio
    rows = torch.arange(height) * g_h // height
    cols = torch.arange(width) * g_w // width
    return cells[rows][:, cols].contiguous()


@dataclass(frozen=True)
class TrustedMaskView:
    """The alternative strong view of TMP (`Views(..., alternative=TrustedMaskView())`).

    Called with a sample's uint8 weak crop (3 x S x S): with probability `prob` returns
    `StrongReplacement(image, box, cover)` where
    - image: colour jitter (brightness, contrast, saturation and hue all `jitter`) with p_jitter, then a
      Gaussian blur with p_blur, σ ~ U(blur_sigma); no grayscale (`StrongPhotometric(p_gray=0)`);
    - box: all False (a TMP view has no CutMix box);
    - cover: `block_cover(S, S, block_size, cover_ratio)`.
    Otherwise returns None: the sample keeps its standard strong view and box.
    """

    prob: float = 0.5
    block_size: int = 32
    cover_ratio: float = 0.7
    jitter: float = 0.2
    p_jitter: float = 0.8
    p_blur: float = 0.5
    blur_sigma: Tuple[float, float] = (0.1, 2.0)
    _photometric: StrongPhotometric = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("prob", "cover_ratio", "p_jitter", "p_blur"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"TrustedMaskView: {name} must be in [0, 1], got {value}")
        if int(self.block_size) != self.block_size or self.block_size < 1:
            raise ValueError(f"TrustedMaskView: block_size must be a positive integer, got {self.block_size}")
        if len(self.blur_sigma) != 2 or not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"TrustedMaskView: blur_sigma must be (lo, hi) with 0 < lo <= hi, got {self.blur_sigma}")
        j = self.jitter
        object.__setattr__(self, "blur_sigma", (float(self.blur_sigma[0]), float(self.blur_sigma[1])))
        object.__setattr__(self, "_photometric", StrongPhotometric(
            p_jitter=self.p_jitter, brightness=j, contrast=j, saturation=j, hue=j,
            p_gray=0.0, p_blur=self.p_blur, blur_sigma=self.blur_sigma))

    def __call__(self, image: torch.Tensor) -> Optional[StrongReplacement]:
        if torch.rand(()).item() >= self.prob:
            return None
        out = self._photometric(image)
        height, width = image.shape[-2:]
        box = torch.zeros(height, width, dtype=torch.bool)
        return StrongReplacement(out, box, block_cover(height, width, self.block_size, self.cover_ratio))


def trusted_region(cover: torch.Tensor, reliable: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """R = cover ∧ reliable ∧ valid, bool (B, S, S).

    cover: bool (B, S, S), the batch's `cover`; reliable: bool (B, S, S), the pixels whose weight is 1
    (the caller decides, e.g. `weight == 1`); valid: (B, S, S), bool or 0/1.
    """
    if cover.dtype != torch.bool or reliable.dtype != torch.bool:
        raise ValueError(f"trusted_region: cover and reliable must be bool, got {cover.dtype} and {reliable.dtype}")
    if not (cover.shape == reliable.shape == valid.shape) or cover.dim() != 3:
        raise ValueError(f"trusted_region: cover, reliable and valid must all be (B, S, S), got "
                         f"{tuple(cover.shape)}, {tuple(reliable.shape)}, {tuple(valid.shape)}")
    return cover.to(reliable.device) & reliable & valid.to(reliable.device).bool()


def apply_trusted_mask(x: torch.Tensor, region: torch.Tensor, fill: str = "zero",
                       partner_x: Optional[torch.Tensor] = None,
                       targets: Optional[Sequence[torch.Tensor]] = None,
                       partner_targets: Optional[Sequence[torch.Tensor]] = None):
    """Hide `region` (bool (B, S, S)) of the normalised images x (B, 3, S, S). Returns (x', targets').

    - `zero`: x'[R] = 0, the mean colour in normalised space; the targets are returned unchanged (the
      student predicts the hidden reliable pixels from their context).
    - `partner`: x' takes `partner_x`'s pixels in R, and each target map (e.g. pseudo-labels, weights,
      valid: (B, ..., S, S)) takes `partner_targets`' values there: a CutMix restricted to R.

    targets' is a tuple (None when `targets` is None). x and the targets are not modified in place.
    """
    if fill not in FILLS:
        raise ValueError(f"apply_trusted_mask: fill must be one of {', '.join(FILLS)}, got {fill!r}")
    if region.dtype != torch.bool or region.dim() != 3 or region.shape[0] != x.shape[0] \
            or region.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"apply_trusted_mask: region must be bool (B, S, S) matching x {tuple(x.shape)}, "
                         f"got {region.dtype} {tuple(region.shape)}")
    targets = None if targets is None else tuple(targets)
    if fill == "zero":
        m = region.to(x.device).unsqueeze(1)
        return x.masked_fill(m, 0.0), targets
    if partner_x is None:
        raise ValueError("apply_trusted_mask: fill='partner' needs partner_x (the partners' strong views)")
    if targets is not None and (partner_targets is None or len(tuple(partner_targets)) != len(targets)):
        raise ValueError("apply_trusted_mask: fill='partner' needs one partner target per target")
    x_new = mix(x, region, partner=partner_x)
    if targets is None:
        return x_new, None
    return x_new, tuple(mix(t, region, partner=p) for t, p in zip(targets, tuple(partner_targets)))
