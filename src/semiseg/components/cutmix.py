"""CutMix boxes and mixing with a partner sample (docs/method_interface.md: box generators, partner rules).

A box mask M (bool S x S) marks the pixels taken from the partner:
x_mix = x · (1 − M) + x_partner · M. Images, pseudo-labels, confidences and validity
masks are all mixed with the same M.

Partner rule (our decision: UniMatch V1's released partner is the same image, differently augmented;
see "Departures" in docs/methods/unimatch.md): sample i of a local batch takes sample
(i + 1) mod B, i.e. the batch rolled by one. A sample is never its own partner when
B >= 2, and the partner's pseudo-labels are the rolled maps of the same step, so no extra
forward pass is needed.

All randomness comes from torch's global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

_MAX_TRIES = 100_000


def unimatch_box(size: int, p: float = 0.5, area=(0.02, 0.4), ratio=(0.3, 1 / 0.3)) -> torch.Tensor:
    """G1, UniMatch's box (docs/methods/unimatch.md): a bool S x S mask, empty with probability 1 − p.

    The area A = U(area)·S² is drawn once; then ratio r ~ U(ratio), w = int(√(A/r)),
    h = int(√(A·r)) and x, y uniform in 0 … S−1 are redrawn together until x + w <= S and
    y + h <= S. M = True on rows [y, y+h) and columns [x, x+w).
    """
    box = torch.zeros(size, size, dtype=torch.bool)
    if torch.rand(()).item() >= p:
        return box
    a = torch.empty(()).uniform_(*area).item() * size * size
    for _ in range(_MAX_TRIES):
        r = torch.empty(()).uniform_(*ratio).item()
        w, h = int(math.sqrt(a / r)), int(math.sqrt(a * r))
        x, y = (int(v) for v in torch.randint(0, size, (2,)))
        if x + w <= size and y + h <= size:
            box[y : y + h, x : x + w] = True
            return box
    raise RuntimeError(f"unimatch_box: no box of area {a:.1f} fits in {size}x{size} after {_MAX_TRIES} tries")


PARTNER_RULES = ("roll", "flip")


def roll_partner(x: torch.Tensor) -> torch.Tensor:
    """The partners of a batch: element i of the result is x[(i + 1) mod B] (torch.roll by −1 on dim 0)."""
    return torch.roll(x, shifts=-1, dims=0)


def partner_of(x: torch.Tensor, rule: str = "roll") -> torch.Tensor:
    """`roll`: x[(i + 1) mod B] (our default); `flip`: x[B − 1 − i], UniMatch V2's released rule, under
    which the middle sample of an odd batch is its own partner (docs/methods/unimatch_v2.md)."""
    if rule == "roll":
        return roll_partner(x)
    if rule == "flip":
        return x.flip(0)
    raise ValueError(f"unknown CutMix partner rule {rule!r}; choose one of {', '.join(PARTNER_RULES)}")


def mix(x: torch.Tensor, box: torch.Tensor, partner: Optional[torch.Tensor] = None, rule: str = "roll") -> torch.Tensor:
    """x with the region `box` taken from its partner.

    x: (B, ..., S, S) (images (B, 3, S, S), label maps, confidences, validity masks (B, S, S));
    box: bool (B, S, S), one box per sample. The partner defaults to `partner_of(x, rule)`, which
    needs B >= 2; pass `partner` (same shape as x) for another source, e.g. an independent
    second stream.
    """
    if box.dim() != 3 or box.shape[0] != x.shape[0] or box.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"box must be (B, S, S) matching x {tuple(x.shape)}, got {tuple(box.shape)}")
    if partner is None:
        if x.shape[0] < 2:
            raise ValueError(f"CutMix with the {rule} partner needs a batch of at least 2, got {x.shape[0]}")
        partner = partner_of(x, rule)
    elif partner.shape != x.shape:
        raise ValueError(f"partner shape {tuple(partner.shape)} differs from x {tuple(x.shape)}")
    m = box.to(device=x.device, dtype=torch.bool).view(box.shape[0], *([1] * (x.dim() - 3)), *box.shape[-2:])
    return torch.where(m, partner, x)


def cps_box_mask(height: int, width: int, n_boxes: int = 3, prop_range=(0.25, 0.5)) -> torch.Tensor:
    """G2, CPS's 3-box mask (docs/methods/cps.md): a bool H x W mask; True marks the pasted (partner) pixels.

    Per box: a ~ U(prop_range); y_prop = exp(u·ln a) with u ~ U(0, 1), x_prop = a / y_prop, both
    times √(1/n_boxes); size round((y_prop·H, x_prop·W)); offset round((H − h)·U(0,1)),
    round((W − w)·U(0,1)). Starting from all False, each box toggles its region, so overlaps
    return to False (the covered fraction averages about 25 %, not 25-50 %).
    """
    mask = torch.zeros(height, width, dtype=torch.bool)
    scale = math.sqrt(1.0 / n_boxes)
    for _ in range(n_boxes):
        a = torch.empty(()).uniform_(*prop_range).item()
        y_prop = math.exp(torch.rand(()).item() * math.log(a))
        x_prop = a / y_prop
        h, w = round(y_prop * scale * height), round(x_prop * scale * width)
        y0, x0 = round((height - h) * torch.rand(()).item()), round((width - w) * torch.rand(()).item())
        mask[y0 : y0 + h, x0 : x0 + w] ^= True
    return mask


def u2pl_half_box(height: int, width: int) -> torch.Tensor:
    """G3, U2PL's box of half the image area (for the planned `u2pl` method): a bool H x W mask.

    w is a uniform integer in [⌊W/2⌋ + 1, W − 1], h = round(H·W / (2w)); the offset is uniform in
    {0 … W − w} x {0 … H − h}.
    """
    if width < 3:
        raise ValueError(f"u2pl_half_box needs a width of at least 3, got {width}")
    w = int(torch.randint(width // 2 + 1, width, ()).item())
    h = min(height, round(height * width / (2 * w)))
    x0 = int(torch.randint(0, width - w + 1, ()).item())
    y0 = int(torch.randint(0, height - h + 1, ()).item())
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y0 : y0 + h, x0 : x0 + w] = True
    return mask


# -- box generators a method declares (docs/method_interface.md: views) -----------------------------
# Each is a small picklable value: `generator(height, width) -> bool (H, W)` box mask drawn from torch's
# global RNG. The data pipeline calls it per unlabeled sample (under that sample's own seed), so the
# boxes of step t do not depend on the world size, the number of loader workers or a resume.


@dataclass(frozen=True)
class UniMatchBox:
    """G1: UniMatch's single box, present with probability p (one per strong view)."""

    p: float = 0.5
    area: Tuple[float, float] = (0.02, 0.4)
    ratio: Tuple[float, float] = (0.3, 1 / 0.3)

    def __call__(self, height: int, width: int) -> torch.Tensor:
        if height != width:
            raise ValueError(f"UniMatchBox draws on square crops, got {height}x{width}")
        return unimatch_box(height, self.p, self.area, self.ratio)


@dataclass(frozen=True)
class ToggledBoxes:
    """G2: CPS's mask of `n_boxes` boxes, each toggling its region (overlaps return to the image)."""

    n_boxes: int = 3
    prop_range: Tuple[float, float] = (0.25, 0.5)

    def __call__(self, height: int, width: int) -> torch.Tensor:
        return cps_box_mask(height, width, self.n_boxes, self.prop_range)


@dataclass(frozen=True)
class HalfAreaBox:
    """G3: U2PL's box of half the image area (always drawn; U2PL applies it to a whole batch with p = 0.5)."""

    def __call__(self, height: int, width: int) -> torch.Tensor:
        return u2pl_half_box(height, width)
