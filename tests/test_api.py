"""The Python API of the README: load_config, train, evaluate_checkpoint, Segmenter, on a tiny synthetic run."""

import numpy as np
import pytest

import semiseg
from engine_runs import TINY_RUN, single_thread


def test_readme_python_example_at_tiny_scale(tmp_path, monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)
    overrides = [item for item in TINY_RUN[1:] if not item.startswith("--")]
    cfg = semiseg.load_config("configs/synthetic/fixmatch.yaml",
                              [*overrides, "train.total_iters=2", "train.total_batch_size=4", f"output_dir={tmp_path}"])
    with single_thread():
        summary = semiseg.train(cfg, progress=False)
        result, label = semiseg.evaluate_checkpoint(tmp_path / "best.pt")
        segment = semiseg.Segmenter(tmp_path / "best.pt")
        image = (np.random.default_rng(0).random((40, 52, 3)) * 255).astype(np.uint8)
        labels = segment(image)
    assert summary["method"] == "fixmatch" and summary["iterations"] == 2
    assert result.miou == pytest.approx(summary["best_miou"]) and "fixmatch" in label
    assert labels.shape == (40, 52) and labels.dtype == np.uint8 and labels.max() < len(segment.class_names)
    with pytest.raises(semiseg.errors.SemisegError, match="RGB uint8"):
        segment(image.astype(np.float32))
    with pytest.raises(AttributeError):
        semiseg.no_such_function


# ---------------------------------------------------------------- semiseg.load (docs/deployment.md: Python API)
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from test_export import train_tiny

    return train_tiny(tmp_path_factory.mktemp("tiny"))


def test_load_predicts_what_semiseg_predict_writes(tiny, tmp_path, capsys):
    import torch
    from PIL import Image

    from semiseg.cli import main

    rgb = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    for mode in ("original", "sliding_window"):  # sliding_window: 32 px windows over the 40 x 52 image
        with single_thread():
            assert main(["predict", str(tiny), str(tmp_path / "a.png"), "--out", str(tmp_path / mode),
                         "--mode", mode]) == 0
            written = np.array(Image.open(tmp_path / mode / "a.png.pred.png"))
            model = semiseg.load(tiny, mode=mode)
            labels = model.predict(Image.open(tmp_path / "a.png"))
            same = [model.predict(image) for image in (rgb, chw, chw.float() / 255, chw.double() / 255)]
            proba = model.predict_proba(rgb)
        assert labels.dtype == np.int64 and labels.shape == (40, 52)
        assert np.array_equal(labels, written) and all(np.array_equal(s, written) for s in same)
        assert proba.shape == (7, 40, 52) and proba.dtype == np.float32
        assert np.allclose(proba.sum(0), 1, atol=1e-5) and np.array_equal(proba.argmax(0), written)
    assert model.num_classes == 7 == len(model.class_names) == len(model.palette)
    assert model.class_names[0] == "background" and model.device == torch.device("cpu")
    capsys.readouterr()


def test_pil_images_are_turned_upright_by_their_exif_orientation(tiny):
    import io

    from PIL import Image

    raw = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    image = Image.fromarray(raw)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation 6: shown rotated 90 degrees clockwise
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    with single_thread():
        model = semiseg.load(tiny)
        labels = model.predict(Image.open(buffer))
        upright = model.predict(np.ascontiguousarray(np.rot90(raw, -1)))
    assert labels.shape == (40, 24) and np.array_equal(labels, upright)


def test_load_and_predict_bad_inputs(tiny, tmp_path):
    import torch

    with pytest.raises(semiseg.errors.SemisegError, match="semiseg checkpoint not found: .*nope.pt"):
        semiseg.load(tmp_path / "nope.pt")
    with pytest.raises(semiseg.errors.SemisegError, match="unknown network 'teacher'"):
        semiseg.load(tiny, network="teacher")
    with pytest.raises(semiseg.errors.SemisegError, match="unknown mode 'center_crop' for predicting"):
        semiseg.load(tiny, mode="center_crop")
    model = semiseg.load(tiny)
    for bad in (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), torch.zeros(8, 8, 3, dtype=torch.uint8),
                "photo.jpg"):
        with pytest.raises(semiseg.errors.SemisegError, match=r"expected a PIL image, a numpy uint8 array"):
            model.predict(bad)
    with pytest.raises(semiseg.errors.SemisegError, match=r"must hold values in \[0, 1\], got 0 to 255"):
        model.predict_proba(torch.full((3, 8, 8), 255.0).index_fill_(1, torch.tensor([0]), 0.0))


def test_import_semiseg_stays_light():
    import subprocess
    import sys

    code = "import sys, semiseg; print('torch' in sys.modules, 'load' in semiseg.__all__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(__import__("conftest").REPO / "src")}).stdout
    assert out.split() == ["False", "True"]
