"""One file per method; importing this package fills the METHODS registry."""

from . import fixmatch, supervised  # noqa: F401
from .base import Method, MethodParams

__all__ = ["Method", "MethodParams"]
