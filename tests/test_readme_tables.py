"""The README's benchmark tables are what `semiseg report` makes of the committed records: no number typed by
hand (docs/benchmarks.md: report). Regenerate with
`semiseg report benchmarks/results --out docs/benchmarks --readme README.md --readme docs/benchmarks.md
--root ../shared/data/camvid`."""

from pathlib import Path

from semiseg.bench.report import load_records, markers, render_tables, replace_marked_sections
from semiseg.bench.report_speed import speed_tables

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


README_SUITES = ("synthetic", "synthetic_domains", "camvid")  # the protocol studies (camvid_*) have their pages only


def test_the_readme_tables_are_current():
    records = load_records([RESULTS])
    tables = render_tables(records)
    assert {"camvid", "synthetic"} <= set(tables)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for suite in README_SUITES:
        begin, end = markers(suite)
        assert begin in readme and end in readme, f"README has no table for suite '{suite}'"
    assert replace_marked_sections(readme, tables) == readme, "README tables are stale: run `semiseg report`"


def test_suite_pages_are_current():
    records = load_records([RESULTS])
    for suite, table in render_tables(records).items():
        page = REPO / "docs" / "benchmarks" / f"{suite}.md"
        assert page.is_file(), f"docs/benchmarks/{suite}.md missing: run `semiseg report`"
        assert table in page.read_text(encoding="utf-8"), f"docs/benchmarks/{suite}.md is stale"


def test_the_speed_tables_of_docs_benchmarks_are_current():
    tables = speed_tables([RESULTS])
    page = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    shown = [key for key in tables if markers(key)[0] in page]
    assert {"speed/seed_methods/pascal", "speed/baseline_methods/pascal", "speed/pascal"} <= set(shown)
    assert replace_marked_sections(page, tables) == page, "docs/benchmarks.md speed tables are stale: run `semiseg report`"
