"""One file per method; importing this package fills the METHODS registry."""

from . import cpcl, cps, csl, dueb, fixmatch, mean_teacher, rrn, supervised, u2pl, unimatch, unimatch_v2  # noqa: F401
from .base import CutMixParams, Method, MethodParams
from .interface import StepContext, Update, Views

__all__ = ["CutMixParams", "Method", "MethodParams", "StepContext", "Update", "Views"]
