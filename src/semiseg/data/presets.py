"""Dataset presets: classes, palette, evaluation defaults, and how to build the sources.

A `Preset` turns the `data` config section into `DatasetSplits` (labeled,
unlabeled, val sources). `ListPreset` implements the list-file rules shared by
the real datasets; other presets (e.g. the rendered `synthetic` one) subclass
`Preset` and override `build`. Presets are registered in `DATASETS` by name.

A preset whose classes live with the data (`folder`: the dataset card, data/card.py) is registered
without them; `resolve(data_cfg)` gives the preset of one run, its classes read, and is what the engine
uses (data/domains.py: `dataset_preset`), so nothing there names a dataset.

A cross-domain run (data/domains.py) takes one part from each of two presets:
`build_labeled` of the source, `build_unlabeled` and `build_val` of the target.
Their config section may be `data.target` read as a `data` section: its
`key_prefix` ("data.target.") is what the messages name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from ..errors import SemisegError
from ..registry import DATASETS, closest
from .card import CARD, DatasetCard, FolderScan, read_card, scan_folder
from .listfile import ListEntry, ListFileSource, MaskAlternative, check_overlap, image_key, read_list
from .sample import IGNORE_INDEX, Source
from .splits import carve_labeled, verify_published

SPLITS = "{splits}/"  # prefix of a default list that lives under data.splits_dir
SPLITS_ENV = "SEMISEG_SPLITS_DIR"


def voc_palette(n: int) -> Tuple[Tuple[int, int, int], ...]:
    """The PASCAL VOC colour map: the bits of the class id interleaved into R, G, B (MSB first)."""
    colours = []
    for i in range(n):
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


def make_lut(mapping: Dict[int, int]) -> np.ndarray:
    """A 256-entry uint8 label lookup: identity except for `mapping` (raw value -> internal id)."""
    lut = np.arange(256, dtype=np.uint8)
    for raw, internal in mapping.items():
        lut[raw] = internal
    return lut


def ignore_lut(mapping: Dict[int, int]) -> np.ndarray:
    """A 256-entry uint8 label lookup: `mapping` (raw value -> internal id), every other value ignored (255)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for raw, internal in mapping.items():
        lut[raw] = internal
    return lut


def _key(data_cfg, name: str) -> str:
    """The dotted config key of `name` in this section: data.<name>, or data.target.<name> for a target."""
    return f"{getattr(data_cfg, 'key_prefix', None) or 'data.'}{name}"


@dataclass
class DatasetSplits:
    """The three sources of a run; `lists` says where each came from (for logs)."""

    labeled: Source
    unlabeled: Optional[Source]
    val: Source
    lists: Dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class Preset:
    """What a dataset is: class names, display palette, evaluation and crop defaults."""

    name: str
    class_names: Tuple[str, ...]
    palette: Tuple[Tuple[int, int, int], ...]
    eval_mode: str = "original"  # original | center_crop | resize | sliding_window (docs/datasets.md)
    crop_size: int = 321
    default_root: Optional[str] = None
    label_lut: Optional[np.ndarray] = field(default=None, repr=False)  # raw mask value -> internal id

    def __post_init__(self):
        self.class_names = tuple(self.class_names)
        self.palette = tuple(tuple(int(v) for v in c) for c in self.palette)
        if len(self.palette) != len(self.class_names):
            raise ValueError(f"preset {self.name}: {len(self.palette)} colours for {len(self.class_names)} classes")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def resolve(self, data_cfg, saved: Optional[dict] = None) -> "Preset":
        """The preset of the run that `data_cfg` describes: this one, unless its classes are read from the
        data (FolderPreset). `saved`: a checkpoint's meta (class_names, palette), for a model used where its
        data is not."""
        return self

    def build(self, data_cfg) -> DatasetSplits:
        """The labeled, unlabeled and val sources for the `data` config section."""
        raise NotImplementedError(f"preset {self.name} does not implement build()")

    def build_labeled(self, data_cfg) -> Tuple[Source, str]:
        """A cross-domain run's labeled source (this preset is the source) and where it came from: the train
        list, carved by num_labeled / labeled_fraction (the rest is not used)."""
        raise NotImplementedError(f"preset {self.name} cannot be the source of a cross-domain run")

    def build_unlabeled(self, data_cfg) -> Tuple[Source, str]:
        """A cross-domain run's unlabeled source (this preset is the target): every train image, masks unread."""
        raise NotImplementedError(f"preset {self.name} cannot be the target of a cross-domain run")

    def build_val(self, data_cfg) -> Tuple[Source, str]:
        """The val source alone and where it came from (`semiseg eval` reads nothing else)."""
        splits = self.build(data_cfg)
        return splits.val, splits.lists.get("val", "")


@dataclass(frozen=True)
class GlobList:
    """A list generated from the files under the root matching `pattern` (sorted)."""

    pattern: str  # relative to the root, e.g. "train2017/*.jpg"
    mask_of: Optional[Callable[[str], str]] = None  # image path -> mask path (None: no masks)

    def entries(self, root: Path, key: str, root_key: str = "data.root") -> List[ListEntry]:
        where = str(root / self.pattern)
        images = sorted(p.relative_to(root).as_posix() for p in root.glob(self.pattern) if p.is_file())
        if not images:
            raise SemisegError(f"no files match {where}; check {root_key} or set {key}=<list file>")
        return [ListEntry(im, self.mask_of(im) if self.mask_of else None, 0, where) for im in images]


def _cfg(data_cfg, key: str):
    return getattr(data_cfg, key, None)


def _under(root: Path, value: str) -> Path:
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else root / path


def _split_sort_key(name: str):
    """Smallest labeled set first: '92' < '1464', '1_16' < '1_8' < '1_4'; other names last."""
    prefix, _, digits = name.rpartition("_")
    size = (-int(digits) if prefix else int(digits)) if digits.isdigit() else 0
    return (not digits.isdigit(), name.count("_"), prefix, size, name)


@dataclass(eq=False)
class ListPreset(Preset):
    """A dataset on disk described by list files (the standard split layout, shared/splits)."""

    train_list: Union[str, GlobList] = "train.txt"  # "{splits}/..." lives under splits_dir, else under root
    val_list: Optional[str] = "val.txt"  # None: no val list of its own (data.val_list must name one)
    unlabeled_glob: Optional[GlobList] = None  # images of the root not in the labeled list (COCO)
    mask_alternatives: Tuple[MaskAlternative, ...] = ()  # masks the dataset ships under another name

    def resolve_root(self, data_cfg) -> Path:
        value = _cfg(data_cfg, "root") or self.default_root
        key = _key(data_cfg, "root")
        if not value:
            raise SemisegError(f"dataset '{self.name}' has no default folder; pass {key}=/path/to/{self.name}")
        root = Path(os.path.expanduser(str(value)))
        if not root.is_dir():
            raise SemisegError(
                f"dataset folder not found: {root} (dataset '{self.name}'); pass {key}=/path/to/{self.name}"
            )
        return root

    def splits_dir(self, data_cfg) -> Path:
        value = _cfg(data_cfg, "splits_dir") or os.environ.get(SPLITS_ENV)
        if not value:
            raise SemisegError(
                f"dataset '{self.name}' needs the standard split lists: set data.splits_dir=.../splits "
                f"(or the {SPLITS_ENV} environment variable)"
            )
        path = Path(os.path.expanduser(str(value)))
        if not (path / self.name).is_dir():
            raise SemisegError(
                f"{path / self.name} not found: data.splits_dir must be the folder holding {self.name}/ "
                "(the shared/splits layout); fix data.splits_dir"
            )
        return path

    def split_folder(self, data_cfg) -> Path:
        base = self.splits_dir(data_cfg) / self.name
        split = str(_cfg(data_cfg, "split"))
        folder = base / split
        if not (folder / "labeled.txt").is_file():
            valid = sorted((p.name for p in base.iterdir() if (p / "labeled.txt").is_file()), key=_split_sort_key)
            raise SemisegError(
                f"unknown split '{split}' for dataset '{self.name}'{closest(split, valid)} (no {folder}/labeled.txt); "
                f"available splits: {', '.join(valid) or 'none'}"
            )
        return folder

    def _default(self, spec: Union[str, GlobList], root: Path, data_cfg, key: str) -> List[ListEntry]:
        if isinstance(spec, GlobList):
            return spec.entries(root, key, _key(data_cfg, "root"))
        if spec.startswith(SPLITS):
            return self._split_list(data_cfg, spec[len(SPLITS):], key)
        return read_list(root / spec, key)

    def _split_list(self, data_cfg, relative: str, key: str) -> List[ListEntry]:
        """A list under data.splits_dir/<name>/, checked against the published SHA-256 when it is one of the
        published lists (unless data.verify_splits is false)."""
        path = self.splits_dir(data_cfg) / self.name / relative
        if _cfg(data_cfg, "verify_splits") is not False:
            verify_published(path, f"{self.name}/{relative}")
        return read_list(path, key)

    def _check_first(self, entries: List[ListEntry], root: Path, data_cfg=None) -> None:
        """Fail fast when a list's first image is not under the root (the usual wrong data.root)."""
        if entries and not (root / entries[0].image).is_file():
            first, key = entries[0], _key(data_cfg, "root")
            raise SemisegError(
                f"{first.where}: image {root / first.image} not found; is {key}={root} the {self.name} "
                f"folder the list's paths are relative to? Fix {key} or the list"
            )

    def _labeled_entries(self, root: Path, data_cfg, folder: Optional[Path]) -> List[ListEntry]:
        """data.labeled_list, else the split's labeled.txt, else the preset's train list."""
        if _cfg(data_cfg, "labeled_list"):
            return read_list(_under(root, _cfg(data_cfg, "labeled_list")), "data.labeled_list")
        if folder is not None:
            return self._split_list(data_cfg, f"{_cfg(data_cfg, 'split')}/labeled.txt", "data.split")
        return self._default(self.train_list, root, data_cfg, "data.labeled_list")

    def _val_entries(self, root: Path, data_cfg) -> List[ListEntry]:
        """The val list (data.val_list, else the preset's)."""
        key = _key(data_cfg, "val_list")
        if _cfg(data_cfg, "val_list"):
            return read_list(_under(root, _cfg(data_cfg, "val_list")), key)
        if self.val_list is None:
            as_source = ", or make it the source of a cross-domain run (data.target.dataset)"
            raise SemisegError(f"dataset '{self.name}' has no val list of its own; set {key}=<list file> "
                               f"('image mask' per line){as_source if key == 'data.val_list' else ''}")
        return self._default(self.val_list, root, data_cfg, key)

    def _source(self, root: Path, entries: List[ListEntry], labeled: bool) -> ListFileSource:
        """A source over `entries` that reads masks as training does (`semiseg data check` decodes with one
        of no entries)."""
        return ListFileSource(root, entries, self.num_classes, entries[0].list_file if entries else "",
                              label_lut=self.label_lut, labeled=labeled, alternatives=self.mask_alternatives)

    def _folder(self, data_cfg) -> Optional[Path]:
        """The split folder named by data.split, if any."""
        return self.split_folder(data_cfg) if _cfg(data_cfg, "split") not in (None, "") else None

    def build_labeled(self, data_cfg) -> Tuple[Source, str]:
        root = self.resolve_root(data_cfg)
        labeled, rest, carved = _carve(self._labeled_entries(root, data_cfg, self._folder(data_cfg)), data_cfg)
        self._check_first(labeled, root, data_cfg)
        unused = f"; {len(rest)} not used" if rest else ""
        return self._source(root, labeled, True), _origin(labeled) + carved + unused

    def build_unlabeled(self, data_cfg) -> Tuple[Source, str]:
        root = self.resolve_root(data_cfg)
        key = _key(data_cfg, "unlabeled_list")
        if _cfg(data_cfg, "unlabeled_list"):
            entries = read_list(_under(root, _cfg(data_cfg, "unlabeled_list")), key)
        else:
            entries = self._default(self.train_list, root, data_cfg, key)
        self._check_first(entries, root, data_cfg)
        return self._source(root, entries, False), _origin(entries)

    def build_val(self, data_cfg) -> Tuple[Source, str]:
        root = self.resolve_root(data_cfg)
        val = self._val_entries(root, data_cfg)
        self._check_first(val, root, data_cfg)
        return self._source(root, val, True), _origin(val)

    def _unlabeled_entries(self, root: Path, data_cfg, folder: Optional[Path],
                           labeled: List[ListEntry]) -> List[ListEntry]:
        """The unlabeled list before the carve-out adds to it: data.unlabeled_list, else the split's
        unlabeled.txt, else (COCO, with a labeled list of the user's or a split) the glob minus `labeled`."""
        from_default = not _cfg(data_cfg, "labeled_list") and folder is None
        if _cfg(data_cfg, "unlabeled_list"):
            return read_list(_under(root, _cfg(data_cfg, "unlabeled_list")), "data.unlabeled_list")
        if folder is not None and (folder / "unlabeled.txt").is_file():
            return self._split_list(data_cfg, f"{_cfg(data_cfg, 'split')}/unlabeled.txt", "data.split")
        if self.unlabeled_glob is not None and not from_default:
            taken = {image_key(e.image) for e in labeled}
            return [e for e in self.unlabeled_glob.entries(root, "data.unlabeled_list")
                    if image_key(e.image) not in taken]
        return []

    def list_sets(self, data_cfg, failed: Callable[[str, SemisegError], None]) -> Dict[str, List[ListEntry]]:
        """The labeled, unlabeled and val entries exactly as `build` resolves them (the carve-out included),
        before any file is opened; their paths are relative to `resolve_root`. A list that cannot be read
        (missing, empty, a bad line) goes to `failed(set name, error)` and counts as empty instead of
        stopping: `semiseg data check` reports every problem (docs/datasets.md)."""

        def tolerant(name: str, read: Callable[[], List[ListEntry]]) -> List[ListEntry]:
            try:
                return read()
            except SemisegError as exc:
                failed(name, exc)
                return []

        root = self.resolve_root(data_cfg)
        folder = self._folder(data_cfg)
        labeled = tolerant("labeled", lambda: self._labeled_entries(root, data_cfg, folder))
        unlabeled = tolerant("unlabeled", lambda: self._unlabeled_entries(root, data_cfg, folder, labeled))
        labeled, rest, _ = _carve(labeled, data_cfg) if labeled else (labeled, [], "")
        val = tolerant("val", lambda: self._val_entries(root, data_cfg))
        return {"labeled": labeled, "unlabeled": rest + unlabeled, "val": val}

    def build(self, data_cfg) -> DatasetSplits:
        root = self.resolve_root(data_cfg)
        folder = self._folder(data_cfg)
        labeled = self._labeled_entries(root, data_cfg, folder)
        unlabeled = self._unlabeled_entries(root, data_cfg, folder, labeled)
        labeled, rest, carved = _carve(labeled, data_cfg)
        unlabeled = rest + unlabeled
        check_overlap(labeled, unlabeled)

        val = self._val_entries(root, data_cfg)
        for entries in (labeled, unlabeled, val):
            self._check_first(entries, root)

        return DatasetSplits(
            labeled=self._source(root, labeled, True),
            unlabeled=self._source(root, unlabeled, False) if unlabeled else None,
            val=self._source(root, val, True),
            lists={"labeled": _origin(labeled) + carved, "unlabeled": _origin(unlabeled), "val": _origin(val)},
        )


def _carve(entries: List[ListEntry], data_cfg) -> Tuple[List[ListEntry], List[ListEntry], str]:
    """(labeled, rest, note for the logs): the carve-out of num_labeled / labeled_fraction, if one is set."""
    num, fraction = _cfg(data_cfg, "num_labeled"), _cfg(data_cfg, "labeled_fraction")
    if num is None and fraction is None:
        return entries, [], ""
    seed = _cfg(data_cfg, "split_seed") or 0
    labeled, rest = carve_labeled(entries, num, fraction, seed)
    return labeled, rest, f" (carved {len(labeled)}, split_seed={seed})"


def _origin(entries: List[ListEntry]) -> str:
    """The list files (or globs) the entries came from."""
    return ", ".join(dict.fromkeys(e.list_file for e in entries))


def _coco_mask(image: str) -> str:
    return f"masks/{PurePosixPath(image).stem}.png"


def _cityscapes_mask(image: str) -> str:
    return image.replace("leftImg8bit/", "gtFine/", 1).replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")


def _gta5_mask(image: str) -> str:
    return f"labels/{PurePosixPath(image).name}"


CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist")
CAMVID_PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")
CITYSCAPES_PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                      (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                      (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                      (0, 80, 100), (0, 0, 230), (119, 11, 32))
# Cityscapes label ids (0-33: the *_gtFine_labelIds.png values, also GTA5's) -> the 19 train ids above, as in
# cityscapesScripts' labels.py; every other id (void, and the classes Cityscapes does not evaluate) -> ignore.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
COCO_CLASSES = ("background",) + tuple((
    "person, bicycle, car, motorcycle, airplane, bus, train, truck, boat, traffic light, fire hydrant, stop sign, "
    "parking meter, bench, bird, cat, dog, horse, sheep, cow, elephant, bear, zebra, giraffe, backpack, umbrella, "
    "handbag, tie, suitcase, frisbee, skis, snowboard, sports ball, kite, baseball bat, baseball glove, skateboard, "
    "surfboard, tennis racket, bottle, wine glass, cup, fork, knife, spoon, bowl, banana, apple, sandwich, orange, "
    "broccoli, carrot, hot dog, pizza, donut, cake, chair, couch, potted plant, bed, dining table, toilet, tv, "
    "laptop, mouse, remote, keyboard, cell phone, microwave, oven, toaster, sink, refrigerator, book, clock, vase, "
    "scissors, teddy bear, hair drier, toothbrush").split(", "))
ADE20K_CLASSES = tuple((
    "wall, building, sky, floor, tree, ceiling, road, bed, windowpane, grass, cabinet, sidewalk, person, earth, "
    "door, table, mountain, plant, curtain, chair, car, water, painting, sofa, shelf, house, sea, mirror, rug, "
    "field, armchair, seat, fence, desk, rock, wardrobe, lamp, bathtub, railing, cushion, base, box, column, "
    "signboard, chest of drawers, counter, sand, sink, skyscraper, fireplace, refrigerator, grandstand, path, "
    "stairs, runway, case, pool table, pillow, screen door, stairway, river, bridge, bookcase, blind, "
    "coffee table, toilet, flower, book, hill, bench, countertop, stove, palm, kitchen island, computer, "
    "swivel chair, boat, bar, arcade machine, hovel, bus, towel, light, truck, tower, chandelier, awning, "
    "streetlight, booth, television receiver, airplane, dirt track, apparel, pole, land, bannister, escalator, "
    "ottoman, bottle, buffet, poster, stage, van, ship, fountain, conveyer belt, canopy, washer, plaything, "
    "swimming pool, stool, barrel, basket, waterfall, tent, bag, minibike, cradle, oven, ball, food, step, tank, "
    "trade name, microwave, pot, animal, bicycle, lake, dishwasher, screen, blanket, sculpture, hood, sconce, "
    "vase, traffic light, tray, ashcan, fan, pier, crt screen, plate, monitor, bulletin board, shower, radiator, "
    "glass, clock, flag").split(", "))

# CamVid (SegNet 11-class, 480x360): label 11 = Unlabelled -> ignore. Crop 256: smaller than both sides, so no
# padding, and about 1.6x fewer pixels than 321 for the CPU benchmarks this dataset is used for.
CAMVID = ListPreset("camvid", CAMVID_CLASSES, CAMVID_PALETTE, eval_mode="original", crop_size=256,
                    default_root="../shared/data/camvid", label_lut=make_lut({11: IGNORE_INDEX}),
                    train_list="train.txt", val_list="val.txt")
# PASCAL VOC 2012 (+SBD): masks are palette PNGs with 255 on object borders (palette index = class id). The
# lists name SegmentationClass/ for every train_aug image; one VOC's own SegmentationClass/ lacks (the SBD
# images) is read from SegmentationClassAug/ (the usual SBD download: grey PNGs of class ids). Crop 321
# (UniMatch classic/blended).
PASCAL = ListPreset("pascal", VOC_CLASSES, voc_palette(21), eval_mode="original", crop_size=321,
                    train_list=SPLITS + "train_aug.txt", val_list=SPLITS + "val.txt",
                    mask_alternatives=(MaskAlternative("SegmentationClass/", "SegmentationClassAug/"),))
# Cityscapes: the lists name *_gtFine_labelTrainIds.png (19 classes, 255 ignore: cityscapesScripts'
# createTrainIdLabelImgs); where it was not run, the downloaded *_gtFine_labelIds.png is read and mapped
# by CITYSCAPES_TRAIN_IDS. Crop 801 and sliding-window evaluation as UniMatch. With no list or split, the
# train list is generated from leftImg8bit/train.
CITYSCAPES = ListPreset("cityscapes", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, eval_mode="sliding_window",
                        crop_size=801, val_list=SPLITS + "val.txt",
                        train_list=GlobList("leftImg8bit/train/*/*_leftImg8bit.png", _cityscapes_mask),
                        mask_alternatives=(MaskAlternative("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png",
                                                           ignore_lut(CITYSCAPES_TRAIN_IDS)),))
# COCO (81 classes): masks/<id>.png hold 0 = background, 1..80 (UniMatch's masks). The split folders hold
# labeled lists only: the unlabeled images are train2017/*.jpg minus the labeled list. Crop 513 (UniMatch).
COCO = ListPreset("coco", COCO_CLASSES, voc_palette(81), eval_mode="original", crop_size=513,
                  val_list=SPLITS + "val.txt", train_list=GlobList("train2017/*.jpg", _coco_mask),
                  unlabeled_glob=GlobList("train2017/*.jpg"))
# ADE20K (SceneParsing 150): raw 0 = "other" -> ignore, c -> c - 1. Crop 518 and the splits are UniMatch V2's
# (the only published semi-supervised ADE20K protocol here); V2 evaluates in `resize` mode (m = 14), the ResNet
# default here is `original` (set eval.mode=resize for ViT encoders). The palette is generated, not ADE's own.
ADE20K = ListPreset("ade20k", ADE20K_CLASSES, voc_palette(151)[1:], eval_mode="original", crop_size=518,
                    label_lut=make_lut({0: IGNORE_INDEX, **{c: c - 1 for c in range(1, 151)}}),
                    train_list=SPLITS + "all/labeled.txt", val_list=SPLITS + "val.txt")

# GTA5 (Richter et al. 2016, 24,966 rendered 1914x1052 frames): images/<name>.png, labels/<name>.png in Cityscapes
# label ids, mapped to the Cityscapes train ids (the same classes and palette), so it can be the source of a run
# whose target is Cityscapes. No val list of its own (a single-dataset run names one: data.val_list). Eval mode
# and crop as Cityscapes.
GTA5 = ListPreset("gta5", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, eval_mode="sliding_window", crop_size=801,
                  label_lut=ignore_lut(CITYSCAPES_TRAIN_IDS), train_list=GlobList("images/*.png", _gta5_mask),
                  val_list=None)



@dataclass(eq=False)
class FolderPreset(ListPreset):
    """A user's folder: images/ and masks/ matched by file stem (an image without a mask is unlabeled), the
    val images from val/ or set apart, and the classes, palette and mask kind from its dataset card
    (data/card.py; docs/datasets.md, "Your own folder of images"). Registered without classes: `resolve`
    reads the card of data.root and returns the run's preset; the other methods resolve first when called
    on the registered one. data.labeled_list / unlabeled_list / val_list replace the scanned sets."""

    card: Optional[DatasetCard] = None
    _scans: Dict[str, FolderScan] = field(default_factory=dict, repr=False)

    def resolve(self, data_cfg, saved: Optional[dict] = None) -> "FolderPreset":
        if self.card is not None:
            return self
        value = _cfg(data_cfg, "root")
        card_path = Path(os.path.expanduser(str(value))) / CARD if value else None
        if saved and saved.get("class_names") and not (card_path and card_path.is_file()):
            # a checkpoint used away from its data (predict, export): the classes it was trained with
            return replace(self, class_names=tuple(saved["class_names"]), palette=tuple(saved["palette"]))
        card = read_card(self.resolve_root(data_cfg) / CARD)
        return replace(self, class_names=card.classes, palette=card.palette, label_lut=card.label_lut, card=card,
                       _scans={})

    def _ready(self, data_cfg) -> "FolderPreset":
        """This preset with its card (resolved from data_cfg when it has none: reading the data needs one)."""
        return self if self.card is not None else self.resolve(data_cfg)

    def build(self, data_cfg) -> DatasetSplits:
        return super().build(data_cfg) if self.card is not None else self._ready(data_cfg).build(data_cfg)

    def build_labeled(self, data_cfg) -> Tuple[Source, str]:
        ready = self._ready(data_cfg)
        return super().build_labeled(data_cfg) if ready is self else ready.build_labeled(data_cfg)

    def build_val(self, data_cfg) -> Tuple[Source, str]:
        ready = self._ready(data_cfg)
        return super().build_val(data_cfg) if ready is self else ready.build_val(data_cfg)

    def list_sets(self, data_cfg, failed):
        ready = self._ready(data_cfg)
        if ready is not self:
            return ready.list_sets(data_cfg, failed)
        try:  # a folder that cannot be paired (a mask without its image, ...) is one problem, not one per set
            if not all(_cfg(data_cfg, key) for key in ("labeled_list", "unlabeled_list", "val_list")):
                self._scan(self.resolve_root(data_cfg))
        except SemisegError as exc:
            failed("labeled", exc)
            return {"labeled": [], "unlabeled": [], "val": []}
        return super().list_sets(data_cfg, failed)

    def build_unlabeled(self, data_cfg) -> Tuple[Source, str]:
        ready = self._ready(data_cfg)
        if ready is not self:
            return ready.build_unlabeled(data_cfg)
        if _cfg(data_cfg, "unlabeled_list"):
            return super().build_unlabeled(data_cfg)
        root = self.resolve_root(data_cfg)
        scan = self._scan(root)
        entries = [ListEntry(e.image, None, 0, e.list_file) for e in scan.labeled + scan.unlabeled]
        return self._source(root, entries, False), _origin(entries)

    def _scan(self, root: Path) -> FolderScan:
        key = str(root)
        if key not in self._scans:
            self._scans[key] = scan_folder(root, self.card)
        return self._scans[key]

    def _folder(self, data_cfg) -> Optional[Path]:
        if _cfg(data_cfg, "split") not in (None, ""):
            raise SemisegError("data.split does not apply to the folder dataset: its labeled images are those "
                               "with a mask in masks/; carve fewer with data.num_labeled, or name lists with "
                               "data.labeled_list")
        return None

    def _labeled_entries(self, root: Path, data_cfg, folder: Optional[Path]) -> List[ListEntry]:
        if _cfg(data_cfg, "labeled_list"):
            return super()._labeled_entries(root, data_cfg, folder)
        return self._scan(root).labeled

    def _unlabeled_entries(self, root: Path, data_cfg, folder: Optional[Path],
                           labeled: List[ListEntry]) -> List[ListEntry]:
        if _cfg(data_cfg, "unlabeled_list"):
            return super()._unlabeled_entries(root, data_cfg, folder, labeled)
        taken = {image_key(e.image) for e in labeled}
        return [e for e in self._scan(root).unlabeled if image_key(e.image) not in taken]

    def _val_entries(self, root: Path, data_cfg) -> List[ListEntry]:
        if _cfg(data_cfg, "val_list"):
            return super()._val_entries(root, data_cfg)
        return self._scan(root).val

    def _source(self, root: Path, entries: List[ListEntry], labeled: bool) -> ListFileSource:
        return ListFileSource(root, entries, self.num_classes, entries[0].list_file if entries else "",
                              label_lut=self.label_lut, labeled=labeled, colours=self.card.colours,
                              colours_from=str(self.card.path))


# A user's own folder (images/, masks/, dataset.yaml): the classes come from the card. Crop 256 and evaluation
# on whole images, as CamVid's CPU budget (configs/_base_/folder.yaml).
FOLDER = FolderPreset("folder", (), (), eval_mode="original", crop_size=256)

for _preset in (CAMVID, PASCAL, CITYSCAPES, COCO, ADE20K, GTA5, FOLDER):
    DATASETS.register(_preset.name)(_preset)
