"""Collectives a method may use without importing the engine (docs/method_interface.md).

Rank, world size and gathers over the processes `torchrun` started. In a single process (no
initialised process group) every function is the identity, so a method's code is the same on 1 or N
processes. Results never carry gradients: these are for statistics and memory (queues, counts),
not for the loss graph (DDP averages the gradients).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


@torch.no_grad()
def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over ranks, in place (the tensor itself in one process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


@torch.no_grad()
def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor` concatenated along dim 0 in rank order; the first dimension may differ per rank.

    The row counts are gathered first, each rank pads its rows to the largest count, one
    `all_gather` moves the padded blocks and the padding is cut off again. All ranks get the same
    result. In one process: `tensor` itself (detached).
    """
    tensor = tensor.detach()
    if not is_distributed():
        return tensor
    size = world_size()
    count = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(size)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    longest = max(counts)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    blocks = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(blocks, padded.contiguous())
    return torch.cat([block[:n] for block, n in zip(blocks, counts)])
