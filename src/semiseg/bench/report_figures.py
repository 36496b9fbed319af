"""The report's PNG figures, drawn with matplotlib's Agg canvas (imported only when a figure is drawn).

Per suite: `<suite>_curves.png` (val mIoU against step, mean over seeds with a min–max band,
and the mean training loss), `<suite>_per_class.png` (grouped bars of per-class IoU) and,
when the records point to prediction PNGs, `<suite>_predictions.png` (a grid: one row per val
image, columns input, ground truth, then each cell's prediction). Per dataset, when a method
was run at several labeled counts (in one suite or over suites such as camvid_1_8 and
camvid_1_4), `<dataset>_fractions.png` (mIoU mean ± std against the labeled count). When cells logged
selection signals (fractions of regions or pixels a method accepts), `<suite>_signals.png`.

Figures are small (dpi ≤ 100) and carry no timestamp or version metadata, so the same records
give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..data.listfile import ListEntry, ListFileSource, read_list
from ..data.presets import DATASETS, voc_palette
from ..errors import SemisegError
from ..viz import palette_image
from .report_tables import CellSummary, Record, Stat, SuiteSummary

DPI = 90
MAX_PREDICTION_ROWS = 6  # the grid stays a few hundred KB however many images a record lists
MATPLOTLIB_MISSING = "the report's figures need matplotlib: pip install 'semiseg[report]' (or pass --no-figures)"
IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg")


def require_matplotlib() -> None:
    """Raise `SemisegError` (how to install it) when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SemisegError(MATPLOTLIB_MISSING) from None


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (pyplot and the global backend are left alone)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure, path: Path) -> Path:
    """Write the figure as PNG without metadata (deterministic bytes)."""
    figure.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path


def cell_colour(index: int) -> str:
    """The colour of the index-th row of a suite (the same in every figure)."""
    return f"C{index % 10}"


# --------------------------------------------------------------------------------------------- curves


def mean_band(curves: Sequence[Sequence[Tuple[float, float]]]) -> Tuple[np.ndarray, ...]:
    """(steps, mean, min, max) over the runs that logged each step (the union of their steps)."""
    by_step: Dict[float, List[float]] = {}
    for curve in curves:
        for step, value in curve:
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    values = [by_step[s] for s in steps]
    return (np.array(steps), np.array([np.mean(v) for v in values]), np.array([min(v) for v in values]),
            np.array([max(v) for v in values]))


def curves_figure(summary: SuiteSummary, path: Path) -> Path:
    """Val mIoU against step (mean over seeds, min–max band) and the mean training loss, per cell."""
    figure = new_figure(10, 3.6)
    miou_axes, loss_axes = figure.subplots(1, 2)
    for index, cell in enumerate(summary.cells):
        colour = cell_colour(index)
        steps, mean, low, high = mean_band([r.eval_curve for r in cell.records])
        if len(steps):
            miou_axes.plot(steps, mean, color=colour, label=f"{cell.cell} ({cell.miou.n})")
            miou_axes.fill_between(steps, low, high, color=colour, alpha=0.15, linewidth=0)
        steps, mean, _, _ = mean_band([r.train_curve for r in cell.records])
        if len(steps):
            loss_axes.plot(steps, mean, color=colour, linewidth=0.8, label=cell.cell)
    miou_axes.set(title=f"{summary.suite}: val mIoU (mean, min–max over seeds)", xlabel="step", ylabel="mIoU (%)")
    loss_axes.set(title="training loss (mean over seeds)", xlabel="step", ylabel="loss")
    for axes in (miou_axes, loss_axes):
        axes.grid(alpha=0.3)
    if summary.cells:
        miou_axes.legend(fontsize=7, loc="lower right")
    return save(figure, path)


# -------------------------------------------------------------------------------------------- signals


def signals_figure(summary: SuiteSummary, path: Path) -> Optional[Path]:
    """One panel per selection signal (`report_tables.is_signal`: accepted regions, kept pixels, ...) any cell
    logged, the mean over seeds against step per cell; None when no cell logged one."""
    keys = sorted({key for cell in summary.cells for record in cell.records for key in record.signals})
    if not keys:
        return None
    figure = new_figure(min(16.0, 4.2 * len(keys)), 3.4)
    panels = np.atleast_1d(figure.subplots(1, len(keys)))
    for axes, key in zip(panels, keys):
        for index, cell in enumerate(summary.cells):
            steps, mean, _, _ = mean_band([r.signals[key] for r in cell.records if key in r.signals])
            if len(steps):
                axes.plot(steps, mean, color=cell_colour(index), linewidth=0.9, label=cell.cell)
        axes.set(title=key, xlabel="step", ylabel="fraction", ylim=(0, 1.02))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    return save(figure, path)


# ------------------------------------------------------------------------------------------ per class


def per_class_figure(summary: SuiteSummary, path: Path) -> Path:
    """Grouped bars: per-class IoU (%, mean over seeds), one bar per cell in each class group."""
    names = summary.cells[0].class_names
    figure = new_figure(min(20.0, max(6.0, 0.25 * len(names) * len(summary.cells) + 2)), 3.8)
    axes = figure.subplots()
    width = 0.8 / len(summary.cells)
    positions = np.arange(len(names))
    for index, cell in enumerate(summary.cells):
        offset = (index - (len(summary.cells) - 1) / 2) * width
        axes.bar(positions + offset, cell.class_iou, width, color=cell_colour(index), label=cell.cell)
    axes.set_xticks(positions, names, rotation=45, ha="right", fontsize=8)
    axes.set(title=f"{summary.suite}: per-class IoU (mean over seeds)", ylabel="IoU (%)", ylim=(0, 100))
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=7, ncols=min(4, len(summary.cells)))
    return save(figure, path)


# ------------------------------------------------------------------------------------------ fractions


def fraction_series(records: Sequence[Record]) -> Dict[str, List[Tuple[int, Stat]]]:
    """last_miou over seeds for each (method, labeled count), as method -> [(labeled, stat)] by count."""
    pooled: Dict[Tuple[str, int], List[float]] = {}
    for record in records:
        pooled.setdefault((record.method, record.labeled), []).append(record.last_miou)
    series: Dict[str, List[Tuple[int, Stat]]] = {}
    for (method, labeled), values in sorted(pooled.items()):
        series.setdefault(method, []).append((labeled, Stat.of(values)))
    return series


def datasets_with_fractions(records: Sequence[Record]) -> Dict[str, List[Record]]:
    """The datasets (over all suites) where some method ran at more than one labeled count.

    Ceiling records do not count towards that (every suite with a baseline and a ceiling has
    supervised runs at two counts) but are drawn: they are the supervised line's last point.
    """
    by_dataset: Dict[str, List[Record]] = {}
    for record in records:
        by_dataset.setdefault(record.dataset, []).append(record)
    return {dataset: group for dataset, group in sorted(by_dataset.items())
            if any(len(points) > 1 for points in
                   fraction_series([r for r in group if r.role != "ceiling"]).values())}


def fractions_figure(dataset: str, records: Sequence[Record], path: Path) -> Path:
    """mIoU (mean ± std over seeds) against the labeled count, one line per method."""
    figure = new_figure(6, 4)
    axes = figure.subplots()
    counts = sorted({r.labeled for r in records})
    for index, (method, points) in enumerate(fraction_series(records).items()):
        labeled = [count for count, _ in points]
        means = [stat.mean for _, stat in points]
        stds = [stat.std or 0.0 for _, stat in points]
        axes.errorbar(labeled, means, yerr=stds, color=cell_colour(index), marker="o", capsize=3, label=method)
    axes.set_xscale("log")
    axes.set_xticks(counts, [str(c) for c in counts])
    axes.minorticks_off()
    axes.set(title=f"{dataset}: mIoU against labeled images", xlabel="labeled images", ylabel="mIoU (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return save(figure, path)


# ---------------------------------------------------------------------------------------- predictions


def dataset_palette(dataset: str, num_classes: int):
    """The dataset preset's palette, or the VOC colour map for a dataset without a preset."""
    preset = DATASETS.get(dataset) if dataset in DATASETS else None
    palette = getattr(preset, "palette", None)
    return palette if palette is not None and len(palette) >= num_classes else voc_palette(num_classes)


def prediction_records(summary: SuiteSummary) -> List[Tuple[CellSummary, Record]]:
    """Each cell with its lowest-seed record that lists predictions (cells without any left out)."""
    chosen = []
    for cell in summary.cells:
        with_predictions = [r for r in cell.records if r.prediction_dir is not None and r.prediction_images]
        if with_predictions:
            chosen.append((cell, with_predictions[0]))
    return chosen


def read_labels(path: Path) -> Optional[np.ndarray]:
    """The class ids of a palette/grey PNG, or None when the file is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            return np.array(image if image.mode in ("L", "P") else image.convert("L"), dtype=np.uint8)
    except (OSError, ValueError):
        return None


def listed_val_entries(root: Path) -> Dict[str, ListEntry]:
    """The entries of `<root>/val.txt` (none when it does not exist), by image path and by file stem."""
    listed: Dict[str, ListEntry] = {}
    if (root / "val.txt").is_file():
        for entry in read_list(root / "val.txt"):
            if entry.mask is not None:
                listed.setdefault(entry.image, entry)
                listed.setdefault(Path(entry.image).stem, entry)
    return listed


def layout_val_entry(root: Path, name: str) -> Optional[ListEntry]:
    """`<root>/val/<name>.<png|webp|jpg>` with `<root>/valannot/<name>.png` (CamVid's layout), if both exist."""
    image = next((f"val/{name}{s}" for s in IMAGE_SUFFIXES if (root / f"val/{name}{s}").is_file()), None)
    mask = f"valannot/{name}.png"
    if image is None or not (root / mask).is_file():
        return None
    return ListEntry(image, mask, 0, str(root / "val"))


def val_entries(root: Path, names: Sequence[str]) -> Optional[List[ListEntry]]:
    """The list entries (image, mask) of `names` under a dataset root, or None when one is not found."""
    listed = listed_val_entries(root)
    entries = [listed.get(name) or layout_val_entry(root, name) for name in names]
    if any(e is None or not (root / e.image).is_file() or not (root / e.mask).is_file() for e in entries):
        return None
    return entries


def val_samples(root: Optional[Path], names: Sequence[str], dataset: str, num_classes: int):
    """(image, label map) of each named val image, loaded as training does; None when not all are found."""
    entries = None if root is None else val_entries(Path(root), names)
    if entries is None:
        return None
    preset = DATASETS.get(dataset) if dataset in DATASETS else None
    source = ListFileSource(Path(root), entries, num_classes, Path(root) / "val.txt",
                            label_lut=getattr(preset, "label_lut", None))
    return [(sample.image, sample.mask) for sample in (source.load(i) for i in range(len(source)))]


def coloured(labels: Optional[np.ndarray], palette) -> Optional[np.ndarray]:
    """A label map as RGB in the palette (ignore white), passing None through."""
    return None if labels is None else np.array(palette_image(labels, palette).convert("RGB"))


def show(axes, picture: Optional[np.ndarray], title: str = "") -> None:
    """An image panel without ticks; a grey 'missing' panel when there is no picture."""
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)
    if picture is None:
        axes.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=7, color="0.4",
                  transform=axes.transAxes)
        axes.set_facecolor("0.92")
    else:
        axes.imshow(picture, interpolation="nearest")
    if title:
        axes.set_title(title, fontsize=8)


def predictions_figure(summary: SuiteSummary, path: Path, dataset_root: Optional[Path] = None) -> Optional[Path]:
    """The prediction grid of a suite, or None when no record lists predictions.

    Rows: the images of the first cell's record (at most MAX_PREDICTION_ROWS). Columns: the input
    image and its ground truth (only when `dataset_root` holds all of them), then one prediction
    per cell (its lowest-seed record). Label maps are coloured with the dataset's palette.
    """
    chosen = prediction_records(summary)
    if not chosen:
        return None
    names = chosen[0][1].prediction_images[:MAX_PREDICTION_ROWS]
    first = chosen[0][0]
    palette = dataset_palette(first.dataset, len(first.class_names))
    samples = val_samples(dataset_root, names, first.dataset, len(first.class_names))
    titles = (["image", "ground truth"] if samples else []) + [cell.cell for cell, _ in chosen]
    figure = new_figure(1.7 * len(titles), 1.35 * len(names) + 0.3)
    grid = np.array(figure.subplots(len(names), len(titles), squeeze=False))
    for row, name in enumerate(names):
        pictures = [samples[row][0], coloured(samples[row][1], palette)] if samples else []
        pictures += [coloured(read_labels(record.prediction_dir / f"{name}.png"), palette) for _, record in chosen]
        for column, picture in enumerate(pictures):
            show(grid[row, column], picture, titles[column] if row == 0 else "")
        grid[row, 0].set_ylabel(Path(name).stem, fontsize=7)
    return save(figure, path)


# ------------------------------------------------------------------------------------------------ all


def suite_figures(summary: SuiteSummary, out_dir: Path, dataset_root: Optional[Path] = None) -> List[Path]:
    """The curves, per-class and (when there are predictions) prediction figures of a suite."""
    written = [curves_figure(summary, out_dir / f"{summary.suite}_curves.png"),
               per_class_figure(summary, out_dir / f"{summary.suite}_per_class.png")]
    grid = predictions_figure(summary, out_dir / f"{summary.suite}_predictions.png", dataset_root)
    signals = signals_figure(summary, out_dir / f"{summary.suite}_signals.png")
    return written + [path for path in (grid, signals) if path is not None]


def fraction_figures(records: Sequence[Record], out_dir: Path) -> Dict[str, Path]:
    """`<dataset>_fractions.png` for every dataset run at several labeled counts, by dataset."""
    return {dataset: fractions_figure(dataset, group, out_dir / f"{dataset}_fractions.png")
            for dataset, group in datasets_with_fractions(records).items()}
