"""`semiseg data split`: a list file cut into labeled.txt and unlabeled.txt, the same for a seed everywhere.

The order of the images is a sort by SHA-256 of (seed, normalised image path): no random generator, so the
same list and seed give the same split on any machine, Python, numpy or torch version, and for one seed a
smaller labeled set is contained in a larger one. `--balanced` first takes, rarest class first, the first
image in that order holding each class the labeled set does not hold yet, then fills up in that order; the
masks are read by the data layer (`ListFileSource.read_mask`, the dataset's label map included). The files
are in the list format the data layer reads, lines kept in the list's order (docs/datasets.md, "Splitting
a list").
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Set

import numpy as np

from ..errors import SemisegError
from .listfile import ListEntry, ListFileSource, image_key, read_list
from .sample import IGNORE_INDEX

OUTPUTS = ("labeled.txt", "unlabeled.txt")


def parse_labeled(text: str) -> Fraction | int:
    """'1/8' or '0.125' -> a Fraction in (0, 1]; '92' -> the count 92."""
    value = str(text).strip()
    try:
        if re.fullmatch(r"\d+", value):
            count = int(value)
            if count < 1:
                raise SemisegError(f"--labeled {text}: label at least one image (a count N >= 1 or a fraction "
                                   "like 1/8)")
            return count
        if re.fullmatch(r"\d+/\d+|\d*\.\d+", value):
            fraction = Fraction(value)
            if 0 < fraction <= 1:
                return fraction
            raise SemisegError(f"--labeled {text}: a fraction must be in (0, 1], like 1/8")
    except ZeroDivisionError:
        raise SemisegError(f"--labeled {text}: a fraction must be in (0, 1], like 1/8") from None
    raise SemisegError(f"--labeled {text!r} is neither a fraction like 1/8 nor a count like 92")


def labeled_count(labeled: Fraction | int, total: int, list_path: Path) -> int:
    """How many of `total` images to label: the count, or round(total x fraction) half up (at least 1)."""
    if isinstance(labeled, int):
        if labeled > total:
            raise SemisegError(f"--labeled {labeled} but {list_path} has {total} images; use 1..{total} (or a "
                               "fraction like 1/8)")
        return labeled
    return max(1, min(total, int(Fraction(total) * labeled + Fraction(1, 2))))


def seeded_order(entries: Sequence[ListEntry], seed: int) -> List[int]:
    """Indices of `entries` sorted by SHA-256 of '<seed>:<normalised image path>'."""
    def digest(index: int) -> bytes:
        return hashlib.sha256(f"{seed}:{image_key(entries[index].image)}".encode("utf-8")).digest()
    return sorted(range(len(entries)), key=lambda i: (digest(i), i))


def balanced_choice(classes: Sequence[Set[int]], order: Sequence[int], count: int) -> List[int]:
    """`count` indices: for each class, rarest (fewest images) first, the first image in `order` holding it
    unless the chosen ones hold it already; then the rest of `order`."""
    frequency: Dict[int, int] = {}
    for present in classes:
        for c in present:
            frequency[c] = frequency.get(c, 0) + 1
    chosen: List[int] = []
    taken, covered = set(), set()
    for c in sorted(frequency, key=lambda c: (frequency[c], c)):
        if len(chosen) == count:
            break
        if c in covered:
            continue
        pick = next(i for i in order if c in classes[i] and i not in taken)
        chosen.append(pick)
        taken.add(pick)
        covered |= classes[pick]
    chosen += [i for i in order if i not in taken][:count - len(chosen)]
    return chosen


@dataclass
class SplitResult:
    labeled: List[ListEntry]
    unlabeled: List[ListEntry]
    written: List[Path]
    classes_covered: Optional[int] = None  # --balanced: classes of the list held by the labeled set
    classes_total: Optional[int] = None


def _check_out(out: Path, list_path: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SemisegError(f"--out {out} is an existing file, not a folder: give a folder for labeled.txt and "
                           "unlabeled.txt")
    for name in OUTPUTS:
        target = out / name
        if target.exists() and target.resolve() == list_path.resolve():
            raise SemisegError(f"--out {out} would write {name} over the list being split ({list_path}); pick "
                               "another folder")
        if target.exists() and not overwrite:
            raise SemisegError(f"--out {out} already holds {name}; pass --overwrite to replace it, or pick another "
                               "folder")


def _classes(entries: Sequence[ListEntry], root: Path, dataset: Optional[str], jobs: int) -> List[Set[int]]:
    """The classes present in each entry's mask, as the data layer reads it."""
    if dataset:
        from ..registry import DATASETS
        from . import presets, synthetic  # noqa: F401  (register the dataset presets without importing torch)

        preset = DATASETS.get(dataset).resolve(SimpleNamespace(root=str(root)))  # folder: its card's classes
        num_classes, lut = preset.num_classes, getattr(preset, "label_lut", None)
    else:
        num_classes, lut = IGNORE_INDEX, None  # raw values: every value but 255 is a class
    for entry in entries:
        if entry.mask is None:
            raise SemisegError(f"{entry.where}: --balanced reads the masks, and '{entry.image}' has no mask path; "
                               "write 'image mask' on every line, or drop --balanced")
    source = ListFileSource(root, entries, num_classes, entries[0].list_file, label_lut=lut)
    if dataset and hasattr(preset, "_source"):  # the preset's own decoding (colour masks, mask alternatives)
        source = preset._source(root, entries, True)

    def present(entry: ListEntry) -> Set[int]:
        values = np.unique(source.read_mask(entry))
        return {int(v) for v in values if v != IGNORE_INDEX}

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(present, entries))


def _write(path: Path, header: str, entries: Sequence[ListEntry]) -> None:
    lines = [header] + [f"{e.image} {e.mask}" if e.mask else e.image for e in entries]
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(partial, path)


def split_list(list_path, labeled: str, seed: int, out, balanced: bool = False, root=None,
               dataset: Optional[str] = None, overwrite: bool = False, jobs: Optional[int] = None) -> SplitResult:
    """Write OUT/labeled.txt and OUT/unlabeled.txt (the latter only when some images stay unlabeled)."""
    list_path, out = Path(list_path), Path(out)
    amount = parse_labeled(labeled)
    entries = read_list(list_path)
    count = labeled_count(amount, len(entries), list_path)
    seen: Dict[str, ListEntry] = {}
    for entry in entries:
        first = seen.setdefault(image_key(entry.image), entry)
        if first is not entry:
            raise SemisegError(f"{entry.where}: image {entry.image} is listed again (first at line {first.line}); "
                               "delete one of the two lines before splitting (semiseg data check lists them all)")
    _check_out(out, list_path, overwrite)

    order = seeded_order(entries, seed)
    covered = total = None
    if balanced:
        classes = _classes(entries, Path(root) if root else list_path.parent, dataset, jobs or os.cpu_count() or 1)
        chosen = balanced_choice(classes, order, count)
        total = len(set().union(*classes))
        covered = len(set().union(*(classes[i] for i in chosen)))
    else:
        chosen = order[:count]
    keep = set(chosen)
    labeled_entries = [e for i, e in enumerate(entries) if i in keep]
    unlabeled_entries = [e for i, e in enumerate(entries) if i not in keep]

    out.mkdir(parents=True, exist_ok=True)
    how = f"--labeled {labeled} --seed {seed}" + (" --balanced" if balanced else "")
    origin = f"# semiseg data split {list_path.name} {how}"
    written = [out / "labeled.txt"]
    _write(written[0], f"{origin}: {len(labeled_entries)} of {len(entries)} images", labeled_entries)
    if unlabeled_entries:
        written.append(out / "unlabeled.txt")
        _write(written[1], f"{origin}: the other {len(unlabeled_entries)} images", unlabeled_entries)
    elif (out / "unlabeled.txt").exists():  # every image labeled: an older unlabeled.txt would be stale
        (out / "unlabeled.txt").unlink()
    return SplitResult(labeled_entries, unlabeled_entries, written, covered, total)
