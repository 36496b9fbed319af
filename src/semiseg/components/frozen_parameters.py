"""Parameters that a forward must not train (docs/method_interface.md: several updates per step)."""

from __future__ import annotations

import contextlib

from torch import nn


@contextlib.contextmanager
def frozen_parameters(*modules: nn.Module):
    """Inside, the parameters of `modules` take no gradient, while gradients still flow through the modules
    into their inputs (a discriminator scoring a segmentor's prediction); each parameter's `requires_grad`
    is restored on exit."""
    params = [p for module in modules for p in module.parameters()]
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)
