"""One file per method; importing this package fills the METHODS registry."""

from . import cps, fixmatch, mean_teacher, supervised, unimatch, unimatch_v2  # noqa: F401
from .base import Method, MethodParams

__all__ = ["Method", "MethodParams"]
