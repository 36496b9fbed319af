"""The iteration-based training loop: one loop for every method (it never reads the method's name)."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import shutil
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from ..config import to_yaml
from ..errors import SemisegError
from ..methods.interface import StepContext, check_updates
from .batch_plan import plan_from_config
from .build import build_method, build_preset, build_train_batches, crop_size, iters_per_epoch
from .checkpoint import (check_compatible, check_resume_fingerprint, checkpoint_step, load_checkpoint,
                         load_method_state, reporting_write_errors, save_atomic)
from .data_parallel import UpdateRunner
from .distributed import gather_objects, init_distributed, mean_over_ranks, shutdown_distributed
from .environment import seed_everything, set_deterministic
from .evaluator import evaluate
from .guardrails import StepLosses, stop_if_nonfinite
from .logger import RunLogger, drop_records_after
from .metrics import format_iou_table
from .precision import Precision
from .rng_state import capture_rng_state, restore_rng_state
from .run_info import write_run_info
from .schedule import remember_base_lr, set_lr
from .sync_batchnorm import convert_to_sync_batchnorm

# What a run writes in its output_dir: a run is there when any of these is; `--overwrite` deletes these (and
# the temporary files of a write a kill interrupted), never anything else in the folder.
RUN_FILES = ("latest.pt", "best.pt", "config.yaml", "run_info.json", "metrics.jsonl", "summary.json")
RUN_DIRS = ("tensorboard",)
RUN_TEMPORARIES = ("latest.pt.tmp", "best.pt.tmp", "metrics.jsonl.tmp")


def _unlink(path: Path) -> None:
    with reporting_write_errors(path):
        path.unlink()


def _rmtree(path: Path) -> None:
    with reporting_write_errors(path):
        shutil.rmtree(path)


def _flatten(tree: dict, prefix: str = ""):
    """(dotted key, leaf value) pairs of a nested dict."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def to_device(batch, device, memory_format=torch.contiguous_format):
    """Tensors to `device`; image batches (4-D float) also to `memory_format`."""
    if isinstance(batch, dict):
        return {k: to_device(v, device, memory_format) for k, v in batch.items()}
    if not isinstance(batch, torch.Tensor):
        return batch
    if batch.dim() == 4 and batch.is_floating_point():
        return batch.to(device, non_blocking=True, memory_format=memory_format)
    return batch.to(device, non_blocking=True)


class Trainer:
    def __init__(self, cfg, resume: str | None = None, progress: bool = True, overwrite: bool = False):
        """Builds and validates everything (config, data lists, method, the checkpoint to resume) and writes
        nothing: the run directory is written from `train()` on (`_open_run`), so a failed start leaves an
        existing one as it was and creates none."""
        self.cfg = cfg
        self.output_dir = Path(cfg.output_dir)
        self.dist = init_distributed(cfg.device)
        self.device = self.dist.device
        self.overwrite, self.resumed = overwrite, bool(resume)
        self._check_output_dir(resume, overwrite)
        set_deterministic(cfg.deterministic)
        # The networks are built under the global seed on every rank (DDP also broadcasts rank 0's
        # weights); then ranks > 0 switch to their own stream seed + rank (docs/distributed.md), while rank 0 goes
        # on with exactly the stream a single-process run has.
        seed_everything(cfg.seed)
        self.preset = build_preset(cfg)
        self.splits = self.preset.build(cfg.data)
        self.num_classes = self.preset.num_classes
        self.plan = plan_from_config(cfg.train, self.dist.world_size)
        self.precision = Precision(cfg.train.amp, self.device)
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.method = build_method(cfg, self.num_classes).to(self.device, memory_format=self.memory_format)
        if self.dist.enabled:
            convert_to_sync_batchnorm(self.method, self.device)
        self.precision.attach(self.method)
        self.updates = self.method.updates(cfg.train)
        check_updates(self.method, self.updates)
        for update in self.updates:
            remember_base_lr(update.optimizer)
        self.iters_per_epoch = iters_per_epoch(cfg, self.splits, self.method.views())
        self.step, self.best = 0, {"miou": -1.0, "step": -1}
        self.last_saved = None
        self.eval_pending = False  # resumed from a latest.pt written before its evaluation finished
        self.progress = progress and self.dist.is_main
        if self.dist.rank > 0:
            seed_everything(cfg.seed, self.dist.rank)
        if resume:
            self._resume(resume)
        self.runners = [UpdateRunner(update, self.dist, cfg.train.ddp_find_unused_parameters)
                        for update in self.updates]
        self.logger = None  # built by _open_run

    # -- the run directory ------------------------------------------------------------------
    def _run_in_output_dir(self) -> str | None:
        """What says output_dir holds a run ("latest.pt at iteration N", or the files found); None if nothing."""
        found = [name for name in RUN_FILES + RUN_DIRS if (self.output_dir / name).exists()]
        if not found:
            return None
        latest = self.output_dir / "latest.pt"
        if latest.is_file():
            step = checkpoint_step(latest)
            return "an unreadable latest.pt" if step is None else f"latest.pt at iteration {step}"
        return f"{', '.join(found)}; no latest.pt"

    def _output_dir_problem(self, resume: str | None, overwrite: bool) -> str | None:
        out = self.output_dir
        if out.exists() and not out.is_dir():
            return f"output_dir {out} is a file, not a folder; pick another output_dir"
        if overwrite and resume == "auto":
            return ("--overwrite starts the run in output_dir over and --resume auto continues it: "
                    "give one of the two")
        if overwrite:
            if resume and Path(resume).resolve() in {(out / name).resolve() for name in RUN_FILES}:
                return (f"--overwrite would delete {resume}, the checkpoint --resume names; "
                        f"copy it out of {out} first, or drop --overwrite")
            return None
        if resume == "auto" or (resume and Path(resume).resolve().parent == out.resolve()):
            return None  # continuing this very run (from latest.pt, best.pt, a copy of one)
        run = self._run_in_output_dir()
        if run is None:
            return None
        return (f"{out} holds a run ({run}); continue it with --resume auto, or start over with --overwrite "
                "(or pick another output_dir)")

    def _check_output_dir(self, resume: str | None, overwrite: bool) -> None:
        """Never write into another run unless told to (--resume / --overwrite). Rank 0 looks (it alone writes
        there), every rank gets its answer, so all stop or none does."""
        problem = self._output_dir_problem(resume, overwrite) if self.dist.is_main else None
        problem = gather_objects(problem, self.dist)[0]
        if problem:
            raise SemisegError(problem)

    def _open_run(self) -> None:
        """The first writes into output_dir, once everything is validated: with --overwrite the old run's
        files go first; a resumed run drops the records of steps after its checkpoint (it logs them again)."""
        problem = None  # a failed write stops every rank with its line (none waits in a collective)
        if self.dist.is_main:
            try:
                if self.overwrite:
                    for name in RUN_FILES + RUN_TEMPORARIES:
                        path = self.output_dir / name
                        if path.is_file() or path.is_symlink():
                            _unlink(path)
                    for name in RUN_DIRS:
                        path = self.output_dir / name
                        if path.is_symlink():
                            _unlink(path)
                        elif path.is_dir():
                            _rmtree(path)
                with reporting_write_errors(self.output_dir):
                    self.output_dir.mkdir(parents=True, exist_ok=True)
                if self.resumed:  # (and the val record of a pending evaluation: it is run again)
                    drop_records_after(self.output_dir / "metrics.jsonl", self.step,
                                       kinds_at_step=("val",) if self.eval_pending else ())
                with reporting_write_errors(self.output_dir / "config.yaml"):
                    (self.output_dir / "config.yaml").write_text(to_yaml(self.cfg))
                write_run_info(self.output_dir, self.cfg.seed, world_size=self.dist.world_size,
                               extra={"data_lists": self.splits.lists,
                                      "num_labeled": len(self.splits.labeled),
                                      "num_unlabeled": len(self.splits.unlabeled or ()),
                                      "accumulation_steps": self.plan.accumulation_steps,
                                      "micro_batch_size": self.plan.labeled_per_pass,
                                      "amp": self.precision.mode, "amp_reason": self.precision.reason})
                self.logger = RunLogger(self.output_dir, purge_step=self.step + 1 if self.resumed else None)
            except SemisegError as exc:
                problem = str(exc)
        problem = gather_objects(problem, self.dist)[0]
        if problem:
            raise SemisegError(problem)
        if not self.dist.is_main:
            self.logger = RunLogger(self.output_dir, enabled=False)

    # -- checkpoints -------------------------------------------------------------------------
    def _fingerprint(self) -> dict:
        """What must not change between a checkpoint and the config resuming it (shapes, data stream):
        every `model.*` key but the weights source, and what fixes the data stream."""
        t = self.cfg.train
        model = {f"model.{key}": value for key, value in _flatten(OmegaConf.to_container(self.cfg.model, resolve=True))
                 if key != "pretrained"}
        return {"method.name": self.cfg.method.name, **model, "data.dataset": self.cfg.data.dataset,
                "data.target.dataset": self.cfg.data.target.dataset,
                "num_classes": self.num_classes, "data.crop_size": crop_size(self.cfg, self.preset),
                "labeled images": len(self.splits.labeled),
                "unlabeled images": len(self.splits.unlabeled) if self.splits.unlabeled is not None else 0,
                "seed": self.cfg.seed, "train.total_batch_size": t.total_batch_size,
                "train.unlabeled_batch_size": t.unlabeled_batch_size or t.total_batch_size}

    def _checkpoint(self, rng_per_rank: list, eval_pending: bool = False) -> dict:
        return {
            "method": self.method.state_dict(),
            "optimizers": {update.name: update.optimizer.state_dict() for update in self.updates},
            "scaler": self.precision.state_dict(),
            "step": self.step,
            "best": dict(self.best),
            # written before the evaluation of its step, rewritten after it: a resume runs a pending one first
            "eval_pending": eval_pending,
            "rng": {"world_size": self.dist.world_size, "per_rank": rng_per_rank},
            # the sampler is stateless: the batch of step t is a function of (seed, stream, t),
            # so the next batch is fixed by the step (recorded here with what fixes the stream)
            "sampler": {"next_step": self.step, "seed": self.cfg.seed},
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "meta": {"num_classes": self.num_classes, "encoder": self.cfg.model.encoder,
                     "method": self.cfg.method.name, "dataset": self.cfg.data.dataset,
                     "class_names": list(self.preset.class_names), "palette": [list(c) for c in self.preset.palette],
                     "fingerprint": self._fingerprint()},
        }

    def _resume(self, resume: str) -> None:
        path = self.output_dir / "latest.pt" if resume == "auto" else Path(resume)
        found = gather_objects(path.is_file(), self.dist)
        if len(set(found)) > 1:  # every rank loads the file itself: all must see the same one
            raise SemisegError(f"{path} exists for ranks {[r for r, f in enumerate(found) if f]} only; with several "
                               "nodes, output_dir (and a --resume path) must be on a filesystem all nodes share")
        if resume == "auto" and not found[0]:
            return  # nothing to resume: a fresh run
        ckpt = load_checkpoint(path)
        check_compatible(ckpt, self.num_classes, self.cfg.model.encoder, str(path))
        check_resume_fingerprint(ckpt["meta"].get("fingerprint"), self._fingerprint(), str(path))
        if ckpt["meta"].get("method") != self.cfg.method.name:
            raise SemisegError(f"{path}: checkpoint was trained with method '{ckpt['meta'].get('method')}', "
                               f"the config says '{self.cfg.method.name}'")
        load_method_state(self.method, ckpt["method"], str(path))
        self._load_optimizers(ckpt, path)
        self.precision.load_state_dict(ckpt.get("scaler"))
        self.step, self.best = int(ckpt["step"]), dict(ckpt["best"])
        self.eval_pending = bool(ckpt.get("eval_pending", False))
        self.last_saved = (str(path), self.step)
        rng = ckpt["rng"]
        if "per_rank" not in rng:  # checkpoints written before distributed training
            torch.set_rng_state(rng["torch"])
        elif rng["world_size"] == self.dist.world_size:
            restore_rng_state(rng["per_rank"][self.dist.rank])
        else:  # the data stream is world-size independent; the ranks' own RNG streams cannot be
            seed_everything(self.cfg.seed + 1_000_003 * self.step, self.dist.rank)
            self._print(f"note: {path} was written by {rng['world_size']} processes, this run has "
                        f"{self.dist.world_size}; the data are the same, method-internal randomness is reseeded")
        self._print(f"resumed from {path} at iteration {self.step}")

    def _save(self, *names: str, rng_per_rank: list | None = None, eval_pending: bool = False) -> list:
        """Collective (every rank calls it): rank 0 writes the files with every rank's RNG state (gathered
        here unless given: every rank must pass it or none). Returns that state."""
        if rng_per_rank is None:
            rng_per_rank = gather_objects(capture_rng_state(), self.dist)
        problem = None
        if self.dist.is_main:
            checkpoint = self._checkpoint(rng_per_rank, eval_pending)
            for name in names:
                path = self.output_dir / name
                try:
                    save_atomic(checkpoint, path)
                except SemisegError as exc:  # every rank stops with it (none waits in a collective)
                    problem = str(exc)
                    break
        problem = gather_objects(problem, self.dist)[0]
        if problem:
            raise SemisegError(problem)
        if "latest.pt" in names:
            self.last_saved = (str(self.output_dir / "latest.pt"), self.step)
        return rng_per_rank

    def _last_checkpoint_note(self) -> str:
        if self.last_saved is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint {self.last_saved[0]} (iteration {self.last_saved[1]}) is intact"

    def _print(self, text: str) -> None:
        if self.dist.is_main:
            print(text)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self):
        """RNG-neutral: the checkpoint written before it holds the state the training goes on with."""
        cfg = self.cfg
        rng = capture_rng_state()
        self.method.eval()
        try:
            result = evaluate(self.method.predict, self.splits.val, self.num_classes,
                              cfg.eval.mode or self.preset.eval_mode,
                              crop_size=cfg.eval.crop_size or crop_size(cfg, self.preset),
                              resize_multiple=cfg.eval.resize_multiple, device=self.device,
                              rank=self.dist.rank, world_size=self.dist.world_size,
                              class_names=list(self.preset.class_names))
        finally:
            self.method.train()
            restore_rng_state(rng)
        return result

    def _evaluate_at_step(self, rng_per_rank: list | None = None):
        """The evaluation of an eval point, whose latest.pt (eval_pending) is already written: log it, then
        latest.pt again (its step evaluated, maybe a new best) and best.pt when it improved, with the RNG
        states of the training step (`rng_per_rank`, those of the checkpoint before the evaluation)."""
        result = self.evaluate()
        improved = result.miou > self.best["miou"]
        if improved:
            self.best = {"miou": result.miou, "step": self.step}
        self.logger.log(self.step, {"miou": result.miou, "miou_present": result.miou_present, "ece": result.ece,
                                    **{f"iou/{n}": 100 * v for n, v in zip(self.preset.class_names, result.iou)}},
                        kind="val")
        self._save("latest.pt", *(["best.pt"] if improved else []), rng_per_rank=rng_per_rank)
        self.eval_pending = False
        return result

    # -- one optimiser step -------------------------------------------------------------------
    def _load_optimizers(self, ckpt: dict, path) -> None:
        states = ckpt.get("optimizers")
        if states is None and "optimizer" in ckpt and len(self.updates) == 1:  # written before several updates
            states = {self.updates[0].name: ckpt["optimizer"]}
        missing = [u.name for u in self.updates if u.name not in (states or {})]
        if missing:
            raise SemisegError(f"{path}: checkpoint holds no optimiser state for update '{missing[0]}' "
                               f"(it has: {', '.join(states or {}) or 'none'}); was it written by another method?")
        for update in self.updates:
            update.optimizer.load_state_dict(states[update.name])

    def _train_step(self, passes: list, ctx: StepContext) -> dict:
        """For each update in the method's order: forward/backward every pass (gradients accumulate,
        all-reduced on the last), stop on a non-finite loss, step its optimiser. Returns the logs."""
        passes = [to_device(batch, self.device, self.memory_format) for batch in passes]
        logs = {}
        for update, runner in zip(self.updates, self.runners):
            losses = StepLosses()
            update.optimizer.zero_grad(set_to_none=True)
            for index, batch in enumerate(passes):
                last = index == len(passes) - 1
                with contextlib.nullcontext() if last else runner.accumulating():
                    loss, terms = runner.run(batch, ctx)
                    losses.add(loss, terms)
                    self.precision.backward(loss.float() / len(passes))
            stop_if_nonfinite(losses, self.step, self.dist, self._last_checkpoint_note(),
                              update.name if len(self.updates) > 1 else None)
            self.precision.step(update.optimizer)
            means = mean_over_ranks(losses.means(), self.dist) if self._logging_step() else {}
            for key, value in means.items():  # a later update's terms: `loss_<name>`, `<term>_<name>` if taken
                if update is not self.updates[0] and (key == "loss" or key in logs):
                    key = f"loss_{update.name}" if key == "loss" else f"{key}_{update.name}"
                logs[key] = value
        self.precision.end_step()
        self.method.after_step()
        return logs

    def _logging_step(self) -> bool:
        """Whether the step being taken is logged (its index after the step is a multiple of log_every)."""
        t = self.cfg.train
        return (self.step + 1) % max(1, t.log_every) == 0 or self.step + 1 == t.total_iters

    def _set_lrs(self) -> dict:
        """Every update's learning rates for this step; the logged value of each (its first group)."""
        t, lrs = self.cfg.train, {}
        for update in self.updates:
            lr = set_lr(update.optimizer, self.step, t.total_iters, t.poly_power, update.schedule, t.warmup_iters)
            lrs["lr" if update is self.updates[0] else f"lr_{update.name}"] = lr
        return lrs

    # -- the loop ---------------------------------------------------------------------------
    def train(self):
        cfg, t = self.cfg, self.cfg.train
        total = t.total_iters
        self.method.train()
        batches = build_train_batches(cfg, self.preset, self.splits, self.method, self.step, self.plan,
                                      self.dist.rank)
        # the first batch before the first write: the loaders' own checks (and the first images) pass first
        first = next(batches, None)
        self._open_run()
        if t.amp == "auto":
            self._print(f"precision: {self.precision.mode} ({self.precision.reason})")
        batches = itertools.chain([first] if first is not None else [], batches)
        bar = tqdm(total=total, initial=self.step, disable=not self.progress, dynamic_ncols=True,
                   desc=f"{cfg.method.name}", leave=True)
        result = None
        if self.eval_pending:  # the run stopped during the evaluation of its checkpoint's step: that one first
            self._print(f"iteration {self.step} was not evaluated yet: evaluating it first")
            result = self._evaluate_at_step()
        start_time, start_step = time.time(), self.step
        for passes in batches:
            lrs = self._set_lrs()
            logged = self._logging_step()
            values = self._train_step(passes, StepContext(self.step, total, self.iters_per_epoch))
            self.step += 1
            bar.update(1)
            if logged:
                self.logger.log(self.step, {**values, **lrs})
                bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lrs['lr']:.2e}")
            at_eval = (t.eval_every and self.step % t.eval_every == 0) or self.step == total
            if at_eval:  # latest.pt first: a failing evaluation costs no training
                rng_per_rank = self._save("latest.pt", eval_pending=True)
                result = self._evaluate_at_step(rng_per_rank)
                if self.progress:
                    bar.write(f"iteration {self.step}: mIoU {result.miou:.2f} (best {self.best['miou']:.2f} "
                              f"at {self.best['step']})")
            elif t.checkpoint_every and self.step % t.checkpoint_every == 0:
                self._save("latest.pt")
        bar.close()
        if result is None:  # resumed at the end: evaluate the final weights once more
            result = self.evaluate()
        elapsed = time.time() - start_time
        summary = {"method": cfg.method.name, "last_miou": result.miou, "best_miou": self.best["miou"],
                   "best_step": self.best["step"], "iterations": total, "seconds": round(elapsed, 1),
                   "it_per_s": round((self.step - start_step) / elapsed, 3) if elapsed > 0 else None,
                   "world_size": self.dist.world_size, "accumulation_steps": self.plan.accumulation_steps,
                   "val_images": result.num_images, "ece": result.ece, "iou": [float(v) for v in result.iou], "class_names": list(self.preset.class_names)}
        self.logger.log(self.step, {k: v for k, v in summary.items() if not isinstance(v, list)}, kind="summary")
        self.logger.close()
        if self.dist.is_main:
            with reporting_write_errors(self.output_dir / "summary.json"):
                (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            print(format_iou_table({cfg.method.name: result.iou}, self.preset.class_names))
        return summary


def train(cfg, resume: str | None = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Train on this process (and its torchrun peers, if any); the process group ends with the run.
    An output_dir holding a run needs `resume` ("auto" continues it) or `overwrite` (deletes its files)."""
    if not math.isfinite(cfg.train.lr) or cfg.train.lr <= 0:
        raise SemisegError("train.lr must be a positive number")
    try:
        return Trainer(cfg, resume, progress, overwrite).train()
    finally:
        shutdown_distributed()
