"""The iteration-based training loop: one loop for every method (it never reads the method's name)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from ..config import to_yaml
from ..errors import SemisegError
from .build import build_method, build_preset, build_train_batches, crop_size
from .checkpoint import check_compatible, load_checkpoint, load_method_state, save_atomic
from .environment import pick_device, seed_everything, set_deterministic
from .evaluator import evaluate
from .logger import RunLogger
from .metrics import format_iou_table
from .optim import build_optimizer
from .run_info import write_run_info
from .schedule import set_lr


def _to_device(batch, device):
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True) if isinstance(batch, torch.Tensor) else batch


class Trainer:
    def __init__(self, cfg, resume: str | None = None, progress: bool = True):
        self.cfg = cfg
        self.output_dir = Path(cfg.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.device = pick_device(cfg.device)
        set_deterministic(cfg.deterministic)
        seed_everything(cfg.seed)
        self.preset = build_preset(cfg)
        self.splits = self.preset.build(cfg.data)
        self.num_classes = self.preset.num_classes
        self.method = build_method(cfg, self.num_classes).to(self.device)
        self.optimizer = build_optimizer(self.method, cfg.train)
        self.step, self.best = 0, {"miou": -1.0, "step": -1}
        self.progress = progress
        if resume:
            self._resume(resume)
        (self.output_dir / "config.yaml").write_text(to_yaml(cfg))
        write_run_info(self.output_dir, cfg.seed, world_size=1, extra={"data_lists": self.splits.lists})
        self.logger = RunLogger(self.output_dir)

    # -- checkpoints -------------------------------------------------------------------------
    def _checkpoint(self) -> dict:
        return {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "best": dict(self.best),
            "rng": {"torch": torch.get_rng_state()},
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "meta": {"num_classes": self.num_classes, "encoder": self.cfg.model.encoder,
                     "method": self.cfg.method.name, "dataset": self.cfg.data.dataset,
                     "class_names": list(self.preset.class_names), "palette": [list(c) for c in self.preset.palette]},
        }

    def _resume(self, resume: str) -> None:
        path = self.output_dir / "latest.pt" if resume == "auto" else Path(resume)
        if resume == "auto" and not path.is_file():
            return  # nothing to resume: a fresh run
        ckpt = load_checkpoint(path)
        check_compatible(ckpt, self.num_classes, self.cfg.model.encoder, str(path))
        if ckpt["meta"].get("method") != self.cfg.method.name:
            raise SemisegError(f"{path}: checkpoint was trained with method '{ckpt['meta'].get('method')}', "
                               f"the config says '{self.cfg.method.name}'")
        load_method_state(self.method, ckpt["method"], str(path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step, self.best = int(ckpt["step"]), dict(ckpt["best"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        print(f"resumed from {path} at iteration {self.step}")

    def _save(self, name: str) -> None:
        save_atomic(self._checkpoint(), self.output_dir / name)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self):
        cfg = self.cfg
        self.method.eval()
        try:
            result = evaluate(self.method.predict, self.splits.val, self.num_classes,
                              cfg.eval.mode or self.preset.eval_mode,
                              crop_size=cfg.eval.crop_size or crop_size(cfg, self.preset),
                              resize_multiple=cfg.eval.resize_multiple, device=self.device,
                              class_names=list(self.preset.class_names))
        finally:
            self.method.train()
        return result

    def _after_eval(self, result) -> None:
        improved = result.miou > self.best["miou"]
        if improved:
            self.best = {"miou": result.miou, "step": self.step}
        self.logger.log(self.step, {"miou": result.miou, "miou_present": result.miou_present,
                                    **{f"iou/{n}": 100 * v for n, v in zip(self.preset.class_names, result.iou)}},
                        kind="val")
        self._save("latest.pt")
        if improved:
            self._save("best.pt")

    # -- the loop ---------------------------------------------------------------------------
    def train(self):
        cfg, t = self.cfg, self.cfg.train
        total = t.total_iters
        self.method.train()
        batches = build_train_batches(cfg, self.preset, self.splits, self.method, self.step)
        bar = tqdm(total=total, initial=self.step, disable=not self.progress, dynamic_ncols=True,
                   desc=f"{cfg.method.name}", leave=True)
        result = None
        start_time, start_step = time.time(), self.step
        for batch in batches:
            lr = set_lr(self.optimizer, self.step, total, t.poly_power)
            loss, logs = self.method.training_step(_to_device(batch, self.device), self.step / total)
            if not torch.isfinite(loss):
                terms = ", ".join(f"{k}={float(v):.4g}" for k, v in logs.items())
                raise SemisegError(f"non-finite loss at iteration {self.step} ({terms}); the last good "
                                   f"checkpoint in {self.output_dir} is intact. Lower train.lr or check the data")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.method.after_step()
            self.step += 1
            bar.update(1)
            if self.step % max(1, t.log_every) == 0 or self.step == total:
                values = {"loss": float(loss.detach()), "lr": lr, **{k: float(v) for k, v in logs.items()}}
                self.logger.log(self.step, values)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.2e}")
            at_eval = (t.eval_every and self.step % t.eval_every == 0) or self.step == total
            if at_eval:
                result = self.evaluate()
                self._after_eval(result)
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
                   "iou": [float(v) for v in result.iou], "class_names": list(self.preset.class_names)}
        self.logger.log(self.step, {k: v for k, v in summary.items() if not isinstance(v, list)}, kind="summary")
        self.logger.close()
        (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(format_iou_table({cfg.method.name: result.iou}, self.preset.class_names))
        return summary


def train(cfg, resume: str | None = None, progress: bool = True) -> dict:
    if not math.isfinite(cfg.train.lr) or cfg.train.lr <= 0:
        raise SemisegError("train.lr must be a positive number")
    return Trainer(cfg, resume, progress).train()
