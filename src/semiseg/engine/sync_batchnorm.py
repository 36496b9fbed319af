"""Batch statistics over all processes when world size > 1 (docs/distributed.md: SyncBN whenever W > 1).

On GPUs this is timm's converter (torch's `nn.SyncBatchNorm`, plus timm's BatchNorm+act
layers, whose activation torch's converter would drop). torch's version refuses CPU tensors,
so CPU runs (gloo) use `CrossProcessBatchNorm`: the per-channel sum, sum of squares
and count are all-reduced by `SumOverRanks`, whose backward all-reduces the gradients
of those sums. Each rank therefore gets the gradient of the global batch statistics,
as with one process and the whole batch. These collectives run on a process group of
their own, so they never interleave with DDP's gradient buckets.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from timm.layers import BatchNormAct2d
from timm.layers import convert_sync_batchnorm as timm_convert_sync_batchnorm
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import SemisegError


class SumOverRanks(torch.autograd.Function):
    """y = Σ_ranks x; the gradient of x is Σ_ranks ∂L_r/∂y (every rank's loss depends on y)."""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


class CrossProcessBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics cover the samples of every rank (any device, any backend)."""

    process_group = None  # None: the default group

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        synced = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        y = self._normalize_over_ranks(x) if synced else super().forward(x)
        for post in ("drop", "act"):  # carried over from timm's BatchNormAct2d
            if hasattr(self, post):
                y = getattr(self, post)(y)
        return y

    def _normalize_over_ranks(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))
        local = x.double()
        count = torch.full((1,), x.numel() // x.shape[1], dtype=torch.float64, device=x.device)
        stats = torch.cat([local.sum(dims), (local * local).sum(dims), count])
        stats = SumOverRanks.apply(stats, self.process_group)
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels:2 * channels] / total - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), float(total.detach()))
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (local - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, total: float) -> None:
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (total / max(total - 1.0, 1.0))
        self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)


CONVERTIBLE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, BatchNormAct2d)


def _to_cross_process(module: _BatchNorm, group) -> CrossProcessBatchNorm:
    new = CrossProcessBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
    new.process_group = group
    if module.affine:
        new.weight, new.bias = module.weight, module.bias
    if module.track_running_stats:
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
    for post in ("drop", "act"):
        if hasattr(module, post):
            new.add_module(post, getattr(module, post))
    new.train(module.training)
    return new


def _check_convertible(module: nn.Module) -> None:
    """Only layers whose forward is plain BatchNorm (+ timm's drop/act) can be swapped safely."""
    for sub in module.modules():
        if isinstance(sub, _BatchNorm) and type(sub) not in CONVERTIBLE:
            raise SemisegError(f"cannot synchronise BatchNorm over processes: {type(sub).__name__} is a subclass "
                               "with its own forward; use nn.BatchNorm2d or timm's BatchNormAct2d")


def convert_to_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replaces every BatchNorm*d below `module` in place (state_dict keys unchanged).

    Called by every rank at the same point (it creates a process group when one is up).
    """
    _check_convertible(module)
    if device.type == "cuda":
        return timm_convert_sync_batchnorm(module)
    group = dist.new_group() if dist.is_available() and dist.is_initialized() else None
    _replace_batchnorm(module, group)
    return module


def _replace_batchnorm(module: nn.Module, group) -> None:
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, CrossProcessBatchNorm):
            setattr(module, name, _to_cross_process(child, group))
        else:
            _replace_batchnorm(child, group)
