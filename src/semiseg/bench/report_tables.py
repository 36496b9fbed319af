"""Benchmark result records and the markdown tables made from them (text only: no matplotlib).

A record is one JSON file `benchmarks/results/<suite>/<cell>/seed<k>.json` (schema
"semiseg.bench.quality/1"): one run of one cell (a method, the supervised baseline or the
full-label ceiling) of one suite (dataset + protocol) with one seed. `load_records` reads and
checks them; `summarize` groups a suite's records by cell over seeds; `render_tables` and
`render_class_tables` turn the summaries into markdown.

The main table of a suite has one row per cell: the baseline first, then the methods
alphabetically, the ceiling last. Its columns:

- cell: the cell name (`supervised`, `fixmatch`, `supervised_full`, ...).
- labeled: the number of labeled images the cell trained with.
- mIoU (%): the final model's mIoU (`last_miou`), mean ± sample standard deviation (ddof = 1)
  over seeds; with one seed the number followed by "(1 seed)".
- seeds: how many seeds (records) the row averages.
- gain (pts): mean_cell − mean_baseline, in mIoU points, ± sqrt(s_cell² + s_baseline²): the
  spread of the difference between one run of the cell and one run of the baseline. Without a
  spread when either side has a single seed; "—" on the baseline row or when the suite has no
  baseline.
- gap recovered (%): (mean_cell − mean_baseline) / (mean_ceiling − mean_baseline) × 100, the
  share of the labeled-data gap the method closes; only when the suite has a ceiling and the gap
  is positive, "—" otherwise (and on the baseline and ceiling rows).
- ECE (%): the mean expected calibration error of the final model over the seeds that report
  one; "—" when none does.
- best mIoU (%): the mean over seeds of the best mIoU seen during training (`best_miou`).

All numbers have 2 decimals. The per-class table holds the mean over seeds of each class's IoU
of the final model, in %.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..errors import SemisegError
from .results import SCHEMA
from .suite import ROLES
REQUIRED_KEYS = ("schema", "suite", "cell", "method", "role", "dataset", "labeled", "seed", "last_miou",
                 "best_miou", "iou", "class_names", "curve")
DASH = "—"
PathLike = Union[str, Path]


@dataclass(frozen=True)
class Record:
    """The parts of one result record the report uses; `path` is the JSON file it came from."""

    path: Path
    suite: str
    cell: str
    method: str
    role: str
    dataset: str
    labeled: int
    seed: int
    last_miou: float
    best_miou: float
    iou: Tuple[float, ...]  # per class, fraction 0..1
    class_names: Tuple[str, ...]
    ece: Optional[float]
    eval_curve: Tuple[Tuple[float, float], ...]  # (step, val mIoU %)
    train_curve: Tuple[Tuple[float, float], ...]  # (step, training loss)
    signals: Dict[str, Tuple[Tuple[float, float], ...]]  # selection fractions over training (`signal_keys`)
    prediction_dir: Optional[Path]  # palette PNGs <dir>/<image>.png
    prediction_images: Tuple[str, ...]


# ----------------------------------------------------------------------------------------------- loading


def find_record_files(paths: Iterable[PathLike]) -> List[Path]:
    """The JSON files named in `paths`, folders searched recursively for `seed*.json`; sorted, unique."""
    found = set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found.update(p.resolve() for p in path.rglob("seed*.json") if p.is_file())
        elif path.is_file():
            found.add(path.resolve())
        else:
            raise SemisegError(f"benchmark result not found: {path}; pass result JSON files or folders")
    return sorted(found)


def load_records(paths: Iterable[PathLike]) -> List[Record]:
    """Read and check every record under `paths`, sorted by (suite, cell, seed).

    A file that is not a JSON object, lacks a key the report needs or holds a value of the
    wrong type raises `SemisegError` with one line naming the file and the key.
    """
    paths = list(paths)
    records = [read_record(path) for path in find_record_files(paths)]
    if not records:
        shown = ", ".join(str(p) for p in paths) or "(no paths)"
        raise SemisegError(f"no benchmark records (seed*.json) under {shown}; run the benchmarks first")
    records.sort(key=lambda r: (r.suite, r.cell, r.seed))
    check_unique_runs(records)
    return records


def read_record(path: Path) -> Record:
    """One record file as a `Record` (`SemisegError` naming the file and the key on any problem)."""
    data = _read_json_object(path)
    for key in REQUIRED_KEYS:
        if key not in data:
            raise SemisegError(f"{path}: missing key '{key}' of a {SCHEMA} record; re-run the benchmark "
                               "that wrote it or fix the file")
    if data["schema"] != SCHEMA:
        raise SemisegError(f"{path}: key 'schema' is {data['schema']!r}, expected {SCHEMA!r}")
    role = _text(data, "role", path)
    if role not in ROLES:
        raise SemisegError(f"{path}: key 'role' is {role!r}, expected one of {', '.join(ROLES)}")
    iou = _numbers(data, "iou", path)
    class_names = tuple(_text_list(data, "class_names", path))
    if len(iou) != len(class_names):
        raise SemisegError(f"{path}: key 'iou' has {len(iou)} values for {len(class_names)} class_names")
    prediction_dir, prediction_images = _predictions(data, path)
    return Record(
        path=path, suite=_text(data, "suite", path), cell=_text(data, "cell", path),
        method=_text(data, "method", path), role=role, dataset=_text(data, "dataset", path),
        labeled=int(_number(data, "labeled", path)), seed=int(_number(data, "seed", path)),
        last_miou=_number(data, "last_miou", path), best_miou=_number(data, "best_miou", path),
        iou=tuple(iou), class_names=class_names, ece=_optional_number(data, "ece", path),
        eval_curve=_curve(data, "eval", "miou", path), train_curve=_curve(data, "train", "loss", path),
        signals={key: _curve(data, "train", key, path) for key in signal_keys(data["curve"].get("train"))},
        prediction_dir=prediction_dir, prediction_images=prediction_images,
    )


def check_unique_runs(records: Sequence[Record]) -> None:
    """Raise when two files hold the same (suite, cell, seed)."""
    seen: Dict[Tuple[str, str, int], Path] = {}
    for record in records:
        key = (record.suite, record.cell, record.seed)
        if key in seen:
            raise SemisegError(f"{record.path} and {seen[key]} are both suite {record.suite!r} cell "
                               f"{record.cell!r} seed {record.seed}; keep one of them")
        seen[key] = record.path


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SemisegError(f"{path}: not UTF-8 text; re-run the benchmark that wrote it") from None
    except json.JSONDecodeError as exc:
        raise SemisegError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                           "re-run the benchmark that wrote it") from None
    if not isinstance(data, dict):
        raise SemisegError(f"{path}: expected a JSON object (a {SCHEMA} record), got {type(data).__name__}")
    return data


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(data: dict, key: str, path: Path) -> float:
    value = data[key]
    if not _is_number(value):
        raise SemisegError(f"{path}: key '{key}' must be a finite number, got {value!r}")
    return float(value)


def _optional_number(data: dict, key: str, path: Path) -> Optional[float]:
    return None if data.get(key) is None else _number(data, key, path)


def _text(data: dict, key: str, path: Path) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise SemisegError(f"{path}: key '{key}' must be a non-empty string, got {value!r}")
    return value


def _numbers(data: dict, key: str, path: Path) -> List[float]:
    values = data[key]
    if not isinstance(values, list) or not all(_is_number(v) for v in values):
        raise SemisegError(f"{path}: key '{key}' must be a list of finite numbers")
    return [float(v) for v in values]


def _text_list(data: dict, key: str, path: Path) -> List[str]:
    values = data[key]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SemisegError(f"{path}: key '{key}' must be a list of strings")
    return values


def is_signal(key: str) -> bool:
    """A logged training term that is a fraction of pixels or regions a method's selection keeps: RRN's
    `accepted_own` / `accepted_cross`, `*_ratio` (kept, hidden), CPCL's `overlap`."""
    return key.startswith("accepted_") or key.endswith("_ratio") or key == "overlap"


def signal_keys(train_points) -> List[str]:
    """The selection signals every point of a record's training curve holds, sorted."""
    if not isinstance(train_points, list) or not train_points or not all(isinstance(p, dict) for p in train_points):
        return []
    keys = set.intersection(*(set(p) for p in train_points))
    return sorted(key for key in keys if is_signal(key))


def _curve(data: dict, part: str, value_key: str, path: Path) -> Tuple[Tuple[float, float], ...]:
    """`curve.<part>` as (step, value) pairs sorted by step."""
    curve = data["curve"]
    if not isinstance(curve, dict) or not isinstance(curve.get(part), list):
        raise SemisegError(f"{path}: key 'curve.{part}' must be a list of {{step, {value_key}}} points")
    points = []
    for index, point in enumerate(curve[part]):
        for key in ("step", value_key):
            if not isinstance(point, dict) or not _is_number(point.get(key)):
                raise SemisegError(f"{path}: key 'curve.{part}[{index}].{key}' must be a finite number")
        points.append((float(point["step"]), float(point[value_key])))
    return tuple(sorted(points))


def _predictions(data: dict, path: Path) -> Tuple[Optional[Path], Tuple[str, ...]]:
    """(folder of the prediction PNGs, image names), or (None, ()) when the record has none."""
    predictions = data.get("predictions")
    if predictions is None:
        return None, ()
    if (not isinstance(predictions, dict) or not isinstance(predictions.get("dir"), str)
            or not isinstance(predictions.get("images"), list)
            or not all(isinstance(name, str) for name in predictions["images"])):
        raise SemisegError(f"{path}: key 'predictions' must be {{\"dir\": str, \"images\": [str, ...]}}")
    return path.parent / predictions["dir"], tuple(predictions["images"])


# ------------------------------------------------------------------------------------------ statistics


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof = 1; None with one value) of `n` values."""

    mean: float
    std: Optional[float]
    n: int

    @staticmethod
    def of(values: Sequence[float]) -> "Stat":
        n = len(values)
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
        return Stat(mean, std, n)


@dataclass(frozen=True)
class CellSummary:
    """One row of a suite: a cell's records over seeds."""

    suite: str
    cell: str
    role: str
    method: str
    dataset: str
    labeled: int
    records: Tuple[Record, ...]  # sorted by seed
    miou: Stat  # last_miou over seeds, %
    best_miou: float  # mean best_miou, %
    ece: Optional[float]  # mean over the seeds that report one, %
    class_iou: Tuple[float, ...]  # mean per-class IoU, %
    class_names: Tuple[str, ...]


@dataclass(frozen=True)
class SuiteSummary:
    """A suite's rows in table order, and its baseline and ceiling rows when present."""

    suite: str
    cells: Tuple[CellSummary, ...]
    baseline: Optional[CellSummary]
    ceiling: Optional[CellSummary]


def group_by_suite(records: Iterable[Record]) -> Dict[str, List[Record]]:
    """Records by suite name, suites sorted by name."""
    suites: Dict[str, List[Record]] = {}
    for record in sorted(records, key=lambda r: (r.suite, r.cell, r.seed)):
        suites.setdefault(record.suite, []).append(record)
    return suites


def summarize_cell(records: Sequence[Record]) -> CellSummary:
    """The row of one cell from its records (one per seed), which must agree on what the cell is."""
    first = records[0]
    for key in ("role", "method", "dataset", "labeled", "class_names"):
        _check_agree(records, key, f"cell {first.cell!r} of suite {first.suite!r}")
    ece_values = [r.ece for r in records if r.ece is not None]
    class_iou = tuple(100 * math.fsum(column) / len(records) for column in zip(*(r.iou for r in records)))
    return CellSummary(
        suite=first.suite, cell=first.cell, role=first.role, method=first.method, dataset=first.dataset,
        labeled=first.labeled, records=tuple(sorted(records, key=lambda r: r.seed)),
        miou=Stat.of([r.last_miou for r in records]),
        best_miou=math.fsum(r.best_miou for r in records) / len(records),
        ece=math.fsum(ece_values) / len(ece_values) if ece_values else None,
        class_iou=class_iou, class_names=first.class_names,
    )


def summarize(records: Sequence[Record]) -> SuiteSummary:
    """The summary of one suite's records: rows ordered baseline, methods by name, ceiling."""
    by_cell: Dict[str, List[Record]] = {}
    for record in records:
        by_cell.setdefault(record.cell, []).append(record)
    cells = [summarize_cell(group) for group in by_cell.values()]
    suite = records[0].suite
    _check_agree([c.records[0] for c in cells], "class_names", f"suite {suite!r}")
    cells.sort(key=lambda c: (ROLES.index(c.role), c.cell))
    return SuiteSummary(suite, tuple(cells), _single_role(cells, "baseline", suite),
                        _single_role(cells, "ceiling", suite))


def summarize_suites(records: Iterable[Record]) -> Dict[str, SuiteSummary]:
    """`summarize` for every suite, by suite name (sorted)."""
    return {suite: summarize(group) for suite, group in group_by_suite(records).items()}


def _check_agree(records: Sequence[Record], key: str, what: str) -> None:
    first = records[0]
    for other in records[1:]:
        if getattr(other, key) != getattr(first, key):
            raise SemisegError(f"{other.path}: key '{key}' differs from {first.path} ({what}); "
                               "records of one cell (or the class names of one suite) must agree")


def _single_role(cells: Sequence[CellSummary], role: str, suite: str) -> Optional[CellSummary]:
    matching = [c for c in cells if c.role == role]
    if len(matching) > 1:
        names = ", ".join(c.cell for c in matching)
        raise SemisegError(f"suite {suite!r} has {len(matching)} cells with role {role!r} ({names}); "
                           f"a suite has at most one {role}: fix key 'role' in their records")
    return matching[0] if matching else None


def gain(cell: CellSummary, baseline: CellSummary) -> Tuple[float, Optional[float]]:
    """(mean_cell − mean_baseline, sqrt(s_cell² + s_baseline²) or None when a side has one seed)."""
    difference = cell.miou.mean - baseline.miou.mean
    if cell.miou.std is None or baseline.miou.std is None:
        return difference, None
    return difference, math.hypot(cell.miou.std, baseline.miou.std)


def gap_recovered(cell: CellSummary, baseline: CellSummary, ceiling: CellSummary) -> Optional[float]:
    """(mean_cell − mean_baseline) / (mean_ceiling − mean_baseline) in %, None when the gap is not > 0."""
    gap = ceiling.miou.mean - baseline.miou.mean
    if gap <= 0:
        return None
    return 100 * (cell.miou.mean - baseline.miou.mean) / gap


# --------------------------------------------------------------------------------------------- tables

MAIN_HEADER = ("cell", "labeled", "mIoU (%)", "seeds", "gain (pts)", "gap recovered (%)", "ECE (%)",
               "best mIoU (%)")
COLUMN_NOTES = (
    "mIoU: final model, mean ± sample std (ddof = 1) over seeds. "
    "gain: mean_cell − mean_baseline ± sqrt(s_cell² + s_baseline²), the spread of the difference of two "
    "single runs. gap recovered: (mean_cell − mean_baseline) / (mean_ceiling − mean_baseline). "
    "ECE: expected calibration error of the final model, mean over seeds. "
    "best mIoU: best validation mIoU during training, mean over seeds."
)


def fmt(value: float) -> str:
    """A number with 2 decimals (never "-0.00")."""
    return f"{round(value, 2) + 0.0:.2f}"


def fmt_stat(stat: Stat) -> str:
    """'mean ± std', or 'mean (1 seed)'."""
    if stat.std is None:
        return f"{fmt(stat.mean)} (1 seed)"
    return f"{fmt(stat.mean)} ± {fmt(stat.std)}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """A pipe table; columns from `numeric_from` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def main_row(cell: CellSummary, summary: SuiteSummary) -> List[str]:
    """The main-table cells of one row (see the module docstring for what each column means)."""
    baseline, ceiling = summary.baseline, summary.ceiling
    gain_text = gap_text = DASH
    if baseline is not None and cell.role != "baseline":
        difference, spread = gain(cell, baseline)
        gain_text = fmt(difference) if spread is None else f"{fmt(difference)} ± {fmt(spread)}"
        if ceiling is not None and cell.role == "method":
            share = gap_recovered(cell, baseline, ceiling)
            gap_text = DASH if share is None else fmt(share)
    ece_text = DASH if cell.ece is None else fmt(cell.ece)
    return [cell.cell, str(cell.labeled), fmt_stat(cell.miou), str(cell.miou.n), gain_text, gap_text,
            ece_text, fmt(cell.best_miou)]


def main_table(summary: SuiteSummary) -> str:
    """The suite's main table (one row per cell)."""
    return markdown_table(MAIN_HEADER, [main_row(cell, summary) for cell in summary.cells])


def class_table(summary: SuiteSummary) -> str:
    """Per-class IoU (%) of each cell, mean over seeds."""
    header = ["cell", *summary.cells[0].class_names]
    rows = [[cell.cell, *(fmt(v) for v in cell.class_iou)] for cell in summary.cells]
    return markdown_table(header, rows)


def render_tables(records: Iterable[Record]) -> Dict[str, str]:
    """The main markdown table of every suite, by suite name (what the README markers hold)."""
    return {suite: main_table(summary) for suite, summary in summarize_suites(records).items()}


def render_class_tables(records: Iterable[Record]) -> Dict[str, str]:
    """The per-class IoU table of every suite, by suite name."""
    return {suite: class_table(summary) for suite, summary in summarize_suites(records).items()}
