"""`semiseg data split` (docs/datasets.md, "Splitting a list"): reproducible labeled/unlabeled lists that the
data layer reads as they are, the fraction and count arithmetic, `--balanced`, and every bad input."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semiseg.cli import main
from semiseg.data.listfile import read_list
from semiseg.data.listsplit import balanced_choice, labeled_count, parse_labeled, seeded_order, split_list

SIZE = (8, 8)


def write_list(path: Path, n: int, masks: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"img/{i}.png" + (f" ann/{i}.png" if masks else "") + "\n" for i in range(n)))
    return path


def images(entries) -> list:
    return [e.image for e in entries]


def split(tmp_path, *args) -> int:
    return main(["data", "split", *map(str, args)])


def test_same_seed_same_split_and_a_fixed_order(tmp_path):
    listed = write_list(tmp_path / "train.txt", 40)
    a = split_list(listed, "1/8", 7, tmp_path / "a")
    b = split_list(listed, "1/8", 7, tmp_path / "b")
    for name in ("labeled.txt", "unlabeled.txt"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    assert images(a.labeled) == images(b.labeled) != images(split_list(listed, "1/8", 8, tmp_path / "c").labeled)
    # the order is SHA-256 of "<seed>:<path>", no random generator: pinned here for every machine and version
    assert seeded_order(read_list(listed)[:10], 0) == [8, 7, 5, 3, 2, 9, 6, 1, 4, 0]
    # both files are lists the data layer reads: every line once, in the list's order
    labeled, unlabeled = read_list(tmp_path / "a" / "labeled.txt"), read_list(tmp_path / "a" / "unlabeled.txt")
    assert len(labeled) == 5 and len(unlabeled) == 35
    assert sorted(images(labeled) + images(unlabeled), key=lambda p: int(Path(p).stem)) == images(read_list(listed))
    assert images(labeled) == sorted(images(labeled), key=lambda p: int(Path(p).stem))
    assert all(e.mask == e.image.replace("img/", "ann/") for e in labeled + unlabeled)


def test_fraction_and_count_arithmetic(tmp_path):
    assert [parse_labeled(t) for t in ("1/8", "0.125", "92", "1/1")] == [0.125, 0.125, 92, 1]
    assert labeled_count(parse_labeled("1/8"), 367, Path("l")) == 46  # 45.875
    assert labeled_count(parse_labeled("1/8"), 20, Path("l")) == 3  # 2.5, half up
    assert labeled_count(parse_labeled("1/8"), 12, Path("l")) == 2  # 1.5
    assert labeled_count(parse_labeled("1/100"), 20, Path("l")) == 1  # at least one
    assert labeled_count(parse_labeled("5"), 20, Path("l")) == 5
    listed = write_list(tmp_path / "train.txt", 20)
    small, large = split_list(listed, "3", 1, tmp_path / "s"), split_list(listed, "1/2", 1, tmp_path / "l")
    assert len(small.labeled) == 3 and len(large.labeled) == 10
    assert set(images(small.labeled)) < set(images(large.labeled))  # one seed: smaller sets nested in larger ones
    every = split_list(listed, "20", 1, tmp_path / "all")
    assert len(every.labeled) == 20 and not (tmp_path / "all" / "unlabeled.txt").exists()


def test_the_split_trains_as_a_list_pair_and_as_a_split_folder(tmp_path, capsys):
    from semiseg.config import load_config
    from semiseg.data.presets import CAMVID

    root = tmp_path / "camvid"
    lines = []
    for i in range(6):
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(root / "img" / f"{i}.png")
        lines.append(f"img/{i}.png img/{i}.png")
    (root / "train.txt").write_text("\n".join(lines))
    (root / "val.txt").write_text(lines[0])
    out = tmp_path / "splits" / "camvid" / "mine"
    assert split(tmp_path, root / "train.txt", "--labeled", "1/3", "--seed", 4, "--out", out) == 0
    said = capsys.readouterr().out
    assert "2 of 6 images labeled" in said and f"data.labeled_list={out / 'labeled.txt'}" in said
    for overrides in ([f"data.labeled_list={out / 'labeled.txt'}", f"data.unlabeled_list={out / 'unlabeled.txt'}"],
                      [f"data.splits_dir={tmp_path / 'splits'}", "data.split=mine"]):
        cfg = load_config(None, ["data.dataset=camvid", f"data.root={root}", "train.total_iters=1", *overrides])
        splits = CAMVID.build(cfg.data)
        assert (len(splits.labeled), len(splits.unlabeled)) == (2, 4)


def make_masks(root: Path, classes_per_image) -> Path:
    """One mask per image holding the given class values (and 255), and the list of them."""
    (root / "ann").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, classes in enumerate(classes_per_image):
        values = np.full(SIZE, 255, np.uint8)
        for k, c in enumerate(classes):
            values[k] = c
        Image.fromarray(values).save(root / "ann" / f"{i}.png")
        lines.append(f"img/{i}.png ann/{i}.png")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root / "train.txt"


def test_balanced_covers_every_class(tmp_path):
    # class 0 everywhere, 1 in half, 2..4 in one image each, 11 (CamVid's Unlabelled) in one
    classes = [[0] + ([1] if i % 2 else []) for i in range(30)]
    classes[5] += [2]
    classes[17] += [3]
    classes[22] += [4, 11]
    listed = make_masks(tmp_path, classes)
    for seed in range(3):
        result = split_list(listed, "4", seed, tmp_path / f"b{seed}", balanced=True, dataset="camvid")
        held = set().union(*(classes[int(Path(e.image).stem)] for e in result.labeled)) - {11}
        assert held == {0, 1, 2, 3, 4} and result.classes_covered == result.classes_total == 5
    # without --dataset every raw value but 255 is a class (11 too); not balanced, some classes are missed
    assert split_list(listed, "4", 0, tmp_path / "raw", balanced=True).classes_total == 6
    plain = split_list(listed, "4", 0, tmp_path / "plain")
    assert not {2, 3, 4} <= set().union(*(classes[int(Path(e.image).stem)] for e in plain.labeled))
    # too few labeled images for all classes: the rarest first, in seed order
    assert balanced_choice([{0}, {0, 1}, {0, 2}, {0, 1}], [3, 1, 0, 2], 1) == [2]


def test_overwrite(tmp_path):
    listed = write_list(tmp_path / "train.txt", 10)
    out = tmp_path / "out"
    assert split(tmp_path, listed, "--labeled", 2, "--out", out) == 0
    first = (out / "labeled.txt").read_text()
    assert split(tmp_path, listed, "--labeled", 3, "--out", out, "--overwrite") == 0
    assert (out / "labeled.txt").read_text() != first and len(read_list(out / "labeled.txt")) == 3
    assert split(tmp_path, listed, "--labeled", 10, "--out", out, "--overwrite") == 0
    assert not (out / "unlabeled.txt").exists()  # stale: every image is labeled now
    assert sorted(p.name for p in out.iterdir()) == ["labeled.txt"]


def duplicated(tmp):
    write_list(tmp / "train.txt", 3)
    (tmp / "train.txt").write_text((tmp / "train.txt").read_text() + "img/1.png ann/1.png\n")
    return [tmp / "train.txt", "--labeled", "1", "--out", tmp / "out"]


def over_its_list(tmp):
    write_list(tmp / "split" / "labeled.txt", 4)
    return [tmp / "split" / "labeled.txt", "--labeled", "1", "--out", tmp / "split", "--overwrite"]


def balanced_without_masks(tmp):
    return [write_list(tmp / "train.txt", 4, masks=False), "--labeled", "1", "--balanced", "--out", tmp / "out"]


BAD = {
    "missing_list": (lambda tmp: [tmp / "nope.txt", "--labeled", "1/8", "--out", tmp / "out"],
                     "error: list file not found: {tmp}/nope.txt; fix the path"),
    "unparsable_labeled": (lambda tmp: [write_list(tmp / "train.txt", 4), "--labeled", "half", "--out", tmp / "out"],
                           "error: --labeled 'half' is neither a fraction like 1/8 nor a count like 92"),
    "zero": (lambda tmp: [write_list(tmp / "train.txt", 4), "--labeled", "0", "--out", tmp / "out"],
             "error: --labeled 0: label at least one image (a count N >= 1 or a fraction like 1/8)"),
    "zero_fraction": (lambda tmp: [write_list(tmp / "train.txt", 4), "--labeled", "0/8", "--out", tmp / "out"],
                      "error: --labeled 0/8: a fraction must be in (0, 1], like 1/8"),
    "fraction_above_one": (lambda tmp: [write_list(tmp / "train.txt", 4), "--labeled", "9/8", "--out", tmp / "out"],
                           "error: --labeled 9/8: a fraction must be in (0, 1], like 1/8"),
    "too_many": (lambda tmp: [write_list(tmp / "train.txt", 4), "--labeled", "99", "--out", tmp / "out"],
                 "error: --labeled 99 but {tmp}/train.txt has 4 images; use 1..4 (or a fraction like 1/8)"),
    "out_is_a_file": (lambda tmp: [write_list(tmp / "train.txt", 4), "--labeled", "1", "--out", tmp / "train.txt"],
                      "error: --out {tmp}/train.txt is an existing file, not a folder: give a folder for labeled.txt "
                      "and unlabeled.txt"),
    "out_holds_a_split": (lambda tmp: [write_list(tmp / "train.txt", 4), "--labeled", "1", "--out",
                                       write_list(tmp / "out" / "unlabeled.txt", 1).parent],
                          "error: --out {tmp}/out already holds unlabeled.txt; pass --overwrite to replace it, or pick "
                          "another folder"),
    "over_its_list": (over_its_list, "error: --out {tmp}/split would write labeled.txt over the list being split "
                                     "({tmp}/split/labeled.txt); pick another folder"),
    "duplicate_line": (duplicated, "error: {tmp}/train.txt:4: image img/1.png is listed again (first at line 2); "
                                   "delete one of the two lines before splitting (semiseg data check lists them all)"),
    "balanced_without_masks": (balanced_without_masks,
                               "error: {tmp}/train.txt:1: --balanced reads the masks, and 'img/0.png' has no mask "
                               "path; write 'image mask' on every line, or drop --balanced"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_changes_nothing(case, tmp_path, capsys):
    make_argv, message = BAD[case]
    argv = make_argv(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert split(tmp_path, *argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [message.format(tmp=tmp_path)]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
