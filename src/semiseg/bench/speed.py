"""`semiseg bench speed`: step time, memory, the network / non-network split and evaluation speed of every
method, this tree against another commit, side by side (docs/benchmarks.md: Speed).

Each measurement is one process running `speed_worker.py` as a file with PYTHONPATH=<tree>/src, so the same
measuring code times this tree and a `git worktree` of the other commit (created once, removed at the end;
both use this environment's Python and this tree's config files: same work, different code). For each
(setting, method, precision) the two trees run alternately, this, other, this, other, ... for `repeats`
rounds, so a drift of the machine touches both alike. The record `<out>/<setting>.json` keeps every run, the
pooled medians and means per tree and the ratios this / other.

Settings: `pascal`, UniMatch V1's network shape (DeepLabV3+ on ResNet-50 with the 64-64-128 deep stem, OS16;
OS8 where the method's published network has it), crop 321, batch 2 + 2, 21 classes, on a small generated
VOC-layout tree (the timing needs the shapes, not the photographs), with the method's Pascal recipe
(configs/_base_/pascal_<method>.yaml, else UniMatch V1's optimiser and weak pipeline); `camvid`, the CPU
config configs/camvid/<method>_lite0_192_1_8.yaml on the real CamVid. Precisions: fp32, bf16 (autocast),
bf16 with channels_last, fp32 with channels_last.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semiseg.bench.results import machine
from semiseg.errors import SemisegError

SCHEMA = "semiseg.bench.speed/1"
REPO = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).resolve().with_name("speed_worker.py")
SETTINGS = ("pascal", "camvid")
# `'off'` quoted: older trees read overrides as YAML 1.1, where a bare off is the boolean false
PRECISIONS = {"fp32": ["train.amp='off'", "train.channels_last=false"],
              "bf16": ["train.amp=bf16", "train.channels_last=false"],
              "bf16_cl": ["train.amp=bf16", "train.channels_last=true"],
              "fp32_cl": ["train.amp='off'", "train.channels_last=true"]}
OS8_METHODS = ("u2pl", "csl")  # their published networks run at output stride 8
FAKE_VOC = {"size": [500, 375], "labeled": 16, "unlabeled": 16, "val": 8, "seed": 0, "split": "fake16"}
# steps that depend on the step index: a supervised-only start would time the wrong thing
NO_WARMUP = {"u2pl": ["method.warmup_epochs=0"]}
# UniMatch V1's Pascal recipe, for a method without a Pascal config of its own
UNIMATCH_RECIPE = ["data.weak_pipeline=unimatch", "data.scale_range=[0.5,2.0]", "train.optimizer=sgd",
                   "train.lr=0.001", "train.lr_multi=10.0", "train.momentum=0.9", "train.weight_decay=1.0e-4"]
RATIO_KEYS = ("step_s", "forward_s", "backward_s", "optimizer_s", "rest_s")


# -- the Pascal-shaped data -----------------------------------------------------------------------
def make_fake_voc(folder: Path, size=None, labeled=None, unlabeled=None, val=None, seed=None) -> dict:
    """A small deterministic tree in the `pascal` preset's layout under `folder`: JPEGImages/*.jpg,
    SegmentationClass/*.png (palette PNGs of class ids 0..20 with 255 on the object borders),
    splits/pascal/<split>/{labeled,unlabeled}.txt, splits/pascal/{val,train_aug}.txt. Kept when its
    `fake_voc.json` says it was made with the same parameters. Returns the data overrides' values."""
    from PIL import Image, ImageFilter

    from semiseg.data.presets import voc_palette

    spec = {**FAKE_VOC, **{k: v for k, v in dict(size=size, labeled=labeled, unlabeled=unlabeled, val=val,
                                                   seed=seed).items() if v is not None}}
    spec["size"] = [int(s) for s in spec["size"]]
    folder = Path(folder)
    stamp = folder / "fake_voc.json"
    info = {"root": str(folder.resolve()), "splits_dir": str((folder / "splits").resolve()), "split": spec["split"]}
    if stamp.is_file() and json.loads(stamp.read_text()) == spec:
        return info
    width, height = spec["size"]
    rng = np.random.default_rng(spec["seed"])
    palette = [v for colour in voc_palette(256) for v in colour]
    (folder / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (folder / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    names = [f"2007_{i:06d}" for i in range(spec["labeled"] + spec["unlabeled"] + spec["val"])]
    yy, xx = np.mgrid[0:height, 0:width]
    for name in names:
        mask = np.zeros((height, width), np.uint8)
        for _ in range(int(rng.integers(1, 4))):  # a few objects: ellipses of random classes
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            ry, rx = rng.uniform(0.1, 0.4) * height, rng.uniform(0.1, 0.4) * width
            mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = int(rng.integers(1, 21))
        edges = np.asarray(Image.fromarray(mask).filter(ImageFilter.FIND_EDGES)) > 0
        grown = np.asarray(Image.fromarray(edges.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(5))) > 0
        colours = rng.integers(0, 256, (256, 3)).astype(np.float32)
        image = colours[mask] + rng.normal(0, 20, (height, width, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / "JPEGImages" / f"{name}.jpg",
                                                                        quality=90)
        label = np.where(grown, 255, mask).astype(np.uint8)
        png = Image.fromarray(label)  # mode L; the palette makes it a P image, as VOC's masks
        png.putpalette(palette)
        png.save(folder / "SegmentationClass" / f"{name}.png")
    lines = [f"JPEGImages/{n}.jpg SegmentationClass/{n}.png\n" for n in names]
    a, b = spec["labeled"], spec["labeled"] + spec["unlabeled"]
    split = folder / "splits" / "pascal" / spec["split"]
    split.mkdir(parents=True, exist_ok=True)
    (split / "labeled.txt").write_text("".join(lines[:a]))
    (split / "unlabeled.txt").write_text("".join(lines[a:b]))
    (folder / "splits" / "pascal" / "train_aug.txt").write_text("".join(lines[:b]))
    (folder / "splits" / "pascal" / "val.txt").write_text("".join(lines[b:]))
    stamp.write_text(json.dumps(spec) + "\n")
    return info


# -- what to run ----------------------------------------------------------------------------------
def pascal_cell(method: str, data: dict, repo: Path = REPO) -> tuple[Path | None, list[str]]:
    """(config file, overrides) of a method at the Pascal-shaped setting."""
    base = repo / "configs" / "_base_" / f"pascal_{method}.yaml"
    config = base if base.is_file() else None
    recipe = [] if config else ["data.dataset=pascal", *UNIMATCH_RECIPE, f"method.name={method}"]
    if method == "fixmatch" and config is None:
        recipe.append("method.threshold=0.95")
    return config, recipe + [
        f"data.root={data['root']}", f"data.splits_dir={data['splits_dir']}", _split_override(data["split"]),
        # named, not the preset's default: the fake val.txt is not the published one data.verify_splits checks
        f"data.val_list={data['splits_dir']}/pascal/val.txt", "data.crop_size=321", "model.name=deeplabv3plus", "model.encoder=resnet50s", "model.pretrained=null",
        f"model.output_stride={8 if method in OS8_METHODS else 16}", "model.lock_backbone=false",
        "train.total_batch_size=2", "train.unlabeled_batch_size=2", *NO_WARMUP.get(method, [])]


def _split_override(split: str) -> str:
    return f"data.split='{split}'" if str(split).isdigit() else f"data.split={split}"  # "1464" stays a string


def camvid_cell(method: str, root: Path, repo: Path = REPO) -> tuple[Path | None, list[str]] | None:
    """(config file, overrides) of a method at the CamVid CPU config; None when it has no such config."""
    config = repo / "configs" / "camvid" / f"{method}_lite0_192_1_8.yaml"
    if not config.is_file():
        return None
    return config, [f"data.root={Path(root).resolve()}", "model.pretrained=null", *NO_WARMUP.get(method, [])]


@dataclass
class Tree:
    name: str  # this | against
    path: Path  # repository root (its src/ goes on PYTHONPATH)
    commit: str | None
    dirty: bool = False
    methods: list[str] | None = None  # the methods this version has (None: not known yet)

    def describe(self) -> dict:
        return {"path": str(self.path), "commit": self.commit, "dirty": self.dirty}


@dataclass
class Cell:
    setting: str
    method: str
    precision: str
    config: Path | None
    overrides: list[str]
    trees: list[str] = field(default_factory=list)  # which trees measure it
    note: str | None = None

    @property
    def key(self) -> str:
        return f"{self.method}/{self.precision}"


def worker_command(tree: Tree, cell: Cell, steps: int, warmup: int, threads: int, eval_images: int,
                   device: str, out: Path | None = None, extra=()) -> list[str]:
    command = [sys.executable, str(WORKER), "--warmup", str(warmup), "--steps", str(steps), "--threads",
               str(threads), "--eval-images", str(eval_images), "--device", device]
    if cell.config is not None:
        command += ["--config", str(cell.config)]
    if out is not None:
        command += ["--out", str(out)]
    return command + ["--", *cell.overrides, *PRECISIONS[cell.precision], *extra]


def worker_env(tree: Tree, threads: int) -> dict:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(tree.path / "src"), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               HF_HUB_OFFLINE="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def shown(tree: Tree, command: list[str], threads: int) -> str:
    """The command as one types it from the repository root."""
    cwd = Path.cwd().resolve()

    def short(word: str) -> str:
        if os.path.isabs(word) and Path(word).exists():
            with contextlib.suppress(ValueError):
                return str(Path(word).resolve().relative_to(cwd))
        return word

    words = ["python", *(short(w) for w in command[1:])]
    return (f"PYTHONPATH={short(str(tree.path / 'src'))} OMP_NUM_THREADS={threads} "
            + " ".join(shlex.quote(w) for w in words))


# -- git ------------------------------------------------------------------------------------------
def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SemisegError(f"git {' '.join(args)}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return done.stdout.strip()


def resolve_commit(repo: Path, commit: str) -> str:
    try:
        return _git(repo, "rev-parse", "--verify", f"{commit}^{{commit}}")
    except SemisegError:
        raise SemisegError(f"--against {commit}: not a commit of {repo}") from None


def this_tree(repo: Path = REPO) -> Tree:
    try:
        commit = _git(repo, "rev-parse", "HEAD")
        dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    except (SemisegError, OSError):
        commit, dirty = None, False
    return Tree("this", repo, commit, dirty)


def methods_at_commit(repo: Path, commit: str) -> list[str]:
    """The methods a commit registers, read from its source (for --dry-run, which creates no worktree)."""
    done = subprocess.run(["git", "-C", str(repo), "grep", "-h", "-o", r'METHODS.register("[a-z0-9_]*")', commit,
                           "--", "src/semiseg"], capture_output=True, text=True)
    return sorted({line.split('"')[1] for line in done.stdout.splitlines() if '"' in line})


@contextlib.contextmanager
def worktree(repo: Path, commit: str):
    """A detached worktree of `commit` in a fresh folder under the temp dir, removed on the way out."""
    parent = Path(tempfile.mkdtemp(prefix=f"semiseg-{commit[:7]}-"))
    path = parent / "tree"
    _git(repo, "worktree", "add", "--detach", str(path), commit)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)], capture_output=True)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)
        shutil.rmtree(parent, ignore_errors=True)


def list_methods(tree: Tree, threads: int) -> list[str]:
    done = subprocess.run([sys.executable, str(WORKER), "--list-methods"], capture_output=True, text=True,
                          env=worker_env(tree, threads))
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise SemisegError(f"cannot import semiseg from {tree.path / 'src'}: {tail}")
    return json.loads(done.stdout)["methods"]


# -- the plan -------------------------------------------------------------------------------------
def default_methods() -> list[str]:
    from semiseg import catalog

    return list(catalog.METHODS)


def plan(settings, methods, precisions, trees: list[Tree], data: dict | None, camvid_root: Path,
         repo: Path = REPO) -> dict[str, list[Cell]]:
    """The cells of each setting, with the trees that measure them (a tree without the method: none)."""
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise SemisegError(f"unknown precision '{unknown[0]}'; choose from {', '.join(PRECISIONS)}")
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        raise SemisegError(f"unknown setting '{bad[0]}'; choose from {', '.join(SETTINGS)}")
    cells = {}
    for setting in settings:
        cells[setting] = []
        for method in methods:
            found = (pascal_cell(method, data or {"root": "<fake VOC>", "splits_dir": "<fake VOC>/splits",
                                                  "split": FAKE_VOC["split"]}, repo) if setting == "pascal"
                     else camvid_cell(method, camvid_root, repo))
            for precision in precisions:
                if found is None:
                    cells[setting].append(Cell(setting, method, precision, None, [],
                                               note=f"no configs/camvid/{method}_lite0_192_1_8.yaml"))
                    continue
                config, overrides = found
                which = [t.name for t in trees if t.methods is None or method in t.methods]
                missing = [t.name for t in trees if t.name not in which]
                cells[setting].append(Cell(setting, method, precision, config, overrides, which,
                                           note=f"no method '{method}' in the {missing[0]} tree" if missing else None))
    return cells


# -- results --------------------------------------------------------------------------------------
def summarise(runs: list[dict]) -> dict:
    """Pooled over the runs of one tree: the median step and eval times; the split, means of the parts over
    every measured step (means, so that the parts add up to the mean step), and its fractions."""
    good = [r for r in runs if "per_step" in r]
    if not good:
        return {}
    parts = {key: [t for r in good for t in r["per_step"][key]] for key in ("step", "forward", "backward",
                                                                           "optimizer", "rest")}
    split = {f"{key}_s": sum(v) / len(v) for key, v in parts.items()}
    step = split["step_s"]
    split.update(network_fraction=(split["forward_s"] + split["backward_s"]) / step,
                 optimizer_fraction=split["optimizer_s"] / step, non_network_fraction=split["rest_s"] / step)
    out = {"step_s": statistics.median(parts["step"]), "step_s_runs": [r["median_step_s"] for r in good],
           "steps": len(parts["step"]), "split": split,
           "between_s": statistics.median([t for r in good for t in r["between_s"]] or [0.0]),
           "eval_s_per_image": {}}
    for mode in good[0].get("eval", {}):
        seconds = [t for r in good for t in r["eval"][mode]["seconds"]]
        out["eval_s_per_image"][mode] = statistics.median(seconds) if seconds else None
    out["peak_rss_bytes"] = int(statistics.median(r["memory"]["peak_rss_bytes"] for r in good))
    growth = [r["memory"]["peak_growth_bytes"] for r in good if r["memory"].get("peak_growth_bytes") is not None]
    out["peak_growth_bytes"] = int(statistics.median(growth)) if growth else None
    return out


def ratios(this: dict, other: dict) -> dict:
    """this / other (below 1: this tree is faster / smaller): the median step, the split's mean parts, the
    median eval seconds per image of each mode, the peak memory."""
    out = {}
    if not this or not other:
        return out
    if other.get("step_s"):
        out["step_s"] = this["step_s"] / other["step_s"]
    for key in RATIO_KEYS[1:]:
        if other["split"].get(key):
            out[key] = this["split"][key] / other["split"][key]
    for mode, value in this.get("eval_s_per_image", {}).items():
        theirs = other.get("eval_s_per_image", {}).get(mode)
        if value and theirs:
            out[f"eval_{mode}"] = value / theirs
    if other.get("peak_rss_bytes"):
        out["peak_rss_bytes"] = this["peak_rss_bytes"] / other["peak_rss_bytes"]
    return out


def cell_record(cell: Cell, runs: dict[str, list[dict]], repo: Path = REPO) -> dict:
    config = None
    if cell.config is not None:
        config = str(cell.config.relative_to(repo)) if cell.config.is_relative_to(repo) else str(cell.config)
    record = {"setting": cell.setting, "method": cell.method, "precision": cell.precision, "config": config,
              "overrides": cell.overrides + PRECISIONS[cell.precision], "note": cell.note, "trees": {}}
    for name, tree_runs in runs.items():
        unavailable = [r["unavailable"] for r in tree_runs if "unavailable" in r]
        if unavailable:
            record["trees"][name] = {"unavailable": unavailable[0], "runs": tree_runs}
        else:
            record["trees"][name] = {"summary": summarise(tree_runs), "runs": tree_runs}
    this = record["trees"].get("this", {}).get("summary")
    other = record["trees"].get("against", {}).get("summary")
    record["ratio"] = ratios(this, other) if this and other else None
    return record


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def _merge_existing(path: Path, header: dict) -> dict:
    """Cells of an existing record made of the same trees on the same machine (a run of other methods)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    same = (old.get("schema") == SCHEMA and old.get("machine") == header["machine"]
            and {k: (v or {}).get("commit") for k, v in old.get("trees", {}).items()}
            == {k: v.get("commit") for k, v in header["trees"].items()}
            and old.get("protocol") == header["protocol"])
    return dict(old.get("cells", {})) if same else {}


def run_worker(tree: Tree, cell: Cell, args: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="semiseg-speed-out-") as folder:
        out = Path(folder) / "result.json"
        command = worker_command(tree, cell, out=out, **args)
        started = time.time()
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=worker_env(tree, args["threads"]),
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s", "tree": tree.name}
        result = json.loads(out.read_text()) if out.is_file() else {}
        if done.returncode not in (0, 3) and "error" not in result:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-20:])
            result = {"error": f"worker exit status {done.returncode}", "log": tail}
    result["tree"], result["wall_s"] = tree.name, round(time.time() - started, 2)
    expected = str((tree.path / "src" / "semiseg").resolve())
    if "semiseg" in result and str(Path(result["semiseg"]).resolve()) != expected:
        result["error"] = f"measured {result['semiseg']}, not {expected} (PYTHONPATH did not take)"
    return result


def run(settings=SETTINGS, methods=None, precisions=tuple(PRECISIONS), steps: int = 10, warmup: int = 3,
        repeats: int = 2, against: str | None = None, threads: int = 2, eval_images: int = 4,
        out: Path = Path("benchmarks/results/speed"), data_dir: Path = Path("runs/bench/speed_data"),
        camvid_root: Path | None = None, device: str = "cpu", overrides=(), timeout: float = 3600,
        dry_run: bool = False, echo=print, repo: Path = REPO, fake_voc: dict | None = None,
        command: str = "semiseg bench speed") -> int:
    """Measure every cell; returns the number of runs that failed (their errors are in the records)."""
    if steps < 1 or warmup < 0 or repeats < 1 or threads < 1 or eval_images < 0:
        raise SemisegError("--steps, --repeats and --threads must be >= 1, --warmup and --eval-images >= 0")
    known = default_methods()
    methods = list(methods or known)
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise SemisegError(f"unknown method '{unknown[0]}'; this tree has: {', '.join(known)}")
    camvid_root = Path(camvid_root or repo.parent / "shared" / "data" / "camvid")
    this = this_tree(repo)
    other_commit = resolve_commit(repo, against) if against else None
    protocol = {"warmup": warmup, "steps": steps, "repeats": repeats, "eval_images": eval_images,
                "threads": threads, "device": device, "order": "alternating: this, against, this, against, ...",
                "extra_overrides": list(overrides)}
    worker_args = dict(steps=steps, warmup=warmup, threads=threads, eval_images=eval_images, device=device,
                       extra=list(overrides))

    if dry_run:
        trees = [this]
        if other_commit:
            trees.append(Tree("against", Path(tempfile.gettempdir()) / f"semiseg-{other_commit[:7]}-XXXX" / "tree",
                              other_commit, methods=methods_at_commit(repo, other_commit)))
        data = {"root": str(Path(data_dir).resolve() / "pascal"),
                "splits_dir": str(Path(data_dir).resolve() / "pascal" / "splits"), "split": FAKE_VOC["split"]}
        cells = plan(settings, methods, precisions, trees, data, camvid_root, repo)
        total = sum(len(c.trees) for s in cells.values() for c in s) * repeats
        echo(f"{total} run(s): {', '.join(settings)} x {len(methods)} method(s) x {len(precisions)} precision(s), "
             f"{repeats} round(s), {warmup} + {steps} steps each, {threads} thread(s)"
             + (f"; against {other_commit[:7]} in a git worktree (created, then removed)" if other_commit else ""))
        for setting, setting_cells in cells.items():
            for cell in setting_cells:
                if cell.note:
                    echo(f"  {setting} {cell.key}: {cell.note}")
                for r in range(repeats):
                    for tree in trees:
                        if tree.name in cell.trees:
                            command = worker_command(tree, cell, **worker_args)
                            echo(f"  {setting} {cell.key} [{tree.name} {r + 1}/{repeats}]: "
                                 f"{shown(tree, command, threads)}")
        return 0

    failed = 0
    with (worktree(repo, other_commit) if other_commit else contextlib.nullcontext()) as other_path:
        trees = [this]
        if other_commit:
            other = Tree("against", Path(other_path), other_commit)
            other.methods = list_methods(other, threads)
            trees.append(other)
        data = None
        if "pascal" in settings:
            data = make_fake_voc(Path(data_dir) / "pascal", **(fake_voc or {}))
        cells = plan(settings, methods, precisions, trees, data, camvid_root, repo)
        header = {"schema": SCHEMA, "machine": {**machine(threads, device), "torch": _torch_version(),
                                                "python": sys.version.split()[0]},
                  "trees": {t.name: t.describe() for t in trees}, "protocol": protocol}
        for setting, setting_cells in cells.items():
            path = Path(out) / f"{setting}.json"
            record = {**header, "setting": setting, "data": data if setting == "pascal" else
                      {"root": str(camvid_root.resolve())},
                      "command": command,
                      "cells": _merge_existing(path, header)}
            for cell in setting_cells:
                if not cell.trees:
                    echo(f"{setting} {cell.key}: skipped ({cell.note})")
                    continue
                runs = {name: [] for name in cell.trees}
                for r in range(repeats):
                    for tree in trees:
                        if tree.name not in cell.trees:
                            continue
                        result = run_worker(tree, cell, worker_args, timeout)
                        runs[tree.name].append(result)
                        if "error" in result:
                            failed += 1
                            echo(f"{setting} {cell.key} [{tree.name} {r + 1}/{repeats}]: FAILED: {result['error']}")
                        elif "unavailable" in result:
                            echo(f"{setting} {cell.key} [{tree.name}]: unavailable: {result['unavailable']}")
                        else:
                            echo(f"{setting} {cell.key} [{tree.name} {r + 1}/{repeats}]: step "
                                 f"{result['median_step_s']:.3f} s, non-network "
                                 f"{100 * result['split']['non_network_fraction']:.0f} %")
                    if any("unavailable" in x for x in runs.get("against", [])):
                        cell.trees = [t for t in cell.trees if t != "against"]
                record["cells"][cell.key] = cell_record(cell, runs, repo)
                write_json(path, record)
            echo(f"wrote {path}")
    return failed


def _torch_version() -> str:
    import torch

    return torch.__version__
