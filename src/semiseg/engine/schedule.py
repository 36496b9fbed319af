"""Stateless learning-rate schedules: lr_t is a function of t alone, so resume needs no scheduler state."""

from __future__ import annotations

from ..methods.interface import SCHEDULES


def poly_lr(base_lr: float, step: int, total_steps: int, power: float = 0.9) -> float:
    """lr_t = lr_0·(1 − t/T)^power, set before step t."""
    return base_lr * (1.0 - min(step, total_steps) / total_steps) ** power


def remember_base_lr(optimizer) -> None:
    """Record every group's initial lr as its `base_lr` (the lr_0 of the schedule), once."""
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])


def warmup_poly_lr(base_lr: float, step: int, total_steps: int, power: float = 0.9, warmup: int = 0) -> float:
    """poly, preceded by a linear warm-up over the first W = `warmup` steps that ends on the poly value of
    step W: lr_t = poly(W)·(t + 1)/W for t < W, so the rate never jumps (docs/config.md: train.warmup_iters)."""
    if step < warmup:
        return poly_lr(base_lr, warmup, total_steps, power) * (step + 1) / warmup
    return poly_lr(base_lr, step, total_steps, power)


def set_lr(optimizer, step: int, total_steps: int, power: float, schedule: str = "poly", warmup: int = 0) -> float:
    """Sets every group's lr from its `base_lr` (`constant`: lr_0 itself; `poly` with `warmup` steps of linear
    warm-up); returns the first group's."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    for group in optimizer.param_groups:
        base = group.setdefault("base_lr", group["lr"])
        group["lr"] = warmup_poly_lr(base, step, total_steps, power, warmup) if schedule == "poly" else base
    return optimizer.param_groups[0]["lr"]
