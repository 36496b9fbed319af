"""Using a trained checkpoint: evaluate it on a val set, or segment image files."""

from __future__ import annotations

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
from .checkpoint import check_compatible, load_checkpoint, load_method_state
from .distributed import init_distributed, shutdown_distributed
from .environment import pick_device
from .evaluator import evaluate, predict_logits

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _config_of(ckpt: dict, overrides) -> "OmegaConf":
    cfg = OmegaConf.merge(OmegaConf.structured(Config), ckpt["config"])
    if overrides:
        from ..config import _merge

        cfg = _merge(cfg, parse_overrides(overrides), "command line")
    return cfg


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
    overrides = list(overrides) + ([f"data.root={root}"] if root else [])
    cfg = _config_of(load_checkpoint(path), overrides)
    context = init_distributed(cfg.device)
    try:
        cfg, preset, method, device = load_for_inference(path, overrides, context.device)
        splits = preset.build(cfg.data)
        result = evaluate(method.predictor(network), splits.val, preset.num_classes, mode or cfg.eval.mode or preset.eval_mode,
                          crop_size=cfg.eval.crop_size or crop_size(cfg, preset),
                          resize_multiple=cfg.eval.resize_multiple, device=device, progress=True,
                          rank=context.rank, world_size=context.world_size, class_names=list(preset.class_names))
    finally:
        shutdown_distributed()
    which = f", network {network}" if network else ""
    return result, f"{cfg.method.name} ({Path(path).name}{which})"


def _collect(inputs) -> list[Path]:
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise SemisegError(f"input not found: {item}")
    if not files:
        raise SemisegError(f"no images found in {', '.join(map(str, inputs))} "
                           f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


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
    """For each image: `<stem>.png` (class ids with the preset palette) and `<stem>_overlay.jpg`."""
    segment = Segmenter(path, network, mode)
    files = _collect(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for file in files:
        rgb = _read_rgb(file)
        labels = segment(rgb)
        palette_image(labels, segment.palette).save(out / f"{file.stem}.png")
        overlay(rgb, labels, segment.palette).save(out / f"{file.stem}_overlay.jpg", quality=92)
        written.append(out / f"{file.stem}.png")
    return written
