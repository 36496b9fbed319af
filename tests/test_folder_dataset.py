"""The folder dataset and its card (docs/datasets.md, "Your own folder of images"): a user's images/ and masks/
matched by file stem, binary, index and colour masks, the val images, and every bad card or folder as one line."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from semiseg.cli import main
from semiseg.config import DataConfig
from semiseg.data.card import read_card
from semiseg.data.check import check_dataset, load_check_config
from semiseg.errors import SemisegError
from semiseg.registry import DATASETS

REPO = Path(__file__).resolve().parents[1]
FIXMATCH = REPO / "configs" / "folder" / "fixmatch_lite0_256.yaml"
SIZE = 64
CAT, DOG = (200, 60, 40), (40, 70, 200)


def draw(index: int):
    """An image of a coloured ellipse (cat) and a box (dog) on a background, and its class-id mask
    (0 background, 1 cat, 2 dog)."""
    rng = np.random.default_rng(index)
    image = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in rng.integers(60, 180, 3)))
    mask = Image.new("L", (SIZE, SIZE), 0)
    x, y = (int(v) for v in rng.integers(4, 28, 2))
    for canvas, colours in ((ImageDraw.Draw(image), (CAT, DOG)), (ImageDraw.Draw(mask), (1, 2))):
        canvas.ellipse((x, y, x + 24, y + 20), fill=colours[0])
        canvas.rectangle((SIZE - 20, SIZE - 24 - y // 4, SIZE - 4, SIZE - 6), fill=colours[1])
    return image, np.array(mask)


def make_folder(root: Path, card: str = "binary: true\n", n: int = 20, labeled: int = 10, kind: str = "binary",
                palette=((0, 0, 0), CAT, DOG)) -> Path:
    """`n` images (PNG and JPEG) under root/images, the first `labeled` with a mask under root/masks:
    binary (0/255: the animals are foreground), index (class ids) or colour (RGB, `palette` per class)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image, ids = draw(i)
        image.save(root / "images" / f"photo_{i:02d}.{'jpg' if i % 2 else 'png'}")
        if i < labeled:
            if kind == "binary":
                mask = Image.fromarray(np.where(ids > 0, 255, 0).astype(np.uint8))
            elif kind == "colour":
                mask = Image.fromarray(np.asarray(palette, np.uint8)[ids])
            else:
                mask = Image.fromarray(ids)
            mask.save(root / "masks" / f"photo_{i:02d}.png")
    (root / "dataset.yaml").write_text(card)
    return root


def build(root: Path, **kwargs):
    return DATASETS.get("folder").build(DataConfig(dataset="folder", root=str(root), **kwargs))


def names(source):
    return [source.name(i) for i in range(len(source))]


# ---------------------------------------------------------------- acceptance: one command trains, then predicts
@pytest.fixture
def one_thread():
    """One CPU thread, as the subprocess runs of tests/engine_runs.py: two threads on the shared 2-core
    machine are several times slower once another process runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_folder_trains_from_one_command_and_predicts(tmp_path, capsys, one_thread):
    root = make_folder(tmp_path / "mine")
    out = tmp_path / "run"
    assert main(["train", str(FIXMATCH), f"data.root={root}", "data.crop_size=64", "train.total_iters=4",
                 "train.total_batch_size=2", "train.unlabeled_batch_size=2", "data.num_workers=0",
                 f"output_dir={out}", "--no-progress"]) == 0
    ckpt = torch.load(out / "latest.pt", map_location="cpu", weights_only=True)
    assert ckpt["meta"]["class_names"] == ["background", "foreground"] and ckpt["meta"]["num_classes"] == 2
    assert "background" in capsys.readouterr().out  # the IoU table names the card's classes

    inputs = [root / "images" / "photo_00.png", root / "images" / "photo_15.jpg"]
    assert main(["predict", str(out / "latest.pt"), *map(str, inputs), "--out", str(tmp_path / "pred")]) == 0
    for image in inputs:
        pred = np.array(Image.open(tmp_path / "pred" / f"{image.name}.pred.png"))
        assert pred.shape == (SIZE, SIZE) and set(np.unique(pred).tolist()) <= {0, 1}
    # the checkpoint carries the classes: it predicts where the folder (and its card) is not
    (root / "dataset.yaml").rename(tmp_path / "card.yaml")
    assert main(["predict", str(out / "latest.pt"), str(inputs[0]), "--out", str(tmp_path / "pred2")]) == 0
    assert (tmp_path / "pred2" / "photo_00.png.pred.png").is_file()


# ---------------------------------------------------------------- pairing by stem, sets
def test_stem_matching_labeled_unlabeled_and_val(tmp_path):
    root = make_folder(tmp_path / "mine")
    out = build(root)
    assert (len(out.labeled), len(out.unlabeled), len(out.val)) == (8, 10, 2)
    assert set(names(out.unlabeled)) == {f"images/photo_{i:02d}.{'jpg' if i % 2 else 'png'}" for i in range(10, 20)}
    assert out.unlabeled.load(0).mask is None  # no mask: unlabeled
    labeled = set(names(out.labeled)) | set(names(out.val))
    assert labeled == {f"images/photo_{i:02d}.{'jpg' if i % 2 else 'png'}" for i in range(10)}
    for source in (out.labeled, out.val):  # each image has its own mask (photo_03.jpg <-> masks/photo_03.png)
        for i in range(len(source)):
            sample, index = source.load(i), int(source.name(i)[len("images/photo_"):][:2])
            assert (sample.mask == (draw(index)[1] > 0)).all()
    assert names(build(root).val) == names(out.val)  # the val carve-out is reproducible
    assert len(build(root, num_labeled=3).labeled) == 3  # the usual carve-out applies to the rest


def test_subfolders_and_hidden_files(tmp_path):
    root = make_folder(tmp_path / "mine", n=4, labeled=3)
    (root / "images" / "site_b").mkdir()
    (root / "masks" / "site_b").mkdir()
    shutil.copy(root / "images" / "photo_00.png", root / "images" / "site_b" / "photo_00.png")
    shutil.copy(root / "masks" / "photo_00.png", root / "masks" / "site_b" / "photo_00.png")
    (root / "images" / ".DS_Store").write_bytes(b"\0")
    (root / "images" / "._photo_01.jpg").write_bytes(b"\0")
    out = build(root)
    assert "images/site_b/photo_00.png" in names(out.labeled) + names(out.val)
    assert len(out.labeled) + len(out.val) == 4 and len(out.unlabeled) == 1


def test_mask_without_image_and_two_images_of_one_stem(tmp_path):
    root = make_folder(tmp_path / "mine", n=4, labeled=3)
    shutil.copy(root / "masks" / "photo_00.png", root / "masks" / "extra.png")
    with pytest.raises(SemisegError, match=r"^mask .*/masks/extra\.png has no image of the same name \('extra\.\*'\) "
                                           r"in .*/images; add the image or remove the mask$"):
        build(root)
    (root / "masks" / "extra.png").unlink()
    shutil.copy(root / "images" / "photo_00.png", root / "images" / "photo_00.jpg")
    with pytest.raises(SemisegError, match=r"photo_00\.jpg and .*photo_00\.png have the same name without "
                                           r"extension \('photo_00'\)"):
        build(root)


def test_val_folder(tmp_path):
    root = make_folder(tmp_path / "mine", n=6, labeled=4)
    make_folder(tmp_path / "val_tree", n=2, labeled=2)
    (root / "val").mkdir()
    for part in ("images", "masks"):
        shutil.move(str(tmp_path / "val_tree" / part), str(root / "val" / part))
    out = build(root)
    assert (len(out.labeled), len(out.unlabeled)) == (4, 2)  # every labeled image trains
    assert names(out.val) == ["val/images/photo_00.png", "val/images/photo_01.jpg"]
    (root / "val" / "masks" / "photo_01.png").unlink()
    with pytest.raises(SemisegError, match=r"^val image .*val/images/photo_01\.jpg has no mask in .*val/masks"):
        build(root)


def test_val_fraction_and_too_few_labeled(tmp_path):
    root = make_folder(tmp_path / "mine", "binary: true\nval_fraction: 0.5\n")
    assert (len(build(root).labeled), len(build(root).val)) == (5, 5)
    root = make_folder(tmp_path / "one", n=3, labeled=1)
    with pytest.raises(SemisegError, match=r"has 1 image with a mask: at least 2 are needed"):
        build(root)
    root = make_folder(tmp_path / "none", n=3, labeled=0)
    with pytest.raises(SemisegError, match=r"^none of the 3 images in .*/images has a mask in .*/masks"):
        build(root)


# ---------------------------------------------------------------- the three kinds of masks
def test_binary_masks_0_255_and_0_1(tmp_path):
    root = make_folder(tmp_path / "mine", n=4, labeled=4)
    Image.fromarray((draw(1)[1] > 0).astype(np.uint8)).save(root / "masks" / "photo_01.png")  # 0/1
    preset = DATASETS.get("folder").resolve(DataConfig(dataset="folder", root=str(root)))
    assert preset.class_names == ("background", "foreground") and preset.num_classes == 2
    source = preset._source(root, build(root).labeled.entries + build(root).val.entries, True)
    for i in range(len(source)):
        index = int(source.name(i)[len("images/photo_"):][:2])
        assert (source.load(i).mask == (draw(index)[1] > 0)).all()
    Image.fromarray(np.full((SIZE, SIZE), 128, np.uint8)).save(root / "masks" / "photo_01.png")
    entry = next(e for e in source.entries if e.mask == "masks/photo_01.png")
    with pytest.raises(SemisegError, match=r"has values 128 outside 0\.\.1 after the dataset's label map"):
        source.read_mask(entry)
    # an ignore value of its own: 128 -> 255
    (root / "dataset.yaml").write_text("binary: true\nignore: 128\n")
    card = read_card(root / "dataset.yaml")
    assert card.label_lut[[0, 1, 128, 255]].tolist() == [0, 1, 255, 1]


def test_index_masks_with_names_palette_and_ignore(tmp_path):
    card = ("name: pets\nclasses: [background, cat, dog]\npalette: [[0, 0, 0], [200, 60, 40], [40, 70, 200]]\n"
            "ignore: 9\n")
    root = make_folder(tmp_path / "mine", card, n=4, labeled=4, kind="index")
    mask = draw(0)[1].copy()
    mask[:2] = 9
    Image.fromarray(mask).save(root / "masks" / "photo_00.png")
    preset = DATASETS.get("folder").resolve(DataConfig(dataset="folder", root=str(root)))
    assert preset.class_names == ("background", "cat", "dog") and preset.palette[1] == CAT
    out = build(root)
    source = out.labeled if "images/photo_00.png" in names(out.labeled) else out.val
    loaded = source.load(names(source).index("images/photo_00.png")).mask
    assert (loaded[:2] == 255).all() and (loaded[2:] == draw(0)[1][2:]).all()
    assert preset.card.mask_kind == "index" and preset.label_lut[[9, 3]].tolist() == [255, 3]


def test_colour_masks_through_the_card(tmp_path):
    card = ("classes: [background, cat, dog]\ncolors:\n  0,0,0: background\n  '#c83c28': cat\n  '40, 70, 200': dog\n"
            "  '255,255,255': ignore\n")
    root = make_folder(tmp_path / "mine", card, n=6, labeled=4, kind="colour")
    mask = np.asarray(((0, 0, 0), CAT, DOG), np.uint8)[draw(2)[1]]
    mask[-1] = 255  # a white border row: ignore
    Image.fromarray(mask).save(root / "masks" / "photo_02.png")
    preset = DATASETS.get("folder").resolve(DataConfig(dataset="folder", root=str(root)))
    assert preset.palette == ((0, 0, 0), CAT, DOG) and preset.card.mask_kind == "colour"  # palette from colors
    out = build(root)
    for source in (out.labeled, out.val):
        for i in range(len(source)):
            index = int(source.name(i)[len("images/photo_"):][:2])
            expected = draw(index)[1].copy()
            if index == 2:
                expected[-1] = 255
            assert (source.load(i).mask == expected).all()

    # a colour the card does not name: one line naming the file and the colour; data check reports it
    bad = np.asarray(((0, 0, 0), CAT, DOG), np.uint8)[draw(3)[1]]
    bad[5, 7] = (1, 2, 3)
    Image.fromarray(bad).save(root / "masks" / "photo_03.png")
    entry = next(e for s in (out.labeled, out.val) for e in s.entries if e.mask == "masks/photo_03.png")
    with pytest.raises(SemisegError, match=r"^mask .*/masks/photo_03\.png \(listed at .*\) has the colour 1,2,3 "
                                           r"\(first at x=7, y=5\) that the colors of .*/dataset\.yaml do not name; "
                                           r"add '1,2,3: <class or ignore>' to its colors"):
        preset._source(root, [entry], True).load(0)
    report = check_dataset(load_check_config("folder", [f"data.root={root}"]), jobs=1, progress=False)
    assert [(p.kind, Path(p.file).name) for p in report.problems] == [("unknown-colour", "photo_03.png")]
    assert main(["data", "check", "folder", "--root", str(root), "--no-progress"]) == 1


def test_data_check_on_a_clean_folder_and_on_an_orphan_mask(tmp_path, capsys):
    root = make_folder(tmp_path / "mine", n=6, labeled=4)
    assert main(["data", "check", "folder", "--root", str(root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "clean: 6 entries checked, no problems" in out and "foreground" in out
    shutil.copy(root / "masks" / "photo_00.png", root / "masks" / "lost.png")
    report = check_dataset(load_check_config("folder", [f"data.root={root}"]), jobs=1, progress=False)
    assert [(p.kind, Path(p.file).name) for p in report.problems] == [("missing", "lost.png")]


# ---------------------------------------------------------------- bad cards: one line naming the file and key
@pytest.mark.parametrize("card, message", [
    ("classes: [a, b]\nclases: [a]\n", r"unknown key 'clases' \(did you mean 'classes'\?\); a dataset card has"),
    ("classes: cat\n", r"'classes' must be a list of class names, got str 'cat'"),
    ("classes: []\n", r"'classes' must be a list of class names, got list \[\]"),
    ("classes: [a, b]\nignore: high\n", r"'ignore' must be an integer 0\.\.255, got str 'high'"),
    ("classes: [a, b]\nignore: 1\n", r"'ignore' is 1, the id of class 'b'; the ignore value must be above"),
    ("binary: yes\n", r"'binary' must be true or false, got str 'yes'"),
    ("binary: true\nignore: 255\n", r"'ignore' is 255, which binary: true reads as foreground"),
    ("binary: true\nclasses: [a, b, c]\n", r"'classes' has 3 names but binary: true means 2"),
    ("classes: [a, b]\npalette: [[0, 0, 0], [0, 0]]\n", r"'palette' must be a list of \[R, G, B\] colours"),
    ("classes: [a, b, c]\npalette: [[0, 0, 0], [9, 9, 9]]\n", r"'palette' has 2 colours for 3 classes"),
    ("classes: [a, a]\n", r"'classes' names 'a' twice"),
    ("name: pets\n", r"'classes' is missing: list the class names"),
    ("classes: [a, b]\ncolors: {'1,2': a}\n", r"'colors' has the key '1,2', which is not a colour"),
    ("classes: [cat, dog]\ncolors: {'1,2,3': cta}\n", r"'colors' maps '1,2,3' to 'cta', which is not one of the "
                                                      r"classes \(did you mean 'cat'\?\)"),
    ("classes: [a, b]\ncolors: [1, 2, 3]\n", r"'colors' must be a mapping of 'R,G,B'"),
    ("binary: true\ncolors: {'0,0,0': background}\n", r"'colors' and binary: true exclude each other"),
    ("classes: [a, b]\ncolors: {'0,0,0': a}\nignore: 9\n", r"'ignore' does not apply to colour masks"),
    ("val_fraction: 1.5\nbinary: true\n", r"'val_fraction' must be a number between 0 and 1"),
    ("- a\n- b\n", r"a dataset card must be a mapping of keys"),
    ("classes: [a, b\n", r"line \d+: not valid YAML"),
    ("classes: [a]\nclasses: [b]\n", r"line 2: key 'classes' appears twice \(first on line 1\); keep one"),
])
def test_card_errors(tmp_path, card, message):
    root = make_folder(tmp_path / "mine", card, n=2, labeled=2)
    with pytest.raises(SemisegError) as info:
        build(root)
    assert "\n" not in str(info.value) and str(root / "dataset.yaml") in str(info.value)
    assert re.search(message, str(info.value)), str(info.value)


def test_missing_card_and_missing_images(tmp_path):
    root = make_folder(tmp_path / "mine", n=2, labeled=2)
    (root / "dataset.yaml").unlink()
    with pytest.raises(SemisegError, match=r"^dataset card not found: .*/mine/dataset\.yaml; the folder dataset"):
        build(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "dataset.yaml").write_text("binary: true\n")
    with pytest.raises(SemisegError, match=r"^.*/empty/images does not exist: the folder dataset reads its images"):
        build(empty)
    with pytest.raises(SemisegError, match=r"dataset 'folder' has no default folder; pass data\.root="):
        DATASETS.get("folder").build(DataConfig(dataset="folder"))
    with pytest.raises(SemisegError, match=r"^data\.split does not apply to the folder dataset"):
        build(make_folder(tmp_path / "other", n=2, labeled=2), split="1_8")
