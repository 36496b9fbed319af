"""Device choice, seeding and determinism (docs/distributed.md: backends and ranks, guardrails)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from ..errors import SemisegError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SemisegError(f"invalid value for 'device': '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SemisegError(f"device={name} but no CUDA GPU is available; use device=cpu")
    return device


def seed_everything(seed: int, rank: int = 0) -> None:
    """torch, numpy and python RNGs seeded with seed + rank."""
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)


def set_deterministic(enabled: bool) -> None:
    """`deterministic: true`: deterministic kernels only (an op without one raises); false: cudnn autotuning."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
