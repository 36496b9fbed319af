"""`semiseg bench quality`: fill the missing cells of a suite's table, resuming whatever was started.

For each (cell, seed) without a result record: train the cell's config with that seed in
`<runs>/<suite>/<cell>/seed<k>` with `--resume auto` (so a killed benchmark goes on where it stopped),
`jobs` runs at a time with the cores shared out among them, then turn the finished run into
`<results>/<suite>/<cell>/seed<k>.json` (semiseg.bench.results). Records already there are kept: a
cell is re-measured only when its record is deleted.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from semiseg.bench.results import build_record, read_json, result_path, write_record
from semiseg.bench.suite import Cell, Suite
from semiseg.errors import SemisegError


@dataclass(frozen=True)
class Job:
    cell: Cell
    seed: int
    run_dir: Path
    result: Path


def plan(suite: Suite, results_dir: Path, runs_dir: Path, cells=None, seeds=None) -> tuple[list[Job], list[Job]]:
    """(jobs still to do, jobs whose record exists) for the chosen cells and seeds (default: all)."""
    chosen = list(suite.cells) if not cells else list(cells)
    unknown = [c for c in chosen if c not in suite.cells]
    if unknown:
        raise SemisegError(f"{suite.path}: no cell '{unknown[0]}' (cells: {', '.join(suite.cells)})")
    todo, done = [], []
    for seed in (seeds or suite.seeds):
        for name in chosen:
            job = Job(suite.cells[name], seed, Path(runs_dir) / suite.name / name / f"seed{seed}",
                      result_path(results_dir, suite.name, name, seed))
            (done if job.result.is_file() else todo).append(job)
    return todo, done


def train_command(suite: Suite, job: Job, root: Path | None) -> list[str]:
    command = [sys.executable, "-m", "semiseg.cli", "train", str(job.cell.config), f"seed={job.seed}",
               f"output_dir={job.run_dir}", *suite.overrides, "--resume", "auto", "--no-progress"]
    return command + (["--root", str(root)] if root else [])


def _shown(command: list[str], threads: int) -> str:
    """The command as a user would type it (the `semiseg` entry point, repository-relative paths)."""
    words = ["semiseg", *command[3:]]
    cwd = Path.cwd().resolve()
    words = [os.path.relpath(w, cwd) if os.path.isabs(w) and Path(w).exists() else w for w in words]
    return f"OMP_NUM_THREADS={threads} " + " ".join(shlex.quote(w) for w in words)


def _finished(run_dir: Path) -> bool:
    summary = run_dir / "summary.json"
    return summary.is_file() and "last_miou" in read_json(summary)


def collect(suite: Suite, job: Job, root: Path | None, threads: int) -> dict:
    command = train_command(suite, job, root)
    bench = (f"semiseg bench quality {os.path.relpath(suite.path, Path.cwd())} --cells {job.cell.name} "
             f"--seeds {job.seed}")
    record = build_record(suite, job.cell, job.seed, job.run_dir, root,
                          {"bench": bench, "train": _shown(command, threads)}, threads, job.result)
    write_record(record, job.result)
    return record


def run(suite: Suite, results_dir: Path, runs_dir: Path, cells=None, seeds=None, jobs: int = 1,
        root: Path | None = None, threads: int | None = None, dry_run: bool = False, echo=print) -> int:
    """Run and collect every missing cell; returns the number of jobs that failed (their logs named)."""
    root = root or suite.dataset_root
    todo, done = plan(suite, results_dir, runs_dir, cells, seeds)
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, jobs))
    echo(f"{suite.name}: {len(done)} result(s) present, {len(todo)} to run ({jobs} at a time, "
         f"{threads} thread(s) each)")
    if dry_run:
        for job in todo:
            echo(f"  {job.cell.name} seed {job.seed}: {_shown(train_command(suite, job, root), threads)}")
        return 0
    failed = 0
    waiting, running = list(todo), []
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    while waiting or running:
        while waiting and len(running) < max(1, jobs):
            job = waiting.pop(0)
            job.run_dir.mkdir(parents=True, exist_ok=True)
            if _finished(job.run_dir):
                running.append((job, None, None))
                continue
            log = open(job.run_dir.parent / f"seed{job.seed}.log", "ab")
            echo(f"  {job.cell.name} seed {job.seed}: training (log {log.name})")
            process = subprocess.Popen(train_command(suite, job, root), stdout=log, stderr=subprocess.STDOUT,
                                       env=environment)
            running.append((job, process, log))
        time.sleep(0.2 if any(p is None for _, p, _ in running) else 2.0)
        for entry in list(running):
            job, process, log = entry
            if process is not None and process.poll() is None:
                continue
            running.remove(entry)
            if log is not None:
                log.close()
            if process is not None and process.returncode != 0:
                failed += 1
                echo(f"  {job.cell.name} seed {job.seed}: FAILED (exit {process.returncode}); see {log.name}")
                continue
            try:
                record = collect(suite, job, root, threads)
            except SemisegError as exc:
                failed += 1
                echo(f"  {job.cell.name} seed {job.seed}: cannot collect: {exc}")
                continue
            echo(f"  {job.cell.name} seed {job.seed}: mIoU {record['last_miou']:.2f} -> {job.result}")
    return failed
