"""`semiseg data check` (docs/datasets.md, "Checking a dataset"): the real CamVid is clean, and on a tiny
CamVid-like tree with one planted problem of each kind the report lists every one and nothing else."""

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semiseg.cli import main
from semiseg.data.check import KINDS, check_dataset, load_check_config
from semiseg.data.listfile import DataFileError

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
SIZE = (24, 32)  # H, W


def image(path: Path, seed: int, exif_orientation=None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*SIZE, 3), dtype=np.uint8))
    if exif_orientation is None:
        pixels.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        pixels.save(path, exif=exif)
    return path.parent.name + "/" + path.name


def mask(path: Path, seed: int, array=None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.random.default_rng(seed).integers(0, 12, SIZE, dtype=np.uint8) if array is None else array
    Image.fromarray(values).save(path)  # 0..11: CamVid's 11 classes and 11 = Unlabelled (ignored by its label map)
    return path.parent.name + "/" + path.name


def clean_tree(root: Path) -> Path:
    """4 train and 2 val pairs, and a config that names an unlabeled list (2 images without masks)."""
    train = [f"{image(root / 'train' / f'{i}.png', i)} {mask(root / 'trainannot' / f'{i}.png', i)}" for i in range(4)]
    val = [f"{image(root / 'val' / f'{i}.png', 10 + i)} {mask(root / 'valannot' / f'{i}.png', 10 + i)}"
           for i in range(2)]
    unlabeled = [image(root / "extra" / f"{i}.png", 20 + i) for i in range(2)]
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "val.txt").write_text("\n".join(val))
    (root / "unlabeled.txt").write_text("\n".join(unlabeled) + "\n")
    config = root / "check.yaml"
    config.write_text(f"data:\n  dataset: camvid\n  root: {root}\n  unlabeled_list: unlabeled.txt\n"
                      "train:\n  total_iters: 1\n")
    return config


def plant(root: Path) -> set:
    """One problem of each kind; the (kind, file) the report must name."""
    lines = (root / "train.txt").read_text().splitlines()
    bad = root / "train" / "bad.png"
    bad.write_bytes(b"not an image")
    sixteen = mask(root / "trainannot" / "16bit.png", 0, np.full(SIZE, 3, np.uint16))
    small, forty, rgb = np.zeros((10, 10), np.uint8), np.full(SIZE, 40, np.uint8), np.zeros((*SIZE, 3), np.uint8)
    lines += [
        f"train/missing.png {mask(root / 'trainannot' / 'm.png', 5)}",
        f"train/bad.png {mask(root / 'trainannot' / 'b.png', 6)}",
        f"{image(root / 'train' / 's.png', 7)} {mask(root / 'trainannot' / 'size.png', 7, small)}",
        f"{image(root / 'train' / 'r.png', 8)} {mask(root / 'trainannot' / 'range.png', 8, forty)}",
        f"{image(root / 'train' / 'c.png', 9)} {mask(root / 'trainannot' / 'rgb.png', 9, rgb)}",
        f"{image(root / 'train' / 'w.png', 10)} {sixteen}",
        f"{image(root / 'train' / 'exif.jpg', 11, exif_orientation=6)} {mask(root / 'trainannot' / 'e.png', 11)}",
        lines[1],  # a duplicate line
        image(root / "train" / "nomask.png", 12),  # a labeled line without a mask
    ]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "val.txt").write_text((root / "val.txt").read_text() + "\n" + lines[0] + "\n")  # labeled and val
    (root / "unlabeled.txt").write_text("# nothing yet\n\n")
    return {("missing", root / "train" / "missing.png"), ("unreadable", bad),
            ("size", root / "trainannot" / "size.png"), ("labels", root / "trainannot" / "range.png"),
            ("colour-mask", root / "trainannot" / "rgb.png"), ("16-bit", root / sixteen),
            ("exif", root / "train" / "exif.jpg"), ("duplicate", root / "train.txt"),
            ("no-mask", root / "train.txt"), ("overlap", root / "val.txt"), ("empty", root / "unlabeled.txt")}


def test_planted_problems_are_each_reported_once(tmp_path, capsys):
    root = tmp_path / "camvid"
    config = clean_tree(root)
    assert main(["data", "check", str(config), "--no-progress"]) == 0
    assert "clean: 8 entries checked, no problems" in capsys.readouterr().out

    expected = plant(root)
    # every kind but the unusable list file and the colour a folder's card lacks (tests/test_folder_dataset.py)
    assert {kind for kind, _ in expected} == set(KINDS) - {"list", "unknown-colour"}
    report = check_dataset(load_check_config(str(config)), jobs=2, progress=False)
    found = [(p.kind, Path(p.file)) for p in report.problems]
    assert sorted(found) == sorted(expected), report.format()
    assert all("\n" not in p.message for p in report.problems)
    assert report.problems == check_dataset(load_check_config(str(config)), jobs=1, progress=False).problems

    assert main(["data", "check", str(config), "--no-progress", "--jobs", "3"]) == 1
    out = capsys.readouterr().out
    for kind, file in expected:
        assert any(line.split()[0] == kind and str(file) in line for line in out.splitlines()), (kind, file, out)
    assert "11 problem(s) in 16 entries" in out


def test_training_reads_what_the_check_reads(tmp_path):
    """The label map of the preset is applied (CamVid's 11 = ignore is no problem, 12 is); overrides apply."""
    root = tmp_path / "camvid"
    config = clean_tree(root)
    report = check_dataset(load_check_config(str(config)), progress=False)
    assert report.clean and report.masks_counted == 4
    assert sum(report.histogram().values()) == pytest.approx(1.0)
    assert report.pixels[11] == 0 and report.pixels[255] > 0  # raw 11 counted as ignore

    mask(root / "trainannot" / "0.png", 0, np.full(SIZE, 12, np.uint8))
    report = check_dataset(load_check_config(str(config)), progress=False)
    assert [(p.kind, Path(p.file).name) for p in report.problems] == [("labels", "0.png")]
    # a carve-out moves images from the labeled to the unlabeled set: their masks are no longer read
    cfg = load_check_config(str(config), ["data.num_labeled=1", "data.split_seed=1"])
    report = check_dataset(cfg, progress=False)
    assert len(report.sets["labeled"]) == 1 and len(report.sets["unlabeled"]) == 5
    assert report.clean == (report.sets["labeled"][0].image != "train/0.png")


def test_data_file_error_survives_a_dataloader_worker():
    """Worker processes re-raise an exception as type(exc)(message): the kind is optional."""
    exc = pickle.loads(pickle.dumps(DataFileError("mask x is a RGB image", "colour-mask", Path("x"))))
    assert str(exc) == "mask x is a RGB image" and isinstance(type(exc)("again"), DataFileError)


@pytest.mark.skipif(not CAMVID.is_dir(), reason="the CamVid data set (../shared/data/camvid) is not here")
def test_camvid_is_clean(capsys):
    assert main(["data", "check", "camvid", "--root", str(CAMVID), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("clean: 468 entries checked, no problems"), out
    rows = [line.split() for line in out.splitlines() if line.startswith("  ") and line.rstrip().endswith(("#", "%"))]
    assert len(rows) == 11 and all(float(row[1]) > 0 for row in rows), out
