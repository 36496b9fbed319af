"""`semiseg predict` never writes to its inputs, and no two inputs share an output file."""

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from semiseg.cli import main
from test_cli import assert_one_line_error

TINY_MODEL = ["model.encoder=resnet18", "model.pretrained=null", "model.aspp_channels=8", "model.decoder_channels=8",
              "model.low_level_channels=8", "data.num_workers=0", "train.total_batch_size=2",
              "train.unlabeled_batch_size=2"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(["train", str(REPO / "configs/synthetic/supervised.yaml"), f"output_dir={out}",
                 "train.total_iters=1", "train.eval_every=100", "data.synthetic.num_train=4",
                 "data.synthetic.num_val=1", "data.num_labeled=4", "--no-progress", *TINY_MODEL])
    assert code == 0
    return out / "latest.pt"


def predict(capsys, *argv):
    code = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def image(path, value, size=(12, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)
    return path


def snapshot(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_out_equal_to_the_input_folder_keeps_the_inputs(checkpoint, tmp_path, capsys):
    for name, value in (("a.png", 10), ("b.jpg", 200), ("c.webp", 90)):
        image(tmp_path / name, value)
    before = snapshot(tmp_path)
    for _ in range(2):  # a second run skips the first run's outputs and overwrites them
        code, stdout, err = predict(capsys, checkpoint, tmp_path, "--out", tmp_path)
        assert code == 0, err
        after = snapshot(tmp_path)
        assert {k: after[k] for k in before} == before
        assert "wrote 3 predictions" in stdout
    assert set(after) - set(before) == {p for name in before for p in
                                        (name.with_name(f"{name}.pred.png"), name.with_name(f"{name}.overlay.jpg"))}
    assert Image.open(tmp_path / "a.png.pred.png").mode == "P"


def test_same_stem_different_extensions(checkpoint, tmp_path, capsys):
    image(tmp_path / "in" / "a.jpg", 30, (12, 16))
    image(tmp_path / "in" / "a.webp", 60, (20, 24))
    code, stdout, err = predict(capsys, checkpoint, tmp_path / "in", "--out", tmp_path / "out")
    assert code == 0, err
    assert "wrote 2 predictions" in stdout
    assert Image.open(tmp_path / "out" / "a.jpg.pred.png").size == (16, 12)
    assert Image.open(tmp_path / "out" / "a.webp.pred.png").size == (24, 20)
    assert (tmp_path / "out" / "a.jpg.overlay.jpg").is_file() and (tmp_path / "out" / "a.webp.overlay.jpg").is_file()


def test_two_folders_with_the_same_file_name(checkpoint, tmp_path, capsys):
    image(tmp_path / "x" / "a.png", 30, (12, 16))
    image(tmp_path / "y" / "a.png", 60, (20, 24))
    image(tmp_path / "y" / "b.png", 60)
    code, stdout, err = predict(capsys, checkpoint, tmp_path / "x", tmp_path / "y", tmp_path / "x" / "a.png",
                                "--out", tmp_path / "out")
    assert code == 0, err
    assert "wrote 3 predictions" in stdout  # x/a.png named twice is segmented once
    assert Image.open(tmp_path / "out" / "x" / "a.png.pred.png").size == (16, 12)
    assert Image.open(tmp_path / "out" / "y" / "a.png.pred.png").size == (24, 20)
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == sorted(
        ["x", "y", "a.png.pred.png", "a.png.overlay.jpg", "a.png.pred.png", "a.png.overlay.jpg",
         "b.png.pred.png", "b.png.overlay.jpg"])


def test_an_output_that_is_an_input_stops_first(checkpoint, tmp_path, capsys):
    first = image(tmp_path / "a.png", 10)
    second = image(tmp_path / "a.png.pred.png", 20)  # named explicitly, so it is an input
    before = snapshot(tmp_path)
    code, _, err = predict(capsys, checkpoint, first, second, "--out", tmp_path)
    assert_one_line_error(code, err, str(first), str(second), "--out")
    assert snapshot(tmp_path) == before


def test_out_is_a_file(checkpoint, tmp_path, capsys):
    image(tmp_path / "a.png", 10)
    (tmp_path / "out").write_text("notes")
    before = snapshot(tmp_path)
    code, _, err = predict(capsys, checkpoint, tmp_path / "a.png", "--out", tmp_path / "out")
    assert_one_line_error(code, err, str(tmp_path / "out"), "file")
    code, _, err = predict(capsys, checkpoint, tmp_path / "a.png", "--out", tmp_path / "out" / "sub")
    assert_one_line_error(code, err, "cannot write", str(tmp_path / "out" / "sub"))
    assert snapshot(tmp_path) == before


def test_read_only_out(checkpoint, tmp_path, capsys):
    image(tmp_path / "in" / "a.png", 10)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        code, _, err = predict(capsys, checkpoint, tmp_path / "in", "--out", out)
        assert_one_line_error(code, err, "cannot write", str(out / "a.png.pred.png"))
        code, _, err = predict(capsys, checkpoint, tmp_path / "in", "--out", out / "sub")
        assert_one_line_error(code, err, "cannot write", str(out / "sub"))
    finally:
        out.chmod(0o755)
    assert list(out.iterdir()) == []
