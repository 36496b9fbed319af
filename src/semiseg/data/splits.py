"""Carving a labeled subset out of a list: a seeded, deterministic partition; and checking a published
split list against its SHA-256.

The labeled subset is the first n items of one seeded permutation, so for a
fixed seed smaller subsets are nested in larger ones (as in the standard
"blended" splits). Both halves keep the list order.
"""

from __future__ import annotations

import hashlib
import math
from numbers import Integral, Real
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from ..errors import SemisegError

T = TypeVar("T")


def labeled_count(total: int, num_labeled: Optional[int] = None, fraction: Optional[float] = None) -> int:
    """How many items to label: `num_labeled`, or round(total * fraction) (half up, at least 1)."""
    if (num_labeled is None) == (fraction is None):
        raise SemisegError(
            "set exactly one of data.num_labeled and data.labeled_fraction to carve labeled images out of the list"
        )
    if num_labeled is not None:
        if isinstance(num_labeled, bool) or not isinstance(num_labeled, Integral):
            raise SemisegError(f"data.num_labeled must be an integer, got {num_labeled!r}")
        if not 1 <= num_labeled <= total:
            raise SemisegError(
                f"data.num_labeled={num_labeled} but the labeled list has {total} images; use 1..{total}"
            )
        return int(num_labeled)
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 < fraction <= 1:
        raise SemisegError(f"data.labeled_fraction must be in (0, 1], got {fraction!r}")
    return max(1, min(total, math.floor(total * float(fraction) + 0.5)))


def carve_labeled(entries: Sequence[T], num_labeled: Optional[int] = None, fraction: Optional[float] = None,
                  seed: int = 0) -> Tuple[List[T], List[T]]:
    """Split `entries` into (labeled, unlabeled) with numpy default_rng(seed); both keep list order."""
    total = len(entries)
    if total == 0:
        raise SemisegError("cannot carve labeled images out of an empty list")
    count = labeled_count(total, num_labeled, fraction)
    chosen = np.zeros(total, dtype=bool)
    chosen[np.random.default_rng(seed).permutation(total)[:count]] = True
    labeled = [entry for entry, keep in zip(entries, chosen) if keep]
    unlabeled = [entry for entry, keep in zip(entries, chosen) if not keep]
    return labeled, unlabeled


def verify_published(path, name: str) -> None:
    """Stop with one line when `path`, read as the published split list `name` (its path under
    data.splits_dir, e.g. "pascal/92/labeled.txt"), does not hold the published bytes (split_checksums.py;
    CRLF line ends count as LF). A list of another name (a split of one's own) is not checked, nor a
    missing one (reading it says so)."""
    from .listfile import DataFileError
    from .split_checksums import PUBLISHED_SHA256

    expected = PUBLISHED_SHA256.get(name)
    path = Path(path)
    if expected is None or not path.is_file():
        return
    actual = hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()
    if actual != expected:
        raise DataFileError(
            f"split list {path} is not the published {name} (SHA-256 {actual[:16]}, published "
            f"{expected[:16]}): copy it again from the published splits; an edited list needs a name of its "
            "own (a split folder of another name, or data.labeled_list), or set data.verify_splits=false",
            "list", path)
