"""Typed configuration: YAML files with one level of `_base_`, `key=value` overrides.

The schema is a tree of dataclasses. Loading merges, in order: the schema
defaults, the `_base_` files (a path or a list of paths, relative to the
file that names them), the file itself, then the command-line overrides.
Any unknown key, wrong type or missing required value raises `SemisegError`
with one line naming the key (and the closest valid key); so does a value out
of its range or choices (`config_checks`, run last, which also expands `~` in
path options).

The `method` section is typed by the method: each registered method class
declares a `Params` dataclass, and `resolve_method_params` validates the
section against it once the method name is known.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf import errors as oc_errors

from . import yaml_loader
from .config_checks import check_config
from .errors import SemisegError
from .registry import closest


@dataclass
class SyntheticConfig:
    """The procedurally rendered dataset (no files): sizes, scene seed and style."""

    num_train: int = 800  # train scenes (the list that data.num_labeled / labeled_fraction carve)
    num_val: int = 120  # val scenes
    image_size: int = 64  # side of the square scenes, in pixels
    scene_seed: int = 0  # seed of the rendered scenes (independent of the training seed)
    # a (the default rendering) | b: the same scenes and label maps in other colours, ground texture and
    # lighting (a second domain: docs/datasets.md, "Across domains")
    style: str = "a"


@dataclass
class TargetSyntheticConfig:
    """The target's rendered scenes (data.target.dataset=synthetic); an unset key takes data.synthetic's value."""

    style: Optional[str] = None  # a | b: the target's rendering (e.g. b for a style-A source)
    num_train: Optional[int] = None  # target train scenes: the unlabeled stream
    num_val: Optional[int] = None  # target val scenes: the evaluation set
    image_size: Optional[int] = None  # side of the target's scenes, in pixels
    scene_seed: Optional[int] = None  # seed of the target's scenes (another seed than the source's: other layouts)


@dataclass
class TargetConfig:
    """A second dataset with the source's classes: the unlabeled stream and the val set of a cross-domain run."""

    # unset: one dataset. A preset with data.dataset's classes: data.dataset/data.root give the labeled images
    # only, this dataset the unlabeled images and the val set (with its eval mode, crop and palette)
    dataset: Optional[str] = None
    root: Optional[str] = None  # the target's folder (its preset's default when unset)
    unlabeled_list: Optional[str] = None  # "image [mask]" per line, relative to data.target.root (default: train list)
    val_list: Optional[str] = None  # "image mask" per line, relative to data.target.root (the preset's when unset)
    synthetic: TargetSyntheticConfig = field(default_factory=TargetSyntheticConfig)


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # a preset name: see `semiseg list`
    root: Optional[str] = None  # dataset folder (the preset's default when unset)
    splits_dir: Optional[str] = None  # folder of the standard split lists (shared/splits layout)
    split: Optional[str] = None  # a standard split folder, e.g. "1464" or "1_8"
    verify_splits: bool = True  # a published split list read from splits_dir must match its SHA-256 (docs/datasets.md)
    labeled_list: Optional[str] = None  # "image mask" per line, relative to root
    unlabeled_list: Optional[str] = None  # "image [mask]" per line; masks are never read
    val_list: Optional[str] = None  # "image mask" per line, relative to root (the preset's val list when unset)
    num_labeled: Optional[int] = None  # carve this many labeled images out of the labeled list
    labeled_fraction: Optional[float] = None  # ... or this fraction (the rest become unlabeled)
    split_seed: int = 0  # seed of that carve-out (independent of the training seed)
    crop_size: Optional[int] = None  # training crop S (the preset's default when unset)
    weak_pipeline: Optional[str] = None  # unimatch (W-U) | cps (W-C) | u2pl (W-P); unset: the method's own (docs/datasets.md)
    scale_range: List[float] = field(default_factory=lambda: [0.5, 2.0])  # weak view's resize factors [lo, hi]
    # σ range of the strong view's Gaussian blur, in pixels (docs/datasets.md: [0.1, 2.0] for crops of
    # 321-801 px; scale it with the crop for small images, e.g. [0.02, 0.4] for 64 px scenes)
    strong_blur_sigma: List[float] = field(default_factory=lambda: [0.1, 2.0])
    num_workers: int = 2  # DataLoader worker processes of each training loader (labeled, unlabeled)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    target: TargetConfig = field(default_factory=TargetConfig)  # cross-domain runs: unset by default


@dataclass
class HeadsConfig:
    """Extra network outputs (docs/method_interface.md); a method that reads one says so when it is off."""

    representation: int = 0  # channels of the projection head on the decoder's pre-fusion features (U2PL: 256); 0 = off
    variance: bool = False  # per-pixel variance head (1x1 conv + Softplus) on the classifier's input (DUEB)
    auxiliary: bool = False  # FCN head on the encoder's second-to-last feature map (U2PL on Cityscapes)


@dataclass
class ModelConfig:
    name: str = "deeplabv3plus"  # deeplabv3plus (timm CNN encoders) | dpt (timm DINOv2 ViT encoders, UniMatch V2)
    encoder: str = "resnet18"  # any timm model with features_only support (a timm ViT/14 for dpt)
    output_stride: int = 16  # 8, 16 or 32; ASPP rates follow (12/24/36 at 8, 6/12/18 at 16, 3/6/9 at 32)
    pretrained: Optional[str] = None  # none | a local weights file | "imagenet" (bundled lite0) | a timm tag
    aspp_channels: int = 256  # DeepLabV3+ ASPP output channels
    decoder_channels: int = 256  # DeepLabV3+ decoder conv channels
    low_level_channels: int = 48  # DeepLabV3+ projection of the low-level encoder features
    lock_backbone: bool = False  # freeze the encoder and leave it out of the optimiser (UniMatch V2 option)
    heads: HeadsConfig = field(default_factory=HeadsConfig)  # extra heads, off by default


@dataclass
class TrainConfig:
    total_iters: int = -1  # required: optimiser steps
    total_batch_size: int = 8  # labeled images per step, over all processes (global, independent of W)
    unlabeled_batch_size: Optional[int] = None  # unlabeled images per step, global (default: total_batch_size)
    # labeled images per process per forward/backward; the gradient is accumulated over
    # total_batch_size / (world size * micro_batch_size) passes (default: no accumulation)
    micro_batch_size: Optional[int] = None
    optimizer: str = "sgd"  # sgd | adamw: the default update's optimiser (a method may add its own)
    lr: float = 0.01  # backbone learning rate; the head uses lr * lr_multi
    lr_multi: float = 10.0  # learning-rate multiplier of everything outside the encoder (decoder, heads)
    momentum: float = 0.9  # SGD momentum (adamw uses betas (0.9, 0.999) instead)
    weight_decay: float = 1e-4  # optimiser weight decay (see wd_norm_bias)
    wd_norm_bias: bool = True  # False: no weight decay on biases and norm weights (CPS family: docs/methods/cps.md)
    poly_power: float = 0.9  # poly schedule: lr_t = lr * (1 - t/T)^poly_power
    warmup_iters: int = 0  # poly updates ramp linearly to the poly value of step W over the first W steps
    eval_every: int = 0  # iterations between evaluations (0: only at the end)
    checkpoint_every: int = 0  # iterations between latest.pt writes (0: eval points and end)
    log_every: int = 10  # iterations between training logs (metrics.jsonl, TensorBoard)
    amp: str = "auto"  # auto (bf16 where native, else off) | off | bf16 (GPU or CPU) | fp16 (GPU, with a GradScaler): autocast forwards, fp32 losses
    channels_last: bool = False  # NHWC weights and image batches: faster convolutions on CPUs and tensor-core GPUs
    ddp_find_unused_parameters: bool = False  # set true for a method that leaves a trainable parameter unused


@dataclass
class EvalConfig:
    mode: Optional[str] = None  # original | center_crop | resize | sliding_window (preset default when unset)
    crop_size: Optional[int] = None  # center_crop / sliding_window size (default: data.crop_size)
    resize_multiple: int = 32  # resize mode rounds sides to a multiple of this


@dataclass
class Config:
    output_dir: Optional[str] = None  # where everything a run writes goes (default: runs/<config name>)
    seed: int = 0  # training seed: network initialisation, batches and their augmentations
    deterministic: bool = False  # true: torch.use_deterministic_algorithms; false: cuDNN autotuning
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: Any = field(default_factory=lambda: {"name": "supervised"})  # `name` + that method's params
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


REQUIRED_POSITIVE = ("train.total_iters", "train.total_batch_size")


def read_yaml_mapping(path: Path) -> dict:
    """The mapping of a YAML file; a missing file, bad YAML, a duplicate key or a non-mapping is one line."""
    if not path.is_file():
        raise SemisegError(f"config file not found: {path}")
    try:
        data = yaml_loader.load(path.read_text()) or {}
    except yaml_loader.DuplicateKeyError as exc:
        raise SemisegError(f"{path} line {exc.line}: key '{exc.key}' appears twice (first on line "
                           f"{exc.first_line}); keep one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SemisegError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise SemisegError(f"{path}: a config file must be a mapping of keys, got {type(data).__name__}")
    return data


def _load_with_bases(path: Path) -> List[tuple[Path, dict]]:
    """The file's `_base_` files (one level) then the file itself, as (path, mapping)."""
    data = read_yaml_mapping(path)
    bases = data.pop("_base_", None) or []
    if isinstance(bases, str):
        bases = [bases]
    layers = []
    for base in bases:
        base_path = (path.parent / base).resolve()
        base_data = read_yaml_mapping(base_path)
        if "_base_" in base_data:
            raise SemisegError(f"{base_path}: `_base_` may only be used one level deep (named from {path})")
        layers.append((base_path, base_data))
    layers.append((path, data))
    return layers


def _key_error_message(exc: Exception, where: str) -> str:
    full_key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "?"
    if isinstance(exc, oc_errors.ConfigKeyError):
        parent_key, _, leaf = str(full_key).rpartition(".")
        node = Config()
        try:
            for part in filter(None, parent_key.split(".")):
                node = getattr(node, part)
            valid = [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []
        except AttributeError:
            valid = []
        hint = closest(leaf, valid)
        return f"{where}: unknown config key '{full_key}'{hint}"
    msg = str(getattr(exc, "msg", exc)).splitlines()[0]
    return f"{where}: invalid value for '{full_key}': {msg}"


def _section_given_a_value(base: Any, layer: Any, prefix: str = "") -> Optional[str]:
    """The dotted key where `layer` puts a plain value on a section (a mapping) of `base`, if any."""
    if not isinstance(layer, (dict, DictConfig)):
        return None
    for key, value in layer.items():
        node = base.get(key) if isinstance(base, (dict, DictConfig)) else None
        if isinstance(node, (dict, DictConfig)):
            if not isinstance(value, (dict, DictConfig)) and value is not None:
                return f"{prefix}{key}"
            found = _section_given_a_value(node, value, f"{prefix}{key}.")
            if found:
                return found
    return None


def _merge(base: DictConfig, layer: Any, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except (oc_errors.ConfigKeyError, oc_errors.ValidationError) as exc:
        section = None if getattr(exc, "full_key", None) or getattr(exc, "key", None) else \
            _section_given_a_value(base, layer)
        if section:
            raise SemisegError(f"{where}: '{section}' is a section, not a value: set one of its keys, e.g. "
                               f"{section}.<key>=... (see docs/config.md)") from None
        raise SemisegError(_key_error_message(exc, where)) from None
    except oc_errors.OmegaConfBaseException as exc:
        raise SemisegError(f"{where}: {str(exc).splitlines()[0]}") from None


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """`key=value` pairs as a config; each value is read by the config files' YAML loader (`off` stays a string)."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise SemisegError(f"override '{item}' is not of the form key=value (e.g. train.total_iters=100)")
    cfg = OmegaConf.create()
    for item in overrides:
        key, _, text = item.partition("=")
        try:
            value = yaml_loader.load(text)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise SemisegError(f"command line: cannot parse overrides: '{item}': value is not valid YAML "
                               f"({problem})") from None
        try:
            OmegaConf.update(cfg, key, value, force_add=True)
        except (oc_errors.OmegaConfBaseException, ValueError, KeyError) as exc:
            raise SemisegError(f"command line: cannot parse overrides: '{item}': "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return cfg


def load_config(path: Optional[str | Path], overrides: Sequence[str] = ()) -> DictConfig:
    """Schema defaults <- bases <- file <- overrides, validated; returns a typed DictConfig."""
    cfg = OmegaConf.structured(Config)
    if path is not None:
        for layer_path, data in _load_with_bases(Path(path)):
            cfg = _merge(cfg, data, str(layer_path))
    cfg = _merge(cfg, parse_overrides(overrides), "command line")
    for key in REQUIRED_POSITIVE:
        value = OmegaConf.select(cfg, key)
        if value is None or value <= 0:
            raise SemisegError(f"missing required value '{key}' (set it in the config or as {key}=N)")
    if cfg.train.warmup_iters >= cfg.train.total_iters:
        raise SemisegError(f"train.warmup_iters ({cfg.train.warmup_iters}) must be below train.total_iters "
                           f"({cfg.train.total_iters}): the warm-up ends on the poly rate of its last step")
    method = cfg.method
    if not isinstance(method, DictConfig) or not isinstance(method.get("name"), str):
        raise SemisegError("config key 'method.name' must name a method (see `semiseg list`)")
    return check_config(cfg)


def resolve_method_params(cfg: DictConfig, params_cls: type) -> Any:
    """Validate the `method` section against the method's `Params` dataclass."""
    schema = OmegaConf.structured(params_cls)
    section = OmegaConf.to_container(cfg.method, resolve=True)
    section.pop("name", None)
    try:
        merged = OmegaConf.merge(schema, section)
    except (oc_errors.ConfigKeyError, oc_errors.ValidationError) as exc:
        full_key = f"method.{getattr(exc, 'full_key', '?')}"
        if isinstance(exc, oc_errors.ConfigKeyError):
            valid = [f.name for f in dataclasses.fields(params_cls)]
            raise SemisegError(
                f"unknown config key '{full_key}'{closest(str(exc.key), valid)} for method "
                f"'{cfg.method.name}'; valid keys: {', '.join(['name'] + valid)}"
            ) from None
        raise SemisegError(f"invalid value for '{full_key}': {str(exc.msg).splitlines()[0]}") from None
    return OmegaConf.to_object(merged)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
