"""Stateless learning-rate schedule (methods.md §0.9): lr_t is a function of t alone."""


def poly_lr(base_lr: float, step: int, total_steps: int, power: float = 0.9) -> float:
    """lr_t = lr_0·(1 − t/T)^power, set before step t (so resume needs no scheduler state)."""
    return base_lr * (1.0 - min(step, total_steps) / total_steps) ** power


def set_lr(optimizer, step: int, total_steps: int, power: float) -> float:
    """Sets every group's lr from its `base_lr`; returns the first group's."""
    for group in optimizer.param_groups:
        group["lr"] = poly_lr(group["base_lr"], step, total_steps, power)
    return optimizer.param_groups[0]["lr"]
