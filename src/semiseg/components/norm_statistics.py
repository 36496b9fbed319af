"""BatchNorm running statistics that a forward must leave as they were (docs/method_interface.md)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase


def _norm_layers(*modules: nn.Module):
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, _NormBase) and layer.track_running_stats:
                yield layer


@contextlib.contextmanager
def keep_norm_statistics(*modules: nn.Module):
    """Restore the running statistics of every normalisation layer of `modules` on exit.

    A train-mode forward moves BatchNorm's `running_mean`, `running_var` and `num_batches_tracked`;
    `explain` may run one (to see what the step sees) and still leave the method as it found it.
    """
    saved = []
    for layer in _norm_layers(*modules):
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            buffer = getattr(layer, name, None)
            if buffer is not None:
                saved.append((buffer, buffer.detach().clone()))
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


@contextlib.contextmanager
def frozen_norm_statistics(*modules: nn.Module):
    """Train-mode forwards inside leave the running statistics of `modules` unchanged, and can be
    back-propagated: the momentum is 0 (running ← 1·running + 0·batch, exact) and the update counter is
    put back on exit. (Copying saved values back in place would invalidate the forward's autograd graph.)"""
    layers = list(_norm_layers(*modules))
    saved = [(layer, layer.momentum, layer.num_batches_tracked.detach().clone()
              if layer.num_batches_tracked is not None else None) for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        with torch.no_grad():
            for layer, momentum, count in saved:
                layer.momentum = momentum
                if count is not None:
                    layer.num_batches_tracked.copy_(count)
