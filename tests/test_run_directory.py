"""A run directory is append-only unless the user says otherwise: no silent overwrite, a failed start
writes nothing, latest.pt is saved before each evaluation, a resumed run logs each step once."""

import hashlib
import json

import pytest
import torch

import semiseg.engine.trainer as trainer_module
from semiseg.errors import SemisegError
from test_cli import TINY_MODEL, assert_one_line_error, camvid_args, make_camvid_tree, run


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)


def base(out, *extra):
    return ["train", "configs/synthetic/supervised.yaml", f"output_dir={out}", "data.synthetic.num_train=8",
            "data.synthetic.num_val=2", "data.num_labeled=4", "--no-progress", *TINY_MODEL, *extra]


def snapshot(folder):
    """sha256 of every file under `folder` (tensorboard events included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def records(out, kind="train"):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_training_twice_into_a_run_refuses_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, *base(out, "train.total_iters=2"))[0] == 0
    before = snapshot(out)
    assert {"latest.pt", "config.yaml", "metrics.jsonl"} <= set(before)
    code, _, err = run(capsys, *base(out, "train.total_iters=3"))
    assert_one_line_error(code, err, f"{out} holds a run (latest.pt at iteration 2)", "--resume auto",
                          "--overwrite")
    assert snapshot(out) == before
    # a run without a checkpoint (stopped before its first one) is a run too
    (out / "latest.pt").unlink()
    (out / "best.pt").unlink()
    before = snapshot(out)
    code, _, err = run(capsys, *base(out, "train.total_iters=3"))
    assert_one_line_error(code, err, f"{out} holds a run", "--resume auto", "--overwrite")
    assert snapshot(out) == before


def test_overwrite_starts_over_and_keeps_foreign_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, *base(out, "train.total_iters=2", "train.eval_every=1"))[0] == 0
    (out / "notes.txt").write_text("my notes\n")
    (out / "mine").mkdir()
    (out / "mine" / "plot.png").write_bytes(b"\x89PNG not really")
    foreign = {k: v for k, v in snapshot(out).items() if k in ("notes.txt", "mine/plot.png")}

    code, _, err = run(capsys, *base(out, "train.total_iters=2", "train.eval_every=1"), "--overwrite",
                       "--resume", "auto")
    assert_one_line_error(code, err, "--overwrite", "--resume auto")

    code, _, err = run(capsys, *base(out, "train.total_iters=1"), "--overwrite")
    assert code == 0, err
    after = snapshot(out)
    assert {k: after[k] for k in foreign} == foreign
    assert [r["step"] for r in records(out)] == [1]  # only the new run
    assert [r["step"] for r in records(out, "val")] == [1]
    assert torch.load(out / "latest.pt", weights_only=True)["step"] == 1
    assert "total_iters: 1" in (out / "config.yaml").read_text()


def test_failed_start_writes_nothing(tmp_path, capsys):
    root = make_camvid_tree(tmp_path / "camvid", n_train=2)
    out = tmp_path / "run"
    assert run(capsys, *camvid_args(root, out))[0] == 0
    before = snapshot(out)
    for bad in (["model.encoder=mobilenetv3_small_050"],  # the checkpoint check
                ["eval.mode=bogus"],  # the config checks
                ["eval.mode=resize", "eval.resize_multiple=0"]):
        code, _, err = run(capsys, *camvid_args(root, out, "train.total_iters=4", *bad), "--resume", "auto")
        assert code == 2 and len(err.strip().splitlines()) == 1, (bad, err)
        assert snapshot(out) == before, bad
    # the first batch is loaded before anything is written
    for name in ("0.png", "1.png"):
        (root / "train" / name).write_bytes(b"garbage")
    code, _, err = run(capsys, *camvid_args(root, out, "train.total_iters=4"), "--resume", "auto")
    assert_one_line_error(code, err, ".png")
    assert snapshot(out) == before
    # and a new directory is not even created
    fresh = tmp_path / "fresh"
    code, _, err = run(capsys, *camvid_args(root, fresh))
    assert_one_line_error(code, err, ".png")
    assert not fresh.exists()


def test_failing_evaluation_keeps_the_checkpoint_of_its_step(tmp_path, capsys, monkeypatch):
    def broken_evaluate(*args, **kwargs):
        raise SemisegError("cannot read val image 7.png")

    monkeypatch.setattr(trainer_module, "evaluate", broken_evaluate)
    out = tmp_path / "run"
    code, _, err = run(capsys, *base(out, "train.total_iters=4", "train.eval_every=3"))
    assert_one_line_error(code, err, "7.png")
    assert torch.load(out / "latest.pt", weights_only=True)["step"] == 3
    assert not (out / "best.pt").exists()
    monkeypatch.undo()
    code, stdout, err = run(capsys, *base(out, "train.total_iters=4", "train.eval_every=3"), "--resume", "auto")
    assert code == 0, err
    assert "at iteration 3" in stdout and "iteration 3 was not evaluated yet" in stdout
    assert [r["step"] for r in records(out)] == [1, 2, 3, 4]
    assert [r["step"] for r in records(out, "val")] == [3, 4]  # the failed evaluation, run on resume
    assert torch.load(out / "best.pt", weights_only=True)["step"] in (3, 4)


def test_resumed_run_logs_each_step_once(tmp_path, capsys, monkeypatch):
    # resumed where the checkpoint is: nothing to drop
    out = tmp_path / "clean"
    assert run(capsys, *base(out, "train.total_iters=2", "train.checkpoint_every=1"))[0] == 0
    assert run(capsys, *base(out, "train.total_iters=4", "train.checkpoint_every=1"), "--resume", "auto")[0] == 0
    assert [r["step"] for r in records(out)] == [1, 2, 3, 4]
    assert [r["step"] for r in records(out, "val")] == [2, 4]

    # a kill after step 3 was logged but before its checkpoint (latest.pt at 2), mid-way through a line
    out = tmp_path / "killed"
    real_save = trainer_module.save_atomic
    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "save_atomic",
                      lambda obj, path: None if obj["step"] == 3 else real_save(obj, path))
        assert run(capsys, *base(out, "train.total_iters=3", "train.checkpoint_every=2"))[0] == 0
    assert torch.load(out / "latest.pt", weights_only=True)["step"] == 2
    assert [r["step"] for r in records(out)] == [1, 2, 3]
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "train", "step": 4, "lo')
    code, stdout, err = run(capsys, *base(out, "train.total_iters=5", "train.checkpoint_every=2"), "--resume", "auto")
    assert code == 0, err
    assert "at iteration 2" in stdout
    assert [r["step"] for r in records(out)] == [1, 2, 3, 4, 5]  # every line parses: the torn one is gone
    assert [r["step"] for r in records(out, "val")] == [5]
    assert [r["step"] for r in records(out, "summary")] == [5]


@pytest.mark.slow
def test_two_processes_refuse_together_and_overwrite_once(tmp_path, capsys):
    """torchrun, 2 ranks: both refuse a second run with the same line; --overwrite starts over, notes kept."""
    import subprocess

    from engine_runs import REPO, TINY_RUN, single_thread, subprocess_env, train_command

    out = tmp_path / "run"
    args = ["train.total_batch_size=4", "train.total_iters=2", f"output_dir={out}"]
    # The run already in `out` is made in this process (same config, one rank): what is under test is how
    # two ranks treat a folder holding a run, not who wrote it; this saves a torchrun start.
    with single_thread():
        code, _, err = run(capsys, "train", *TINY_RUN, *args)
    assert code == 0, err
    (out / "notes.txt").write_text("keep\n")
    before = snapshot(out)
    again = subprocess.run(train_command(*args, nproc=2), cwd=REPO, env=subprocess_env(), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode != 0
    errors = {line for line in again.stderr.splitlines() if line.startswith("error: ")}
    assert len(errors) == 1 and f"{out} holds a run (latest.pt at iteration 2)" in errors.pop(), again.stderr[-3000:]
    assert snapshot(out) == before
    over = subprocess.run(train_command(*args, "train.total_iters=1", "--overwrite", nproc=2), cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert over.returncode == 0, over.stderr[-3000:]
    assert (out / "notes.txt").read_text() == "keep\n"
    assert [r["step"] for r in records(out)] == [1]
    assert torch.load(out / "latest.pt", weights_only=True)["step"] == 1
