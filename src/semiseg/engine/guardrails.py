"""Non-finite loss guardrail: stop before the optimiser step, naming the iteration and the term.

Every rank checks its own passes; one all-reduce per step tells all ranks, so they stop
together (no rank is left waiting in a collective) and nothing is written after the
last good checkpoint. Every rank raises the same line, naming the rank that saw it.
"""

from __future__ import annotations

import math

import torch

from ..errors import SemisegError
from .distributed import DistributedContext, all_reduce_sum, gather_objects


class StepLosses:
    """The loss and logged terms of the passes of one step (detached)."""

    def __init__(self):
        self.passes: list[tuple[torch.Tensor, dict]] = []

    def add(self, loss: torch.Tensor, logs: dict) -> None:
        terms = {k: (v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v)))
                 for k, v in logs.items()}
        self.passes.append((loss.detach().float(), terms))

    def nonfinite_flag(self) -> torch.Tensor:
        """1.0 when some pass's loss is NaN or inf, as a tensor (no host sync)."""
        return torch.stack([~torch.isfinite(loss) for loss, _ in self.passes]).any().float().reshape(1)

    def means(self) -> dict[str, float]:
        """loss and every term averaged over the passes (what one pass over the whole batch logs)."""
        keys = ["loss"] + list(self.passes[0][1])
        sums = {k: 0.0 for k in keys}
        for loss, terms in self.passes:
            sums["loss"] += float(loss)
            for k, v in terms.items():
                sums[k] += float(v)
        return {k: v / len(self.passes) for k, v in sums.items()}

    def describe_nonfinite(self) -> str | None:
        for index, (loss, terms) in enumerate(self.passes):
            if math.isfinite(float(loss)):
                continue
            bad = [f"{k}={float(v):.4g}" for k, v in terms.items() if not math.isfinite(float(v))]
            where = f" (pass {index + 1} of {len(self.passes)})" if len(self.passes) > 1 else ""
            if bad:
                return f"non-finite loss term {', '.join(bad)}{where}"
            finite = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
            return f"non-finite total loss={float(loss):.4g} with finite terms {finite or '(none logged)'}{where}"
        return None


def stop_if_nonfinite(losses: StepLosses, iteration: int, context: DistributedContext, last_checkpoint: str,
                      update: str | None = None) -> None:
    """Raises the same SemisegError on every rank when any rank saw a non-finite loss at `iteration`
    (`update`: the name of the method's update it belongs to, when it has several)."""
    flag = all_reduce_sum(losses.nonfinite_flag(), context)
    if float(flag) == 0:
        return
    found = gather_objects(losses.describe_nonfinite(), context)  # only on this failure path
    rank, what = next((r, text) for r, text in enumerate(found) if text)
    if update:
        what += f" in update '{update}'"
    if context.enabled:
        what += f" on rank {rank}"
    raise SemisegError(f"{what} at iteration {iteration}: stopped before the optimiser step; {last_checkpoint}. "
                       "Lower train.lr, try train.amp=off, or check the data")
