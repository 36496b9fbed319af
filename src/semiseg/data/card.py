"""The `folder` dataset: a user's `images/` and `masks/` described by a dataset card, `dataset.yaml`
(docs/datasets.md, "Your own folder of images").

`read_card` checks the card and turns it into the classes, the palette and how a mask is read (a label map
for index and binary masks, a colour table for colour masks); `scan_folder` pairs the images with their masks
by file stem and sets the val images apart. Every problem is one `SemisegError` line naming the file and
the card key. The preset itself (`FolderPreset`) is in data/presets.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import yaml

from ..errors import SemisegError
from ..registry import closest
from ..yaml_loader import DuplicateKeyError, load
from .listfile import DataFileError, ListEntry, colour_key
from .sample import IGNORE_INDEX
from .splits import carve_labeled

CARD = "dataset.yaml"
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
BINARY_CLASSES = ("background", "foreground")
VAL_SEED = 0  # the val carve-out's seed: fixed, so every run of a folder scores the same images
# key -> what its value must be (the messages quote it)
CARD_KEYS = {
    "name": "a string",
    "classes": "a list of class names",
    "palette": "a list of [R, G, B] colours (0..255), one per class",
    "ignore": "an integer 0..255",
    "colors": "a mapping of 'R,G,B' (or '#rrggbb') colours to class names (or ignore)",
    "binary": "true or false",
    "val_fraction": "a number between 0 and 1 (exclusive)",
}
_HEX = re.compile(r"#([0-9a-fA-F]{6})")
_RGB = re.compile(r"\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*")


@dataclass(frozen=True)
class DatasetCard:
    """What a folder's `dataset.yaml` says, checked: classes, palette and how masks are read."""

    path: Path
    classes: Tuple[str, ...]
    palette: Tuple[Tuple[int, int, int], ...]
    name: str = "folder"
    ignore: Optional[int] = IGNORE_INDEX  # the mask value that means "not annotated" (index masks)
    binary: bool = False
    val_fraction: float = 0.2
    colours: Optional[Dict[int, int]] = field(default=None, repr=False)  # colour_key -> class id / 255
    label_lut: Optional[np.ndarray] = field(default=None, repr=False)  # raw index value -> class id

    @property
    def mask_kind(self) -> str:
        return "colour" if self.colours is not None else "binary" if self.binary else "index"


def _fail(path: Path, key: str, message: str) -> SemisegError:
    return SemisegError(f"{path}: '{key}' {message}")


def _wrong_type(path: Path, key: str, value) -> SemisegError:
    return _fail(path, key, f"must be {CARD_KEYS[key]}, got {type(value).__name__} {value!r}"[:300])


def _colour(value) -> bool:
    return (isinstance(value, list) and len(value) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value))


def _parse_colour(text) -> Optional[Tuple[int, int, int]]:
    """'R,G,B' or '#rrggbb' as a colour, None when it is neither."""
    if not isinstance(text, str):
        return None
    match = _HEX.fullmatch(text.strip())
    if match:
        value = int(match.group(1), 16)
        return value >> 16, (value >> 8) & 255, value & 255
    match = _RGB.fullmatch(text)
    if match and all(int(v) <= 255 for v in match.groups()):
        return tuple(int(v) for v in match.groups())
    return None


def _load_mapping(path: Path) -> dict:
    if not path.is_file():
        kind = "is a folder, not a file" if path.is_dir() else "not found"
        raise SemisegError(f"dataset card {kind}: {path}; the folder dataset reads its classes from it: write {CARD} "
                           "in data.root with classes: [names] or binary: true (docs/datasets.md, \"Your own folder of "
                           "images\")")
    try:
        data = load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SemisegError(f"{path}: the dataset card is not UTF-8 text; save it as UTF-8") from None
    except DuplicateKeyError as exc:
        raise SemisegError(f"{path} line {exc.line}: key '{exc.key}' appears twice (first on line "
                           f"{exc.first_line}); keep one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SemisegError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(data, dict):
        raise SemisegError(f"{path}: a dataset card must be a mapping of keys (classes, palette, ...), got "
                           f"{type(data).__name__}")
    return data


def read_card(path) -> DatasetCard:
    """The dataset card at `path`, checked (docs/datasets.md, "Your own folder of images")."""
    from .presets import voc_palette

    path = Path(path)
    data = _load_mapping(path)
    for key in data:
        if key not in CARD_KEYS:
            raise SemisegError(f"{path}: unknown key '{key}'{closest(key, CARD_KEYS)}; a dataset card has "
                               f"{', '.join(CARD_KEYS)}")
    name = data.get("name", "folder")
    if not isinstance(name, str):
        raise _wrong_type(path, "name", name)
    binary = data.get("binary", False)
    if not isinstance(binary, bool):
        raise _wrong_type(path, "binary", binary)
    fraction = data.get("val_fraction", 0.2)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise _wrong_type(path, "val_fraction", fraction)

    classes = data.get("classes")
    if classes is None:
        if not binary:
            raise _fail(path, "classes", "is missing: list the class names (classes: [background, ...]), or set "
                                         "binary: true for foreground/background masks")
        classes = list(BINARY_CLASSES)
    if not isinstance(classes, list) or not classes or not all(isinstance(c, (str, int)) for c in classes) \
            or any(isinstance(c, bool) for c in classes):
        raise _wrong_type(path, "classes", classes)
    classes = tuple(str(c) for c in classes)
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise _fail(path, "classes", f"names '{repeated[0]}' twice; every class needs its own name")
    if len(classes) > IGNORE_INDEX:
        raise _fail(path, "classes", f"has {len(classes)} names; at most {IGNORE_INDEX} classes (255 = ignore)")
    if binary and len(classes) != 2:
        raise _fail(path, "classes", f"has {len(classes)} names but binary: true means 2 (background, "
                                     "foreground); leave classes out or name two")

    colours = None
    if "colors" in data:
        colours = _colour_table(path, data["colors"], classes)
        if binary:
            raise _fail(path, "colors", "and binary: true exclude each other: binary masks hold 0 and 255 (or 1), "
                                        "colour masks one colour per class; keep one of the two")

    ignore = data.get("ignore", None if binary else IGNORE_INDEX)
    if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int) or not 0 <= ignore <= 255):
        raise _wrong_type(path, "ignore", ignore)
    if ignore is not None and ignore < len(classes):
        raise _fail(path, "ignore", f"is {ignore}, the id of class '{classes[ignore]}'; the ignore value must be "
                                    f"above the class ids 0..{len(classes) - 1} (255 by default)")
    if binary and ignore in (1, IGNORE_INDEX):
        raise _fail(path, "ignore", f"is {ignore}, which binary: true reads as foreground; pick another value or "
                                    "leave ignore out")
    if colours is not None and "ignore" in data:
        raise _fail(path, "ignore", "does not apply to colour masks: map the ignored colour to ignore in colors "
                                    "(e.g. '255,255,255': ignore)")

    palette = data.get("palette")
    if palette is None:
        palette, named = list(voc_palette(len(classes))), set()
        for key, class_id in (colours or {}).items():  # colour masks: each class's first colour in colors
            if class_id < len(classes) and class_id not in named:
                palette[class_id] = (key >> 16, (key >> 8) & 255, key & 255)
                named.add(class_id)
    elif not isinstance(palette, list) or not all(_colour(c) for c in palette):
        raise _wrong_type(path, "palette", palette)
    if len(palette) != len(classes):
        raise _fail(path, "palette", f"has {len(palette)} colours for {len(classes)} classes; give one [R, G, B] per "
                                     "class, in the order of classes (or leave palette out)")

    mapping = {}
    if binary:
        mapping[IGNORE_INDEX] = 1
    if ignore is not None and ignore != IGNORE_INDEX:
        mapping[ignore] = IGNORE_INDEX
    lut = None
    if mapping and colours is None:
        lut = np.arange(256, dtype=np.uint8)
        for raw, internal in mapping.items():
            lut[raw] = internal
    return DatasetCard(path=path, classes=classes, palette=tuple(tuple(int(v) for v in c) for c in palette),
                       name=name, ignore=None if colours is not None else ignore, binary=binary,
                       val_fraction=float(fraction), colours=colours, label_lut=lut)


def _colour_table(path: Path, colors, classes: Tuple[str, ...]) -> Dict[int, int]:
    """`colors:` as colour_key -> class id (255 for ignore)."""
    if not isinstance(colors, dict) or not colors:
        raise _wrong_type(path, "colors", colors)
    table = {}
    for key, value in colors.items():
        rgb = _parse_colour(key)
        if rgb is None:
            raise _fail(path, "colors", f"has the key {key!r}, which is not a colour; write 'R,G,B' (0..255 each, "
                                        "quoted or not) or '#rrggbb' (quoted)")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _fail(path, "colors", f"maps '{key}' to {value!r}; map each colour to a class name or ignore")
        if value == "ignore":
            class_id = IGNORE_INDEX
        elif isinstance(value, int) and 0 <= value < len(classes):
            class_id = value
        elif str(value) in classes:
            class_id = classes.index(str(value))
        else:
            raise _fail(path, "colors", f"maps '{key}' to '{value}', which is not one of the classes"
                                        f"{closest(str(value), classes)} ({', '.join(classes)}) nor ignore")
        code = colour_key(rgb)
        if code in table and table[code] != class_id:
            raise _fail(path, "colors", f"names the colour {','.join(map(str, rgb))} twice, for two classes; keep one")
        table[code] = class_id
    return table


# ---------------------------------------------------------------- the folder's files
@dataclass
class FolderScan:
    """The entries of a folder: images with a mask (labeled), without one (unlabeled), and val."""

    labeled: List[ListEntry]
    unlabeled: List[ListEntry]
    val: List[ListEntry]


def _files(folder: Path, suffixes=IMAGE_SUFFIXES) -> Dict[str, Path]:
    """stem (the path under `folder` without its extension) -> file, for the image files under `folder`."""
    found: Dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.suffix.lower() not in suffixes or any(part.startswith(".") for part in rel.parts) \
                or not path.is_file():
            continue
        stem = rel.with_suffix("").as_posix()
        if stem in found:
            raise DataFileError(f"{found[stem]} and {path} have the same name without extension ('{stem}'), and "
                                f"masks are matched to images by that name: rename or remove one", "duplicate", path)
        found[stem] = path
    return found


def _pairs(root: Path, images_dir: str, masks_dir: str, list_file: str) -> Tuple[List[ListEntry], List[ListEntry]]:
    """(images with a mask, images without one) of root/images_dir matched by stem with root/masks_dir."""
    images = _files(root / images_dir) if (root / images_dir).is_dir() else {}
    masks = _files(root / masks_dir) if (root / masks_dir).is_dir() else {}
    orphan = next((stem for stem in masks if stem not in images), None)
    if orphan is not None:
        raise DataFileError(f"mask {masks[orphan]} has no image of the same name ('{orphan}.*') in "
                            f"{root / images_dir}; add the image or remove the mask", "missing", masks[orphan])
    labeled, unlabeled = [], []
    for stem, image in images.items():
        rel = image.relative_to(root).as_posix()
        if stem in masks:
            labeled.append(ListEntry(rel, masks[stem].relative_to(root).as_posix(), 0, list_file))
        else:
            unlabeled.append(ListEntry(rel, None, 0, list_file))
    return labeled, unlabeled


def scan_folder(root: Path, card: DatasetCard) -> FolderScan:
    """Pair root/images with root/masks by stem; val: root/val/images + root/val/masks when present, else
    `card.val_fraction` of the labeled images (seed VAL_SEED)."""
    images = root / "images"
    labeled, unlabeled = _pairs(root, "images", "masks", str(images))
    if not labeled and not unlabeled:
        where = "does not exist" if not images.is_dir() else f"holds no images ({', '.join(IMAGE_SUFFIXES)})"
        raise DataFileError(f"{images} {where}: the folder dataset reads its images from data.root/images and their "
                            "masks from data.root/masks (matched by file name; an image without a mask is unlabeled)",
                            "empty", images)
    if not labeled:
        raise DataFileError(f"none of the {len(unlabeled)} images in {images} has a mask in {root / 'masks'} (a mask "
                            "has its image's file name, any image extension): label at least two images", "empty",
                            root / "masks")
    if (root / "val" / "images").is_dir():
        val, missing = _pairs(root, "val/images", "val/masks", str(root / "val" / "images"))
        if missing:
            raise DataFileError(f"val image {root / missing[0].image} has no mask in {root / 'val' / 'masks'}; every "
                                "val image needs one (an unlabeled image goes to images/)", "no-mask",
                                root / missing[0].image)
        if not val:
            raise DataFileError(f"{root / 'val' / 'images'} holds no images; put the val images there with their "
                                "masks in val/masks, or remove the folder to set val images apart from images/",
                                "empty", root / "val" / "images")
        return FolderScan(labeled, unlabeled, val)
    if len(labeled) < 2:
        raise DataFileError(f"{images} has 1 image with a mask: at least 2 are needed, one to train on and one to "
                            f"validate (val_fraction of {card.path}), or put val images in {root / 'val' / 'images'}",
                            "empty", images)
    val, train = carve_labeled(labeled, fraction=card.val_fraction, seed=VAL_SEED)
    if not train:
        val, train = val[:-1], val[-1:]
    note = f"{images} (val: {card.val_fraction:g} of the images with a mask, seed {VAL_SEED})"
    val = [ListEntry(e.image, e.mask, 0, note) for e in val]
    return FolderScan(train, unlabeled, val)
