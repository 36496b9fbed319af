"""DeepLabV3+ (Chen et al., ECCV 2018) on any timm encoder, with optional extra heads (models/heads.py)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from .encoder import Encoder
from .heads import AuxiliaryHead, RepresentationHead, VarianceHead
from .outputs import FeaturePerturbation, pick

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
        self.concat_channels = aspp_channels + low_level_channels

    def decode(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre-fusion concatenation, fused features = the classifier's input), both at stride 4."""
        high = self.aspp(high)
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=True)
        concat = torch.cat([self.reduce(low), high], dim=1)
        return concat, self.fuse(concat)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.decode(low, high)[1])


class DeepLabV3Plus(nn.Module):
    """`forward(x)` returns logits at the input resolution (bilinear, align_corners=True).

    `forward(x, perturb=f)` runs the decoder on f([low, high]) instead of the encoder features
    (UniMatch's FP stream, V2's channel dropout); `forward(x, outputs=names)` returns a dict of the
    named outputs (models/outputs.py). Extra heads: `representation` channels (0 = none),
    `variance`, `auxiliary` (models/heads.py).
    """

    def __init__(self, encoder: str, num_classes: int, output_stride: int = 16, aspp_channels: int = 256,
                 decoder_channels: int = 256, low_level_channels: int = 48, representation: int = 0,
                 variance: bool = False, auxiliary: bool = False):
        super().__init__()
        self.encoder = Encoder(encoder, output_stride)
        self.decoder = DeepLabV3PlusHead(self.encoder.low_channels, self.encoder.high_channels, num_classes,
                                         output_stride, aspp_channels, decoder_channels, low_level_channels)
        heads = {}
        if representation:
            heads["representation"] = RepresentationHead(self.decoder.concat_channels, representation)
        if variance:
            heads["variance"] = VarianceHead(decoder_channels)
        if auxiliary:
            heads["auxiliary"] = AuxiliaryHead(self.encoder.penultimate_channels, num_classes)
        self.heads = nn.ModuleDict(heads)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, perturb: Optional[FeaturePerturbation] = None,
                outputs: Optional[Sequence[str]] = None):
        size = x.shape[-2:]
        feats = self.encoder(x)
        levels = [feats[self.encoder.low_index], feats[-1]]
        if perturb is not None:
            levels = perturb(levels)
        concat, fused = self.decoder.decode(*levels)
        compute = {
            "logits": lambda: F.interpolate(self.decoder.classifier(fused), size=size, mode="bilinear",
                                            align_corners=True),
            "features": lambda: fused,
        }
        if "representation" in self.heads:
            compute["representation"] = lambda: self.heads["representation"](concat)
        if "variance" in self.heads:
            compute["variance"] = lambda: self.heads["variance"](fused, size)
        if "auxiliary" in self.heads:  # on the unperturbed encoder map
            compute["auxiliary"] = lambda: self.heads["auxiliary"](feats[-2], size)
        return pick(outputs, compute, "deeplabv3plus")

    def backbone_parameters(self):
        return self.encoder.parameters()

    def head_parameters(self):
        return (p for name, p in self.named_parameters() if not name.startswith("encoder."))


@MODELS.register("deeplabv3plus")
def build_deeplabv3plus(model_cfg, num_classes: int) -> DeepLabV3Plus:
    heads = model_cfg.heads
    return DeepLabV3Plus(model_cfg.encoder, num_classes, model_cfg.output_stride, model_cfg.aspp_channels,
                         model_cfg.decoder_channels, model_cfg.low_level_channels,
                         representation=heads.representation, variance=heads.variance, auxiliary=heads.auxiliary)
