"""DistributedDataParallel over a whole method: one DDP forward = one `training_step`.

Methods call their networks several times per step (labeled + weak + strong views,
teachers, two branches); DDP sees them as one forward whose outputs are the loss and
its logged terms, so gradient hooks fire once per backward. Only parameters with
`requires_grad` are synchronised: teachers (EMA copies) are left alone. Buffers are
not broadcast: with synchronised BatchNorm every rank computes the same running
statistics, as does every EMA teacher of identical students (they are synced once, at start).
"""

from __future__ import annotations

import contextlib
import inspect

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .distributed import DistributedContext


def _no_buffer_sync_per_forward() -> dict:
    """Buffers are synced once at construction, never per forward (the keyword changed in torch 2.10+)."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class _TrainingStep(nn.Module):
    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, batch, progress: float):
        return self.method.training_step(batch, progress)


class StepRunner:
    """`run(batch, progress) -> (loss, logs)`; `accumulating()` skips the gradient all-reduce."""

    def __init__(self, method: nn.Module, context: DistributedContext, find_unused_parameters: bool = False):
        self.method = method
        self.ddp = None
        if context.enabled:
            device_ids = [context.device.index] if context.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(_TrainingStep(method), device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters,
                                               **_no_buffer_sync_per_forward())

    def run(self, batch, progress: float) -> tuple[torch.Tensor, dict]:
        if self.ddp is None:
            return self.method.training_step(batch, progress)
        return self.ddp(batch, progress)

    def accumulating(self):
        """Context for every pass but the last of a step: gradients stay local until then."""
        return self.ddp.no_sync() if self.ddp is not None else contextlib.nullcontext()
