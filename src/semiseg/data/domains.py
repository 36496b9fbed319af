"""Cross-domain runs: labeled images from one dataset, unlabeled and val images from another.

`data.dataset` / `data.root` (the source) give the labeled stream; `data.target` (a preset with the same
classes, its own root and lists) gives the unlabeled stream and the val set, and with them the evaluation
defaults: eval mode, crop and palette (docs/datasets.md, "Across domains"). Nothing here knows a method: a
method that reads unlabeled images gets the target's, `supervised` trains on the source alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Optional, Tuple

from ..errors import SemisegError
from ..registry import Registry
from .presets import DatasetSplits, Preset
from .sample import Source

TARGET_KEYS = ("root", "unlabeled_list", "val_list")  # data.target.* besides dataset and synthetic
SYNTHETIC_KEYS = ("style", "num_train", "num_val", "image_size", "scene_seed")
SOURCE_ONLY_KEYS = {"unlabeled_list": "data.target.unlabeled_list", "val_list": "data.target.val_list"}


@dataclass(frozen=True)
class TargetData:
    """`data.target` read as a `data` section by the target's preset: its root, lists and scenes (an unset
    data.target.synthetic key is data.synthetic's); the standard split lists stay data.splits_dir."""

    root: Optional[str]
    splits_dir: Optional[str]
    unlabeled_list: Optional[str]
    val_list: Optional[str]
    synthetic: Any
    verify_splits: bool = True  # data.verify_splits: the standard split lists are shared too
    key_prefix: str = "data.target."  # how the preset's messages name these keys


def _inherited(own, base, key: str):
    """data.target.synthetic.<key>, else data.synthetic.<key>."""
    value = getattr(own, key, None)
    return getattr(base, key) if value is None else value


def target_data(data_cfg) -> TargetData:
    """The target's section of the `data` config."""
    target = data_cfg.target
    synthetic = SimpleNamespace(**{key: _inherited(target.synthetic, data_cfg.synthetic, key)
                                   for key in SYNTHETIC_KEYS})
    return TargetData(root=target.root, splits_dir=getattr(data_cfg, "splits_dir", None),
                      unlabeled_list=target.unlabeled_list, val_list=target.val_list, synthetic=synthetic,
                      verify_splits=getattr(data_cfg, "verify_splits", True))


def check_same_classes(source: Preset, target: Preset) -> None:
    """One line naming both datasets and the first class that differs (by position), unless they are equal."""
    if source.class_names == target.class_names:
        return
    first = next((i for i, (a, b) in enumerate(zip(source.class_names, target.class_names)) if a != b),
                 min(source.num_classes, target.num_classes))

    def name(preset: Preset) -> str:
        return repr(preset.class_names[first]) if first < preset.num_classes else "none"

    raise SemisegError(
        f"data.dataset '{source.name}' ({source.num_classes} classes) and data.target.dataset '{target.name}' "
        f"({target.num_classes} classes) have different classes: class {first} is {name(source)} in "
        f"{source.name}, {name(target)} in {target.name}; a cross-domain run needs a target with the source's "
        "classes, in the same order"
    )


def _check_keys(data_cfg) -> None:
    """The data.target.* keys need data.target.dataset; data.unlabeled_list / val_list need it unset."""
    target = data_cfg.target
    if not target.dataset:
        given = [key for key in TARGET_KEYS if getattr(target, key, None)]
        given += [f"synthetic.{key}" for key in SYNTHETIC_KEYS if getattr(target.synthetic, key, None) is not None]
        if given:
            raise SemisegError(f"data.target.{given[0]} is set but data.target.dataset is not: name the target "
                               "dataset (data.target.dataset=...) or unset data.target.*")
        return
    for key, instead in SOURCE_ONLY_KEYS.items():
        if getattr(data_cfg, key, None):
            raise SemisegError(f"data.{key} does not apply to a cross-domain run (data.target.dataset="
                               f"{target.dataset}): the {key.split('_')[0]} images come from the target; "
                               f"set {instead} instead")


@dataclass(eq=False)
class CrossDomainPreset(Preset):
    """A source preset (the labeled images) and a target preset (unlabeled and val images) with the same
    classes; its name, eval mode, crop and palette are the target's."""

    source: Optional[Preset] = None
    target: Optional[Preset] = None

    def build(self, data_cfg) -> DatasetSplits:
        labeled, labeled_from = self.source.build_labeled(data_cfg)
        unlabeled, unlabeled_from = self.target.build_unlabeled(target_data(data_cfg))
        val, val_from = self.target.build_val(target_data(data_cfg))
        return DatasetSplits(labeled=labeled, unlabeled=unlabeled, val=val, lists={
            "labeled": f"{self.source.name}: {labeled_from}", "unlabeled": f"{self.target.name}: {unlabeled_from}",
            "val": f"{self.target.name}: {val_from}"})

    def build_val(self, data_cfg) -> Tuple[Source, str]:
        val, val_from = self.target.build_val(target_data(data_cfg))
        return val, f"{self.target.name}: {val_from}"


def dataset_preset(data_cfg, datasets: Registry, saved: Optional[dict] = None) -> Preset:
    """The preset of a run: data.dataset's, or the source + target pair when data.target.dataset is set; each
    resolved for its section (`Preset.resolve`: a folder's classes come from its card, or from `saved`, a
    checkpoint's meta, where the card is not at hand)."""
    source = datasets.get(data_cfg.dataset).resolve(data_cfg, saved)
    target_cfg = getattr(data_cfg, "target", None)
    if target_cfg is None:
        return source
    _check_keys(data_cfg)
    if not target_cfg.dataset:
        return source
    try:
        target = datasets.get(target_cfg.dataset)
    except SemisegError as exc:
        raise SemisegError(f"data.target.dataset: {exc}") from None
    target = target.resolve(target_data(data_cfg), saved)
    check_same_classes(source, target)
    return CrossDomainPreset(name=f"{source.name} -> {target.name}", class_names=target.class_names,
                             palette=target.palette, eval_mode=target.eval_mode, crop_size=target.crop_size,
                             source=source, target=target)
