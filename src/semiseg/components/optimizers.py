"""The default optimiser of a segmentor (docs/config.md, `train.*`): SGD or AdamW over parameter groups.

Groups come from `param_groups_of` (encoder at lr, the rest at lr·lr_multi). With
`train.wd_norm_bias: false` every group is split in two and the biases and norm weights (the 1-d
parameters) get no weight decay, as the CPS-family code does. The engine records each group's
initial lr and applies the method's schedule to it (poly by default).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..errors import SemisegError

OPTIMIZERS = ("sgd", "adamw")
ADAMW_BETAS = (0.9, 0.999)  # UniMatch V2 (docs/methods/unimatch_v2.md)


def param_groups_of(model: nn.Module, lr: float, lr_multi: float) -> list[dict]:
    """[backbone at lr, head (decoder and every extra head) at lr·lr_multi], trainable parameters only."""
    backbone = list(model.backbone_parameters())
    ids = {id(p) for p in backbone}
    head = [p for p in model.parameters() if id(p) not in ids]
    return [
        {"params": [p for p in backbone if p.requires_grad], "lr": lr, "name": "backbone"},
        {"params": [p for p in head if p.requires_grad], "lr": lr * lr_multi, "name": "head"},
    ]


def merge_groups(*group_lists: Iterable[dict]) -> list[dict]:
    """Groups of several networks with the same layout joined name by name (e.g. CPS's two branches)."""
    lists = [list(groups) for groups in group_lists]
    return [{**first, "params": [p for groups in column for p in groups["params"]]}
            for first, column in zip(lists[0], zip(*lists))]


def without_decay_on_norm_and_bias(groups: list[dict]) -> list[dict]:
    """Each group split into its ≥2-d parameters (decayed) and its 1-d ones (weight_decay 0)."""
    out = []
    for group in groups:
        decayed = [p for p in group["params"] if p.dim() > 1]
        plain = [p for p in group["params"] if p.dim() <= 1]
        out.append({**group, "params": decayed})
        out.append({**group, "params": plain, "weight_decay": 0.0, "name": f"{group.get('name', 'group')}_no_decay"})
    return [g for g in out if g["params"]]


def default_optimizer(groups: list[dict], train_cfg) -> torch.optim.Optimizer:
    """`train.optimizer` (sgd | adamw) with `train.lr`, momentum / betas and weight decay over `groups`."""
    t = train_cfg
    if not t.wd_norm_bias:
        groups = without_decay_on_norm_and_bias(groups)
    groups = [g for g in groups if g["params"]]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, betas=ADAMW_BETAS, weight_decay=t.weight_decay)
    raise SemisegError(f"invalid value for 'train.optimizer': '{t.optimizer}'; choose one of {', '.join(OPTIMIZERS)}")
