"""Using a trained checkpoint: evaluate it on a val set, or segment image files."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import Config, parse_overrides
from ..data.normalize import normalize, to_tensor
from ..errors import SemisegError
from ..viz import overlay, palette_image
from .build import build_method, build_preset, crop_size
from .checkpoint import check_compatible, load_checkpoint, load_method_state, reporting_write_errors
from .distributed import init_distributed, shutdown_distributed
from .environment import pick_device
from .evaluator import class_probabilities, evaluate, predict_logits

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _config_of(ckpt: dict, overrides) -> "OmegaConf":
    cfg = OmegaConf.merge(OmegaConf.structured(Config), ckpt["config"])
    if overrides:
        from ..config import _merge

        cfg = _merge(cfg, parse_overrides(overrides), "command line")
    from ..config_checks import check_config

    return check_config(cfg)


def load_for_inference(path, overrides=(), device=None, ckpt=None):
    """(cfg, preset, method in eval mode on its device) from a checkpoint (`ckpt`: its content, already read)."""
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    cfg = _config_of(ckpt, overrides)
    preset = build_preset(cfg, ckpt.get("meta"))  # the meta: a folder's classes where its card is not at hand
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
CONFIDENCE_SUFFIX = ".confidence.png"
VARIANCE_SCALE = 1000  # the variance PNG holds round(σ² × 1000) as 16-bit grey levels
GLOB_CHARACTERS = "*?["  # an input holding one of these that is no file or folder is a pattern


def _is_output(path: Path) -> bool:
    """A file `predict` writes (`<name>.pred.png`, `.overlay.jpg`, `.variance.png`, `.confidence.png`): skipped
    when reading a folder or a pattern."""
    return path.name.lower().endswith((PRED_SUFFIX, OVERLAY_SUFFIX, VARIANCE_SUFFIX, CONFIDENCE_SUFFIX))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not _is_output(path)


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    """The images of a folder (sorted), with `recursive` those of its sub-folders too (links to folders are
    not followed)."""
    if recursive:
        found = [Path(top) / name for top, _, names in os.walk(folder) for name in names]
    else:
        found = list(folder.iterdir())
    return sorted(p for p in found if _is_image(p))


def _collect(inputs, recursive: bool = False) -> list[Path]:
    """Each input in turn: a folder's images (one level deep, or with `recursive` all levels), a file itself, or
    the images a glob pattern matches (`**` any number of folders; sorted), without files `predict` wrote
    (docs/deployment.md: Predicting images)."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += _folder_images(path, recursive)
        elif path.is_file():
            files.append(path)
        elif any(char in str(item) for char in GLOB_CHARACTERS):
            matched = [Path(name) for name in sorted(glob.glob(str(item), recursive=True))]
            images = [p for p in matched if _is_image(p)]
            if not images:
                raise SemisegError(f"no images match the pattern {item} (looked for "
                                   f"{', '.join(sorted(IMAGE_SUFFIXES))}; ** matches any number of folders)")
            files += images
        else:
            raise SemisegError(f"input not found: {item}")
    if not files:
        folders = [Path(item) for item in inputs if Path(item).is_dir()]
        deeper = not recursive and any(p.is_dir() for folder in folders for p in folder.iterdir())
        raise SemisegError(f"no images found in {', '.join(map(str, inputs))} "
                           f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))}; files named *{PRED_SUFFIX} "
                           f"or *{OVERLAY_SUFFIX} are earlier predictions and are skipped)"
                           + ("; pass --recursive to read the sub-folders too" if deeper else ""))
    return files


def plan_outputs(inputs, out_dir, suffixes=(PRED_SUFFIX, OVERLAY_SUFFIX), recursive: bool = False
                 ) -> list[tuple[Path, ...]]:
    """(input, palette PNG, overlay[, confidence PNG][, variance PNG]) per image (one output per suffix), computed
    before anything is written; `recursive`: folders are read all levels deep.

    An image `name.ext` gives `<out>/name.ext.pred.png` and `<out>/name.ext.overlay.jpg`. When two images
    of different arguments share a file name (`x/a.png`, `y/a.png`), every output mirrors its image's path
    relative to the arguments' common folder (`<out>/x/a.png.pred.png`, `<out>/y/a.png.pred.png`). An
    image named twice (or through a link, or by a folder and a pattern) is segmented once. Stops with one line
    if two outputs would be the same file or an output would replace an input; an earlier prediction that is
    not an input is overwritten."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SemisegError(f"--out {out} is an existing file, not a folder: give a folder for the predictions")
    files, seen = [], set()
    for file in _collect(inputs, recursive):
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
    """The image's RGB pixels, turned upright by its EXIF orientation (as `image_tensor` turns a PIL image)."""
    try:
        with Image.open(path) as image:
            return np.array(ImageOps.exif_transpose(image).convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SemisegError(f"{path}: unreadable or corrupt image ({exc.__class__.__name__})") from None


PREDICT_MODES = ("original", "resize", "sliding_window")  # the eval modes whose labels cover the whole image


def image_tensor(image) -> torch.Tensor:
    """One RGB image as float 3 x H x W in [0, 1]: a PIL image (turned upright by its EXIF orientation first,
    as a viewer shows it), a numpy H x W x 3 uint8 array, or a torch tensor 3 x H x W, uint8 or float in
    [0, 1] (docs/deployment.md: Python API)."""
    if isinstance(image, Image.Image):
        image = np.array(ImageOps.exif_transpose(image).convert("RGB"))
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return to_tensor(image)
    if isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[0] == 3:
        if image.dtype == torch.uint8:
            return image.detach().float().div_(255.0)
        if image.is_floating_point():
            image = image.detach().float()
            low, high = (float(image.min()), float(image.max())) if image.numel() else (0.0, 0.0)
            if not (low >= 0.0 and high <= 1.0):
                raise SemisegError(f"a float image tensor must hold values in [0, 1], got {low:.3g} to {high:.3g}: "
                                   "divide 0..255 values by 255 (and pass it before ImageNet normalisation)")
            return image
    kind = f"{type(image).__name__} {getattr(image, 'dtype', '')} {tuple(getattr(image, 'shape', ()))}"
    raise SemisegError(f"expected a PIL image, a numpy uint8 array (H, W, 3) or a torch tensor (3, H, W), uint8 or "
                       f"float in [0, 1]; got {kind.strip()}")


class Segmenter:
    """A trained checkpoint as a function (docs/deployment.md: Python API): `predict(image)` gives the H x W
    class indices (int64) at the image's size, `predict_proba(image)` the C x H x W class probabilities, with
    the network `predict` uses (or `network`) and the eval `mode` (original, resize or sliding_window; None:
    `mode_for` each image's size), as `semiseg predict` computes them. `Segmenter(path)(rgb)` maps an RGB uint8
    H x W x 3 array to uint8 ids."""

    def __init__(self, checkpoint, network=None, mode: str | None = None, device=None):
        if mode is not None and mode not in PREDICT_MODES:
            raise SemisegError(f"unknown mode '{mode}' for predicting; choose one of {', '.join(PREDICT_MODES)} "
                               "(or None: sliding_window for an image larger than the crop, else original)")
        if isinstance(device, str):
            device = pick_device(device)
        self.cfg, self.preset, self.method, self.device = load_for_inference(checkpoint, device=device)
        self.forward = self.method.predictor(network)
        self.mode = mode
        self.crop_size = self.cfg.eval.crop_size or crop_size(self.cfg, self.preset)  # the sliding window's side
        # a checkpoint evaluated in resize mode (DPT: sides multiples of 14) is resized up to the crop size
        self.whole_mode = "resize" if (self.cfg.eval.mode or self.preset.eval_mode) == "resize" else "original"
        self.class_names, self.palette = list(self.preset.class_names), self.preset.palette
        self.num_classes = self.preset.num_classes

    def mode_for(self, height: int, width: int) -> str:
        """The eval mode an image of this size is predicted with: `mode`, or without one `sliding_window`
        (windows of the crop) for an image larger than the crop in either side, and up to the crop `original`
        (`resize` for a checkpoint whose eval mode is resize) (docs/deployment.md: Predicting images)."""
        if self.mode is not None:
            return self.mode
        return "sliding_window" if height > self.crop_size or width > self.crop_size else self.whole_mode

    @torch.inference_mode()
    def batch_scores(self, images) -> tuple[torch.Tensor, str]:
        """`predict_logits`' scores (N, C, H, W) of N images of one size (each what `image_tensor` accepts) in
        one pass, the same as each alone, and the mode they were predicted with."""
        x = torch.stack([normalize(image_tensor(image)) for image in images]).to(self.device)
        mode = self.mode_for(*x.shape[-2:])
        scores, _ = predict_logits(self.forward, x, self.num_classes, mode, crop_size=self.crop_size,
                                   resize_multiple=self.cfg.eval.resize_multiple)
        return scores, mode

    def scores(self, image) -> torch.Tensor:
        """`predict_logits`' scores (1, C, H, W) of one image (what `image_tensor` accepts)."""
        return self.batch_scores([image])[0]

    def predict(self, image) -> np.ndarray:
        """The class index of every pixel: int64 H x W."""
        return self.scores(image).argmax(1)[0].cpu().numpy().astype(np.int64)

    def predict_proba(self, image) -> np.ndarray:
        """The class probabilities: float32 C x H x W, summing to 1 over C."""
        scores, mode = self.batch_scores([image])
        return class_probabilities(scores, mode)[0].cpu().numpy()

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise SemisegError(f"Segmenter expects an RGB uint8 array of shape (H, W, 3), got "
                               f"{getattr(rgb, 'dtype', type(rgb).__name__)} {getattr(rgb, 'shape', '')}")
        return self.predict(rgb).astype(np.uint8)

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


def load(checkpoint, device="cpu", network=None, mode: str | None = None) -> Segmenter:
    """`semiseg.load`: a checkpoint ready to segment images on `device` (docs/deployment.md: Python API)."""
    return Segmenter(checkpoint, network=network, mode=mode, device=device)


def confidence_image(probabilities: torch.Tensor) -> Image.Image:
    """The per-pixel maximum p of C x H x W class probabilities as an 8-bit grey PNG holding round(255 p):
    255 is certain, round(255 / C) the least confident a prediction can be."""
    top = probabilities.float().amax(dim=0).cpu().numpy().astype(np.float64)
    return Image.fromarray(np.clip(np.rint(top * 255), 0, 255).astype(np.uint8))


@dataclass
class Predictions:
    """What `predict_files` wrote: the palette PNGs, in input order, and how many images each mode segmented."""

    written: list[Path]
    modes: dict[str, int] = field(default_factory=dict)
    crop_size: int = 0
    resize_multiple: int | None = None

    def summary(self) -> str:
        """How many images each mode segmented, in words."""
        words = {"original": "at their own size", "resize": f"resized to multiples of {self.resize_multiple}",
                 "sliding_window": f"larger than the {self.crop_size} px crop with sliding {self.crop_size} x "
                                   f"{self.crop_size} windows"}
        return ", ".join(f"{count} {words[mode]}" for mode, count in sorted(self.modes.items()))


PENDING_BATCHES = 4  # images read but not yet segmented: at most this many batches (memory stays bounded)


def predict_files(path, inputs, out_dir, mode: str | None = None, network=None, variance: bool = False,
                  confidence: bool = False, recursive: bool = False, batch_size: int = 4,
                  progress: bool = False) -> Predictions:
    """For each image `name.ext`: `name.ext.pred.png` (class ids with the preset palette) and
    `name.ext.overlay.jpg` under `out_dir` (see `plan_outputs`), with `confidence` `name.ext.confidence.png`
    (`confidence_image`) and with `variance` `name.ext.variance.png` (`variance_image`); inputs are never
    written to. Images are read upright (EXIF orientation); those of one size go through the network up to
    `batch_size` at a time, with the results of one at a time. `mode` None: `Segmenter.mode_for`
    (docs/deployment.md: Predicting images)."""
    if int(batch_size) < 1:
        raise SemisegError(f"--batch-size must be >= 1 (images per forward pass), got {batch_size}")
    suffixes = ((PRED_SUFFIX, OVERLAY_SUFFIX) + ((CONFIDENCE_SUFFIX,) if confidence else ())
                + ((VARIANCE_SUFFIX,) if variance else ()))
    plan = plan_outputs(inputs, out_dir, suffixes, recursive)
    segment = Segmenter(path, network, mode)
    if variance:
        segment.variance_network(network)  # before anything is written
    result = Predictions([row[1] for row in plan], crop_size=segment.crop_size,
                         resize_multiple=segment.cfg.eval.resize_multiple)

    def write(row, rgb, labels, probabilities):
        outputs = dict(zip(suffixes, row[1:]))
        pred_path = outputs[PRED_SUFFIX]
        with reporting_write_errors(pred_path.parent, setting="--out"):
            pred_path.parent.mkdir(parents=True, exist_ok=True)
        with reporting_write_errors(pred_path, setting="--out"):
            palette_image(labels, segment.palette).save(pred_path)
        with reporting_write_errors(outputs[OVERLAY_SUFFIX], setting="--out"):
            overlay(rgb, labels, segment.palette).save(outputs[OVERLAY_SUFFIX], quality=92)
        if confidence:
            with reporting_write_errors(outputs[CONFIDENCE_SUFFIX], setting="--out"):
                confidence_image(probabilities).save(outputs[CONFIDENCE_SUFFIX])
        if variance:
            with reporting_write_errors(outputs[VARIANCE_SUFFIX], setting="--out"):
                variance_image(segment.variance(rgb, network)).save(outputs[VARIANCE_SUFFIX])

    from tqdm import tqdm

    pending: dict[tuple[int, int], list] = {}  # image size -> [(plan row, upright RGB)], oldest size first
    with tqdm(total=len(plan), desc="predict", unit="image", dynamic_ncols=True,
              disable=None if progress else True) as bar:

        def run(size):
            batch = pending.pop(size)
            scores, used = segment.batch_scores([rgb for _, rgb in batch])
            labels = scores.argmax(1).cpu().numpy().astype(np.uint8)
            probabilities = class_probabilities(scores, used) if confidence else [None] * len(batch)
            for (row, rgb), image_labels, image_probabilities in zip(batch, labels, probabilities):
                write(row, rgb, image_labels, image_probabilities)
            result.modes[used] = result.modes.get(used, 0) + len(batch)
            bar.update(len(batch))

        for row in plan:
            rgb = _read_rgb(row[0])
            size = rgb.shape[:2]
            pending.setdefault(size, []).append((row, rgb))
            if len(pending[size]) >= batch_size:
                run(size)
            elif sum(map(len, pending.values())) >= PENDING_BATCHES * batch_size:
                run(next(iter(pending)))
        while pending:
            run(next(iter(pending)))
    return result
