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


PRED_SUFFIX, OVERLAY_SUFFIX, VARIANCE_SUFFIX = ".pred.png", ".overlay.jpg", ".variance.png"
VARIANCE_SCALE = 1000  # the variance PNG holds round(σ² × 1000) as 16-bit grey levels


def _is_output(path: Path) -> bool:
    """A file `predict` writes (`<name>.pred.png`, `.overlay.jpg`, `.variance.png`): skipped when reading a folder."""
    return path.name.lower().endswith((PRED_SUFFIX, OVERLAY_SUFFIX, VARIANCE_SUFFIX))


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


def plan_outputs(inputs, out_dir, suffixes=(PRED_SUFFIX, OVERLAY_SUFFIX)) -> list[tuple[Path, ...]]:
    """(input, palette PNG, overlay[, variance PNG]) per image (one output per suffix), computed before anything
    is written.

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
    plan = [(file, *(out / rel.parent / f"{rel.name}{suffix}" for suffix in suffixes))
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

    def variance_network(self, network=None):
        """The network whose variance head `variance` reads; one line when it has none."""
        name = network or "model"
        net = self.method.networks().get(name)
        if net is None or "variance" not in getattr(net, "heads", {}):
            raise SemisegError(f"--variance: the checkpoint's network '{name}' has no variance head "
                               "(a DUEB checkpoint has one: model.heads.variance)")
        return net

    @torch.inference_mode()
    def variance(self, rgb: np.ndarray, network=None) -> np.ndarray:
        """The per-pixel variance σ² (H x W, float32) of a network with a variance head (DUEB's branches),
        from one forward at the image's own size."""
        net = self.variance_network(network)
        image = normalize(to_tensor(rgb)).unsqueeze(0).to(self.device)
        return net(image, outputs=("variance",))["variance"][0, 0].float().cpu().numpy()


def variance_image(variance: np.ndarray) -> Image.Image:
    """σ² as a 16-bit grey PNG holding round(σ² × 1000), clipped to 65535: the value is readable back."""
    levels = np.clip(np.rint(variance.astype(np.float64) * VARIANCE_SCALE), 0, 65535).astype(np.uint16)
    return Image.fromarray(levels)


def predict_files(path, inputs, out_dir, mode: str = "original", network=None, variance: bool = False) -> list[Path]:
    """For each image `name.ext`: `name.ext.pred.png` (class ids with the preset palette) and
    `name.ext.overlay.jpg` under `out_dir` (see `plan_outputs`), and with `variance` `name.ext.variance.png`
    (`variance_image`); inputs are never written to."""
    suffixes = (PRED_SUFFIX, OVERLAY_SUFFIX) + ((VARIANCE_SUFFIX,) if variance else ())
    plan = plan_outputs(inputs, out_dir, suffixes)
    segment = Segmenter(path, network, mode)
    if variance:
        segment.variance_network(network)  # before anything is written
    written = []
    for file, pred_path, overlay_path, *variance_path in plan:
        rgb = _read_rgb(file)
        labels = segment(rgb)
        with reporting_write_errors(pred_path.parent, setting="--out"):
            pred_path.parent.mkdir(parents=True, exist_ok=True)
        with reporting_write_errors(pred_path, setting="--out"):
            palette_image(labels, segment.palette).save(pred_path)
        with reporting_write_errors(overlay_path, setting="--out"):
            overlay(rgb, labels, segment.palette).save(overlay_path, quality=92)
        if variance_path:
            with reporting_write_errors(variance_path[0], setting="--out"):
                variance_image(segment.variance(rgb, network)).save(variance_path[0])
        written.append(pred_path)
    return written
