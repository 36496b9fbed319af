"""DPT head on a timm DINOv2 ViT: UniMatch V2's network (docs/methods/unimatch_v2.md; Ranftl et al., ICCV 2021).

Encoder: a timm ViT/14 (`vit_{small,base,large,giant}_patch14_dinov2`, position embeddings resampled
to the input by timm's `dynamic_img_size`). Four intermediate blocks, each normalised by the final
LayerNorm, class token dropped, reshaped to (D, H/14, W/14).

Head, per level i: 1x1 projection to out_channels[i]; resampling x4 (ConvTranspose 4/4), x2
(ConvTranspose 2/2), x1, x½ (3x3 conv, stride 2); a 3x3 conv (no bias) to `features`. Fusion from
level 4 down: [+ residual conv unit on the lateral input], residual conv unit, bilinear upsampling
(align_corners=True) to the next level's size (x2 for the last), 1x1 conv. Output: 3x3 conv, ReLU,
1x1 to the classes; the logits are upsampled bilinearly to the input size (V2 upsamples to
14·⌊H/14⌋ x 14·⌊W/14⌋, the same for the multiple-of-14 crops it needs). No BatchNorm anywhere.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SemisegError
from ..registry import MODELS
from .encoder import check_encoder_name
from .outputs import FeaturePerturbation, pick

PATCH = 14
# Intermediate block indices by depth (V2's `dinov2.py`): S and B 12 blocks, L 24, G 40.
LAYERS_BY_DEPTH = {12: (2, 5, 8, 11), 24: (4, 11, 17, 23), 40: (9, 19, 29, 39)}
# (features, out_channels) by embedding width (V2's `dpt.py`); S = 384, B = 768, L = 1024, G = 1536.
HEAD_BY_WIDTH = {
    384: (64, (48, 96, 192, 384)),
    768: (128, (96, 192, 384, 768)),
    1024: (256, (256, 512, 1024, 1024)),
    1536: (384, (1536, 1536, 1536, 1536)),
}


def default_layers(depth: int) -> tuple[int, ...]:
    """V2's indices for the released depths; evenly spaced blocks otherwise (e.g. tiny test ViTs)."""
    return LAYERS_BY_DEPTH.get(depth, tuple(depth * k // 4 - 1 for k in range(1, 5)))


def default_head(width: int) -> tuple[int, tuple[int, ...]]:
    """V2's head sizes for the released widths; the S/B rule (width/6, width·(1/8, 1/4, 1/2, 1)) otherwise."""
    if width in HEAD_BY_WIDTH:
        return HEAD_BY_WIDTH[width]
    return max(8, width // 6), tuple(max(4, width * k // 8) for k in (1, 2, 4, 8))


class ViTEncoder(nn.Module):
    """A timm ViT returning the four normalised intermediate feature maps (B, D, H/14, W/14)."""

    def __init__(self, name: str, layers: Optional[Sequence[int]] = None, **timm_kwargs):
        super().__init__()
        check_encoder_name(name)
        try:
            self.body = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True, **timm_kwargs)
        except (RuntimeError, TypeError, AssertionError) as exc:
            raise SemisegError(f"encoder '{name}' cannot be built as a ViT for the DPT head: "
                               f"{str(exc).splitlines()[0]}") from None
        if not hasattr(self.body, "forward_intermediates") or not hasattr(self.body, "blocks"):
            raise SemisegError(f"encoder '{name}' is not a timm ViT; model.name=dpt needs e.g. "
                               "vit_small_patch14_dinov2")
        self.name = name
        self.width = self.body.embed_dim
        self.layers = tuple(layers) if layers is not None else default_layers(len(self.body.blocks))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.body.forward_intermediates(x, indices=list(self.layers), norm=True, output_fmt="NCHW",
                                               intermediates_only=True)


class ResidualConvUnit(nn.Module):
    """x + conv(relu(conv(relu(x)))), 3x3 convs with bias (the DPT head has no BN)."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """[x + RCU(lateral)] -> RCU -> bilinear upsampling to `size` (x2 when None) -> 1x1 conv."""

    def __init__(self, features: int, has_lateral: bool):
        super().__init__()
        self.lateral = ResidualConvUnit(features) if has_lateral else None
        self.unit = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, lateral: Optional[torch.Tensor] = None, size=None) -> torch.Tensor:
        if lateral is not None:
            x = x + self.lateral(lateral)
        x = self.unit(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHead(nn.Module):
    def __init__(self, width: int, num_classes: int, features: int, out_channels: Sequence[int]):
        super().__init__()
        c = list(out_channels)
        self.projects = nn.ModuleList([nn.Conv2d(width, ch, 1) for ch in c])
        self.resize = nn.ModuleList([
            nn.ConvTranspose2d(c[0], c[0], 4, stride=4),
            nn.ConvTranspose2d(c[1], c[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(c[3], c[3], 3, stride=2, padding=1),
        ])
        self.to_features = nn.ModuleList([nn.Conv2d(ch, features, 3, padding=1, bias=False) for ch in c])
        self.fuse = nn.ModuleList([FusionBlock(features, has_lateral=i < 3) for i in range(4)])
        self.output = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.ReLU(inplace=True),
                                    nn.Conv2d(features, num_classes, 1))

    def decode(self, feats: List[torch.Tensor]) -> torch.Tensor:
        """The fused path (the output convolutions' input) at 8/14 of the input resolution."""
        levels = [to_f(resize(project(f))) for f, project, resize, to_f
                  in zip(feats, self.projects, self.resize, self.to_features)]
        path = self.fuse[3](levels[3], size=levels[2].shape[-2:])
        path = self.fuse[2](path, levels[2], size=levels[1].shape[-2:])
        path = self.fuse[1](path, levels[1], size=levels[0].shape[-2:])
        return self.fuse[0](path, levels[0])

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        return self.output(self.decode(feats))


class DPTSegmenter(nn.Module):
    """ViT encoder + DPT head. `forward(x, perturb=f)` applies f to the four encoder features first
    (V2's complementary channel dropout), as `DeepLabV3Plus.forward` does to its two; `outputs` may
    ask for `logits` and `features` (the fused path), models/outputs.py."""

    def __init__(self, encoder: str, num_classes: int, layers: Optional[Sequence[int]] = None,
                 features: Optional[int] = None, out_channels: Optional[Sequence[int]] = None, **timm_kwargs):
        super().__init__()
        self.encoder = ViTEncoder(encoder, layers, **timm_kwargs)
        default_features, default_channels = default_head(self.encoder.width)
        self.decoder = DPTHead(self.encoder.width, num_classes, features or default_features,
                               out_channels or default_channels)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, perturb: Optional[FeaturePerturbation] = None,
                outputs: Optional[Sequence[str]] = None):
        h, w = x.shape[-2:]
        if h % PATCH or w % PATCH:
            raise SemisegError(f"the DPT/ViT-14 model needs sides that are multiples of {PATCH}, got {h}x{w}; "
                               "use crops of 518/798 and eval.mode=resize with eval.resize_multiple=14")
        feats = self.encoder(x)
        if perturb is not None:
            feats = perturb(feats)
        path = self.decoder.decode(feats)
        compute = {
            "logits": lambda: F.interpolate(self.decoder.output(path), size=(h, w), mode="bilinear",
                                            align_corners=True),
            "features": lambda: path,
        }
        return pick(outputs, compute, "dpt")

    def backbone_parameters(self):
        return self.encoder.parameters()

    def head_parameters(self):
        return self.decoder.parameters()


@MODELS.register("dpt")
def build_dpt(model_cfg, num_classes: int) -> DPTSegmenter:
    heads = model_cfg.heads
    extra = [name for name in ("representation", "variance", "auxiliary") if getattr(heads, name)]
    if extra:
        raise SemisegError(f"model.heads.{extra[0]} is not available with model.name=dpt (DeepLabV3+ only)")
    return DPTSegmenter(model_cfg.encoder, num_classes)
