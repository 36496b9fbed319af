"""List files ("image [mask]" per line) and the source that loads them.

Lists are parsed one file at a time with `splitlines()` (many published
lists have no trailing newline, and concatenated lists would merge two lines;
docs/datasets.md). Every problem with a list or a file it names is one `SemisegError`
line naming the file, the list line and the fix.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import SemisegError
from .sample import IGNORE_INDEX, Sample

# What PIL raises on missing codecs, garbage or truncated data.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class DataFileError(SemisegError):
    """A list file, or an image or mask it names, that training cannot use. `kind` says what is wrong
    (missing, unreadable, empty, list, size, labels, colour-mask, 16-bit): `semiseg data check` sorts its
    report by it (docs/datasets.md); `path` is the file."""

    def __init__(self, message: str, kind: str = "unreadable", path=None):
        super().__init__(message)  # one argument: DataLoader workers re-raise it with the message alone
        self.kind, self.path = kind, path


@dataclass(frozen=True)
class ListEntry:
    """One list line: image path, optional mask path (relative to the root), where it came from."""

    image: str
    mask: Optional[str]
    line: int  # 1-based line number; 0 for generated entries
    list_file: str = ""  # the list file (or glob) the entry came from

    @property
    def where(self) -> str:
        return f"{self.list_file}:{self.line}" if self.line else f"{self.list_file} (generated list)"


@dataclass(frozen=True)
class MaskAlternative:
    """A mask a dataset ships under another name than its lists give: when the listed mask does not exist,
    the path with `listed` replaced by `instead` is read, through `label_lut` (None: the source's own map),
    e.g. Cityscapes' `*_gtFine_labelIds.png` for a list naming `*_gtFine_labelTrainIds.png`
    (docs/datasets.md, "Presets")."""

    listed: str
    instead: str
    label_lut: Optional[np.ndarray] = None


def colour_key(rgb) -> int:
    """An (R, G, B) colour packed into one int, as `ListFileSource`'s colour table keys it."""
    r, g, b = (int(v) for v in rgb)
    return (r << 16) | (g << 8) | b


def read_list(path, key: Optional[str] = None) -> List[ListEntry]:
    """Parse a list file; `key` (e.g. 'data.labeled_list') is named in the fix when it is missing."""
    path = Path(path)
    fix = f"set {key} to an existing list file" if key else "fix the path"
    if not path.is_file():
        kind = "is a folder, not a file" if path.is_dir() else "not found"
        raise DataFileError(f"list file {kind}: {path}; {fix}", "missing", path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataFileError(f"list file {path} is not UTF-8 text; {fix}", path=path) from None
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) > 2:
            raise DataFileError(
                f"{path}:{number}: expected 'image [mask]' (1 or 2 fields), got {len(fields)} fields; "
                "paths with spaces are not supported: fix or rename", "list", path
            )
        mask = fields[1] if len(fields) == 2 else None
        entries.append(ListEntry(fields[0], mask, number, str(path)))
    if not entries:
        raise DataFileError(f"list file {path} has no entries (only blank lines or comments); add 'image mask' "
                            "lines", "empty", path)
    return entries


def image_key(rel: str) -> str:
    """An image path normalised for comparisons."""
    return posixpath.normpath(rel.replace("\\", "/"))


def check_overlap(labeled: Sequence[ListEntry], unlabeled: Sequence[ListEntry]) -> None:
    """Raise if an image is both labeled and unlabeled (compared by normalised image path)."""
    labeled_at = {image_key(e.image): e for e in labeled}
    shared = [e for e in unlabeled if image_key(e.image) in labeled_at]
    if shared:
        first = shared[0]
        raise SemisegError(
            f"{len(shared)} image(s) are both labeled and unlabeled, e.g. {first.image} "
            f"({labeled_at[image_key(first.image)].where} and {first.where}); remove them from the unlabeled list"
        )


def _mask_array(mask: Image.Image, path: Path, where: str) -> np.ndarray:
    """Class ids of a single-channel mask image as uint8 H x W."""
    if mask.mode in ("L", "P"):
        return np.array(mask, dtype=np.uint8)
    if mask.mode == "1":
        return np.asarray(mask).astype(np.uint8)
    if mask.mode in ("I", "I;16", "I;16B", "I;16L"):
        values = np.asarray(mask)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise DataFileError(
                f"mask {path} (listed at {where}) has values above 255 ({values.max()}); "
                "masks must be 8-bit class-id PNGs (255 = ignore)", "16-bit", path
            )
        return values.astype(np.uint8)
    raise DataFileError(
        f"mask {path} (listed at {where}) is a {mask.mode} image; masks must be single-channel class-id PNGs "
        "(mode L or P, pixel value = class id, 255 = ignore), not colour renderings: convert it", "colour-mask",
        path
    )


class ListFileSource:
    """A `Source` over list entries: loads images (and masks when `labeled`) from `root`."""

    def __init__(self, root, entries: Sequence[ListEntry], num_classes: int, list_path,
                 label_lut: Optional[np.ndarray] = None, labeled: bool = True,
                 alternatives: Sequence[MaskAlternative] = (), colours: Optional[Dict[int, int]] = None,
                 colours_from: str = ""):
        """`alternatives`: other names of a listed mask (`MaskAlternative`). `colours`: the masks are colour
        renderings, each pixel's colour (`colour_key`) giving its class id (or 255); a colour not in the
        table is an error naming `colours_from` (the dataset card that defines them)."""
        self.root = Path(root)
        self.alternatives = tuple(alternatives)
        self.colours = dict(colours) if colours is not None else None
        self.colours_from = colours_from
        self.entries = list(entries)
        self.num_classes = int(num_classes)
        self.list_path = str(list_path)
        self.labeled = labeled
        if label_lut is not None:
            label_lut = np.asarray(label_lut)
            if label_lut.shape != (256,) or label_lut.dtype != np.uint8:
                raise ValueError("label_lut must be a uint8 array of 256 entries")
        self.label_lut = label_lut
        if labeled:
            for entry in self.entries:
                if entry.mask is None:
                    raise SemisegError(
                        f"{self._where(entry)}: labeled entry '{entry.image}' has no mask path; "
                        "write 'image mask' on every line of a labeled list"
                    )

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        kind = "labeled" if self.labeled else "unlabeled"
        return f"ListFileSource({len(self)} {kind} from {self.list_path})"

    def name(self, index: int) -> str:
        return self.entries[index].image

    def _where(self, entry: ListEntry) -> str:
        return entry.where if entry.list_file else f"{self.list_path}:{entry.line}"

    def _open(self, rel: str, kind: str, entry: ListEntry) -> Image.Image:
        path = self.root / rel
        where = self._where(entry)
        if not path.is_file():
            raise DataFileError(
                f"{kind} file not found: {path} (listed at {where}); check data.root or fix the list line",
                "missing", path
            )
        image = None
        try:
            image = Image.open(path)
            image.load()  # full decode: catches corrupt and truncated files here
        except _PIL_ERRORS as exc:
            if image is not None:
                image.close()
            raise DataFileError(
                f"cannot read {kind} {path} (listed at {where}): {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'corrupt file'}; "
                "re-export the file or remove its line from the list", path=path
            ) from None
        return image

    def _load_image(self, entry: ListEntry) -> np.ndarray:
        image = self._open(entry.image, "image", entry)
        try:
            rgb = image.convert("RGB")
        except _PIL_ERRORS as exc:
            raise DataFileError(
                f"cannot convert image {self.root / entry.image} (listed at {self._where(entry)}) to RGB: {exc}; "
                "re-export it as an RGB JPEG/PNG", path=self.root / entry.image
            ) from None
        finally:
            image.close()
        return np.array(rgb, dtype=np.uint8)  # writable: torch.from_numpy needs it

    def _mask_file(self, entry: ListEntry) -> Tuple[str, Optional[np.ndarray]]:
        """The mask file to read (relative to the root) and its label map: the listed one, else the first
        alternative name that exists (with its own map)."""
        if not (self.root / entry.mask).is_file():
            for alternative in self.alternatives:
                if alternative.listed in entry.mask:
                    other = entry.mask.replace(alternative.listed, alternative.instead, 1)
                    if (self.root / other).is_file():
                        lut = alternative.label_lut if alternative.label_lut is not None else self.label_lut
                        return other, lut
        return entry.mask, self.label_lut

    def _raw_mask(self, entry: ListEntry) -> Tuple[np.ndarray, str, Optional[np.ndarray]]:
        """(the mask's values, the file they came from, the label map still to apply)."""
        rel, lut = self._mask_file(entry)
        others = [entry.mask.replace(a.listed, a.instead, 1) for a in self.alternatives if a.listed in rel]
        if others and not (self.root / rel).is_file():
            raise DataFileError(
                f"mask file not found: {self.root / rel}, nor {', '.join(str(self.root / o) for o in others)} "
                f"(listed at {self._where(entry)}); check data.root or fix the list line", "missing", self.root / rel
            )
        mask_image = self._open(rel, "mask", entry)
        try:
            if self.colours is not None:
                return self._colour_ids(mask_image, self.root / rel, entry), rel, None
            return _mask_array(mask_image, self.root / rel, self._where(entry)), rel, lut
        finally:
            mask_image.close()

    def _colour_ids(self, mask: Image.Image, path: Path, entry: ListEntry) -> np.ndarray:
        """Class ids of a colour mask through the colour table; an unknown colour is an error."""
        try:
            rgb = np.asarray(mask.convert("RGB"), dtype=np.uint32)
        except _PIL_ERRORS as exc:
            raise DataFileError(f"cannot convert mask {path} (listed at {self._where(entry)}) to RGB: {exc}; "
                                "re-export it as an RGB PNG", path=path) from None
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        values, inverse = np.unique(packed, return_inverse=True)
        ids = np.empty(len(values), dtype=np.uint8)
        for i, value in enumerate(values.tolist()):
            if value not in self.colours:
                y, x = np.argwhere(packed == value)[0]
                colour = f"{value >> 16},{(value >> 8) & 255},{value & 255}"
                raise DataFileError(
                    f"mask {path} (listed at {self._where(entry)}) has the colour {colour} (first at x={x}, "
                    f"y={y}) that the colors of {self.colours_from or 'the dataset card'} do not name; add "
                    f"'{colour}: <class or ignore>' to its colors, or repaint those pixels", "unknown-colour", path
                )
            ids[i] = self.colours[value]
        return ids[inverse.reshape(packed.shape)]

    def _mapped(self, raw: np.ndarray, entry: ListEntry, rel: Optional[str] = None,
                lut: Optional[np.ndarray] = None) -> np.ndarray:
        """Class ids of a raw mask (the label map `lut` applied); values outside the classes are an error."""
        path = self.root / (rel or entry.mask)
        mask = lut[raw] if lut is not None else raw
        bad = (mask >= self.num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            values = np.unique(raw[bad]).tolist()
            shown = ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")
            mapped = " after the dataset's label map" if lut is not None else ""
            raise DataFileError(
                f"mask {path} (listed at {self._where(entry)}) has values {shown} outside "
                f"0..{self.num_classes - 1}{mapped} (C = {self.num_classes}, 255 = ignore); map them to 255 or "
                "fix num_classes", "labels", path
            )
        return mask

    def read_mask(self, entry: ListEntry) -> np.ndarray:
        """The class ids of an entry's mask as training decodes them (label map applied, values checked),
        without reading its image: no size check."""
        raw, rel, lut = self._raw_mask(entry)
        return self._mapped(raw, entry, rel, lut)

    def _load_mask(self, entry: ListEntry, image_hw: tuple) -> np.ndarray:
        raw, rel, lut = self._raw_mask(entry)
        if raw.shape != tuple(image_hw):
            (h, w), (mh, mw) = image_hw, raw.shape
            raise DataFileError(
                f"mask {self.root / rel} is {mw}x{mh} but its image {self.root / entry.image} is {w}x{h} "
                f"(listed at {self._where(entry)}); masks must have the image's size", "size", self.root / rel
            )
        return self._mapped(raw, entry, rel, lut)

    def load(self, index: int) -> Sample:
        entry = self.entries[index]
        image = self._load_image(entry)
        mask = self._load_mask(entry, image.shape[:2]) if self.labeled else None
        return Sample(image=image, mask=mask, name=entry.image)

    def check(self) -> List[str]:
        """Load every item; the problems found, one line each."""
        return check_source(self)


def check_source(source, indices: Optional[Iterable[int]] = None) -> List[str]:
    """Load every item (or `indices`) of a source and collect the `SemisegError` lines."""
    problems = []
    for index in range(len(source)) if indices is None else indices:
        try:
            source.load(index)
        except SemisegError as exc:
            problems.append(str(exc))
    return problems
