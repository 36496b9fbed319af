"""Range checks of every typed config option, run when the config is built.

OmegaConf checks each value's type; `check_config` then checks its range or choices, from one table of
(key, check, allowed-range text), and stops at the first bad value with one line:

    invalid value for 'train.momentum': -0.5 (allowed: >= 0)

It also expands a leading `~` in the path options (`output_dir`, `data.root`, ...), so the resolved
config.yaml records the real path. `load_config` and configs rebuilt from a checkpoint both call it,
before anything is written or trained.
"""

from __future__ import annotations

import math
import os
import re
from numbers import Integral, Real
from typing import Any, Callable, List, Tuple

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import SemisegError

Check = Callable[[Any], bool]

PATH_KEYS = ("output_dir", "data.root", "data.splits_dir", "data.labeled_list", "data.unlabeled_list",
             "data.val_list", "data.target.root", "data.target.unlabeled_list", "data.target.val_list",
             "model.pretrained")
EVAL_MODES = ("original", "center_crop", "resize", "sliding_window")
AMP_MODES = ("off", "bf16", "fp16", "auto")
OPTIMIZERS = ("sgd", "adamw")
WEAK_PIPELINES = ("unimatch", "cps", "u2pl")
SYNTHETIC_STYLES = ("a", "b")
OUTPUT_STRIDES = (8, 16, 32)
_DEVICE = re.compile(r"(auto|cpu|cuda(:\d+)?)")


def _int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def int_at_least(low: int) -> Tuple[Check, str]:
    return (lambda v: _int(v) and v >= low), f">= {low}"


def real_at_least(low: float) -> Tuple[Check, str]:
    return (lambda v: _real(v) and v >= low), f">= {low}"


def real_above(low: float) -> Tuple[Check, str]:
    return (lambda v: _real(v) and v > low), f"> {low}"


def real_between(low: float, high: float, high_open: bool = False) -> Tuple[Check, str]:
    """low <= x <= high (x < high when `high_open`)."""
    if high_open:
        return (lambda v: _real(v) and low <= v < high), f"{low} <= x < {high}"
    return (lambda v: _real(v) and low <= v <= high), f"{low} <= x <= {high}"


def one_of(*choices) -> Tuple[Check, str]:
    return (lambda v: v in choices and not isinstance(v, bool)), ", ".join(map(str, choices))


def increasing_pair() -> Tuple[Check, str]:
    def check(v) -> bool:
        return (isinstance(v, (list, tuple)) and len(v) == 2 and all(_real(x) for x in v)
                and 0 < v[0] <= v[1])

    return check, "two numbers [lo, hi] with 0 < lo <= hi"


def optional(rule: Tuple[Check, str]) -> Tuple[Check, str]:
    check, text = rule
    return (lambda v: v is None or check(v)), f"{text}, or null"


# (key, (check, allowed-range text)); `null` is allowed only where `optional` says so.
RULES: List[Tuple[str, Tuple[Check, str]]] = [
    ("device", ((lambda v: isinstance(v, str) and _DEVICE.fullmatch(v) is not None), "auto, cpu, cuda or cuda:N")),
    ("data.num_labeled", optional(int_at_least(1))),
    ("data.labeled_fraction", optional(((lambda v: _real(v) and 0 < v <= 1), "0 < x <= 1"))),
    ("data.split_seed", int_at_least(0)),
    ("data.crop_size", optional(int_at_least(1))),
    ("data.weak_pipeline", optional(one_of(*WEAK_PIPELINES))),
    ("data.scale_range", increasing_pair()),
    ("data.strong_blur_sigma", increasing_pair()),
    ("data.num_workers", int_at_least(0)),
    ("data.synthetic.num_train", int_at_least(1)),
    ("data.synthetic.num_val", int_at_least(1)),
    ("data.synthetic.image_size", int_at_least(1)),
    ("data.synthetic.scene_seed", int_at_least(0)),
    ("data.synthetic.style", one_of(*SYNTHETIC_STYLES)),
    ("data.target.synthetic.style", optional(one_of(*SYNTHETIC_STYLES))),
    ("data.target.synthetic.num_train", optional(int_at_least(1))),
    ("data.target.synthetic.num_val", optional(int_at_least(1))),
    ("data.target.synthetic.image_size", optional(int_at_least(1))),
    ("data.target.synthetic.scene_seed", optional(int_at_least(0))),
    ("model.output_stride", one_of(*OUTPUT_STRIDES)),
    ("model.aspp_channels", int_at_least(1)),
    ("model.decoder_channels", int_at_least(1)),
    ("model.low_level_channels", int_at_least(1)),
    ("model.heads.representation", int_at_least(0)),
    ("train.unlabeled_batch_size", optional(int_at_least(1))),
    ("train.micro_batch_size", optional(int_at_least(1))),
    ("train.optimizer", one_of(*OPTIMIZERS)),
    ("train.lr", real_above(0)),
    ("train.lr_multi", real_above(0)),
    ("train.momentum", real_at_least(0)),
    ("train.weight_decay", real_at_least(0)),
    ("train.poly_power", real_at_least(0)),
    ("train.warmup_iters", int_at_least(0)),
    ("train.eval_every", int_at_least(0)),
    ("train.checkpoint_every", int_at_least(0)),
    ("train.log_every", int_at_least(0)),
    ("train.amp", one_of(*AMP_MODES)),
    ("eval.mode", optional(one_of(*EVAL_MODES))),
    ("eval.crop_size", optional(int_at_least(1))),
    ("eval.resize_multiple", int_at_least(1)),
]


def _shown(value) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def expand_paths(cfg: DictConfig) -> None:
    """`~` and `~user` at the start of a path option become the home folder, in place."""
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, str) and value.startswith("~"):
            OmegaConf.update(cfg, key, os.path.expanduser(value))


def check_value(key: str, value, rule: Tuple[Check, str]) -> None:
    """One line naming `key`, its value and the allowed range when `value` breaks `rule`."""
    check, allowed = rule
    if not check(value):
        if isinstance(value, float) and not math.isfinite(value):
            allowed = f"a finite number, {allowed}"
        raise SemisegError(f"invalid value for '{key}': {_shown(value)} (allowed: {allowed})")


def check_ranges(cfg: DictConfig) -> None:
    """Raise `SemisegError` naming the first option whose value is out of its range."""
    for key, rule in RULES:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        check_value(key, value, rule)


def check_config(cfg: DictConfig) -> DictConfig:
    """Expand `~` in path options, then check every option's range; returns `cfg` (changed in place)."""
    expand_paths(cfg)
    check_ranges(cfg)
    return cfg
