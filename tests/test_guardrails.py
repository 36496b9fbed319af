"""Guardrails: a non-finite loss stops the run with one line and leaves the last checkpoint intact;
resuming with a config that builds another model or data stream stops with one line."""

import pytest
import torch

from engine_runs import TINY_RUN, single_thread
from semiseg.cli import main
from semiseg.engine.checkpoint import load_checkpoint
from semiseg.methods.supervised import Supervised


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)


def run(capsys, *argv):
    with single_thread():
        code = main(["train", *TINY_RUN, "train.total_batch_size=4", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def test_nonfinite_loss_stops_with_one_line_and_keeps_the_checkpoint(tmp_path, capsys, monkeypatch):
    """Test hook: from iteration 3 on, the supervised term becomes NaN (as if the data or lr blew up)."""
    real_step = Supervised.training_step
    calls = []

    def poisoned_step(self, batch, progress):
        loss, logs = real_step(self, batch, progress)
        calls.append(progress)
        if len(calls) > 3:
            logs = {**logs, "loss_x": logs["loss_x"] * float("nan")}
            loss = loss * float("nan")
        return loss, logs

    monkeypatch.setattr(Supervised, "training_step", poisoned_step)
    out = tmp_path / "run"
    code, _, err = run(capsys, f"output_dir={out}", "train.total_iters=6", "train.checkpoint_every=2")
    assert code == 2 and len(err) == 1, err
    line = err[0]
    assert line.startswith("error: non-finite loss term loss_x=nan at iteration 3")
    assert f"{out / 'latest.pt'} (iteration 2) is intact" in line
    checkpoint = load_checkpoint(out / "latest.pt")
    assert checkpoint["step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["method"].values() if v.is_floating_point())
    assert not (out / "latest.pt.tmp").exists()


@pytest.mark.parametrize("override,fragment", [
    ("model.decoder_channels=16", "model.decoder_channels: checkpoint 8, config 16"),
    ("data.crop_size=24", "data.crop_size: checkpoint 32, config 24"),
    ("train.total_batch_size=2", "train.total_batch_size: checkpoint 4, config 2"),
])
def test_resume_with_another_shape_stops_with_one_line(tmp_path, capsys, override, fragment):
    out = tmp_path / "run"
    code, _, err = run(capsys, f"output_dir={out}", "train.total_iters=1")
    assert code == 0, err
    code, _, err = run(capsys, f"output_dir={out}", "train.total_iters=2", override, "--resume", "auto")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: cannot resume from {out / 'latest.pt'}") and fragment in err[0], err[0]
