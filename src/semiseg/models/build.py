"""The one place that builds a network from `model.*` (docs/config.md): registry lookup, weights, freezing."""

from __future__ import annotations

from torch import nn

from ..config import HeadsConfig
from ..registry import MODELS
from .weights import load_pretrained


class _WithDefaults:
    """`model_cfg` as given, with the schema's `heads` when an older or partial config lacks them."""

    def __init__(self, model_cfg):
        self._cfg = model_cfg

    def __getattr__(self, key):
        if key == "heads" and getattr(self._cfg, "heads", None) is None:
            return HeadsConfig()
        return getattr(self._cfg, key)


def build_model(model_cfg, num_classes: int) -> nn.Module:
    """The network `model.name` names (deeplabv3plus | dpt), with its pretrained encoder weights."""
    cfg = _WithDefaults(model_cfg)
    model = MODELS.get(getattr(model_cfg, "name", "deeplabv3plus"))(cfg, num_classes)
    if cfg.pretrained not in (None, "", "none"):
        load_pretrained(model.encoder, cfg.pretrained)
    if getattr(model_cfg, "lock_backbone", False):  # V2's option: a frozen encoder, left out of the optimiser
        model.encoder.requires_grad_(False)
    return model
