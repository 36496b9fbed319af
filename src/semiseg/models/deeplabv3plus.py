"""DeepLabV3+ (Chen et al., ECCV 2018) on any timm encoder: the DLv3+-U variant of methods.md §0.10."""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SemisegError
from .encoder import Encoder
from .weights import load_pretrained

ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ASPPPooling(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.project = conv_bn_relu(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.project(F.adaptive_avg_pool2d(x, 1))
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    """1x1, three atrous 3x3 and image pooling branches, concatenated and projected."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, int, int]):
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(cin, cout)] + [conv_bn_relu(cin, cout, 3, r) for r in rates] + [ASPPPooling(cin, cout)]
        )
        self.project = conv_bn_relu(5 * cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class DeepLabV3PlusHead(nn.Module):
    """ASPP on the high-level map, fused with the projected stride-4 map, then a classifier."""

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, output_stride: int,
                 aspp_channels: int = 256, decoder_channels: int = 256, low_level_channels: int = 48):
        super().__init__()
        self.aspp = ASPP(high_channels, aspp_channels, ASPP_RATES[output_stride])
        self.reduce = conv_bn_relu(low_channels, low_level_channels)
        self.fuse = nn.Sequential(
            conv_bn_relu(aspp_channels + low_level_channels, decoder_channels, 3),
            conv_bn_relu(decoder_channels, decoder_channels, 3),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        high = self.aspp(high)
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=True)
        return self.classifier(self.fuse(torch.cat([self.reduce(low), high], dim=1)))


FeaturePerturbation = Callable[[List[torch.Tensor]], List[torch.Tensor]]


class DeepLabV3Plus(nn.Module):
    """`forward(x)` returns logits at the input resolution (bilinear, align_corners=True, §0.1).

    `forward(x, perturb=f)` runs the decoder on f([low, high]) instead of the encoder features
    (the feature-perturbation hook: UniMatch's FP stream, V2's channel dropout); f may change the
    batch size, e.g. append a perturbed copy, and the logits follow it.
    """

    def __init__(self, encoder: str, num_classes: int, output_stride: int = 16, aspp_channels: int = 256,
                 decoder_channels: int = 256, low_level_channels: int = 48):
        super().__init__()
        self.encoder = Encoder(encoder, output_stride)
        self.decoder = DeepLabV3PlusHead(self.encoder.low_channels, self.encoder.high_channels, num_classes,
                                         output_stride, aspp_channels, decoder_channels, low_level_channels)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, perturb: Optional[FeaturePerturbation] = None) -> torch.Tensor:
        low, high = self.encoder(x)
        if perturb is not None:
            low, high = perturb([low, high])
        logits = self.decoder(low, high)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)

    def backbone_parameters(self):
        return self.encoder.parameters()

    def head_parameters(self):
        return self.decoder.parameters()


def build_model(model_cfg, num_classes: int) -> nn.Module:
    """The network a config describes (`model.name`: deeplabv3plus | dpt), with its pretrained encoder weights."""
    name = getattr(model_cfg, "name", "deeplabv3plus")
    if name == "dpt":
        from .dpt import DPTSegmenter

        model = DPTSegmenter(model_cfg.encoder, num_classes)
    elif name == "deeplabv3plus":
        model = DeepLabV3Plus(model_cfg.encoder, num_classes, model_cfg.output_stride, model_cfg.aspp_channels,
                              model_cfg.decoder_channels, model_cfg.low_level_channels)
    else:
        raise SemisegError(f"unknown model.name '{name}'; choose deeplabv3plus or dpt")
    if model_cfg.pretrained not in (None, "", "none"):
        load_pretrained(model.encoder, model_cfg.pretrained)
    if getattr(model_cfg, "lock_backbone", False):  # V2's option: a frozen encoder, left out of the optimiser
        model.encoder.requires_grad_(False)
    return model
