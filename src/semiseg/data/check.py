"""`semiseg data check`: every problem of a dataset's lists and files in one report, and the class histogram
of its labeled set (docs/datasets.md, "Checking a dataset: `semiseg data check`").

Nothing here re-implements the data layer: the preset resolves the labeled, unlabeled and val lists
(`ListPreset.list_sets`, the carve-out included) and `ListFileSource` decodes every file with the preset's
label map, so the check reads exactly what training reads; where training would stop at the first bad file,
the check records its `DataFileError` and goes on. It adds what training accepts but a user rarely means:
16-bit masks, EXIF-rotated images, duplicate lines, and an image in two sets. Files are checked in threads
(Pillow decodes without holding the GIL).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import SemisegError
from ..registry import DATASETS, closest
from . import presets, synthetic  # noqa: F401  (register the dataset presets; not semiseg.catalog: no torch)
from .listfile import ListEntry, ListFileSource, image_key
from .sample import IGNORE_INDEX

# kind -> what it means, in the order of the report (docs/datasets.md lists the fix of each).
KINDS = {
    "missing": "a list or a file it names does not exist",
    "unreadable": "a file that cannot be decoded",
    "list": "a list that cannot be used",
    "empty": "a list with no entries",
    "no-mask": "a labeled or val line without a mask",
    "size": "a mask of another size than its image",
    "labels": "mask values outside the classes",
    "colour-mask": "a colour (RGB) mask instead of class ids",
    "unknown-colour": "a colour mask colour that the dataset card does not map",
    "16-bit": "a 16-bit mask",
    "exif": "an image with an EXIF rotation",
    "duplicate": "an image listed twice in one list",
    "overlap": "an image in two sets",
}
SETS = ("labeled", "unlabeled", "val")
SETS_WITH_MASKS = ("labeled", "val")  # training never reads an unlabeled line's mask
ORIENTATION = 0x0112  # the EXIF orientation tag; 1 = stored upright
SIXTEEN_BIT = ("I", "I;16", "I;16B", "I;16L")


@dataclass(frozen=True)
class Problem:
    kind: str  # a key of KINDS
    file: str  # the file it is about (a list, an image or a mask)
    message: str  # one line naming the file and the fix


@dataclass
class CheckReport:
    dataset: str
    root: Path
    class_names: Tuple[str, ...]
    sets: Dict[str, List[ListEntry]]
    problems: List[Problem] = field(default_factory=list)
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))  # labeled set, after the map
    masks_counted: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems

    def histogram(self) -> Dict[str, float]:
        """Class name -> fraction of the labeled set's non-ignored pixels."""
        counts = self.pixels[:len(self.class_names)]
        total = max(int(counts.sum()), 1)
        return {name: float(count) / total for name, count in zip(self.class_names, counts)}

    def format(self) -> str:
        files = sum(len(entries) for entries in self.sets.values())
        lines = [f"semiseg data check: dataset '{self.dataset}' in {self.root}"]
        for name in SETS:
            entries = self.sets[name]
            origin = ", ".join(dict.fromkeys(e.list_file for e in entries))
            lines.append(f"  {name:<9} {len(entries):>6} entries" + (f"  ({origin})" if origin else ""))
        if self.problems:
            lines.append(f"problems ({len(self.problems)}):")
            lines += [f"  {p.kind:<11} {p.message}" for p in self.problems]
        lines.append(self._histogram_text())
        if self.problems:
            counts = {kind: sum(p.kind == kind for p in self.problems) for kind in KINDS}
            summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
            lines.append(f"{len(self.problems)} problem(s) in {files} entries: {summary} (see docs/datasets.md, "
                         "\"Checking a dataset\", for the fix of each)")
        else:
            lines.append(f"clean: {files} entries checked, no problems")
        return "\n".join(lines)

    def _histogram_text(self) -> str:
        counted = int(self.pixels[:len(self.class_names)].sum())
        ignored = int(self.pixels[IGNORE_INDEX])
        share = 100.0 * ignored / max(counted + ignored, 1)
        lines = [f"class histogram of the labeled set ({self.masks_counted} masks, {counted:,} pixels with a "
                 f"class, {share:.1f} % ignore):"]
        width = max((len(name) for name in self.class_names), default=0)
        for name, fraction in self.histogram().items():
            bar = "#" * int(round(fraction * 50))
            lines.append(f"  {name:<{width}} {100 * fraction:6.2f} %  {bar if fraction else '(none)'}")
        return "\n".join(lines)


# ---------------------------------------------------------------- which config, which lists
def load_check_config(target: str, overrides: Sequence[str] = ()):
    """The config of `target`: a config file, or a dataset preset name (with the schema defaults)."""
    from ..config import load_config

    path = Path(target)
    if path.is_file() or path.suffix in (".yaml", ".yml") or os.sep in target or "/" in target:
        return load_config(path, overrides)
    if target not in DATASETS:
        raise SemisegError(f"no config file or dataset named '{target}'{closest(target, DATASETS)}; "
                           f"give a config file or one of the datasets: {', '.join(DATASETS)}")
    return load_config(None, [f"data.dataset={target}", "train.total_iters=1", *overrides])


def _list_preset(data_cfg):
    from .domains import dataset_preset

    preset = dataset_preset(data_cfg, DATASETS)
    if not isinstance(preset, presets.ListPreset):
        if getattr(preset, "target", None) is not None:
            raise SemisegError(f"data check reads one dataset, this config has two (data.target.dataset="
                               f"{data_cfg.target.dataset}); check each: semiseg data check {data_cfg.dataset} "
                               f"--root ... and semiseg data check {data_cfg.target.dataset} --root ...")
        raise SemisegError(f"dataset '{preset.name}' has no files to check (it is rendered in memory); "
                           "data check reads datasets of list files")
    return preset


# ---------------------------------------------------------------- one entry
def _problem(exc: SemisegError, fallback: str, kind: str = "list") -> Problem:
    return Problem(getattr(exc, "kind", kind), str(getattr(exc, "path", None) or fallback), str(exc))


def _header(path: Path):
    """(mode, EXIF orientation) from the file's header, or None when it does not open (the decode reports it)."""
    try:
        with Image.open(path) as image:
            return image.mode, image.getexif().get(ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - any header trouble is the full decode's to report
        return None


def check_entry(source: ListFileSource, entry: ListEntry, masks: bool) -> Tuple[List[Problem], Optional[np.ndarray]]:
    """The problems of one list line, and its mask's pixel count per value (after the label map) when read."""
    problems: List[Problem] = []
    image_path = source.root / entry.image
    image_hw = None
    try:
        image_hw = source._load_image(entry).shape[:2]
        header = _header(image_path)
        if header and header[1] not in (1, None):
            problems.append(Problem("exif", str(image_path), (
                f"image {image_path} (listed at {entry.where}) has EXIF orientation {header[1]}: viewers show "
                "it turned, training reads the stored pixels, so its mask may not fit what was annotated; save "
                "it upright without the tag (PIL.ImageOps.exif_transpose) and check its mask")))
    except SemisegError as exc:
        problems.append(_problem(exc, str(image_path), "unreadable"))
    if not masks:
        return problems, None
    if entry.mask is None:
        problems.append(Problem("no-mask", entry.list_file, (
            f"{entry.where}: labeled entry '{entry.image}' has no mask path; write 'image mask' on every line "
            "of a labeled list")))
        return problems, None
    mask_path = source.root / entry.mask
    try:
        mask = source._load_mask(entry, image_hw) if image_hw is not None else source.read_mask(entry)
    except SemisegError as exc:
        problems.append(_problem(exc, str(mask_path), "unreadable"))
        return problems, None
    header = _header(mask_path)
    if header and header[0] in SIXTEEN_BIT:
        problems.append(Problem("16-bit", str(mask_path), (
            f"mask {mask_path} (listed at {entry.where}) is a 16-bit image (mode {header[0]}); training reads its "
            "values (all <= 255) but a mask should be an 8-bit class-id PNG: save it as mode L")))
    return problems, np.bincount(mask.ravel(), minlength=256)


# ---------------------------------------------------------------- lists
def duplicate_problems(sets: Dict[str, List[ListEntry]]) -> List[Problem]:
    """An image on two lines of one list file (each list line counted once, whichever sets it feeds)."""
    lines = {(e.list_file, e.line): e for entries in sets.values() for e in entries if e.line}
    first: Dict[Tuple[str, str], ListEntry] = {}
    problems = []
    for entry in sorted(lines.values(), key=lambda e: (e.list_file, e.line)):
        key = (entry.list_file, image_key(entry.image))
        if key in first:
            problems.append(Problem("duplicate", entry.list_file, (
                f"{entry.where}: image {entry.image} is listed again (first at line {first[key].line}); "
                "delete one of the two lines")))
        else:
            first[key] = entry
    return problems


def overlap_problems(sets: Dict[str, List[ListEntry]]) -> List[Problem]:
    """An image in two of the labeled, unlabeled and val sets."""
    fixes = {("labeled", "unlabeled"): "training stops on it: remove it from the unlabeled list",
             ("labeled", "val"): "the val score would count a training image: remove it from one of the lists",
             ("unlabeled", "val"): "the val score would count a training image: remove it from one of the lists"}
    problems = []
    for (a, b), fix in fixes.items():
        seen: Dict[str, ListEntry] = {}
        for entry in sets[a]:
            seen.setdefault(image_key(entry.image), entry)
        for entry in sets[b]:
            other = seen.get(image_key(entry.image))
            if other is not None:
                problems.append(Problem("overlap", entry.list_file, (
                    f"image {entry.image} is in the {a} set ({other.where}) and the {b} set ({entry.where}); "
                    f"{fix}")))
    return problems


# ---------------------------------------------------------------- the check
def check_dataset(cfg, jobs: Optional[int] = None, progress: bool = True) -> CheckReport:
    """Every problem of the run's three sets, and the labeled set's class histogram."""
    preset = _list_preset(cfg.data)
    list_problems: List[Problem] = []
    sets = preset.list_sets(cfg.data, lambda name, exc: list_problems.append(_problem(exc, name)))
    root = preset.resolve_root(cfg.data)
    report = CheckReport(preset.name, root, preset.class_names, sets)

    source = preset._source(root, [], labeled=False)  # the preset's decoding: label map, colours, alternatives
    work = [(name, entry) for name in SETS for entry in sets[name]]
    jobs = max(1, int(jobs or os.cpu_count() or 1))
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=jobs) as pool, \
            tqdm(total=len(work), desc="data check", unit="file", file=sys.stderr, dynamic_ncols=True,
                 disable=None if progress else True) as bar:
        futures = [pool.submit(check_entry, source, entry, name in SETS_WITH_MASKS) for name, entry in work]
        results = []
        for future in futures:  # in list order: the report does not depend on the timing
            results.append(future.result())
            bar.update(1)

    entry_problems = []
    for (name, _), (problems, counts) in zip(work, results):
        entry_problems += problems
        if name == "labeled" and counts is not None:
            report.pixels += counts
            report.masks_counted += 1
    found = list_problems + entry_problems + duplicate_problems(sets) + overlap_problems(sets)
    order = {kind: i for i, kind in enumerate(KINDS)}
    report.problems = sorted(found, key=lambda p: order.get(p.kind, len(order)))  # stable: list order within a kind
    return report
