"""`semiseg report`: markdown tables and PNG figures from benchmark result records.

`write_report` reads the records (`report_tables.load_records`), writes `<suite>.md` per suite
(the main table, the per-class IoU table and links to the figures), the figures
(`report_figures`) and, when given a README, puts each suite's main table between the markers
`<!-- report:<suite>:begin -->` and `<!-- report:<suite>:end -->`, and each speed record's table
(`report_speed`) between `<!-- report:speed/<record>:begin -->` and its end marker. Outputs depend on the
records only (no dates, sorted everything), so a test can check that a committed README is up
to date: `replace_marked_sections(text, render_tables(load_records([...]))) == text`.
What each table column means is in `report_tables`' docstring.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import SemisegError
from .report_figures import fraction_figures, require_matplotlib, suite_figures
from .report_speed import speed_tables
from .report_tables import (COLUMN_NOTES, PathLike, SuiteSummary, class_table, load_records, main_table,
                            render_class_tables, render_tables, summarize_suites)

__all__ = ["write_report", "render_tables", "render_class_tables", "load_records", "replace_marked_sections",
           "suite_markdown", "update_readme"]

FIGURE_TITLES = {"curves": "Validation mIoU and training loss", "per_class": "Per-class IoU",
                 "predictions": "Predictions on val images", "fractions": "mIoU against the labeled count",
                 "signals": "Selection signals over training (fractions of regions or pixels accepted)"}


def markers(suite: str) -> Tuple[str, str]:
    """The begin and end markers of a suite's table in a markdown file."""
    return f"<!-- report:{suite}:begin -->", f"<!-- report:{suite}:end -->"


def replace_marked_sections(text: str, tables: Dict[str, str], where: str = "README") -> str:
    """`text` with each suite's table between its markers; suites without markers are skipped.

    Marker pairs of suites not in `tables` are left as they are. A begin marker without its end
    marker (or the reverse) raises `SemisegError` naming `where`.
    """
    for suite, table in sorted(tables.items()):
        begin, end = markers(suite)
        has_begin, has_end = begin in text, end in text
        if not has_begin and not has_end:
            continue
        if has_begin != has_end:
            missing = end if has_begin else begin
            raise SemisegError(f"{where}: marker {missing} is missing; add it around the {suite} table")
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
        text = pattern.sub(lambda _: f"{begin}\n{table}{end}", text)
    return text


def update_readme(readme: Path, tables: Dict[str, str]) -> bool:
    """Replace the marked tables in `readme`; True when the file changed (it is written only then)."""
    readme = Path(readme)
    if not readme.is_file():
        raise SemisegError(f"README not found: {readme}; pass an existing markdown file")
    text = readme.read_text(encoding="utf-8")
    updated = replace_marked_sections(text, tables, where=str(readme))
    if updated == text:
        return False
    readme.write_text(updated, encoding="utf-8", newline="\n")
    return True


def suite_markdown(summary: SuiteSummary, figures: Sequence[Tuple[str, str]] = ()) -> str:
    """The `<suite>.md` page: main table, column notes, per-class table, then `figures` ((title, file))."""
    seeds = sum(cell.miou.n for cell in summary.cells)
    datasets = ", ".join(sorted({cell.dataset for cell in summary.cells}))
    parts = [
        f"# Benchmark `{summary.suite}`\n",
        f"Dataset {datasets}: {len(summary.cells)} cells, {seeds} runs. Written by `semiseg report` from the "
        "result records; do not edit by hand.\n",
        "## mIoU\n",
        main_table(summary),
        COLUMN_NOTES + "\n",
        "## Per-class IoU (%)\n",
        "Mean over seeds of the final model's IoU of each class.\n",
        class_table(summary),
    ]
    if figures:
        parts.append("## Figures\n")
        parts.extend(f"![{title}]({name})\n" for title, name in figures)
    return "\n".join(parts)


def figure_links(summary: SuiteSummary, written: Iterable[Path], fractions: Dict[str, Path]) -> List[Tuple[str, str]]:
    """(title, file name) of the figures a suite's page links to, in a fixed order."""
    names = {path.name for path in written}
    links = [(FIGURE_TITLES[kind], f"{summary.suite}_{kind}.png") for kind in ("curves", "per_class", "predictions", "signals")
             if f"{summary.suite}_{kind}.png" in names]
    for dataset in sorted({cell.dataset for cell in summary.cells}):
        if dataset in fractions:
            links.append((FIGURE_TITLES["fractions"], fractions[dataset].name))
    return links


def write_report(paths: Sequence[PathLike], out_dir: Path, readme=None, figures: bool = True,
                 dataset_root: Optional[Path] = None) -> List[Path]:
    """Write the report of the records under `paths` into `out_dir`; the files written, sorted.

    `paths`: record JSON files or folders (searched recursively for `seed*.json`). Per suite:
    `<suite>.md` and, with `figures`, the PNGs of `report_figures` (`dataset_root`: the dataset
    folder the prediction grid takes input images and ground truth from; without it, or when the
    images are not there, the grid shows the predictions only). `readme`: a markdown file, or a list
    of them, whose marked sections get each suite's main table and each speed record's table
    (`report_speed`); a file is in the returned list when it changed.
    Raises `SemisegError` (one line) for an unreadable record or missing matplotlib.
    """
    records = load_records(paths)
    summaries = summarize_suites(records)
    out_dir = Path(out_dir)
    if figures:
        require_matplotlib()  # before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures = {suite: suite_figures(summary, out_dir, dataset_root) if figures else []
                for suite, summary in summaries.items()}
    fractions = fraction_figures(records, out_dir) if figures else {}
    written = [path for paths_of_suite in pictures.values() for path in paths_of_suite] + list(fractions.values())
    for suite, summary in summaries.items():
        page = out_dir / f"{suite}.md"
        page.write_text(suite_markdown(summary, figure_links(summary, pictures[suite], fractions)),
                        encoding="utf-8", newline="\n")
        written.append(page)
    readmes = [] if readme is None else [readme] if isinstance(readme, (str, Path)) else list(readme)
    if readmes:
        tables = {**{s: main_table(v) for s, v in summaries.items()}, **speed_tables(paths)}
        written += [Path(file) for file in readmes if update_readme(Path(file), tables)]
    return sorted(set(written))
