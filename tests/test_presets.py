"""Dataset presets built on fake trees named after the real split lists, and on the real CamVid."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semiseg.config import DataConfig
from semiseg.data.presets import ADE20K, DatasetSplits, Preset, voc_palette
from semiseg.errors import SemisegError
from semiseg.registry import DATASETS

SHARED = Path(__file__).resolve().parents[2] / "shared"
SPLITS = SHARED / "splits"
CAMVID = SHARED / "data" / "camvid"
H, W = 12, 16
needs_splits = pytest.mark.skipif(not SPLITS.is_dir(), reason=f"shared split lists not found at {SPLITS}")


def head(rel, n):
    """The first n lines of a real split list."""
    return (SPLITS / rel).read_text().splitlines()[:n]


def write_files(root, lines, value=1, masks=True):
    """Tiny images (and masks of constant `value`) for 'image mask' list lines."""
    for line in lines:
        image, *mask = line.split()
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / image)
        if mask and masks:
            (root / mask[0]).parent.mkdir(parents=True, exist_ok=True)
            mask_pixels = np.full((H, W), value, np.uint8)
            mask_pixels[0, 0] = 255
            Image.fromarray(mask_pixels, mode="L").save(root / mask[0])


def write_list(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))  # no trailing newline, like many real lists


def fake_split(tmp_path, dataset, split, n_lab=3, n_unl=4, n_val=2, value=1):
    """A root with files for the first entries of the real lists, and a splits dir holding those entries
    (truncated copies of the published lists: read them with verify_splits=False)."""
    root, splits = tmp_path / "root", tmp_path / "splits"
    lab = head(f"{dataset}/{split}/labeled.txt", n_lab)
    val = head(f"{dataset}/val.txt", n_val)
    write_list(splits / dataset / split / "labeled.txt", lab)
    write_list(splits / dataset / "val.txt", val)
    write_files(root, lab + val, value)
    unl = []
    if (SPLITS / dataset / split / "unlabeled.txt").is_file():
        unl = head(f"{dataset}/{split}/unlabeled.txt", n_unl)
        write_list(splits / dataset / split / "unlabeled.txt", unl)
        write_files(root, unl, masks=False)
    return root, splits, lab, unl, val


def cfg(**kwargs):
    return DataConfig(**kwargs)


def test_registered_presets():
    expected = {"camvid": (11, "original"), "pascal": (21, "original"), "cityscapes": (19, "sliding_window"),
                "coco": (81, "original"), "ade20k": (150, "original"), "gta5": (19, "sliding_window")}
    for name, (classes, mode) in expected.items():
        preset = DATASETS.get(name)
        assert isinstance(preset, Preset) and preset.name == name
        assert preset.num_classes == classes == len(preset.palette) and preset.eval_mode == mode
    assert voc_palette(21)[15] == (192, 128, 128)  # VOC "person"
    assert DATASETS.get("cityscapes").palette[0] == (128, 64, 128)
    gta5, cityscapes = DATASETS.get("gta5"), DATASETS.get("cityscapes")
    assert gta5.class_names is cityscapes.class_names and gta5.palette == cityscapes.palette


def gta5_tree(root: Path, labels: dict) -> Path:
    """GTA5's layout: images/<name>.png (RGB) and labels/<name>.png, 16x16, label PNGs in Cityscapes label ids
    (palette mode, as GTA5 ships them); `labels` maps a name to its 16x16 array of label ids."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name, ids in labels.items():
        Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(root / "images" / f"{name}.png")
        label = Image.fromarray(ids.astype(np.uint8), mode="L").convert("P")
        label.putpalette(sum(DATASETS.get("cityscapes").palette, ()) * 13)
        label.save(root / "labels" / f"{name}.png")
    return root


def test_gta5_maps_cityscapes_label_ids_to_train_ids(tmp_path):
    ids = np.zeros((16, 16), np.uint8)  # 0 (unlabeled) -> ignore
    ids[:4], ids[4:8], ids[8:10], ids[10:12], ids[12:14, :8] = 7, 26, 33, 24, 34  # road, car, bicycle, person, 34
    ids[14:, :8], ids[14:, 8:] = 23, 1  # sky, ego vehicle (ignored)
    root = gta5_tree(tmp_path / "gta5", {"00002": ids, "00001": np.full((16, 16), 8, np.uint8)})
    out = DATASETS.get("gta5").build_labeled(cfg(dataset="gta5", root=str(root)))[0]
    assert [out.name(i) for i in range(len(out))] == ["images/00001.png", "images/00002.png"]  # sorted
    assert (out.load(0).mask == 1).all()  # sidewalk
    mask = out.load(1).mask
    assert (mask[:4] == 0).all() and (mask[4:8] == 13).all() and (mask[8:10] == 18).all()
    assert (mask[10:12] == 11).all() and (mask[14:, :8] == 10).all()
    assert (mask[14:, 8:] == 255).all() and (mask[12:14, :8] == 255).all() and (mask[12:14, 8:] == 255).all()
    # a list file instead of the folder's images; a single-dataset run names its val list
    write_list(root / "few.txt", ["images/00002.png labels/00002.png"])
    out = DATASETS.get("gta5").build(cfg(dataset="gta5", root=str(root), labeled_list="few.txt", val_list="few.txt"))
    assert len(out.labeled) == 1 and out.val.load(0).mask[0, 0] == 0
    with pytest.raises(SemisegError, match=r"^dataset 'gta5' has no val list of its own; set data.val_list="):
        DATASETS.get("gta5").build(cfg(dataset="gta5", root=str(root)))


@needs_splits
def test_pascal_split(tmp_path):
    root, splits, lab, unl, val = fake_split(tmp_path, "pascal", "92", value=20)
    out = DATASETS.get("pascal").build(cfg(dataset="pascal", root=str(root), splits_dir=str(splits),
                                           verify_splits=False, split="92"))
    assert isinstance(out, DatasetSplits)
    assert (len(out.labeled), len(out.unlabeled), len(out.val)) == (3, 4, 2)
    sample = out.labeled.load(0)
    assert sample.image.shape == (H, W, 3) and sample.mask.shape == (H, W)
    assert sample.name == lab[0].split()[0] == "JPEGImages/2007_000733.jpg"
    assert set(np.unique(sample.mask)) == {20, 255}
    assert out.unlabeled.load(3).mask is None  # unlabeled masks were never written
    assert out.val.load(1).name == val[1].split()[0]


@needs_splits
def test_pascal_real_lists_with_env_splits_dir(tmp_path, monkeypatch):
    root = tmp_path / "voc"
    write_files(root, head("pascal/92/labeled.txt", 1) + head("pascal/92/unlabeled.txt", 1) + head("pascal/val.txt", 1))
    monkeypatch.setenv("SEMISEG_SPLITS_DIR", str(SPLITS))
    out = DATASETS.get("pascal").build(cfg(dataset="pascal", root=str(root), split="92"))
    assert (len(out.labeled), len(out.unlabeled), len(out.val)) == (92, 10490, 1449)  # 10582 train_aug images in all
    assert out.labeled.load(0).mask.shape == (H, W)


@needs_splits
def test_unknown_split_lists_valid_ones(tmp_path):
    (tmp_path / "voc").mkdir()
    with pytest.raises(SemisegError, match=r"unknown split '1_3' for dataset 'pascal'.*available splits: "
                                           r"92, 183, 366, 732, 1464, 1_16, 1_8, 1_4, u2pl_1_16, u2pl_1_8, u2pl_1_4$"):
        DATASETS.get("pascal").build(cfg(dataset="pascal", root=str(tmp_path / "voc"), splits_dir=str(SPLITS),
                                         split="1_3"))


def test_missing_splits_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMISEG_SPLITS_DIR", raising=False)
    (tmp_path / "voc").mkdir()
    with pytest.raises(SemisegError, match=r"set data\.splits_dir=\.\.\./splits"):
        DATASETS.get("pascal").build(cfg(dataset="pascal", root=str(tmp_path / "voc")))
    with pytest.raises(SemisegError, match=r"nowhere/pascal not found: data\.splits_dir"):
        DATASETS.get("pascal").build(cfg(dataset="pascal", root=str(tmp_path / "voc"),
                                         splits_dir=str(tmp_path / "nowhere")))


def test_missing_root(tmp_path):
    with pytest.raises(SemisegError, match=r"dataset folder not found: .*absent .*pass data\.root="):
        DATASETS.get("camvid").build(cfg(dataset="camvid", root=str(tmp_path / "absent")))
    with pytest.raises(SemisegError, match=r"dataset 'pascal' has no default folder; pass data\.root="):
        DATASETS.get("pascal").build(cfg(dataset="pascal"))


def fake_camvid(tmp_path, n=6):
    root = tmp_path / "camvid"
    train = [f"train/s{i}.webp trainannot/s{i}.png" for i in range(n)]
    write_files(root, train + ["val/v0.webp valannot/v0.png"], value=11)
    write_list(root / "train.txt", train)
    write_list(root / "val.txt", ["val/v0.webp valannot/v0.png"])
    return root


def test_camvid_lut_and_carving(tmp_path):
    root = fake_camvid(tmp_path)
    out = DATASETS.get("camvid").build(cfg(dataset="camvid", root=str(root)))
    assert out.unlabeled is None and len(out.labeled) == 6
    assert set(np.unique(out.labeled.load(0).mask)) == {255}  # 11 (Unlabelled) -> ignore
    carved = DATASETS.get("camvid").build(cfg(dataset="camvid", root=str(root), num_labeled=2, split_seed=5))
    assert (len(carved.labeled), len(carved.unlabeled)) == (2, 4)
    names = {carved.labeled.name(i) for i in range(2)} | {carved.unlabeled.name(i) for i in range(4)}
    assert len(names) == 6
    again = DATASETS.get("camvid").build(cfg(dataset="camvid", root=str(root), num_labeled=2, split_seed=5))
    assert [again.labeled.name(i) for i in range(2)] == [carved.labeled.name(i) for i in range(2)]
    half = DATASETS.get("camvid").build(cfg(dataset="camvid", root=str(root), labeled_fraction=0.5))
    assert (len(half.labeled), len(half.unlabeled)) == (3, 3)


def test_explicit_lists_and_overlap(tmp_path):
    root = fake_camvid(tmp_path)
    write_list(root / "lab.txt", ["train/s0.webp trainannot/s0.png", "train/s1.webp trainannot/s1.png"])
    write_list(tmp_path / "unl.txt", ["train/s2.webp", "train/s3.webp"])
    out = DATASETS.get("camvid").build(cfg(dataset="camvid", root=str(root), labeled_list="lab.txt",
                                           unlabeled_list=str(tmp_path / "unl.txt"), val_list="train.txt"))
    assert (len(out.labeled), len(out.unlabeled), len(out.val)) == (2, 2, 6)
    write_list(tmp_path / "unl.txt", ["train/s2.webp", "train/s1.webp"])
    with pytest.raises(SemisegError, match=r"1 image\(s\) are both labeled and unlabeled, e\.g\. train/s1\.webp"):
        DATASETS.get("camvid").build(cfg(dataset="camvid", root=str(root), labeled_list="lab.txt",
                                         unlabeled_list=str(tmp_path / "unl.txt")))


def test_list_errors_through_build(tmp_path):
    root = fake_camvid(tmp_path)
    with pytest.raises(SemisegError, match=r"list file not found: .*nope\.txt; set data\.labeled_list"):
        DATASETS.get("camvid").build(cfg(dataset="camvid", root=str(root), labeled_list="nope.txt"))
    (root / "empty.txt").write_text("\n")
    with pytest.raises(SemisegError, match=r"empty\.txt has no entries"):
        DATASETS.get("camvid").build(cfg(dataset="camvid", root=str(root), val_list="empty.txt"))
    (tmp_path / "other").mkdir()
    write_list(tmp_path / "other" / "train.txt", ["train/s0.webp trainannot/s0.png"])
    write_list(tmp_path / "other" / "val.txt", ["val/v0.webp valannot/v0.png"])
    with pytest.raises(SemisegError, match=r"train\.txt:1: image .*s0\.webp not found; is data\.root="):
        DATASETS.get("camvid").build(cfg(dataset="camvid", root=str(tmp_path / "other")))


@needs_splits
def test_ade20k_lut(tmp_path):
    root, splits, *_ = fake_split(tmp_path, "ade20k", "1_8", value=1)
    out = DATASETS.get("ade20k").build(cfg(dataset="ade20k", root=str(root), splits_dir=str(splits),
                                           verify_splits=False, split="1_8"))
    mask = out.labeled.load(0).mask
    assert mask[0, 0] == 255 and mask[1, 1] == 0  # raw 255 stays ignore; raw 1 -> 0
    raw = np.array([[0, 1, 150]], np.uint8)
    assert ADE20K.label_lut[raw].tolist() == [[255, 0, 149]]


@needs_splits
def test_cityscapes_split_and_generated_train_list(tmp_path):
    root, splits, lab, unl, val = fake_split(tmp_path, "cityscapes", "1_8", value=18)
    out = DATASETS.get("cityscapes").build(cfg(dataset="cityscapes", root=str(root), splits_dir=str(splits),
                                               verify_splits=False, split="1_8"))
    assert (len(out.labeled), len(out.unlabeled), len(out.val)) == (3, 4, 2)
    assert out.labeled.load(2).mask.max() == 255 and out.val.load(0).mask[5, 5] == 18
    full = DATASETS.get("cityscapes").build(cfg(dataset="cityscapes", root=str(root), splits_dir=str(splits),
                                                verify_splits=False))
    assert len(full.labeled) == 7 and full.unlabeled is None  # every leftImg8bit/train image, with its mask
    names = [full.labeled.name(i) for i in range(len(full.labeled))]
    assert full.labeled.load(names.index(lab[0].split()[0])).mask[5, 5] == 18


@needs_splits
def test_coco_unlabeled_is_train2017_minus_labeled(tmp_path):
    root, splits, lab, _, _ = fake_split(tmp_path, "coco", "1_512", value=80)
    write_files(root, ["train2017/000000000001.jpg", "train2017/000000000002.jpg"])  # unlabeled, no masks
    out = DATASETS.get("coco").build(cfg(dataset="coco", root=str(root), splits_dir=str(splits), verify_splits=False,
                                         split="1_512"))
    assert (len(out.labeled), len(out.unlabeled), len(out.val)) == (3, 2, 2)
    assert out.labeled.load(0).mask[3, 3] == 80
    assert {out.unlabeled.name(i) for i in range(2)} == {"train2017/000000000001.jpg", "train2017/000000000002.jpg"}
    carved = DATASETS.get("coco").build(cfg(dataset="coco", root=str(root), splits_dir=str(splits),
                                            verify_splits=False, split="1_512",
                                            num_labeled=1))
    assert (len(carved.labeled), len(carved.unlabeled)) == (1, 4)


@pytest.mark.skipif(not (CAMVID / "train.txt").is_file(), reason=f"real CamVid not found at {CAMVID}")
def test_real_camvid():
    out = DATASETS.get("camvid").build(cfg(dataset="camvid", root=str(CAMVID)))
    assert len(out.labeled) == 367 and len(out.val) == 101 and out.unlabeled is None
    sample = out.labeled.load(0)
    assert sample.image.shape == (360, 480, 3) and sample.image.dtype == np.uint8
    assert set(np.unique(sample.mask).tolist()) <= set(range(11)) | {255}
