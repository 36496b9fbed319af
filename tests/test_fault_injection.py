"""Filesystem faults and interruptions are one line, never a traceback, and never cost what is on disk:
a full disk or a read-only folder during a write, an output_dir that is a file, a kill or a Ctrl-C during a
checkpoint write, a Ctrl-C during training or evaluation, a resume that cannot load. Each case checks the
exit status, the single stderr line, that the previous latest.pt still loads (and `--resume auto` goes on
from it) and that no file already there changed."""

import builtins
import errno
import io
import json
import re

import pytest
import torch

import semiseg.engine.checkpoint as checkpoint_module
import semiseg.engine.trainer as trainer_module
from semiseg.methods.supervised import Supervised
from test_cli import assert_one_line_error, run
from test_run_directory import records, snapshot

# a checkpoint of ~4 MB (resnet18's is ~90 MB): each run writes several, fsync'd
SMALL = ["model.encoder=mobilenetv3_small_050", "model.pretrained=null", "model.aspp_channels=8",
         "model.decoder_channels=8", "model.low_level_channels=8", "data.num_workers=0",
         "data.synthetic.num_train=8", "data.synthetic.num_val=2", "data.num_labeled=4",
         "data.synthetic.image_size=32", "data.crop_size=32", "data.scale_range=[1.0,1.0]",
         "train.total_batch_size=2", "train.unlabeled_batch_size=2", "train.log_every=1", "--no-progress"]


def base(out, *extra):
    return ["train", "configs/synthetic/supervised.yaml", f"output_dir={out}", *SMALL, *extra]


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)


def step_of(path):
    return int(torch.load(path, map_location="cpu", weights_only=True)["step"])


def assert_valid_metrics(out):
    for line in (out / "metrics.jsonl").read_text().splitlines():
        assert isinstance(json.loads(line), dict), line


def no_temporaries(out):
    return [p.name for p in out.rglob("*.tmp")] == []


class FailingWrite:
    """A file opened by save_atomic whose write puts half the bytes on disk, then raises `exc`."""

    def __init__(self, handle, exc):
        self.handle, self.exc = handle, exc

    def write(self, data):
        self.handle.write(bytes(data[: len(data) // 2]))
        self.handle.flush()
        raise self.exc

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def fail_checkpoint_write(monkeypatch, out, at_write, exc):
    """The `at_write`-th checkpoint write (1-based) raises `exc` midway; returns what was on disk then."""
    seen, before = [], {}

    def fake_open(path, mode="r", *args, **kwargs):
        if "w" in mode:
            seen.append(path)
            if len(seen) == at_write:
                before.update({k: v for k, v in snapshot(out).items() if not k.startswith("tensorboard")})
                return FailingWrite(builtins.open(path, mode, *args, **kwargs), exc)
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "open", fake_open, raising=False)
    return before


def test_disk_full_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    """The second latest.pt write fails midway (ENOSPC): one line naming the file, the reason, the size
    needed and the checkpoint kept; latest.pt of iteration 1 loads, no temporary file remains, no file
    changed; once there is room, --resume auto ends the run."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        before = fail_checkpoint_write(patch, out, 2, OSError(errno.ENOSPC, "No space left on device"))
        status, _, err = run(capsys, *base(out, "train.total_iters=2", "train.checkpoint_every=1"))
    assert_one_line_error(status, err, f"cannot write {out / 'latest.pt'}: no space left on device (needs ",
                          "the previous latest.pt (iteration 1) is intact", "free space or set output_dir elsewhere")
    needed = float(re.search(r"needs (\d+\.\d) MB", err).group(1))
    assert needed > 0 and abs(needed - (out / "latest.pt").stat().st_size / 1e6) < 0.2
    assert step_of(out / "latest.pt") == 1
    assert no_temporaries(out)
    after = snapshot(out)
    assert before and {k: after[k] for k in before} == before
    assert_valid_metrics(out)

    status, _, err = run(capsys, *base(out, "train.total_iters=2", "train.checkpoint_every=1"), "--resume", "auto")
    assert status == 0, err
    assert step_of(out / "latest.pt") == 2 and [r["step"] for r in records(out)] == [1, 2]


def test_read_only_output_dir_is_one_line_and_changes_nothing(tmp_path, capsys, monkeypatch):
    """Running as root makes chmod useless: every open for writing under the run raises EROFS instead."""
    out = tmp_path / "run"
    assert run(capsys, *base(out, "train.total_iters=1"))[0] == 0
    before = snapshot(out)
    real_open = io.open

    def read_only_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and str(file).startswith(str(out)):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_open)
    monkeypatch.setattr(io, "open", read_only_open)
    status, _, err = run(capsys, *base(out, "train.total_iters=2"), "--resume", "auto")
    assert_one_line_error(status, err, f"cannot write {out / 'config.yaml'}: read-only file system",
                          "make it writable")
    assert snapshot(out) == before


def test_output_dir_that_is_a_file(tmp_path, capsys):
    """output_dir names a file, or a folder under one: one line, the file as it was, nothing created."""
    mine = tmp_path / "notes.txt"
    mine.write_text("my notes\n")
    status, _, err = run(capsys, *base(mine, "train.total_iters=1"))
    assert_one_line_error(status, err, str(mine), "is a file")
    status, _, err = run(capsys, *base(mine / "run", "train.total_iters=1"))
    assert_one_line_error(status, err, str(mine), "is a file")
    assert mine.read_text() == "my notes\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def interrupt_training_at(monkeypatch, step):
    real = Supervised.training_step

    def training_step(self, batch, ctx):
        if ctx.step == step:
            raise KeyboardInterrupt
        return real(self, batch, ctx)

    monkeypatch.setattr(Supervised, "training_step", training_step)


def interrupt_first_evaluation(monkeypatch):
    def evaluate(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "evaluate", evaluate)


def interrupt_second_checkpoint_write(monkeypatch, out):
    fail_checkpoint_write(monkeypatch, out, 2, KeyboardInterrupt())


@pytest.mark.parametrize("where, latest_step", [("training", 1), ("evaluation", 1), ("checkpoint write", 1)])
def test_ctrl_c_keeps_the_last_checkpoint_and_resume_finishes(tmp_path, capsys, monkeypatch, where, latest_step):
    """Ctrl-C at iteration 2's step, during iteration 1's evaluation, or midway through latest.pt's second
    write: exit 130, one line, latest.pt of iteration 1 loads, metrics.jsonl is whole; --resume auto ends
    the run with each iteration logged once."""
    out = tmp_path / "run"
    args = base(out, "train.total_iters=2", "train.checkpoint_every=1", "train.eval_every=1")
    with monkeypatch.context() as patch:
        if where == "training":
            interrupt_training_at(patch, 1)  # 0-based: the step that makes iteration 2
        elif where == "evaluation":
            interrupt_first_evaluation(patch)
        else:  # iteration 1: latest.pt (eval pending), its evaluation, latest.pt again <- here
            interrupt_second_checkpoint_write(patch, out)
        status, stdout, err = run(capsys, *args)
    assert status == 130, err
    assert err.splitlines() == ["interrupted; the last checkpoint (if any) is intact"], err
    assert step_of(out / "latest.pt") == latest_step
    assert no_temporaries(out)
    assert_valid_metrics(out)

    status, _, err = run(capsys, *args, "--resume", "auto")
    assert status == 0, err
    assert step_of(out / "latest.pt") == 2
    assert [r["step"] for r in records(out)] == [1, 2]
    assert [r["step"] for r in records(out, "val")] == [1, 2]


def test_failed_resume_changes_nothing(tmp_path, capsys):
    """A latest.pt with torn bytes, or a config building another model: one line, every file as it was."""
    out = tmp_path / "run"
    assert run(capsys, *base(out, "train.total_iters=1"))[0] == 0
    latest = out / "latest.pt"
    before = snapshot(out)
    status, _, err = run(capsys, *base(out, "train.total_iters=2", "model.aspp_channels=16"), "--resume", "auto")
    assert_one_line_error(status, err, f"cannot resume from {latest}", "model.aspp_channels")
    assert snapshot(out) == before
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    before = snapshot(out)
    status, _, err = run(capsys, *base(out, "train.total_iters=2"), "--resume", "auto")
    assert_one_line_error(status, err, str(latest), "not a readable semiseg checkpoint")
    assert snapshot(out) == before


KILL_IN_CHECKPOINT_WRITE = '''
import os, sys, time
from pathlib import Path
from semiseg.cli import main

real_replace = os.replace
count = [0]


def slow_replace(src, dst, *args, **kwargs):
    if str(dst).endswith("latest.pt"):
        count[0] += 1
        if count[0] == 2:  # the temporary file of iteration 2 is written, the rename not done: wait for the kill
            Path(sys.argv[1]).write_text("in the write")
            time.sleep(600)
    return real_replace(src, dst, *args, **kwargs)


os.replace = slow_replace
sys.exit(main(sys.argv[2:]))
'''


@pytest.mark.slow
def test_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    """SIGKILL between a latest.pt's temporary file and its rename: the previous latest.pt loads and
    --resume auto runs to the end."""
    import signal
    import subprocess
    import sys
    import time

    from engine_runs import REPO, subprocess_env

    script, marker, out = tmp_path / "driver.py", tmp_path / "marker", tmp_path / "run"
    script.write_text(KILL_IN_CHECKPOINT_WRITE)
    args = [str(a) for a in base(out, "train.total_iters=3", "train.checkpoint_every=1")]
    proc = subprocess.Popen([sys.executable, str(script), str(marker), *args], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), proc.stderr.read().decode()[-3000:] if proc.poll() is not None else "timeout"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert step_of(out / "latest.pt") == 1
    done = subprocess.run([sys.executable, "-m", "semiseg.cli", *args, "--resume", "auto"], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert step_of(out / "latest.pt") == 3 and no_temporaries(out)
    assert [r["step"] for r in records(out)] == [1, 2, 3]
