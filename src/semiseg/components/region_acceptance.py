"""From region scores to accepted pixels (docs/methods/rrn.md).

A discriminator scores a G_h x G_w grid of regions per image. Pixel row r of an H-row image belongs to
region row ⌊r·G_h / H⌋ (nearest upsampling, in integer arithmetic, so every pixel is scored and no rounding
of a float scale can move a border); columns alike. A region is accepted when its score sigmoid(logit) is
above τ; a pixel is accepted when its region is and it is valid (not padding).
"""

from __future__ import annotations

import torch


def region_index(size: int, cells: int, device=None) -> torch.Tensor:
    """For each of `size` pixel rows (or columns), the index ⌊r·cells / size⌋ of its region."""
    return torch.arange(size, device=device) * cells // size


def regions_to_pixels(cells: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """B x G_h x G_w values broadcast to B x H x W, each pixel taking its region's value."""
    rows = region_index(height, cells.shape[1], cells.device)
    cols = region_index(width, cells.shape[2], cells.device)
    return cells[:, rows][:, :, cols]


@torch.no_grad()
def accepted_regions(score_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """B x G_h x G_w bool: sigmoid(logit) > τ, in fp32."""
    return score_logits.float().sigmoid() > tau


@torch.no_grad()
def accepted_pixels(score_logits: torch.Tensor, tau: float, valid: torch.Tensor) -> torch.Tensor:
    """B x H x W bool: the pixels of accepted regions that are valid (`valid`: B x H x W)."""
    height, width = valid.shape[-2:]
    return regions_to_pixels(accepted_regions(score_logits, tau), height, width) & valid.bool()
