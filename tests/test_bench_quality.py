"""`semiseg bench quality`: suite files, the plan of missing cells, runs that resume, records."""

import json
import os
import signal
import subprocess
import sys

import pytest

from engine_runs import REPO, TINY_RUN, subprocess_env
from semiseg.bench.quality import plan
from semiseg.bench.suite import load_suite
from semiseg.errors import SemisegError

TINY_OVERRIDES = [o for o in TINY_RUN[1:] if not o.startswith("--")] + ["train.total_iters=4", "train.eval_every=2"]


def write_suite(folder, cells=None, seeds=(0,), extra=""):
    (folder / "configs").mkdir(exist_ok=True)
    cells = cells or {"supervised": "{config: %s, role: baseline}" % (REPO / "configs/synthetic/supervised.yaml"),
                      "fixmatch": str(REPO / "configs/synthetic/fixmatch.yaml")}
    lines = [f"seeds: [{', '.join(map(str, seeds))}]",
             f"overrides: {json.dumps(TINY_OVERRIDES)}",
             "predictions: [synthetic/val/00000, synthetic/val/00003]",
             "cells:"] + [f"  {name}: {spec}" for name, spec in cells.items()]
    path = folder / "tiny.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_suite_reads_cells_roles_and_seeds(tmp_path):
    suite = load_suite(write_suite(tmp_path, seeds=(0, 2)))
    assert suite.name == "tiny" and suite.seeds == [0, 2]
    assert [(c.name, c.role) for c in suite.cells.values()] == [("supervised", "baseline"), ("fixmatch", "method")]
    assert "train.total_iters=4" in suite.overrides


@pytest.mark.parametrize("extra, key", [
    ("colour: blue\n", "'colour'"),
    ("", "cells.missing.config"),
    ("", "cells.bad.role"),
])
def test_suite_errors_name_file_and_key(tmp_path, extra, key):
    cells = None
    if key == "cells.missing.config":
        cells = {"missing": "configs/nowhere.yaml"}
    if key == "cells.bad.role":
        cells = {"bad": "{config: %s, role: judge}" % (REPO / "configs/synthetic/supervised.yaml")}
    path = write_suite(tmp_path, cells, extra=extra)
    with pytest.raises(SemisegError) as err:
        load_suite(path)
    assert str(path) in str(err.value) and key in str(err.value) and "\n" not in str(err.value)


def test_plan_skips_cells_with_records_and_checks_names(tmp_path):
    suite = load_suite(write_suite(tmp_path, seeds=(0, 1)))
    todo, done = plan(suite, tmp_path / "results", tmp_path / "runs")
    assert [(j.cell.name, j.seed) for j in todo] == [("supervised", 0), ("fixmatch", 0), ("supervised", 1),
                                                     ("fixmatch", 1)]
    todo[1].result.parent.mkdir(parents=True)
    todo[1].result.write_text("{}")
    todo, done = plan(suite, tmp_path / "results", tmp_path / "runs", cells=["fixmatch"])
    assert [(j.cell.name, j.seed) for j in todo] == [("fixmatch", 1)] and len(done) == 1
    assert todo[0].run_dir == tmp_path / "runs" / "tiny" / "fixmatch" / "seed1"
    with pytest.raises(SemisegError, match="no cell 'cps'"):
        plan(suite, tmp_path / "results", tmp_path / "runs", cells=["cps"])


def _timed_out(signum, frame):
    raise TimeoutError("semiseg bench quality ran for more than 600 s")


@pytest.fixture
def bench(capsys, monkeypatch):
    """bench(suite, tmp_path, *args): `semiseg bench quality suite --results .. --runs .. args` from tmp_path, by
    the command line's `main` in this process (one thread, as the command has under OMP_NUM_THREADS=1; its
    training runs are still subprocesses, with the environment `subprocess_env` gives); the exit code and output
    as a CompletedProcess. A bench process less to start each time (the collecting imports torch)."""
    from engine_runs import single_thread

    from semiseg.cli import main

    def bench_quality(suite, tmp_path, *args):
        command = ["bench", "quality", str(suite), "--results", str(tmp_path / "results"), "--runs",
                   str(tmp_path / "runs"), *args]
        with monkeypatch.context() as patch:
            patch.chdir(tmp_path)
            env = subprocess_env()
            for name in set(os.environ) - set(env):
                patch.delenv(name)
            for name, value in env.items():
                patch.setenv(name, value)
            capsys.readouterr()
            previous = signal.signal(signal.SIGALRM, _timed_out)
            signal.alarm(600)  # the guard the subprocess's timeout was
            try:
                with single_thread():
                    code = main(command)
            finally:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, previous)
            out, err = capsys.readouterr()
        return subprocess.CompletedProcess([sys.executable, "-m", "semiseg.cli", *command], code, out, err)

    return bench_quality


@pytest.mark.slow
def test_bench_runs_collects_and_resumes(tmp_path, bench):
    suite = write_suite(tmp_path)
    done = bench(suite, tmp_path, "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "results/tiny/fixmatch/seed0.json").read_text())
    summary = json.loads((tmp_path / "runs/tiny/fixmatch/seed0/summary.json").read_text())
    assert record["schema"] == "semiseg.bench.quality/1" and record["role"] == "method"
    assert record["last_miou"] == summary["last_miou"] and record["iou"] == summary["iou"]
    assert record["labeled"] == 8 and record["iterations"] == 4 and record["seed"] == 0
    assert 0 <= record["ece"] <= 100
    assert [p["step"] for p in record["curve"]["eval"]] == [2, 4] and len(record["curve"]["train"]) == 4
    assert record["config"]["method"]["name"] == "fixmatch"
    assert record["command"] == f"semiseg bench quality tiny.yaml --cells fixmatch --seeds 0"
    assert record["train_command"].startswith("OMP_NUM_THREADS=1 semiseg train")
    assert record["machine"]["threads"] == 1 and record["versions"]["torch"]
    for name in record["predictions"]["images"]:
        assert (tmp_path / "results/tiny/fixmatch/seed0.pred" / f"{name}.png").is_file()
    baseline = json.loads((tmp_path / "results/tiny/supervised/seed0.json").read_text())
    assert baseline["role"] == "baseline" and baseline["method"] == "supervised"

    again = bench(suite, tmp_path)
    assert again.returncode == 0 and "2 result(s) present, 0 to run" in again.stdout

    # a lost record whose run finished is collected again without training
    (tmp_path / "results/tiny/fixmatch/seed0.json").unlink()
    log = tmp_path / "runs/tiny/fixmatch/seed0.log"
    before = log.read_text()
    again = bench(suite, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((tmp_path / "results/tiny/fixmatch/seed0.json").read_text())["last_miou"] == record["last_miou"]
    assert log.read_text() == before and "training" not in again.stdout


@pytest.mark.slow
def test_a_failing_run_is_named_and_the_others_go_on(tmp_path, bench):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/broken.yaml").write_text(
        f"_base_: {REPO / 'configs/_base_/synthetic.yaml'}\nmethod:\n  name: fixmatch\n  threshhold: 0.9\n")
    # the broken cell first, both at once: the supervised run is still going (or at least not yet collected)
    # when the failure comes in
    suite = write_suite(tmp_path, {
        "broken": "configs/broken.yaml",
        "supervised": "{config: %s, role: baseline}" % (REPO / "configs/synthetic/supervised.yaml")})
    done = bench(suite, tmp_path, "--jobs", "2")
    assert done.returncode == 1
    assert "broken seed 0: FAILED" in done.stdout and "seed0.log" in done.stdout
    assert "threshhold" in (tmp_path / "runs/tiny/broken/seed0.log").read_text()
    assert (tmp_path / "results/tiny/supervised/seed0.json").is_file()
    assert "run the same command again" in done.stderr
