"""What a run directory records about itself: command, git revision, versions, seed."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from .checkpoint import reporting_write_errors

PACKAGES = ("semiseg", "torch", "torchvision", "timm", "omegaconf", "numpy", "pillow")


def git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def write_run_info(output_dir: Path, seed: int, world_size: int, extra: dict | None = None) -> None:
    info = {
        "command": sys.argv,
        "git_revision": git_revision(),
        "versions": versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "seed": seed,
        "world_size": world_size,
        "threads": torch.get_num_threads(),  # CPU threads per process (OMP_NUM_THREADS)
    }
    info.update(extra or {})
    with reporting_write_errors(output_dir / "run_info.json"):
        (output_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")
