"""Segmentation networks (registered in MODELS by name), their extra heads, and weight loading."""

from . import deeplabv3plus, dpt  # noqa: F401  (fill the MODELS registry)
from .build import build_model
from .deeplabv3plus import DeepLabV3Plus

__all__ = ["DeepLabV3Plus", "build_model"]
