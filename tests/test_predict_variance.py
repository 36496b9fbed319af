"""`semiseg predict --variance`: DUEB's per-pixel variance as a 16-bit PNG (docs/methods/dueb.md)."""

import numpy as np
import pytest
from PIL import Image

from engine_runs import TINY_RUN, single_thread
from semiseg.cli import main
from semiseg.config import load_config
from semiseg.engine.inference import Segmenter, VARIANCE_SCALE
from semiseg.engine.trainer import Trainer

OVERRIDES = [a for a in TINY_RUN[1:] if not a.startswith("--")] + ["train.total_iters=1", "train.eval_every=100"]


def tiny_checkpoint(tmp_path, *extra):
    run = tmp_path / "run"
    with single_thread():
        Trainer(load_config(TINY_RUN[0], OVERRIDES + list(extra) + [f"output_dir={run}"]), progress=False).train()
    return run / "latest.pt"


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "in" / "a.png"
    path.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(path)
    return path


def test_variance_png_holds_the_scaled_variance(tmp_path, image):
    ckpt = tiny_checkpoint(tmp_path, "method.name=dueb", "model.heads.variance=true")
    assert main(["predict", str(ckpt), str(image), "--out", str(tmp_path / "out"), "--variance"]) == 0
    saved = np.array(Image.open(tmp_path / "out" / "a.png.variance.png"))
    assert saved.dtype == np.uint16 and saved.shape == (20, 24)
    expected = Segmenter(ckpt).variance(np.array(Image.open(image).convert("RGB")))
    assert np.array_equal(saved, np.clip(np.rint(expected.astype(np.float64) * VARIANCE_SCALE), 0, 65535))


def test_a_model_without_variance_head_stops_before_writing(tmp_path, image, capsys):
    ckpt = tiny_checkpoint(tmp_path)
    assert main(["predict", str(ckpt), str(image), "--out", str(tmp_path / "out"), "--variance"]) == 2
    assert "has no variance head" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
