"""One measurement of `semiseg bench speed`, run as a file in a fresh process: `python speed_worker.py ...`.

It measures whichever `semiseg` the process imports (the orchestrator sets PYTHONPATH=<tree>/src, for this tree
or a git worktree of another commit), so it uses only what every version has: `semiseg.config.load_config`,
`semiseg.engine.trainer.Trainer(cfg, resume, progress)` and its `train()`, the `_train_step` method that
`train()` calls once per optimiser step (whatever its arguments), `trainer.method` (an nn.Module whose networks
have `backbone_parameters`), `trainer.splits.val`, `trainer.preset` and `semiseg.engine.evaluator.evaluate`.
Nothing here depends on the method API (`training_step`'s signature, views, updates).

The timing is by instrumentation, not by a sampling profiler:

- step: wall time of each `Trainer._train_step` call (the batch is already loaded; the wait for it, the
  learning-rate update and the logging between two steps are reported apart as `between`);
- forward: inside a step, the time spent in calls of the method's networks (every submodule of the method
  with `backbone_parameters`: students, EMA teachers and their inner nets, second branches; and every other
  module with parameters that the method holds directly or in a child ModuleList / ModuleDict, such as a
  discriminator), from a forward
  pre-hook registered first to a forward hook registered last, so the autocast hooks of `train.amp` count
  as network time; a network called inside another counts once;
- backward: inside a step, calls of `torch.Tensor.backward`, `torch.autograd.backward` and
  `torch.autograd.grad`;
- optimizer: inside a step, `optimizer.step()` of every torch optimiser (the global step hooks);
- rest = step - forward - backward - optimizer: everything else the step does (moving the batch, the method's
  own computations: pseudo-labels, masks, losses, queues, mixing, EMA updates, `zero_grad`).

The regions never overlap (the first one entered owns the time until it is left), so the four parts add up
to the step. Training stops (by an exception from the wrapped step) after `--warmup` + `--steps` steps,
before any evaluation or checkpoint of the run; then the trained method is evaluated image by image in each
mode with `evaluate(method.predict, ...)`. Writes one JSON object to `--out` (or stdout).
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# run as a file, Python puts this folder first on sys.path: drop it, `semiseg` must come from PYTHONPATH
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

SCHEMA = "semiseg.bench.speed_worker/1"
UNAVAILABLE = 3  # exit status: this tree cannot run the cell (unknown method or config key); JSON says why


class _Finished(Exception):
    """Raised from the wrapped step once the measured steps are done: training stops there."""


def rss_bytes() -> int | None:
    """The current resident set size of this process (Linux), None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def max_rss_bytes() -> int:
    """The high-water mark of this process' resident set (ru_maxrss: KiB on Linux, bytes on macOS)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value) if sys.platform == "darwin" else int(value) * 1024


class Clock:
    """Exclusive timing regions inside a step: the outermost region entered owns the time until it is left."""

    PARTS = ("forward", "backward", "optimizer")

    def __init__(self, sync=None):
        self.sync = sync or (lambda: None)
        self.in_step = False
        self.active, self.depth, self.started = None, 0, 0.0
        self.totals = dict.fromkeys(self.PARTS, 0.0)

    def enter(self, part: str) -> None:
        if self.depth == 0:
            if self.in_step:
                self.sync()
            self.active, self.started = part, time.perf_counter()
        self.depth += 1

    def leave(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            if self.in_step:
                self.sync()
                self.totals[self.active] += time.perf_counter() - self.started
            self.active = None

    def begin_step(self) -> float:
        self.sync()
        self.totals = dict.fromkeys(self.PARTS, 0.0)
        self.in_step = True
        return time.perf_counter()

    def end_step(self, started: float) -> dict:
        self.sync()
        step = time.perf_counter() - started
        self.in_step = False
        parts = dict(self.totals)
        return {"step": step, **parts, "rest": step - sum(parts.values())}


def _region(clock: Clock, part: str, function):
    def wrapped(*args, **kwargs):
        clock.enter(part)
        try:
            return function(*args, **kwargs)
        finally:
            clock.leave()

    wrapped.__wrapped__ = function
    return wrapped


def instrument(torch, method, clock: Clock) -> tuple[list[str], callable]:
    """Hooks on the method's networks, backward and optimiser steps; returns (network names, undo)."""
    names, handles = [], []

    def pre(module, args):
        clock.enter("forward")

    def post(module, args, output):
        clock.leave()

    containers = {name for name, child in method.named_children()
                  if isinstance(child, (torch.nn.ModuleList, torch.nn.ModuleDict))}

    def is_network(name, module):
        """A segmentation network (it has `backbone_parameters`), or any other network the method holds
        directly or in a child ModuleList / ModuleDict (a discriminator): a module with parameters there."""
        if hasattr(module, "backbone_parameters"):
            return True
        parent, _, _ = name.rpartition(".")
        held = parent == "" or parent in containers  # containers are direct children: no dots
        return held and name not in containers and next(module.parameters(), None) is not None

    for name, module in method.named_modules():
        if module is not method and is_network(name, module):
            names.append(name)
            handles.append(module.register_forward_pre_hook(pre, prepend=True))
            handles.append(module.register_forward_hook(post, always_call=True))
    from torch.optim import optimizer as optim_module

    handles.append(optim_module.register_optimizer_step_pre_hook(lambda opt, args, kwargs: clock.enter("optimizer")))
    handles.append(optim_module.register_optimizer_step_post_hook(lambda opt, args, kwargs: clock.leave()))
    saved = {"tensor": torch.Tensor.backward, "backward": torch.autograd.backward, "grad": torch.autograd.grad}
    torch.Tensor.backward = _region(clock, "backward", saved["tensor"])
    torch.autograd.backward = _region(clock, "backward", saved["backward"])
    torch.autograd.grad = _region(clock, "backward", saved["grad"])

    def undo():
        for handle in handles:
            handle.remove()
        torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad = (
            saved["tensor"], saved["backward"], saved["grad"])

    return names, undo


class _Subset:
    """The val images `indices` of a source (evaluate reads len() and load(i) only)."""

    def __init__(self, source, indices):
        self.source, self.indices = source, list(indices)

    def __len__(self):
        return len(self.indices)

    def load(self, i):
        return self.source.load(self.indices[i])


def _summary(records: list[dict]) -> dict:
    """Means of the parts over the measured steps (they add up to the mean step) and the fractions."""
    n = len(records)
    mean = {f"{key}_s": sum(r[key] for r in records) / n for key in ("step", *Clock.PARTS, "rest")}
    step = mean["step_s"]
    return {**mean,
            "network_fraction": (mean["forward_s"] + mean["backward_s"]) / step if step > 0 else None,
            "optimizer_fraction": mean["optimizer_s"] / step if step > 0 else None,
            "non_network_fraction": mean["rest_s"] / step if step > 0 else None}


def measure(args) -> dict:
    import logging

    import torch

    torch.set_num_threads(args.threads)
    logging.getLogger("semiseg").setLevel(logging.ERROR)  # one-image evaluations warn about absent classes
    import semiseg
    from semiseg import catalog
    from semiseg.config import load_config
    from semiseg.engine import trainer as trainer_module
    from semiseg.engine.evaluator import evaluate
    from semiseg.errors import SemisegError

    result = {"schema": SCHEMA, "semiseg": os.path.dirname(os.path.abspath(semiseg.__file__)),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device,
              "config": args.config, "overrides": list(args.overrides), "warmup": args.warmup, "steps": args.steps}
    work = tempfile.mkdtemp(prefix="semiseg-speed-")
    total = args.warmup + args.steps
    overrides = list(args.overrides) + [
        f"output_dir={work}/run", f"device={args.device}", f"train.total_iters={total + 1}", "train.eval_every=0",
        "train.checkpoint_every=0", f"train.log_every={10 ** 9}"]
    try:
        try:
            cfg = load_config(args.config, overrides)
        except SemisegError as exc:
            return {**result, "unavailable": f"config: {exc}"}
        if cfg.method.name not in list(catalog.METHODS):
            return {**result, "unavailable": f"no method '{cfg.method.name}' in this version"}
        result.update(method=cfg.method.name, amp=str(cfg.train.amp), channels_last=bool(cfg.train.channels_last))

        Trainer = trainer_module.Trainer
        built = time.perf_counter()
        trainer = Trainer(cfg, None, False)
        result["build_s"] = time.perf_counter() - built
        device = torch.device(trainer.device)
        cuda = device.type == "cuda"
        clock = Clock(torch.cuda.synchronize if cuda else None)
        networks, undo = instrument(torch, trainer.method, clock)
        result["networks"] = networks
        records, between, memory = [], [], {}
        last_end = [None]
        original = Trainer._train_step

        def timed_step(self, *a, **k):
            index = len(records)
            if index == 0:
                memory["rss_before_first_step_bytes"] = rss_bytes()
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
            if index == args.warmup:
                memory["max_rss_before_timed_bytes"] = max_rss_bytes()
            if last_end[0] is not None:
                between.append(time.perf_counter() - last_end[0])
            started = clock.begin_step()
            try:
                out = original(self, *a, **k)
            finally:
                clock.in_step = False
            records.append(clock.end_step(started))
            last_end[0] = time.perf_counter()
            if len(records) >= total:
                raise _Finished
            return out

        Trainer._train_step = timed_step
        try:
            trainer.train()
        except _Finished:
            pass
        finally:
            Trainer._train_step = original
            undo()
            logger = getattr(trainer, "logger", None)
            if logger is not None:
                try:
                    logger.close()
                except Exception:  # noqa: BLE001 -- closing the run's log files is best effort
                    pass
        peak = max_rss_bytes()
        before = memory.get("rss_before_first_step_bytes")
        memory.update(peak_rss_bytes=peak, peak_growth_bytes=peak - before if before is not None else None,
                      timed_peak_growth_bytes=peak - memory.get("max_rss_before_timed_bytes", peak))
        if cuda:
            memory["cuda_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
        timed = records[args.warmup:]
        result["warmup_step_s"] = [r["step"] for r in records[:args.warmup]]
        result["per_step"] = {key: [r[key] for r in timed] for key in ("step", *Clock.PARTS, "rest")}
        result["between_s"] = between[max(args.warmup - 1, 0):]  # the wait before each measured step
        result["median_step_s"] = statistics.median(r["step"] for r in timed)
        result["split"] = _summary(timed)

        # evaluation, image by image, after one untimed image per mode
        method, val = trainer.method, trainer.splits.val
        crop = int(cfg.data.crop_size or trainer.preset.crop_size)
        count = min(args.eval_images, len(val))
        method.eval()
        result["eval"] = {}
        for mode in args.eval_modes:
            seconds = []
            for index in [0] + list(range(count)):
                if cuda:
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
                evaluate(method.predict, _Subset(val, [index]), trainer.num_classes, mode, crop_size=crop,
                         device=device)
                if cuda:
                    torch.cuda.synchronize(device)
                seconds.append(time.perf_counter() - started)
            result["eval"][mode] = {"images": count, "seconds": seconds[1:],
                                    "seconds_per_image": statistics.median(seconds[1:]) if count else None,
                                    **({"window": crop} if mode == "sliding_window" else {})}
        memory["peak_rss_with_eval_bytes"] = max_rss_bytes()
        result["memory"] = memory
        result["crop_size"] = crop
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def list_methods() -> list[str]:
    from semiseg import catalog

    return list(catalog.METHODS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (absolute path); none: the defaults")
    parser.add_argument("--warmup", type=int, default=3, help="steps before the measured ones")
    parser.add_argument("--steps", type=int, default=10, help="measured steps")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--eval-images", type=int, default=4, help="val images timed per evaluation mode")
    parser.add_argument("--eval-modes", nargs="+", default=["original", "sliding_window"])
    parser.add_argument("--out", help="write the JSON here (default: stdout)")
    parser.add_argument("--list-methods", action="store_true", help="print the methods of this version (JSON)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    if args.list_methods:
        result, status = {"methods": list_methods()}, 0
    else:
        if args.warmup < 0 or args.steps < 1:
            parser.error("--warmup must be >= 0 and --steps >= 1")
        try:
            result = measure(args)
        except Exception as exc:  # noqa: BLE001 -- reported as JSON with the traceback, exit status 1
            result = {"schema": SCHEMA, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        status = UNAVAILABLE if "unavailable" in result else 1 if "error" in result else 0
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
