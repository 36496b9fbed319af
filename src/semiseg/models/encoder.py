"""timm encoders with `features_only`: the low-level (stride 4) and the last feature map."""

from __future__ import annotations

import functools

import timm
import torch
from torch import nn

from ..errors import SemisegError
from ..registry import closest

# Small encoders that run at interactive speed on a CPU (demos, tests, CPU benchmarks).
CPU_ENCODERS = ("resnet18", "resnet50", "mobilenetv3_large_100", "tf_efficientnet_lite0")


@functools.lru_cache(maxsize=1)
def _timm_names() -> frozenset:
    return frozenset(timm.list_models())


def check_encoder_name(name: str) -> None:
    if name not in _timm_names():
        raise SemisegError(
            f"unknown encoder '{name}'{closest(name, _timm_names())}; any timm model name works, "
            f"e.g. {', '.join(CPU_ENCODERS)} (see `semiseg list`)"
        )


class Encoder(nn.Module):
    """Returns every feature map of the timm `features_only` body; `low_index` is the stride-4 one, the
    last is at `output_stride`, the second-to-last feeds an auxiliary head."""

    def __init__(self, name: str, output_stride: int = 16):
        super().__init__()
        check_encoder_name(name)
        if output_stride not in (8, 16, 32):
            raise SemisegError(f"model.output_stride must be 8, 16 or 32, got {output_stride}")
        kwargs = {"output_stride": output_stride} if output_stride != 32 else {}
        try:
            self.body = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        except (RuntimeError, TypeError, AssertionError) as exc:
            raise SemisegError(f"encoder '{name}' cannot be built with features_only and output stride "
                               f"{output_stride}: {str(exc).splitlines()[0]}") from None
        reductions = self.body.feature_info.reduction()
        channels = self.body.feature_info.channels()
        if 4 not in reductions:
            raise SemisegError(f"encoder '{name}' has no stride-4 feature map, which DeepLabV3+ needs")
        self.low_index = reductions.index(4)
        self.low_channels = channels[self.low_index]
        self.high_channels = channels[-1]
        self.penultimate_channels = channels[-2]
        self.name = name

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)
