"""Extra heads a segmentation network can carry, switched on by `model.heads.*` (docs/config.md).

- `RepresentationHead` (U2PL's projection head): 3x3 → C, BN, ReLU, Dropout2d(0.1), twice, then 1x1 → C,
  on the decoder's pre-fusion features (docs/methods/README.md lists the methods that read it).
- `VarianceHead` (DUEB): 1x1 → 1 and Softplus on the classifier's input: one σ² ≥ 0 per pixel.
- `AuxiliaryHead` (U2PL on Cityscapes): an FCN head, 3x3 → 256, BN, ReLU, Dropout2d(0.1), 1x1 → classes, on
  the encoder's second-to-last feature map.
They are ordinary head parameters: in the head group of the optimiser, saved with the network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REPRESENTATION_DROPOUT = 0.1
AUXILIARY_CHANNELS = 256


def _conv_bn_relu_drop(cin: int, cout: int, dropout: float) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout)]


class RepresentationHead(nn.Sequential):
    def __init__(self, cin: int, channels: int, dropout: float = REPRESENTATION_DROPOUT):
        super().__init__(*_conv_bn_relu_drop(cin, channels, dropout), *_conv_bn_relu_drop(channels, channels, dropout),
                         nn.Conv2d(channels, channels, 1))


class VarianceHead(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, 1, 1)

    def forward(self, features: torch.Tensor, size) -> torch.Tensor:
        variance = F.softplus(self.conv(features))
        return F.interpolate(variance, size=size, mode="bilinear", align_corners=True)


class AuxiliaryHead(nn.Module):
    def __init__(self, cin: int, num_classes: int, channels: int = AUXILIARY_CHANNELS, dropout: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu_drop(cin, channels, dropout), nn.Conv2d(channels, num_classes, 1))

    def forward(self, features: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(self.body(features), size=size, mode="bilinear", align_corners=True)
