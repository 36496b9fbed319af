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
