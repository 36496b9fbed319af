"""Costs of two components, each in a fresh process (docs/benchmarks.md: Component costs).

- `aleatoric-memory`: peak resident memory of DUEB's heteroscedastic loss (T = 10 samples) forward and backward
  against a plain cross-entropy on the same logits (batch 8 x 21 classes x 321², fp32). Each variant runs in its
  own subprocess; the number is the peak RSS of that process (`ru_maxrss`) minus its RSS once the logits exist,
  i.e. the memory the loss itself costs, and the peak with the logits.
- `csl-speed`: CSL's selection (`csl_weights`) for 8 images of 321 x 321 with 21 classes, fp32, probabilities
  given: the median of 20 timed calls after 3 warm-up calls; then 20 more with each step function timed (the
  sweep for MC and s, the spectral partition, the cluster statistics, the weights; the rest by difference).

    python benchmarks/scripts/component_costs.py --threads 2 --out benchmarks/results/speed/component_costs.json
    python benchmarks/scripts/component_costs.py --threads 2 --only csl-speed   # re-measure one, keep the other
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

B, C, S, T = 8, 21, 321, 10


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory_child(loss: str) -> dict:
    import torch
    import torch.nn.functional as F

    from semiseg.components.aleatoric import heteroscedastic_ce

    torch.manual_seed(0)
    logits = torch.randn(B, C, S, S, requires_grad=True)
    variance = torch.rand(B, 1, S, S, requires_grad=True)
    target = torch.randint(0, C, (B, S, S))
    before = rss_bytes()
    if loss == "ce":
        value = F.cross_entropy(logits, target, ignore_index=255)
    else:
        value = heteroscedastic_ce(logits, variance, target, samples=T)
    value.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_mb": round(peak / 2**20, 1), "loss_mb": round((peak - before) / 2**20, 1)}


def aleatoric_memory(threads: int) -> dict:
    result = {}
    for loss in ("ce", "aleatoric"):
        out = subprocess.run([sys.executable, __file__, "--child", loss, "--threads", str(threads)], check=True,
                             capture_output=True, text=True).stdout
        result[loss] = json.loads(out.strip().splitlines()[-1])
    result["peak_ratio"] = round(result["aleatoric"]["peak_mb"] / result["ce"]["peak_mb"], 3)
    result["loss_ratio"] = round(result["aleatoric"]["loss_mb"] / result["ce"]["loss_mb"], 3)
    result["setting"] = f"batch {B} x {C} classes x {S}x{S}, T = {T}, fp32, forward + backward"
    return result


def csl_speed() -> dict:
    import torch

    import semiseg.components.csl_selection as selection

    torch.manual_seed(0)
    probs = (torch.randn(B, C, S, S) * 3).softmax(dim=1)
    valid = torch.ones(B, S, S, dtype=torch.bool)

    def timed_calls(**kwargs) -> list:
        for _ in range(3):
            selection.csl_weights(probs, valid, **kwargs)
        times = []
        for _ in range(20):
            start = time.perf_counter()
            selection.csl_weights(probs, valid, **kwargs)
            times.append(time.perf_counter() - start)
        return times

    times = timed_calls()
    result = {"median_ms": round(1000 * statistics.median(times), 2), "min_ms": round(1000 * min(times), 2),
              "setting": f"{B} images x {C} classes x {S}x{S}, fp32"}
    # the same calls again, each phase timed by wrapping the module's step functions (rest = total − phases)
    phases = {"sweep": "_confidence_and_dispersion", "partition": "_partition", "statistics": "_cluster_statistics",
              "weights": "_soft_weights"}
    spent = {name: [] for name in phases}
    originals = {name: getattr(selection, function) for name, function in phases.items()}

    def timed(name):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = originals[name](*args, **kwargs)
            spent[name].append(time.perf_counter() - start)
            return out
        return wrapper

    for name, function in phases.items():
        setattr(selection, function, timed(name))
    try:
        totals = timed_calls()
    finally:
        for name, function in phases.items():
            setattr(selection, function, originals[name])
    # each phase's calls of the timed (not the warm-up) runs
    split = {name: round(1000 * statistics.median(values[-len(totals):]), 2) for name, values in spent.items()}
    split["rest"] = round(1000 * statistics.median(totals) - sum(split.values()), 2)
    result["phases_median_ms"] = split
    # method.csl_compile: the flat steps through torch.compile; the first call compiles
    start = time.perf_counter()
    compiled = selection.csl_weights(probs, valid, compiled=True)
    compile_s = time.perf_counter() - start
    times = timed_calls(compiled=True)
    eager = selection.csl_weights(probs, valid)
    result["compiled"] = {
        "median_ms": round(1000 * statistics.median(times), 2), "min_ms": round(1000 * min(times), 2),
        "first_call_s": round(compile_s, 1),
        "max_weight_difference": float((compiled.weights - eager.weights).abs().max()),
        "reliable_pixels_differing": int((compiled.reliable != eager.reliable).sum()),
        "mask_ratio": [round(float(eager.mask_ratio), 6), round(float(compiled.mask_ratio), 6)]}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["aleatoric-memory", "csl-speed"])
    parser.add_argument("--out", default="benchmarks/results/speed/component_costs.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(memory_child(args.child)))
        return
    out = Path(args.out)
    # --only re-measures one record and keeps the other of an existing file
    result = json.loads(out.read_text()) if args.only and out.exists() else {}
    result.update({"threads": args.threads, "torch": torch.__version__})
    if args.only in (None, "aleatoric-memory"):
        result["aleatoric_memory"] = aleatoric_memory(args.threads)
        print("aleatoric memory:", result["aleatoric_memory"])
    if args.only in (None, "csl-speed"):
        result["csl_speed"] = csl_speed()
        print("csl selection:", result["csl_speed"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
