"""Run logging: metrics.jsonl (always), TensorBoard scalars (when installed), console."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .checkpoint import reporting_write_errors, write_atomic


def drop_records_after(path: Path, step: int, kinds_at_step: tuple = ()) -> int:
    """Rewrite metrics.jsonl without the records of steps > `step` and those of `step` whose kind is in
    `kinds_at_step` (what a resumed run logs again), and without a torn last line (a kill mid-write);
    atomically (temporary file, then a rename). Returns how many lines went; the file is not touched when
    none does."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for index, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            if index == len(lines) - 1 and not line.endswith("\n"):
                continue  # torn by a kill: the resumed run logs that step again
            kept.append(line)
            continue
        at = record.get("step") if isinstance(record, dict) else None
        again = isinstance(at, (int, float)) and (at > step or (at == step and record.get("kind") in kinds_at_step))
        if not again:
            kept.append(line if line.endswith("\n") else line + "\n")
    if kept == lines:
        return 0
    write_atomic(path, "".join(kept).encode())
    return len(lines) - len(kept)


class RunLogger:
    """metrics.jsonl and TensorBoard events; the constructor creates `tensorboard/`, so the trainer builds
    it only once the run is validated. `purge_step`: a resumed run's first step (TensorBoard hides the
    earlier run's events from there on)."""

    def __init__(self, output_dir: Path, enabled: bool = True, purge_step: int | None = None):
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        self.writer = None
        self.events = output_dir / "tensorboard"
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional at run time
                SummaryWriter = None
            if SummaryWriter is not None:
                with reporting_write_errors(self.events):
                    self.writer = SummaryWriter(log_dir=str(self.events), purge_step=purge_step)

    def log(self, step: int, values: dict, kind: str = "train") -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in values.items()}
        with reporting_write_errors(self.path):
            with open(self.path, "a") as handle:
                handle.write(json.dumps({"kind": kind, "step": step, **clean}) + "\n")
        if self.writer is not None:
            with reporting_write_errors(self.events):
                for key, value in clean.items():
                    if isinstance(value, float) and math.isfinite(value):
                        self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            with reporting_write_errors(self.events):
                self.writer.close()
