"""The standard datasets in their real on-disk formats, each on a tiny tree built here (docs/datasets.md,
"Presets"): VOC 2012 + SBD (palette PNGs, SegmentationClassAug), Cityscapes (leftImg8bit, gtFine labelIds ->
train ids), COCO (81-class masks, the unlabeled list from train2017), ADE20K (0 = ignore, shift by one), CamVid;
and the published split lists, verified by their SHA-256."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semiseg.config import DataConfig
from semiseg.data.presets import CITYSCAPES_TRAIN_IDS, voc_palette
from semiseg.data.split_checksums import PUBLISHED_SHA256
from semiseg.errors import SemisegError
from semiseg.registry import DATASETS

SPLITS = Path(__file__).resolve().parents[2] / "shared" / "splits"
needs_splits = pytest.mark.skipif(not SPLITS.is_dir(), reason=f"shared split lists not found at {SPLITS}")
H, W = 12, 16


def image(path: Path, seed: int = 0, mode: str = "RGB") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path.as_posix()


def mask(path: Path, values: np.ndarray, palette=None) -> np.ndarray:
    """A single-channel PNG of `values`: mode P with `palette` (a list of colours), else mode L."""
    path.parent.mkdir(parents=True, exist_ok=True)
    png = Image.fromarray(values.astype(np.uint8), mode="L")
    if palette is not None:
        png = png.convert("P")
        png.putpalette([v for colour in palette for v in colour])
        png.putdata(list(values.astype(np.uint8).ravel()))
    png.save(path)
    return values


def pattern(values, seed=0) -> np.ndarray:
    """H x W drawn from `values`."""
    return np.random.default_rng(seed).choice(np.asarray(values), (H, W)).astype(np.uint8)


def lines(path: Path, rows) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows))  # no trailing newline, as many published lists
    return str(path)


def data(**kwargs) -> DataConfig:
    return DataConfig(**kwargs)


# ---------------------------------------------------------------- PASCAL VOC 2012 + SBD
def voc_tree(root: Path):
    """VOC's JPEGImages/ and SegmentationClass/ (palette PNGs: index = class, 255 on borders) for 2007_000032,
    2007_000039 (val: 2007_000033), SBD's SegmentationClassAug/ (grey PNGs) for 2008_000002, which VOC lacks."""
    expected = {}
    for i, name in enumerate(("2007_000032", "2007_000039", "2007_000033")):
        image(root / "JPEGImages" / f"{name}.jpg", i)
        expected[name] = mask(root / "SegmentationClass" / f"{name}.png", pattern([0, 15, 20, 255], i),
                              voc_palette(256))
    image(root / "JPEGImages" / "2008_000002.jpg", 5)
    expected["2008_000002"] = mask(root / "SegmentationClassAug" / "2008_000002.png", pattern([0, 7, 255], 5))
    train = [f"JPEGImages/{n}.jpg SegmentationClass/{n}.png" for n in ("2007_000032", "2007_000039", "2008_000002")]
    return expected, train, ["JPEGImages/2007_000033.jpg SegmentationClass/2007_000033.png"]


def test_voc_palette_pngs_and_sbd_aug(tmp_path):
    root = tmp_path / "VOC2012"
    expected, train, val = voc_tree(root)
    assert Image.open(root / "SegmentationClass" / "2007_000032.png").mode == "P"
    out = DATASETS.get("pascal").build(data(dataset="pascal", root=str(root), labeled_list=lines(root / "train_aug.txt",
                                            train), val_list=lines(root / "val.txt", val)))
    for i, name in enumerate(("2007_000032", "2007_000039", "2008_000002")):  # palette index = class id
        assert (out.labeled.load(i).mask == expected[name]).all()  # 2008_000002: from SegmentationClassAug/
    assert (out.val.load(0).mask == expected["2007_000033"]).all()
    (root / "SegmentationClassAug" / "2008_000002.png").unlink()
    with pytest.raises(SemisegError, match=r"^mask file not found: .*SegmentationClass/2008_000002\.png, nor "
                                           r".*SegmentationClassAug/2008_000002\.png \(listed at .*train_aug\.txt:3\)"):
        out.labeled.load(2)


@needs_splits
def test_voc_with_the_published_split_lists(tmp_path):
    root = tmp_path / "VOC2012"
    first = (SPLITS / "pascal" / "92" / "labeled.txt").read_text().splitlines()[0].split()
    image(root / first[0])
    values = mask(root / first[1].replace("SegmentationClass/", "SegmentationClassAug/"), pattern([0, 1, 255]))
    for rel in ("92/unlabeled.txt", "val.txt"):
        image(root / (SPLITS / "pascal" / rel).read_text().splitlines()[0].split()[0])
    out = DATASETS.get("pascal").build(data(dataset="pascal", root=str(root), splits_dir=str(SPLITS), split="92"))
    assert (len(out.labeled), len(out.unlabeled), len(out.val)) == (92, 10490, 1449)
    assert (out.labeled.load(0).mask == values).all()


# ---------------------------------------------------------------- Cityscapes
def cityscapes_tree(root: Path):
    """leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/.../*_gtFine_labelIds.png (with the colour and
    instance PNGs the download holds), as downloaded: no *_labelTrainIds.png."""
    ids = {}
    for split, city, frame in (("train", "aachen", "000000_000019"), ("train", "bochum", "000000_000313"),
                               ("val", "frankfurt", "000000_000294")):
        stem = f"{city}_{frame}"
        image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", len(ids))
        gt = root / "gtFine" / split / city
        ids[stem] = mask(gt / f"{stem}_gtFine_labelIds.png", pattern([0, 1, 7, 8, 11, 23, 24, 26, 33, 34], len(ids)))
        image(gt / f"{stem}_gtFine_color.png", 9)
        mask(gt / f"{stem}_gtFine_instanceIds.png", pattern([0, 26]))
    return ids


def train_ids(label_ids: np.ndarray) -> np.ndarray:
    """cityscapesScripts' labelIds -> trainIds (255 for every other id)."""
    out = np.full_like(label_ids, 255)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        out[label_ids == label_id] = train_id
    return out


def test_cityscapes_label_ids_to_train_ids(tmp_path):
    root = tmp_path / "cityscapes"
    ids = cityscapes_tree(root)
    assert CITYSCAPES_TRAIN_IDS[7] == 0 and CITYSCAPES_TRAIN_IDS[26] == 13 and CITYSCAPES_TRAIN_IDS[33] == 18
    assert len(CITYSCAPES_TRAIN_IDS) == 19 and sorted(CITYSCAPES_TRAIN_IDS.values()) == list(range(19))
    val = lines(tmp_path / "val.txt", ["leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png "
                                       "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"])
    out = DATASETS.get("cityscapes").build(data(dataset="cityscapes", root=str(root), val_list=val))
    assert [out.labeled.name(i) for i in range(2)] == [  # generated from leftImg8bit/train, sorted
        "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
        "leftImg8bit/train/bochum/bochum_000000_000313_leftImg8bit.png"]
    labels = out.labeled.load(0).mask
    assert (labels == train_ids(ids["aachen_000000_000019"])).all()
    assert set(np.unique(labels).tolist()) <= set(range(19)) | {255} and 255 in labels and 13 in labels
    assert (out.val.load(0).mask == train_ids(ids["frankfurt_000000_000294"])).all()
    # a *_labelTrainIds.png where it exists (createTrainIdLabelImgs was run) is read as it is
    mask(root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png", np.full((H, W), 5, np.uint8))
    assert (out.labeled.load(0).mask == 5).all()


# ---------------------------------------------------------------- COCO
def test_coco_81_classes_and_unlabeled_from_train2017(tmp_path):
    root = tmp_path / "coco"
    for i in range(6):
        image(root / "train2017" / f"{i:012d}.jpg", i)
    image(root / "val2017" / "000000000139.jpg")
    values = mask(root / "masks" / "000000000001.png", pattern([0, 1, 44, 80, 255]))
    mask(root / "masks" / "000000000003.png", pattern([0, 80]))
    mask(root / "masks" / "000000000139.png", pattern([0, 5]))
    labeled = lines(tmp_path / "1_512.txt", ["train2017/000000000001.jpg masks/000000000001.png",
                                             "train2017/000000000003.jpg masks/000000000003.png"])
    val = lines(tmp_path / "val.txt", ["val2017/000000000139.jpg masks/000000000139.png"])
    preset = DATASETS.get("coco")
    assert preset.num_classes == 81 and preset.class_names[0] == "background" and preset.class_names[80] == "toothbrush"
    out = preset.build(data(dataset="coco", root=str(root), labeled_list=labeled, val_list=val))
    assert (len(out.labeled), len(out.unlabeled), len(out.val)) == (2, 4, 1)
    assert (out.labeled.load(0).mask == values).all()
    assert [out.unlabeled.name(i) for i in range(4)] == [f"train2017/{i:012d}.jpg" for i in (0, 2, 4, 5)]
    assert all(out.unlabeled.load(i).mask is None for i in range(4))  # no masks needed for unlabeled images
    mask(root / "masks" / "000000000003.png", pattern([0, 81]))
    with pytest.raises(SemisegError, match=r"has values 81 outside 0\.\.80 \(C = 81, 255 = ignore\)"):
        out.labeled.load(1)


# ---------------------------------------------------------------- ADE20K
def test_ade20k_zero_is_ignore_and_classes_shift_by_one(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    image(root / "images" / "training" / "ADE_train_00000001.jpg")
    image(root / "images" / "validation" / "ADE_val_00000001.jpg", 1)
    raw = mask(root / "annotations" / "training" / "ADE_train_00000001.png", pattern([0, 1, 2, 150]))
    mask(root / "annotations" / "validation" / "ADE_val_00000001.png", pattern([0, 3]))
    train = lines(tmp_path / "labeled.txt", ["images/training/ADE_train_00000001.jpg "
                                             "annotations/training/ADE_train_00000001.png"])
    val = lines(tmp_path / "val.txt", ["images/validation/ADE_val_00000001.jpg "
                                       "annotations/validation/ADE_val_00000001.png"])
    out = DATASETS.get("ade20k").build(data(dataset="ade20k", root=str(root), labeled_list=train, val_list=val))
    labels = out.labeled.load(0).mask
    assert (labels[raw == 0] == 255).all() and (labels[raw == 1] == 0).all() and (labels[raw == 150] == 149).all()
    assert DATASETS.get("ade20k").num_classes == 150 and DATASETS.get("ade20k").class_names[0] == "wall"
    assert set(np.unique(out.val.load(0).mask).tolist()) <= {255, 2}


# ---------------------------------------------------------------- CamVid
def test_camvid_label_11_is_ignore(tmp_path):
    root = tmp_path / "camvid"
    for split, n in (("train", 3), ("val", 1)):
        rows = []
        for i in range(n):
            image(root / split / f"0001TP_{i:06d}.png", i)
            mask(root / f"{split}annot" / f"0001TP_{i:06d}.png", pattern(range(12), i))
            rows.append(f"{split}/0001TP_{i:06d}.png {split}annot/0001TP_{i:06d}.png")
        lines(root / f"{split}.txt", rows)
    out = DATASETS.get("camvid").build(data(dataset="camvid", root=str(root)))
    assert (len(out.labeled), len(out.val)) == (3, 1) and out.unlabeled is None
    raw = pattern(range(12), 0)
    labels = out.labeled.load(0).mask
    assert (labels[raw == 11] == 255).all() and (labels[raw < 11] == raw[raw < 11]).all()


# ---------------------------------------------------------------- the published split lists and their SHA-256
@needs_splits
def test_the_manifest_is_the_published_folder():
    published = {p.relative_to(SPLITS).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in SPLITS.rglob("*.txt")}
    assert published == PUBLISHED_SHA256
    sums = {line.split()[2]: line.split()[0] for line in (SPLITS / "SHA256SUMS").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    assert sums == PUBLISHED_SHA256


def voc_root(tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    image(root / "JPEGImages" / "2007_000032.jpg")
    return root


def test_an_edited_split_list_is_refused(tmp_path):
    splits, root = tmp_path / "splits", voc_root(tmp_path)
    lines(splits / "pascal" / "92" / "labeled.txt", ["JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png"])
    lines(splits / "pascal" / "val.txt", ["JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png"])
    config = dict(dataset="pascal", root=str(root), splits_dir=str(splits), split="92")
    with pytest.raises(SemisegError, match=r"^split list .*/splits/pascal/92/labeled\.txt is not the published "
                                           r"pascal/92/labeled\.txt \(SHA-256 [0-9a-f]{16}, published "
                                           r"8a02aa6a1253178b\): copy it again"):
        DATASETS.get("pascal").build(data(**config))
    # not checked: on request, or a split of one's own name
    assert len(DATASETS.get("pascal").build(data(**config, verify_splits=False)).labeled) == 1
    shutil.copytree(splits / "pascal" / "92", splits / "pascal" / "mine")
    with pytest.raises(SemisegError, match=r"^split list .*/splits/pascal/val\.txt is not the published "
                                           r"pascal/val\.txt"):  # the default val list is a published one
        DATASETS.get("pascal").build(data(**{**config, "split": "mine"}))
    out = DATASETS.get("pascal").build(data(**{**config, "split": "mine"}, val_list=str(splits / "pascal" / "val.txt")))
    assert (len(out.labeled), len(out.val)) == (1, 1)


@needs_splits
def test_a_tampered_copy_of_the_published_splits(tmp_path):
    copy = tmp_path / "splits"
    shutil.copytree(SPLITS / "pascal", copy / "pascal")
    root = voc_root(tmp_path)
    for rel in ("92/labeled.txt", "92/unlabeled.txt", "val.txt"):
        image(root / (SPLITS / "pascal" / rel).read_text().splitlines()[0].split()[0])
    config = dict(dataset="pascal", root=str(root), splits_dir=str(copy), split="92")
    assert len(DATASETS.get("pascal").build(data(**config)).labeled) == 92  # an intact copy
    unlabeled = copy / "pascal" / "92" / "unlabeled.txt"
    unlabeled.write_bytes(unlabeled.read_bytes().replace(b"\n", b"\r\n"))  # CRLF line ends: the same lists
    assert len(DATASETS.get("pascal").build(data(**config)).unlabeled) == 10490
    text = unlabeled.read_text().splitlines()
    unlabeled.write_text("\n".join(text[:-1]))  # one image fewer
    with pytest.raises(SemisegError, match=r"^split list .*/pascal/92/unlabeled\.txt is not the published "
                                           r"pascal/92/unlabeled\.txt"):
        DATASETS.get("pascal").build(data(**config))
