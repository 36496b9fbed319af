"""Using a trained checkpoint: evaluate it on a val set, or segment image files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image, UnidentifiedImageError

from ..config import Config, parse_overrides
from ..data.normalize import normalize, to_tensor
from ..errors import SemisegError
from ..viz import overlay, palette_image
from .build import build_method, build_preset, crop_size
from .checkpoint import check_compatible, load_checkpoint, load_method_state, reporting_write_errors
from .distributed import init_distributed, shutdown_distributed
from .environment import pick_device
from .evaluator import evaluate, predict_logits

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _config_of(ckpt: dict, overrides) -> "OmegaConf":
    cfg = OmegaConf.merge(OmegaConf.structured(Config), ckpt["config"])
    if overrides:
        from ..config import _merge

        cfg = _merge(cfg, parse_overrides(overrides), "command line")
    from ..config_checks import check_config

    return check_config(cfg)


def load_for_inference(path, overrides=(), device=None):
    """(cfg, preset, method in eval mode on its device) from a checkpoint."""
    ckpt = load_checkpoint(path)
    cfg = _config_of(ckpt, overrides)
    preset = build_preset(cfg)
    check_compatible(ckpt, preset.num_classes, cfg.model.encoder, str(path))
    method = build_method(cfg, preset.num_classes, load_weights=False)
    load_method_state(method, ckpt["method"], str(path))
    device = device or pick_device(cfg.device)
    return cfg, preset, method.to(device).eval(), device


def evaluate_checkpoint(path, mode=None, root=None, overrides=(), network=None):
    """One process, or sharded over torchrun's processes (val image i on rank i mod W, all-reduced)."""
    ckpt = load_checkpoint(path)
    if root:  # the val images' folder: a cross-domain run's come from its target
        key = "data.target.root" if _config_of(ckpt, overrides).data.target.dataset else "data.root"
        overrides = list(overrides) + [f"{key}={root}"]
    cfg = _config_of(ckpt, overrides)
    context = init_distributed(cfg.device)
    try:
        cfg, preset, method, device = load_for_inference(path, overrides, context.device)
        val, _ = preset.build_val(cfg.data)
        result = evaluate(method.predictor(network), val, preset.num_classes, mode or cfg.eval.mode or preset.eval_mode,
                          crop_size=cfg.eval.crop_size or crop_size(cfg, preset),
                          resize_multiple=cfg.eval.resize_multiple, device=device, progress=True,
                          rank=context.rank, world_size=context.world_size, class_names=list(preset.class_names))
    finally:
        shutdown_distributed()
    which = f", network {network}" if network else ""
    return result, f"{cfg.method.name} ({Path(path).name}{which})"


PRED_SUFFIX, OVERLAY_SUFFIX = ".pred.png", ".overlay.jpg"


def _is_output(path: Path) -> bool:
    """A file `predict` writes (`<name>.pred.png`, `<name>.overlay.jpg`): skipped when reading a folder."""
    return path.name.lower().endswith((PRED_SUFFIX, OVERLAY_SUFFIX))


def _collect(inputs) -> list[Path]:
    """A folder's images (not recursive, sorted, without files `predict` wrote), or the file itself."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not _is_output(p))
        elif path.is_file():
            files.append(path)
        else:
            raise SemisegError(f"input not found: {item}")
    if not files:
        raise SemisegError(f"no images found in {', '.join(map(str, inputs))} "
                           f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))}; files named *{PRED_SUFFIX} "
                           f"or *{OVERLAY_SUFFIX} are earlier predictions and are skipped)")
    return files


def plan_outputs(inputs, out_dir) -> list[tuple[Path, Path, Path]]:
    """(input, palette PNG, overlay) per image, computed before anything is written.

    An image `name.ext` gives `<out>/name.ext.pred.png` and `<out>/name.ext.overlay.jpg`. When two images
    of different arguments share a file name (`x/a.png`, `y/a.png`), every output mirrors its image's path
    relative to the arguments' common folder (`<out>/x/a.png.pred.png`, `<out>/y/a.png.pred.png`). An
    image named twice (or through a link) is segmented once. Stops with one line if two outputs would be
    the same file or an output would replace an input; an earlier prediction that is not an input is
    overwritten."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SemisegError(f"--out {out} is an existing file, not a folder: give a folder for the predictions")
    files, seen = [], set()
    for file in _collect(inputs):
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            files.append(file)
    names = [file.name for file in files]
    if len(set(names)) == len(names):
        relative = [Path(name) for name in names]
    else:
        absolute = [Path(os.path.normpath(file.absolute())) for file in files]
        common = Path(os.path.commonpath([str(a.parent) for a in absolute]))
        relative = [a.relative_to(common) for a in absolute]
    plan = [(file, out / rel.parent / f"{rel.name}{PRED_SUFFIX}", out / rel.parent / f"{rel.name}{OVERLAY_SUFFIX}")
            for file, rel in zip(files, relative)]
    inputs_at = {file.resolve(): file for file in files}
    written_by: dict[Path, Path] = {}
    for file, *outputs in plan:
        for output in outputs:
            key = output.resolve()
            if key in inputs_at:
                raise SemisegError(f"the prediction for {file} would be written to {output}, which is the input "
                                   f"{inputs_at[key]}: pass --out a folder of its own, or rename the image")
            if key in written_by:
                raise SemisegError(f"{written_by[key]} and {file} would both be predicted to {output}: "
                                   f"predict them into different --out folders")
            written_by[key] = file
    return plan


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise SemisegError(f"{path}: unreadable or corrupt image ({exc.__class__.__name__})") from None


class Segmenter:
    """A trained checkpoint as a function: `Segmenter(path)(rgb)` maps an RGB uint8 H x W x 3 array to the
    H x W array of class ids (uint8), with the network `predict` uses (or `network`) and the eval `mode`."""

    def __init__(self, checkpoint, network=None, mode: str = "original", device=None):
        self.cfg, self.preset, self.method, self.device = load_for_inference(checkpoint, device=device)
        self.forward = self.method.predictor(network)
        self.mode = mode
        self.class_names, self.palette = list(self.preset.class_names), self.preset.palette

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise SemisegError(f"Segmenter expects an RGB uint8 array of shape (H, W, 3), got "
                               f"{getattr(rgb, 'dtype', type(rgb).__name__)} {getattr(rgb, 'shape', '')}")
        image = normalize(to_tensor(rgb)).unsqueeze(0).to(self.device)
        scores, _ = predict_logits(self.forward, image, self.preset.num_classes, self.mode,
                                   crop_size=self.cfg.eval.crop_size or crop_size(self.cfg, self.preset),
                                   resize_multiple=self.cfg.eval.resize_multiple)
        return scores.argmax(1)[0].cpu().numpy().astype(np.uint8)


def predict_files(path, inputs, out_dir, mode: str = "original", network=None) -> list[Path]:
    """For each image `name.ext`: `name.ext.pred.png` (class ids with the preset palette) and
    `name.ext.overlay.jpg` under `out_dir` (see `plan_outputs`); inputs are never written to."""
    plan = plan_outputs(inputs, out_dir)
    segment = Segmenter(path, network, mode)
    written = []
    for file, pred_path, overlay_path in plan:
        rgb = _read_rgb(file)
        labels = segment(rgb)
        with reporting_write_errors(pred_path.parent, setting="--out"):
            pred_path.parent.mkdir(parents=True, exist_ok=True)
        with reporting_write_errors(pred_path, setting="--out"):
            palette_image(labels, segment.palette).save(pred_path)
        with reporting_write_errors(overlay_path, setting="--out"):
            overlay(rgb, labels, segment.palette).save(overlay_path, quality=92)
        written.append(pred_path)
    return written
