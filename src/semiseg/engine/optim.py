"""The optimiser a config asks for (methods.md §0.9): SGD (CNN methods) or AdamW (UniMatch V2).

Parameter groups come from the method (`param_groups(lr, lr_multi)`: encoder at lr, the rest at
lr·lr_multi); each group keeps its `base_lr` for the stateless poly schedule. With
`train.wd_norm_bias: false` every group is split in two and the biases and norm weights (the
1-d parameters) get no weight decay, as the CPS-family code does (`group_weight`).
"""

from __future__ import annotations

import torch

from ..errors import SemisegError

OPTIMIZERS = ("sgd", "adamw")
ADAMW_BETAS = (0.9, 0.999)  # UniMatch V2 (§6.1)


def without_decay_on_norm_and_bias(groups: list[dict]) -> list[dict]:
    """Each group split into its ≥2-d parameters (decayed) and its 1-d ones (weight_decay 0)."""
    out = []
    for group in groups:
        decayed = [p for p in group["params"] if p.dim() > 1]
        plain = [p for p in group["params"] if p.dim() <= 1]
        out.append({**group, "params": decayed})
        out.append({**group, "params": plain, "weight_decay": 0.0, "name": f"{group.get('name', 'group')}_no_decay"})
    return [g for g in out if g["params"]]


def build_optimizer(method, train_cfg) -> torch.optim.Optimizer:
    t = train_cfg
    groups = method.param_groups(t.lr, t.lr_multi)
    if not t.wd_norm_bias:
        groups = without_decay_on_norm_and_bias(groups)
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, betas=ADAMW_BETAS, weight_decay=t.weight_decay)
    raise SemisegError(f"invalid value for 'train.optimizer': '{t.optimizer}'; choose one of {', '.join(OPTIMIZERS)}")
