"""Segmentation networks: DeepLabV3+ on timm encoders, and weight loading."""

from .deeplabv3plus import DeepLabV3Plus, build_model

__all__ = ["DeepLabV3Plus", "build_model"]
