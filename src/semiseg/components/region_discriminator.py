"""RRN's discriminator: rates a segmentation, region by region, as real (a label map) or fake (docs/methods/rrn.md).

Input: cat(class map, mm(x)), C + 3 channels, where the class map is a softmax (fake) or a one-hot label map
(real) and mm(x) is the image min-max normalised to [0, 1] per sample (`minmax_per_sample`).

Trunk (s4GAN's): four 4x4 convolutions, stride 2, padding 1, widths 64, 128, 256, 512, each followed by
LeakyReLU(0.2), the first three also by Dropout2d(0.5). It maps an S x S input to F at S/16.

Heads:
- `region: tile` (default): F is average-pooled onto a G_h x G_w grid (AdaptiveAvgPool2d), and one linear
  map 512 -> 1, shared by the cells, scores each cell. G_h = G_w = `grid`, or, with `tile` pixels,
  G = max(1, round(side / tile)) per side. Any crop works: the grid need not divide it.
- `region: image` (the released design): one cell for the whole image (a 1 x 1 grid).
  `compat_topleft_pool` reproduces the release at crop 512, which pools only the top-left 20 x 20 cells of F.
- Features for feature matching: φ = the global average of F (B x 512); with `compat_topleft_pool`, the
  same top-left 20 x 20 average the release scores.

`forward` returns (score logits B x G_h x G_w, φ); the score is sigmoid(logit).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SemisegError
from ..labels import IGNORE_INDEX

REGIONS = ("tile", "image")
TRUNK_WIDTHS = (64, 128, 256, 512)
RELEASED_POOL_CELLS = 20  # AvgPool2d(20) on conv4 of the released VOC discriminator


def minmax_per_sample(images: torch.Tensor) -> torch.Tensor:
    """Each sample's image mapped to [0, 1] by its own min and max over channels and pixels (a constant
    image maps to 0)."""
    flat = images.float().flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    scale = (high - low).clamp_min(torch.finfo(torch.float32).tiny)
    return (images.float() - low[:, None, None, None]) / scale[:, None, None, None]


def fake_input(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """cat(softmax(z), mm(x)): a segmentor's prediction as the discriminator sees it (differentiable in z)."""
    return torch.cat([logits.float().softmax(dim=1), minmax_per_sample(images)], dim=1)


def real_input(labels: torch.Tensor, images: torch.Tensor, num_classes: int) -> torch.Tensor:
    """cat(onehot(y), mm(x)): a label map as the discriminator sees it; an ignore pixel (255) is all zero."""
    ignore = labels == IGNORE_INDEX
    onehot = F.one_hot(torch.where(ignore, 0, labels).long(), num_classes).permute(0, 3, 1, 2).float()
    onehot = onehot * (~ignore).unsqueeze(1)
    return torch.cat([onehot, minmax_per_sample(images)], dim=1)


def region_grid(height: int, width: int, grid: int, tile: Optional[int]) -> Tuple[int, int]:
    """(G_h, G_w): `grid` x `grid`, or max(1, round(side / tile)) per side when `tile` (pixels) is set."""
    if tile is None:
        return grid, grid
    return max(1, round(height / tile)), max(1, round(width / tile))


class RegionDiscriminator(nn.Module):
    def __init__(self, in_channels: int, region: str = "tile", grid: int = 3, tile: Optional[int] = None,
                 compat_topleft_pool: bool = False):
        super().__init__()
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
        if compat_topleft_pool and region != "image":
            raise SemisegError("method.compat_topleft_pool reproduces the released image-level discriminator; "
                               "set method.region: image with it")
        self.region, self.grid, self.tile, self.compat_topleft_pool = region, grid, tile, compat_topleft_pool
        layers, width = [], in_channels
        for index, out in enumerate(TRUNK_WIDTHS):
            layers += [nn.Conv2d(width, out, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            if index < len(TRUNK_WIDTHS) - 1:
                layers.append(nn.Dropout2d(0.5))
            width = out
        self.trunk = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, 1)

    def grid_for(self, height: int, width: int) -> Tuple[int, int]:
        """The score grid of an input of this size."""
        if self.region == "image":
            return 1, 1
        return region_grid(height, width, self.grid, self.tile)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(x)
        if self.compat_topleft_pool:
            cells = RELEASED_POOL_CELLS
            if min(features.shape[-2:]) < cells:
                raise SemisegError(f"method.compat_topleft_pool needs crops of at least {16 * cells} px (the "
                                   f"released pooling of {cells} x {cells} cells); got {tuple(x.shape[-2:])}")
            pooled = features[:, :, :cells, :cells].mean(dim=(2, 3), keepdim=True)
            phi = pooled.flatten(1)
        else:
            pooled = F.adaptive_avg_pool2d(features, self.grid_for(*x.shape[-2:]))
            phi = features.mean(dim=(2, 3))
        scores = self.classifier(pooled.permute(0, 2, 3, 1)).squeeze(-1)  # B x G_h x G_w
        return scores, phi
