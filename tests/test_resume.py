"""SIGKILL a training run twice, continue with `--resume auto`: the final weights equal an uninterrupted run's."""

import signal
import subprocess
import time

import torch

from engine_runs import REPO, final_state, subprocess_env, train_command

TOTAL = 10
# deterministic algorithms, an evaluation (best.pt, best metric) every 4 steps and a checkpoint every 3, so
# a kill usually throws away finished steps that the resumed run must redo identically
ARGS = ["deterministic=true", "train.total_batch_size=4", f"train.total_iters={TOTAL}", "train.checkpoint_every=3",
        "train.eval_every=4", "--resume", "auto"]


def _checkpoint_step(path, seen: dict) -> int:
    """The step of `path` (latest.pt, replaced atomically), read again only when the file changed; -1 if absent."""
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return -1
    if seen.get("stamp") != stamp:
        seen.update(stamp=stamp, step=int(torch.load(path, map_location="cpu", weights_only=True)["step"]))
    return seen["step"]


def _kill_after(output_dir, step: int, timeout: float = 180.0) -> str:
    """Start (or resume) the run; SIGKILL it once its latest.pt holds iteration `step` or later; returns stdout."""
    latest, seen = output_dir / "latest.pt", {}
    proc = subprocess.Popen(train_command(*ARGS, f"output_dir={output_dir}"), cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if _checkpoint_step(latest, seen) >= step:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-run (rc {proc.returncode}): {err[-2000:]}"
    return out


def test_killed_twice_then_resumed_equals_uninterrupted(tmp_path):
    reference = subprocess.Popen(train_command(*ARGS, f"output_dir={tmp_path / 'reference'}"), cwd=REPO,
                                 env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "killed"
    _kill_after(run, 3)  # once the checkpoint of step 3 exists
    first_stop = final_state(run)["step"]
    out = _kill_after(run, first_stop + 3)
    assert f"resumed from {run / 'latest.pt'} at iteration {first_stop}" in out
    second_stop = final_state(run)["step"]
    assert 0 < first_stop < second_stop < TOTAL
    finish = subprocess.run(train_command(*ARGS, f"output_dir={run}"), cwd=REPO, env=subprocess_env(),
                            capture_output=True, text=True, timeout=180)
    assert finish.returncode == 0, finish.stderr[-2000:]
    assert f"at iteration {second_stop}" in finish.stdout
    _, err = reference.communicate(timeout=180)
    assert reference.returncode == 0, err[-2000:]

    resumed, uninterrupted = final_state(run), final_state(tmp_path / "reference")
    assert resumed["step"] == uninterrupted["step"] == TOTAL
    assert resumed["best"] == uninterrupted["best"]
    for key, value in uninterrupted["method"].items():
        assert torch.equal(resumed["method"][key], value), key  # bitwise
    for index, state in uninterrupted["optimizers"]["model"]["state"].items():
        assert torch.equal(resumed["optimizers"]["model"]["state"][index]["momentum_buffer"], state["momentum_buffer"])
    assert torch.equal(resumed["rng"]["per_rank"][0]["torch"], uninterrupted["rng"]["per_rank"][0]["torch"])
