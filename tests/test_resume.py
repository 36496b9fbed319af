"""SIGKILL a training run twice, continue with `--resume auto`: the final weights equal an uninterrupted run's."""

import subprocess

import pytest
import torch

from engine_runs import REPO, final_state, kill_at_checkpoint, subprocess_env, train_command

pytestmark = pytest.mark.slow

TOTAL = 10
# deterministic algorithms, an evaluation (best.pt, best metric) every 4 steps and a checkpoint every 3, so
# a kill usually throws away finished steps that the resumed run must redo identically
ARGS = ["deterministic=true", "train.total_batch_size=4", f"train.total_iters={TOTAL}", "train.checkpoint_every=3",
        "train.eval_every=4", "--resume", "auto"]


def _kill_after(output_dir, step: int) -> str:
    return kill_at_checkpoint(train_command(*ARGS, f"output_dir={output_dir}"), output_dir, step)


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
