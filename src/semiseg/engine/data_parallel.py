"""DistributedDataParallel per update: one DDP forward = one `update.loss(batch, ctx)`.

Methods call their networks several times per step (labeled + weak + strong views, teachers, two
branches); DDP sees them as one forward whose outputs are the loss and its logged terms, so gradient
hooks fire once per backward. Each update of a method (docs/method_interface.md) gets its own
wrapper over exactly the modules its optimiser steps: their gradients are all-reduced after the
update's backward, and no other parameter is touched (teachers are not trainable; a discriminator's
gradients are reduced by its own update). Buffers are not broadcast per forward: with synchronised BatchNorm
every rank computes the same running statistics. EMA teachers are in no wrapper: they agree across ranks
because every rank builds the networks under the same seed and averages identical students.
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


class _UpdateForward(nn.Module):
    """Registers the update's modules (so DDP sees their parameters) and runs its loss."""

    def __init__(self, update):
        super().__init__()
        self.stepped = nn.ModuleList(update.modules)
        self.loss = update.loss

    def forward(self, batch, ctx):
        return self.loss(batch, ctx)


class UpdateRunner:
    """`run(batch, ctx) -> (loss, logs)` for one update; `accumulating()` skips the gradient all-reduce."""

    def __init__(self, update, context: DistributedContext, find_unused_parameters: bool = False):
        self.update = update
        self.ddp = None
        if context.enabled:
            device_ids = [context.device.index] if context.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(_UpdateForward(update), device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters,
                                               **_no_buffer_sync_per_forward())

    def run(self, batch, ctx) -> tuple[torch.Tensor, dict]:
        if self.ddp is None:
            return self.update.loss(batch, ctx)
        return self.ddp(batch, ctx)

    def accumulating(self):
        """Context for every pass but the last of a step: gradients stay local until then."""
        return self.ddp.no_sync() if self.ddp is not None else contextlib.nullcontext()
