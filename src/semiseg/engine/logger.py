"""Run logging: metrics.jsonl (always), TensorBoard scalars (when installed), console."""

from __future__ import annotations

import json
import math
from pathlib import Path


class RunLogger:
    def __init__(self, output_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional at run time
                self.writer = None

    def log(self, step: int, values: dict, kind: str = "train") -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in values.items()}
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"kind": kind, "step": step, **clean}) + "\n")
        if self.writer is not None:
            for key, value in clean.items():
                if isinstance(value, float) and math.isfinite(value):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
