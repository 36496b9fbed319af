"""`semiseg bench speed`: the generated VOC-layout data, the worker's timing split, the plan, a worktree run."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine_runs import REPO, subprocess_env
from semiseg.bench.speed import (WORKER, Tree, make_fake_voc, pascal_cell, plan, run, summarise, worker_command,
                                 worker_env)
from semiseg.cli import main
from semiseg.config import load_config

SMALL_VOC = dict(size=(64, 48), labeled=4, unlabeled=4, val=2)
TINY = ["data.crop_size=32", "model.encoder=mobilenetv3_small_050", "model.pretrained=null", "data.num_workers=0",
        "model.aspp_channels=8", "model.decoder_channels=8", "model.low_level_channels=8"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_fake_voc(tmp_path_factory.mktemp("voc"), **SMALL_VOC)


def test_fake_voc_is_read_by_the_pascal_preset(voc):
    from semiseg.engine.build import build_preset

    cfg = load_config(None, ["data.dataset=pascal", f"data.root={voc['root']}", f"data.splits_dir={voc['splits_dir']}",
                             f"data.split={voc['split']}", f"data.val_list={voc['splits_dir']}/pascal/val.txt",
                             "train.total_iters=1"])
    splits = build_preset(cfg).build(cfg.data)
    assert (len(splits.labeled), len(splits.unlabeled), len(splits.val)) == (4, 4, 2)
    sample = splits.val.load(0)
    assert sample.image.shape == (48, 64, 3) and sample.mask.shape == (48, 64)
    values = set(np.unique(sample.mask).tolist())
    assert values <= set(range(21)) | {255} and 255 in values and len(values - {255}) >= 2
    before = (Path(voc["root"]) / "JPEGImages" / "2007_000000.jpg").stat().st_mtime_ns
    assert make_fake_voc(voc["root"], **SMALL_VOC) == voc  # kept, not regenerated
    assert (Path(voc["root"]) / "JPEGImages" / "2007_000000.jpg").stat().st_mtime_ns == before


def test_worker_times_add_up(voc, tmp_path):
    config, overrides = pascal_cell("fixmatch", voc)
    out = tmp_path / "result.json"
    command = [sys.executable, str(WORKER), "--warmup", "1", "--steps", "2", "--threads", "1", "--eval-images", "2",
               "--out", str(out), "--", *overrides, *TINY, "train.amp=bf16"]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["semiseg"] == str(REPO / "src" / "semiseg") and result["method"] == "fixmatch"
    assert result["amp"] == "bf16" and result["threads"] == 1 and result["networks"] == ["model"]
    steps = result["per_step"]
    assert len(steps["step"]) == 2 and len(result["warmup_step_s"]) == 1
    for i, step in enumerate(steps["step"]):
        parts = [steps[k][i] for k in ("forward", "backward", "optimizer", "rest")]
        assert step > 0 and min(parts[:3]) > 0 and sum(parts) == pytest.approx(step, abs=1e-9)
    split = result["split"]
    assert split["forward_s"] + split["backward_s"] + split["optimizer_s"] + split["rest_s"] == \
        pytest.approx(split["step_s"], abs=1e-9)
    assert 0 <= split["non_network_fraction"] <= 1 and 0 < split["network_fraction"] <= 1
    assert split["rest_s"] == pytest.approx(split["non_network_fraction"] * split["step_s"])
    for mode in ("original", "sliding_window"):
        assert result["eval"][mode]["images"] == 2 and result["eval"][mode]["seconds_per_image"] > 0
    assert result["eval"]["sliding_window"]["window"] == 32
    memory = result["memory"]
    assert memory["peak_rss_bytes"] >= memory["rss_before_first_step_bytes"] > 0
    assert memory["peak_rss_with_eval_bytes"] >= memory["peak_rss_bytes"]


def test_worker_reports_a_config_the_tree_cannot_read(tmp_path):
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, str(WORKER), "--out", str(out), "--", "train.total_iters=1",
                           "model.no_such_key=1"], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "model.no_such_key" in json.loads(out.read_text())["unavailable"]


def test_plan_measures_a_method_only_where_it_exists(voc):
    trees = [Tree("this", REPO, None), Tree("against", Path("/elsewhere"), "abc", methods=["supervised"])]
    cells = plan(["pascal", "camvid"], ["supervised", "u2pl"], ["fp32", "bf16_cl"], trees, voc, Path("/camvid"))
    pascal = {c.key: c for c in cells["pascal"]}
    assert pascal["supervised/fp32"].trees == ["this", "against"] and pascal["u2pl/bf16_cl"].trees == ["this"]
    assert "no method 'u2pl' in the against tree" in pascal["u2pl/fp32"].note
    u2pl = pascal["u2pl/fp32"]
    assert "model.output_stride=8" in u2pl.overrides and "method.warmup_epochs=0" in u2pl.overrides
    assert "model.output_stride=16" in pascal["supervised/fp32"].overrides
    command = worker_command(trees[1], pascal["supervised/bf16_cl"], 10, 3, 2, 4, "cpu")
    assert command[1] == str(WORKER) and command[-2:] == ["train.amp=bf16", "train.channels_last=true"]
    assert worker_env(trees[1], 2)["PYTHONPATH"] == "/elsewhere/src"
    camvid = {c.key: c for c in cells["camvid"]}
    assert camvid["u2pl/fp32"].config == REPO / "configs/camvid/u2pl_lite0_192_1_8.yaml"


def test_dry_run_lists_the_runs_alternating(capsys, tmp_path):
    assert main(["bench", "speed", "--dry-run", "--against", "HEAD", "--setting", "camvid", "--methods", "fixmatch",
                 "--precisions", "fp32", "bf16", "--repeats", "2", "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("8 run(s)")
    tags = [line.split("[")[1].split("]")[0] for line in lines[1:]]
    assert tags == ["this 1/2", "against 1/2", "this 2/2", "against 2/2"] * 2
    assert all("speed_worker.py" in line and "configs/camvid/fixmatch_lite0_192_1_8.yaml" in line
               for line in lines[1:])
    assert not (tmp_path / "out").exists()
    assert main(["bench", "speed", "--dry-run", "--methods", "fixmach"]) == 2
    assert "unknown method 'fixmach'" in capsys.readouterr().err


def test_summary_pools_runs():
    def one(steps, rest):
        per = {"step": steps, "forward": [s / 2 for s in steps], "backward": [s / 4 for s in steps],
               "optimizer": [0.0] * len(steps), "rest": [s / 4 for s in steps]}
        return {"per_step": per, "median_step_s": float(np.median(steps)), "between_s": [0.1],
                "eval": {"original": {"seconds": [0.5]}}, "memory": {"peak_rss_bytes": 100, "peak_growth_bytes": 10}}

    summary = summarise([one([1.0, 3.0], 0), one([2.0, 2.0], 0)])
    assert summary["step_s"] == 2.0 and summary["steps"] == 4 and summary["split"]["non_network_fraction"] == 0.25
    assert summary["split"]["forward_s"] == 1.0 and summary["step_s_runs"] == [2.0, 2.0]
    assert summary["eval_s_per_image"] == {"original": 0.5} and summary["peak_rss_bytes"] == 100


@pytest.mark.slow
def test_worktree_run_against_head(tmp_path):
    lines = []
    failed = run(settings=["pascal"], methods=["supervised"], precisions=["fp32"], steps=1, warmup=1, repeats=1,
                 against="HEAD", threads=1, eval_images=1, out=tmp_path / "out", data_dir=tmp_path / "data",
                 overrides=TINY, fake_voc=SMALL_VOC, echo=lines.append)
    assert failed == 0, lines
    record = json.loads((tmp_path / "out" / "pascal.json").read_text())
    assert record["schema"] == "semiseg.bench.speed/1" and record["machine"]["threads"] == 1
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert record["trees"]["against"]["commit"] == head.strip()
    cell = record["cells"]["supervised/fp32"]
    this, other = cell["trees"]["this"], cell["trees"]["against"]
    assert this["runs"][0]["semiseg"] == str(REPO / "src" / "semiseg")
    assert other["runs"][0]["semiseg"].endswith("/tree/src/semiseg") and "semiseg-" in other["runs"][0]["semiseg"]
    assert this["summary"]["step_s"] > 0 and other["summary"]["step_s"] > 0
    assert cell["ratio"]["step_s"] == pytest.approx(this["summary"]["step_s"] / other["summary"]["step_s"])
    tree = Path(other["runs"][0]["semiseg"]).parents[1]  # removed with its temporary folder
    listed = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True).stdout
    assert str(tree) not in listed and not tree.parent.exists()


def test_networks_are_the_segmentation_nets_and_other_held_modules_with_parameters():
    """A discriminator held by the method (directly or in a ModuleList) counts as a network; a parameterless
    module (a queue of buffers) and the layers inside a network do not count separately."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("speed_worker_under_test", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)

    class Segmenter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)

        def backbone_parameters(self):
            return self.conv.parameters()

        def forward(self, x):
            return self.conv(x)

    class Queue(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("storage", torch.zeros(4))

    class Method(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Segmenter()
            self.discriminators = torch.nn.ModuleList([torch.nn.Conv2d(2, 1, 1), torch.nn.Conv2d(2, 1, 1)])
            self.critic = torch.nn.Linear(2, 1)
            self.queues = Queue()

    names, undo = worker.instrument(torch, Method(), worker.Clock())
    undo()
    assert sorted(names) == ["critic", "discriminators.0", "discriminators.1", "model"]
