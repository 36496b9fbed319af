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


def set_lr(optimizer, step: int, total_steps: int, power: float, schedule: str = "poly") -> float:
    """Sets every group's lr from its `base_lr` (`constant`: lr_0 itself); returns the first group's."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    for group in optimizer.param_groups:
        base = group.setdefault("base_lr", group["lr"])
        group["lr"] = poly_lr(base, step, total_steps, power) if schedule == "poly" else base
    return optimizer.param_groups[0]["lr"]
