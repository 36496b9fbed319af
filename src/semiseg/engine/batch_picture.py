"""Pictures of what a method does with a training batch (`semiseg show`, docs/method_interface.md: Pictures).

- `render_panels(panels, path, palette, class_names)`: a grid PNG of `Method.explain`'s panels, drawn on
  matplotlib's Agg canvas (imported only here, when a picture is drawn; pyplot and the global backend
  are left alone). Small (dpi 80) and without metadata: the same panels give byte-identical files.
- `show_batch(config, overrides, out, step, checkpoint, root)`: the batch of step t exactly as training
  draws it (same seed, same crops, boxes and strong views: the engine's batch builder, one process), the
  method built as the trainer builds it (optionally with a checkpoint's state), `method.explain` in eval
  mode, rendered to `out`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..config import load_config
from ..data.normalize import normalize, to_tensor
from ..errors import SemisegError
from ..labels import IGNORE_INDEX
from ..methods.interface import StepContext
from ..methods.panels import Panel
from ..viz import palette_image
from .batch_plan import plan_from_config
from .build import build_method, build_preset, build_train_batches, iters_per_epoch
from .checkpoint import check_compatible, load_checkpoint, load_method_state, reporting_write_errors
from .environment import pick_device, seed_everything
from .trainer import to_device

DPI = 80
COLUMNS = 3
CELL_INCHES = 3.2
MATPLOTLIB_MISSING = "pictures need matplotlib: pip install 'semiseg[report]'"
MASK_COLOURS = ((170, 170, 170), (44, 160, 44), (214, 39, 40), (31, 119, 180), (255, 127, 14), (148, 103, 189))
MAX_LEGEND_CLASSES = 12  # a labels panel names at most this many of its classes (the most frequent)


# ------------------------------------------------------------------------------------------- drawing


def _new_figure(rows: int, columns: int):
    """A matplotlib Figure on the Agg canvas, or one SemisegError line when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise SemisegError(MATPLOTLIB_MISSING) from None
    figure = Figure(figsize=(CELL_INCHES * columns, CELL_INCHES * rows + 0.3), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _rgb(colour) -> tuple:
    return tuple(float(c) / 255.0 for c in colour)


def _class_name(index: int, class_names: Optional[Sequence[str]]) -> str:
    if class_names is not None and 0 <= index < len(class_names):
        return str(class_names[index])
    return str(index)


def _legend(axes, entries, title: Optional[str] = None) -> None:
    """A legend of (RGB 0-255, name) patches below the picture."""
    from matplotlib.patches import Patch

    if not entries:
        return
    handles = [Patch(facecolor=_rgb(colour), edgecolor="black", linewidth=0.3, label=name) for colour, name in entries]
    axes.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncols=min(3, len(handles)),
                fontsize=6, frameon=False, title=title, title_fontsize=6)


def _draw_image(axes, panel: Panel, palette, class_names) -> None:
    data = panel.data
    if data.dtype != np.uint8:
        data = np.clip(data.astype(np.float32), 0.0, 1.0)
    axes.imshow(data, interpolation="nearest")


def _draw_labels(axes, panel: Panel, palette, class_names) -> None:
    labels = panel.data.astype(np.int64)
    labels = np.where((labels >= 0) & (labels < 256), labels, IGNORE_INDEX)
    axes.imshow(np.asarray(palette_image(labels, palette).convert("RGB")), interpolation="nearest")
    classes, sizes = np.unique(labels[labels != IGNORE_INDEX], return_counts=True)
    shown = sorted(classes[np.argsort(-sizes, kind="stable")][:MAX_LEGEND_CLASSES].tolist())
    _legend(axes, [(palette[c] if c < len(palette) else (0, 0, 0), _class_name(c, class_names)) for c in shown])


def _draw_scalar_map(axes, panel: Panel, palette, class_names) -> None:
    values = panel.data.astype(np.float32)
    image = axes.imshow(values, cmap="viridis", interpolation="nearest")
    bar = axes.figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02)
    bar.ax.tick_params(labelsize=6)
    if panel.extras.get("label"):
        bar.set_label(panel.extras["label"], fontsize=6)
    threshold = panel.extras.get("threshold")
    if threshold is not None and math.isfinite(float(threshold)):
        threshold = float(threshold)
        bar.ax.axhline(threshold, color="red", linewidth=1.0)
        finite = values[np.isfinite(values)]
        if finite.size and finite.min() < threshold < finite.max():
            axes.contour(values, levels=[threshold], colors="red", linewidths=0.7)


def _draw_mask(axes, panel: Panel, palette, class_names) -> None:
    mask = panel.data.astype(np.int64)
    names = list(panel.extras.get("names") or [])
    count = max(len(names), int(mask[mask != IGNORE_INDEX].max(initial=-1)) + 1)
    colours = list(panel.extras.get("colours") or [])
    colours += [MASK_COLOURS[i % len(MASK_COLOURS)] for i in range(len(colours), count)]
    table = np.full((256, 3), 255, dtype=np.uint8)  # 255 (and anything unnamed) white, as ignored labels
    table[:count] = np.asarray(colours[:count], dtype=np.uint8)
    axes.imshow(table[np.clip(mask, 0, 255)], interpolation="nearest")
    names += [str(i) for i in range(len(names), count)]
    _legend(axes, list(zip(colours[:count], names)))


def _draw_bars(axes, panel: Panel, palette, class_names) -> None:
    values = panel.data.astype(np.float64)
    positions = np.arange(len(values))
    labels = list(panel.extras.get("labels") or range(len(values)))
    by_class = panel.extras.get("class_indices", False)
    colours = [_rgb(palette[int(k)]) if by_class and 0 <= int(k) < len(palette) else "C0" for k in labels]
    axes.bar(positions, values, color=colours, edgecolor="black", linewidth=0.3)
    axes.set_ylim(0, max(1.0, float(values.max(initial=0.0))) * 1.05)
    names = [_class_name(int(k), class_names) if by_class else str(k) for k in labels]
    axes.set_xticks(positions, names, rotation=90 if len(names) > 6 or max(map(len, names), default=0) > 4 else 0,
                    fontsize=6)
    axes.tick_params(axis="y", labelsize=6)
    if panel.extras.get("ylabel"):
        axes.set_ylabel(panel.extras["ylabel"], fontsize=7)
    axes.grid(axis="y", alpha=0.3)


def _draw_scatter(axes, panel: Panel, palette, class_names) -> None:
    points = panel.data.astype(np.float64)
    names = list(panel.extras.get("names") or [])
    colours = list(panel.extras.get("colours") or [])
    categories = points[:, 2].astype(np.int64) if len(points) else np.zeros(0, dtype=np.int64)
    count = max(len(names), int(categories.max(initial=-1)) + 1)
    colours += [MASK_COLOURS[i % len(MASK_COLOURS)] for i in range(len(colours), count)]
    names += [str(i) for i in range(len(names), count)]
    for k in range(count):
        chosen = points[categories == k]
        axes.scatter(chosen[:, 0], chosen[:, 1], s=2, color=_rgb(colours[k]), label=names[k], linewidths=0)
    for x in panel.extras.get("vlines", ()):
        axes.axvline(float(x), color="black", linewidth=0.7, linestyle="--")
    for y in panel.extras.get("hlines", ()):
        axes.axhline(float(y), color="black", linewidth=0.7, linestyle="--")
    axes.set_xlabel(panel.extras.get("xlabel", ""), fontsize=7)
    axes.set_ylabel(panel.extras.get("ylabel", ""), fontsize=7)
    axes.tick_params(labelsize=6)
    _legend(axes, list(zip(colours[:count], names[:count])))


DRAW = {"image": _draw_image, "labels": _draw_labels, "scalar_map": _draw_scalar_map, "mask": _draw_mask,
        "bars": _draw_bars, "scatter": _draw_scatter}


def render_panels(panels: Sequence[Panel], path, palette, class_names: Optional[Sequence[str]] = None) -> Path:
    """Draw `panels` as a grid PNG at `path` (COLUMNS per row) and return the path.

    `labels` panels and class-indexed `bars` are coloured with the dataset's `palette` (255 white, as
    `semiseg.viz.palette_image`); `class_names` name the classes in legends and on the bars of a panel
    whose `extras["class_indices"]` is set. Scalar maps get a colour bar with `extras["threshold"]` marked
    on it and drawn as a red contour; masks a legend of their categories. No metadata: the same panels
    give the same bytes.
    """
    if not panels:
        raise SemisegError("nothing to draw: the method's explain() returned no panel")
    path = Path(path)
    rows = math.ceil(len(panels) / COLUMNS)
    columns = math.ceil(len(panels) / rows)  # balanced rows: 4 panels are 2 x 2, 5 are 3 + 2
    figure = _new_figure(rows, columns)
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axes, panel in zip(grid, panels):
        DRAW[panel.kind](axes, panel, palette, class_names)
        axes.set_title(panel.title, fontsize=7, wrap=True)
        if panel.kind not in ("bars", "scatter"):  # a frame without ticks: white (ignored) pixels stay visible at the border
            axes.set_xticks([])
            axes.set_yticks([])
    for axes in grid[len(panels):]:
        axes.set_axis_off()
    with reporting_write_errors(path, setting="--out"):
        figure.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path


# ------------------------------------------------------------------------------------------- the command


def _checkpoint_path(checkpoint) -> Path:
    """A checkpoint file, or a run folder's latest.pt."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "latest.pt"
    if not path.is_file():
        raise SemisegError(f"checkpoint not found: {path} (give latest.pt, best.pt or a run folder)")
    return path


def val_batch(sample, views, device) -> dict:
    """A val image as a batch `explain` can read: the image (twice: CutMix partners need a batch of 2) as the
    labeled view with its mask and as the unlabeled weak view, strong views that are copies of it, empty
    CutMix boxes and covers: no augmentation, so the pictures show the model on the image itself."""
    image = normalize(to_tensor(sample.image)).to(device)
    height, width = image.shape[-2:]
    images = torch.stack([image, image])
    mask = torch.from_numpy(np.ascontiguousarray(sample.mask)).long().to(device)
    unlabeled = {"image_w": images, "valid": torch.ones(2, height, width, dtype=torch.bool, device=device),
                 "index": torch.zeros(2, dtype=torch.long)}
    if views.strong:
        unlabeled["image_s"] = images[:, None].repeat(1, views.strong, 1, 1, 1)
    if views.num_boxes:
        unlabeled["box"] = torch.zeros(2, views.num_boxes, height, width, dtype=torch.bool, device=device)
    if getattr(views, "alternative", None) is not None:
        unlabeled["cover"] = torch.zeros(2, height, width, dtype=torch.bool, device=device)
    return {"labeled": {"image": images, "mask": torch.stack([mask, mask]), "index": torch.zeros(2, dtype=torch.long)},
            "unlabeled": unlabeled}


def show_batch(config_path, overrides: Sequence[str] = (), out="batch.png", step: Optional[int] = None,
               checkpoint=None, root=None, val_images: int = 0):
    """Render what the config's method does with the training batch of step `step` to the PNG `out`.

    The config is loaded with `overrides` (and `data.root=root`); the method is built as the trainer builds
    it (networks under the global seed) and, with `checkpoint` (a file or a run folder: its latest.pt), takes
    that checkpoint's method state. `step` defaults to the checkpoint's step (the batch it trains on next),
    or 0. The batch is the first pass of that step on one process (`build_train_batches`: same seed, same
    crops, boxes and strong views as training). `method.explain` runs in eval mode without gradients at
    `StepContext(step, train.total_iters, I)`. Returns the path written.

    `val_images` = N > 0: instead of the training batch, the first N val images one by one (`val_batch`), each
    to `<out stem>_<k>.png`; returns the list of paths.
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise SemisegError(f"--out must name a .png file, got {out}")
    overrides = list(overrides) + ([f"data.root={root}"] if root else [])
    cfg = load_config(config_path, overrides)
    seed_everything(cfg.seed)  # as the trainer: the networks are built under the global seed
    preset = build_preset(cfg)
    splits = preset.build(cfg.data)
    method = build_method(cfg, preset.num_classes, load_weights=checkpoint is None)
    if checkpoint is not None:
        path = _checkpoint_path(checkpoint)
        ckpt = load_checkpoint(path)
        check_compatible(ckpt, preset.num_classes, cfg.model.encoder, str(path))
        trained_with = ckpt.get("meta", {}).get("method")
        if trained_with not in (None, cfg.method.name):
            raise SemisegError(f"{path}: checkpoint was trained with method '{trained_with}', "
                               f"the config says '{cfg.method.name}'")
        load_method_state(method, ckpt["method"], str(path))
        if step is None:  # the batch the run trains on next; a finished run: its last step
            step = min(int(ckpt.get("step", 0)), cfg.train.total_iters - 1)
    step = 0 if step is None else int(step)
    total = cfg.train.total_iters
    if not 0 <= step < total:
        raise SemisegError(f"--step {step} is outside the run's steps 0..{total - 1} (train.total_iters={total})")
    device = pick_device(cfg.device)
    method = method.to(device).eval()
    ctx = StepContext(step, total, iters_per_epoch(cfg, splits, method.views()))
    if val_images:
        with reporting_write_errors(out.parent, setting="--out"):
            out.parent.mkdir(parents=True, exist_ok=True)
        written = []
        for k in range(min(int(val_images), len(splits.val))):
            with torch.no_grad():
                panels = method.explain(val_batch(splits.val.load(k), method.views(), device), ctx)
            target = out.with_name(f"{out.stem}_{k}{out.suffix}")
            written.append(render_panels(panels, target, preset.palette, list(preset.class_names)))
        return written
    batches = build_train_batches(cfg, preset, splits, method, step, plan_from_config(cfg.train, 1))
    try:
        passes = next(batches)
    finally:
        batches.close()
    batch = to_device(passes[0], device)
    with torch.no_grad():
        panels = method.explain(batch, ctx)
    with reporting_write_errors(out.parent, setting="--out"):
        out.parent.mkdir(parents=True, exist_ok=True)
    return render_panels(panels, out, preset.palette, list(preset.class_names))
