"""One benchmark result record per (suite, cell, seed), made from a finished run directory.

`benchmarks/results/<suite>/<cell>/seed<k>.json` holds what a table, a figure or a later method issue
needs without the run directory: the config and the commands, versions and machine, last and best
mIoU, per-class IoU, calibration error, wall time, the training curves, and palette PNGs of the final
model's predictions on a few val images (`seed<k>.pred/<image>.png`). docs/benchmarks.md lists the keys.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import yaml

from semiseg.engine.checkpoint import reporting_write_errors, write_atomic
from semiseg.errors import SemisegError

SCHEMA = "semiseg.bench.quality/1"


def result_path(results_dir: Path, suite: str, cell: str, seed: int) -> Path:
    return Path(results_dir) / suite / cell / f"seed{seed}.json"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int | None, device: str) -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads, "device": device,
            "platform": platform.platform()}


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise SemisegError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SemisegError(f"{path}: not valid JSON ({exc})") from None


def read_curves(metrics: Path) -> dict:
    """Validation mIoU (and ECE where logged) and the training terms against step (every number a train entry
    logs: the loss, its terms, the learning rates and the methods' selection signals), from metrics.jsonl."""
    curves = {"eval": [], "train": []}
    for line in Path(metrics).read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a torn last line of a killed run
        if entry.get("kind") == "val":
            point = {"step": entry["step"], "miou": entry["miou"]}
            if entry.get("ece") is not None:
                point["ece"] = entry["ece"]
            curves["eval"].append(point)
        elif entry.get("kind") == "train" and "loss" in entry:
            curves["train"].append({key: value for key, value in entry.items()
                                    if isinstance(value, (int, float)) and not isinstance(value, bool)})
    return curves


def final_model_outputs(checkpoint: Path, root: Path | None, names: list[str], pred_dir: Path,
                        need_ece: bool) -> dict:
    """The final model's predictions on the val images `names` as palette PNGs in `pred_dir`; its ECE
    over the whole val set when `need_ece` (runs made before summaries carried it); the labeled count."""
    from semiseg.engine.build import crop_size
    from semiseg.engine.evaluator import evaluate, predict_logits
    from semiseg.engine.inference import load_for_inference
    from semiseg.data.normalize import normalize, to_tensor
    from semiseg.viz import palette_image
    import torch

    overrides = [f"data.root={root}"] if root else []
    cfg, preset, method, device = load_for_inference(checkpoint, overrides)
    splits = preset.build(cfg.data)
    val = splits.val
    mode = cfg.eval.mode or preset.eval_mode
    window = cfg.eval.crop_size or crop_size(cfg, preset)
    forward = method.predictor(None)
    index = {}
    for i in range(len(val)):  # a val image by its list name (val/0016E5_07959.webp) or its stem (0016E5_07959)
        index.setdefault(val.name(i), i)
        index.setdefault(Path(val.name(i)).stem, i)
    missing = [n for n in names if n not in index]
    if missing:
        raise SemisegError(f"prediction image '{missing[0]}' is not in the val set of {checkpoint} "
                           f"(e.g. {', '.join(val.name(i) for i in range(min(3, len(val))))}); fix the suite's "
                           "'predictions'")
    ece = None
    if need_ece:
        ece = evaluate(forward, val, preset.num_classes, mode, crop_size=window,
                       resize_multiple=cfg.eval.resize_multiple, device=device).ece
    with torch.inference_mode():
        for name in names:
            image = normalize(to_tensor(val.load(index[name]).image)).unsqueeze(0).to(device)
            scores, _ = predict_logits(forward, image, preset.num_classes, mode, crop_size=window,
                                       resize_multiple=cfg.eval.resize_multiple)
            labels = scores.argmax(1)[0].cpu().numpy().astype(np.uint8)
            target = pred_dir / f"{name}.png"  # a name with folders (synthetic/val/00003) keeps them
            with reporting_write_errors(target, setting="--results"):
                target.parent.mkdir(parents=True, exist_ok=True)
                palette_image(labels, preset.palette).save(target)
    return {"images": names, "ece": ece, "labeled": len(splits.labeled)}


def build_record(suite, cell, seed: int, run_dir: Path, root: Path | None, commands: dict,
                 threads: int | None, result_file: Path) -> dict:
    """The record of a finished run (its summary.json present); predictions written beside `result_file`."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json")
    info = read_json(run_dir / "run_info.json")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    pred_dir = result_file.with_suffix(".pred")
    final = final_model_outputs(run_dir / "latest.pt", root, suite.predictions, pred_dir,
                                need_ece=summary.get("ece") is None)
    data = config.get("data", {})
    return {
        "schema": SCHEMA,
        "suite": suite.name,
        "cell": cell.name,
        "method": summary["method"],
        "role": cell.role,
        "dataset": data.get("dataset"),
        "labeled": final["labeled"],
        "labeled_fraction": data.get("labeled_fraction"),
        "seed": seed,
        "iterations": summary["iterations"],
        "last_miou": summary["last_miou"],
        "best_miou": summary["best_miou"],
        "best_step": summary["best_step"],
        "iou": summary["iou"],
        "class_names": summary["class_names"],
        "ece": summary["ece"] if summary.get("ece") is not None else final["ece"],
        "wall_seconds": summary["seconds"],
        "curve": read_curves(run_dir / "metrics.jsonl"),
        "predictions": {"dir": pred_dir.name, "images": final["images"]},
        "config_file": os.path.relpath(cell.config, suite.repo),
        "command": commands["bench"],
        "train_command": commands["train"],
        "commit": info.get("git_revision"),
        "versions": info.get("versions"),
        "python": info.get("python"),
        "machine": machine(info.get("threads", threads), str(config.get("device", "auto"))),
        "world_size": summary.get("world_size"),
        "config": config,
    }


def write_record(record: dict, path: Path) -> None:
    with reporting_write_errors(path.parent, setting="--results"):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(record, indent=1) + "\n").encode())
