"""A quality benchmark suite: which configs make its rows, over which seeds (docs/benchmarks.md).

`benchmarks/suites/<suite>.yaml`:

    dataset_root: ../shared/data/camvid   # relative to the suite file's repository; --root overrides
    seeds: [0, 1, 2]
    overrides: []                          # key=value for every run of the suite
    predictions: [0016E5_07959, ...]       # val images whose predictions each run keeps for the report
    cells:                                 # the rows: name -> config (and role)
      supervised: {config: configs/camvid/supervised_lite0_192_1_8.yaml, role: baseline}
      fixmatch: {config: configs/camvid/fixmatch_lite0_192_1_8.yaml}
      supervised_full: {config: configs/camvid/supervised_lite0_192_full.yaml, role: ceiling}

The suite's name is the file's stem; its results go to `benchmarks/results/<suite>/<cell>/seed<k>.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from semiseg.config import read_yaml_mapping
from semiseg.errors import SemisegError

ROLES = ("baseline", "method", "ceiling")


@dataclass(frozen=True)
class Cell:
    name: str
    config: Path
    role: str = "method"


@dataclass
class Suite:
    name: str
    path: Path
    repo: Path                      # the folder relative paths are resolved against
    cells: dict[str, Cell]
    seeds: list[int]
    dataset_root: Path | None = None
    overrides: list[str] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)


def _repo_of(path: Path) -> Path:
    """The nearest folder above `path` that holds `configs/` (the repository root), else its folder."""
    for folder in path.resolve().parents:
        if (folder / "configs").is_dir():
            return folder
    return path.resolve().parent


def _expect(value, kind, path: Path, key: str, fix: str):
    if not isinstance(value, kind):
        raise SemisegError(f"{path}: '{key}' must be {fix}, got {value!r}")
    return value


def load_suite(path) -> Suite:
    path = Path(path)
    data = read_yaml_mapping(path)
    unknown = sorted(set(data) - {"dataset_root", "seeds", "overrides", "predictions", "cells"})
    if unknown:
        raise SemisegError(f"{path}: unknown key '{unknown[0]}' (keys: dataset_root, seeds, overrides, "
                           "predictions, cells)")
    repo = _repo_of(path)
    seeds = _expect(data.get("seeds", [0, 1, 2]), list, path, "seeds", "a list of integers")
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SemisegError(f"{path}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    cells = {}
    for name, spec in _expect(data.get("cells"), dict, path, "cells", "a mapping name -> {config, role}").items():
        spec = {"config": spec} if isinstance(spec, str) else spec
        _expect(spec, dict, path, f"cells.{name}", "a config path or {config: ..., role: ...}")
        if "config" not in spec:
            raise SemisegError(f"{path}: 'cells.{name}' has no 'config'")
        role = spec.get("role", "method")
        if role not in ROLES:
            raise SemisegError(f"{path}: 'cells.{name}.role' must be one of {', '.join(ROLES)}, got {role!r}")
        config = repo / spec["config"]
        if not config.is_file():
            raise SemisegError(f"{path}: 'cells.{name}.config' names {config}, which does not exist")
        cells[str(name)] = Cell(str(name), config, role)
    if sum(c.role == "baseline" for c in cells.values()) > 1 or sum(c.role == "ceiling" for c in cells.values()) > 1:
        raise SemisegError(f"{path}: at most one cell may have role baseline and one role ceiling")
    root = data.get("dataset_root")
    overrides = [str(o) for o in _expect(data.get("overrides") or [], list, path, "overrides", "a list of key=value")]
    predictions = [str(p) for p in _expect(data.get("predictions") or [], list, path, "predictions",
                                           "a list of val image names")]
    return Suite(path.stem, path, repo, cells, seeds, repo / root if root else None, overrides, predictions)
