"""How a global batch is split over processes and accumulation passes.

`train.total_batch_size` (labeled) and `train.unlabeled_batch_size` are global: the
images of step t are the same whatever the world size W. Each process takes a
contiguous share of B / W images and runs it as A passes of `micro_batch_size`
images, accumulating gradients:  B = W · A · micro_batch_size.  Without
`micro_batch_size` there is one pass per step (A = 1). The unlabeled batch is
split into the same W · A parts. The learning rate is never rescaled by any of this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import SemisegError


@dataclass(frozen=True)
class BatchPlan:
    world_size: int
    accumulation_steps: int
    labeled_per_pass: int  # images per process per forward/backward
    unlabeled_per_pass: int

    @property
    def parts(self) -> int:
        """Number of equal parts each global batch is cut into (W · A)."""
        return self.world_size * self.accumulation_steps


def plan_batches(total_batch_size: int, unlabeled_batch_size: Optional[int], micro_batch_size: Optional[int],
                 world_size: int) -> BatchPlan:
    """The split of the global batches for `world_size` processes, or one SemisegError line."""
    b, w = total_batch_size, world_size
    if b % w:
        raise SemisegError(f"train.total_batch_size={b} is not divisible by the world size {w}; "
                           f"use a multiple of {w} (it is the global batch, over all processes)")
    per_rank = b // w
    micro = micro_batch_size or per_rank
    if micro < 1 or per_rank % micro:
        raise SemisegError(f"train.micro_batch_size={micro} must divide the per-process batch "
                           f"total_batch_size / world size = {b} / {w} = {per_rank}")
    accumulation = per_rank // micro
    b_u = unlabeled_batch_size or b
    parts = w * accumulation
    if b_u % parts:
        raise SemisegError(f"train.unlabeled_batch_size={b_u} must split into world size x accumulation "
                           f"steps = {w} x {accumulation} = {parts} equal parts")
    return BatchPlan(w, accumulation, micro, b_u // parts)


def plan_from_config(train_cfg, world_size: int) -> BatchPlan:
    return plan_batches(train_cfg.total_batch_size, train_cfg.unlabeled_batch_size, train_cfg.micro_batch_size,
                        world_size)
