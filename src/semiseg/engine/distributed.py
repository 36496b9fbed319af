"""Process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and small collectives.

No launcher of our own: one process without torchrun variables is world size 1 and
never touches torch.distributed. Under torchrun the backend is NCCL on GPUs and gloo
on CPU (docs/distributed.md: backends and ranks).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import SemisegError
from .environment import pick_device


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SemisegError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def init_distributed(device_name: str) -> DistributedContext:
    """Joins the torchrun process group when WORLD_SIZE > 1; picks this rank's device."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    device = pick_device(device_name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if world_size > 1 else 0)
    if device.type == "cuda":
        if device.index >= torch.cuda.device_count():
            raise SemisegError(f"local rank {local_rank} needs GPU {device.index} but only "
                               f"{torch.cuda.device_count()} are visible; lower --nproc_per_node")
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        binds_device = "device_id" in inspect.signature(dist.init_process_group).parameters  # torch >= 2.3
        kwargs = {"device_id": device} if device.type == "cuda" and binds_device else {}
        dist.init_process_group(backend=backend, **kwargs)
    return DistributedContext(rank, world_size, local_rank, device)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """In-place SUM over ranks (a no-op in one process); returns the tensor."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def mean_over_ranks(values: dict[str, float], context: DistributedContext) -> dict[str, float]:
    """Averages scalar logs over ranks (same keys on every rank): one all_reduce."""
    if not context.enabled or not values:
        return dict(values)
    keys = sorted(values)
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=context.device)
    all_reduce_sum(packed, context)
    return {k: float(v) / context.world_size for k, v in zip(keys, packed.tolist())}


def gather_objects(obj, context: DistributedContext) -> list:
    """Every rank's `obj`, in rank order (a list of one in a single process)."""
    if not context.enabled:
        return [obj]
    out = [None] * context.world_size
    dist.all_gather_object(out, obj)
    return out
