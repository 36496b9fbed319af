"""Markdown tables of `bench speed` records (schema "semiseg.bench.speed/1"; docs/benchmarks.md: Speed).

`speed_tables(paths)` reads every speed record under `paths` (folders are searched recursively for `*.json`
files whose `schema` is the speed schema; quality records `seed*.json` are skipped) and returns one table per
record, keyed `speed/<path>`: the record's path relative to the folder it was found under, without `.json`
(`benchmarks/results/speed/seed_methods/pascal.json` under `benchmarks/results` is
`speed/seed_methods/pascal`). `semiseg report --readme FILE` puts each table between the markers
`<!-- report:<key>:begin -->` and `<!-- report:<key>:end -->` of FILE, like the quality tables.

One row per cell, in the record's order. Columns, for this tree: the median step (s), its split into the
network forward and backward, the optimiser and the rest (means over the measured steps, so they add up),
the non-network share rest / step, evaluation seconds per val image in `original` and `sliding_window`, the
peak resident memory (GiB). A record made with `--against` adds the other commit's median step and the
ratios this / other (below 1: this tree is faster or smaller) of the step, the peak memory and both
evaluation modes. A tree without the method, or a config the other commit cannot read, shows "—". Under the
table, one line: the command, the commits, the machine, the protocol. Outputs depend on the record only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from ..errors import SemisegError

SPEED_SCHEMA = "semiseg.bench.speed/1"
DASH = "—"
GIB = 1024 ** 3


def find_speed_records(paths: Iterable) -> List[Tuple[str, Path, dict]]:
    """(key, file, record) of every speed record under `paths`, sorted by key; files of other schemas are
    skipped. The key is the path under the folder it was found in, without `.json`, prefixed `speed/` unless
    that path starts with it."""
    found = {}
    for given in paths:
        root = Path(given)
        if root.is_dir():
            candidates = [(p, p.relative_to(root)) for p in root.rglob("*.json")
                          if p.is_file() and not p.name.startswith("seed")]
        elif root.is_file():
            candidates = [(root, Path(root.name))]
        else:
            raise SemisegError(f"benchmark result not found: {root}; pass result JSON files or folders")
        for path, relative in candidates:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # not a record this report reads
            if isinstance(data, dict) and data.get("schema") == SPEED_SCHEMA:
                key = relative.with_suffix("").as_posix()
                found[key if key.startswith("speed/") else f"speed/{key}"] = (path, data)
    return [(key, path, data) for key, (path, data) in sorted(found.items())]


def _seconds(value: Optional[float], digits: int = 2) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _ratio(value: Optional[float]) -> str:
    return DASH if value is None else f"{value:.2f}x"


def _summary(cell: dict, tree: str) -> Optional[dict]:
    return (cell.get("trees", {}).get(tree) or {}).get("summary") or None


def _row(cell: dict, against: bool) -> List[str]:
    this = _summary(cell, "this")
    row = [cell["method"], cell["precision"]]
    if this:
        split, evaluation = this["split"], this.get("eval_s_per_image", {})
        row += [_seconds(this["step_s"]), _seconds(split["forward_s"]), _seconds(split["backward_s"]),
                _seconds(split["optimizer_s"], 3), _seconds(split["rest_s"]),
                f"{100 * split['non_network_fraction']:.1f} %", _seconds(evaluation.get("original")),
                _seconds(evaluation.get("sliding_window")), _seconds(this["peak_rss_bytes"] / GIB)]
    else:
        row += [DASH] * 9
    if against:
        other, ratio = _summary(cell, "against"), cell.get("ratio") or {}
        row += [_seconds(other["step_s"]) if other else DASH, _ratio(ratio.get("step_s")),
                _ratio(ratio.get("peak_rss_bytes")), _ratio(ratio.get("eval_original")),
                _ratio(ratio.get("eval_sliding_window"))]
    return row


def _caption(record: dict) -> str:
    trees = record.get("trees", {})
    commits = []
    for name, tree in sorted(trees.items(), key=lambda item: item[0] != "this"):
        commit = (tree or {}).get("commit")
        label = "this tree" if name == "this" else "against"
        shown = commit[:7] if commit else "unknown commit"
        commits.append(f"{label} {shown}" + (" with uncommitted changes" if (tree or {}).get("dirty") else ""))
    machine, protocol = record.get("machine", {}), record.get("protocol", {})
    return (f"`{record.get('command', 'semiseg bench speed')}`: {', '.join(commits)}; {machine.get('cpu', '?')}, "
            f"{protocol.get('threads', '?')} thread(s), torch {machine.get('torch', '?')}; "
            f"median of {protocol.get('steps', '?')} steps after {protocol.get('warmup', '?')}, "
            f"{protocol.get('repeats', '?')} round(s) per tree.\n")


def speed_table(record: dict) -> str:
    """The markdown table of one speed record (module docstring), with its caption line."""
    against = "against" in record.get("trees", {})
    header = ["method", "precision", "step (s)", "forward", "backward", "optimiser", "rest", "non-network",
              "eval original (s/image)", "eval sliding", "peak GiB"]
    if against:
        commit = (record["trees"]["against"] or {}).get("commit") or "other"
        header += [f"{commit[:7]} step (s)", "step ratio", "peak ratio", "eval original ratio", "eval sliding ratio"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_row(cell, against)) + " |" for cell in record.get("cells", {}).values()]
    return "\n".join(lines) + "\n\n" + _caption(record)


def speed_tables(paths: Iterable) -> Dict[str, str]:
    """{`speed/<path>`: table} for every speed record under `paths` (module docstring)."""
    tables = {}
    for key, path, record in find_speed_records(paths):
        try:
            tables[key] = speed_table(record)
        except (KeyError, TypeError) as error:
            raise SemisegError(f"{path}: a speed record without the key {error}; re-run `semiseg bench speed` "
                               "that wrote it") from None
    return tables
