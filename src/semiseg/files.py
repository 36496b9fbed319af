"""Reading torch files safely: `torch.load(weights_only=True)`, one clear line when it fails.

A bottom-level module: checkpoints (engine) and pretrained weights (models) both read through it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import SemisegError


def safe_torch_load(path: str | Path, what: str, missing_hint: str = ""):
    """torch.load(weights_only=True) on CPU; a missing or unreadable file is one SemisegError line."""
    path = Path(path)
    if not path.is_file():
        raise SemisegError(f"{what} not found: {path}{missing_hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SemisegError(f"{path}: not a readable {what} ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:120]})") from None
