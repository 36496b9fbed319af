"""Fills the registries: importing this module registers every method and dataset preset."""

from . import methods  # noqa: F401
from .data import presets, synthetic  # noqa: F401
from .registry import DATASETS, METHODS

__all__ = ["DATASETS", "METHODS"]
