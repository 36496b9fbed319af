"""The raw sample every dataset source returns, before any augmentation.

A *source* is anything with `__len__`, `load(i) -> Sample` and `name(i)`.
Sources do no augmentation: transforms (`semiseg.data.transforms`) turn a
`Sample` into tensors. Masks are already mapped to the internal label space:
class ids 0..C-1 and `IGNORE_INDEX` (255) for void/ignored pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from ..labels import IGNORE_INDEX  # noqa: F401  (re-exported: data sources import it from here)


@dataclass
class Sample:
    image: np.ndarray  # uint8, H x W x 3, RGB
    mask: Optional[np.ndarray]  # uint8, H x W (class ids, 255 = ignore); None for unlabeled
    name: str  # a stable identifier (relative path or synthetic id)


class Source(Protocol):
    num_classes: int

    def __len__(self) -> int: ...

    def load(self, index: int) -> Sample: ...

    def name(self, index: int) -> str: ...
