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

    def poisoned_step(self, batch, ctx):
        loss, logs = real_step(self, batch, ctx)
        calls.append(ctx)
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


POISON_RANK_1 = '''
import os, sys
from semiseg.cli import main
from semiseg.methods.supervised import Supervised

real_step = Supervised.training_step


def poisoned_step(self, batch, ctx):
    loss, logs = real_step(self, batch, ctx)
    if os.environ["RANK"] == "1" and ctx.progress >= 0.5:  # iteration 2 of 4, on rank 1 only
        return loss * float("nan"), {**logs, "loss_x": logs["loss_x"] * float("nan")}
    return loss, logs


Supervised.training_step = poisoned_step
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.slow
def test_nonfinite_loss_on_one_rank_stops_every_rank(tmp_path):
    """torchrun, 2 ranks; only rank 1's loss turns NaN. Both ranks stop at the same iteration with
    the same line (no rank left waiting in a collective: a hang would hit the timeout) and the
    checkpoint of iteration 2 stays."""
    import subprocess
    import sys

    from engine_runs import REPO, subprocess_env

    script = tmp_path / "poison_rank_1.py"
    script.write_text(POISON_RANK_1)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script),
           "train", *TINY_RUN, "train.total_batch_size=4", "train.total_iters=4", "train.checkpoint_every=1",
           f"output_dir={out}"]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    errors = {line for line in proc.stderr.splitlines() if line.startswith("error: ")}
    assert len(errors) == 1, proc.stderr[-3000:]  # the same line from each rank torchrun let finish
    assert errors.pop().startswith("error: non-finite loss term loss_x=nan on rank 1 at iteration 2")
    assert load_checkpoint(out / "latest.pt")["step"] == 2
