"""`semiseg.bench.report`: tables checked against hand computations, README markers, errors, figures.

The fake suite: supervised baseline 40, 42, 44 (mean 42, std 2); fixmatch 45, 46, 47 (mean 46,
std 1: gain 4.00 ± sqrt(4 + 1) = 2.24, gap recovered 4 / 10 = 40 %); cps 41, 43 (mean 42, std
sqrt 2: gain 0.00 ± sqrt(4 + 2) = 2.45); the supervised_full ceiling 52 with one seed.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semiseg.bench.report import (load_records, render_class_tables, render_tables, replace_marked_sections,
                                  write_report)
from semiseg.errors import SemisegError
from test_report_speed import record as speed_record

CLASSES = ["Sky", "Road", "Car"]
RUNS = {  # cell: (role, method, labeled, last_miou per seed)
    "supervised": ("baseline", "supervised", 46, [40.0, 42.0, 44.0]),
    "fixmatch": ("method", "fixmatch", 46, [45.0, 46.0, 47.0]),
    "cps": ("method", "cps", 46, [41.0, 43.0]),
    "supervised_full": ("ceiling", "supervised", 367, [52.0]),
}


def record(suite, cell, role, method, labeled, seed, miou, **extra):
    """A minimal semiseg.bench.quality/1 record with synthetic numbers derived from `miou`."""
    data = {
        "schema": "semiseg.bench.quality/1", "suite": suite, "cell": cell, "method": method, "role": role,
        "dataset": "camvid", "labeled": labeled, "labeled_fraction": None, "seed": seed, "iterations": 30,
        "last_miou": miou, "best_miou": miou + 1.0, "best_step": 20,
        "iou": [miou / 100, (miou + 10) / 100, (miou - 10) / 100], "class_names": CLASSES,
        "ece": 5.0 + seed, "wall_seconds": 10.0,
        "curve": {"eval": [{"step": 10, "miou": miou - 5 + seed}, {"step": 20, "miou": miou + 1},
                           {"step": 30, "miou": miou}],
                  "train": [{"step": s, "loss": 1.0 / s + seed * 0.01} for s in (1, 10, 20, 30)]},
        "config_file": "configs/x.yaml", "command": "semiseg train", "commit": "abc", "versions": {},
        "machine": {}, "config": {},
    }
    data.update(extra)
    return data


def write_record(root: Path, data: dict) -> Path:
    path = root / data["suite"] / data["cell"] / f"seed{data['seed']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def write_suite(root: Path, suite="camvid", runs=RUNS, **extra) -> Path:
    for cell, (role, method, labeled, mious) in runs.items():
        for seed, miou in enumerate(mious):
            write_record(root, record(suite, cell, role, method, labeled, seed, miou, **extra))
    return root


def table_rows(table: str) -> dict:
    """cell name -> the row's cells, from a markdown pipe table."""
    lines = table.strip().splitlines()[2:]
    rows = [[part.strip() for part in line.strip("|").split("|")] for line in lines]
    return {row[0]: row for row in rows}


@pytest.fixture
def results(tmp_path):
    return write_suite(tmp_path / "results")


def test_main_table_matches_hand_computations(results):
    table = render_tables(load_records([results]))["camvid"]
    assert table.splitlines()[0] == ("| cell | labeled | mIoU (%) | seeds | gain (pts) | gap recovered (%) | "
                                     "ECE (%) | best mIoU (%) |")
    rows = table_rows(table)
    # cell, labeled, mIoU, seeds, gain, gap recovered, ECE (seeds 0..n-1 -> 5 + mean seed), best mIoU
    assert rows["supervised"] == ["supervised", "46", "42.00 ± 2.00", "3", "—", "—", "6.00", "43.00"]
    assert rows["fixmatch"] == ["fixmatch", "46", "46.00 ± 1.00", "3", "4.00 ± 2.24", "40.00", "6.00", "47.00"]
    assert rows["cps"] == ["cps", "46", "42.00 ± 1.41", "2", "0.00 ± 2.45", "0.00", "5.50", "43.00"]
    assert rows["supervised_full"] == ["supervised_full", "367", "52.00 (1 seed)", "1", "10.00", "—", "5.00",
                                       "53.00"]


def test_rows_baseline_first_methods_alphabetical_ceiling_last(results):
    rows = table_rows(render_tables(load_records([results]))["camvid"])
    assert list(rows) == ["supervised", "cps", "fixmatch", "supervised_full"]


def test_gap_needs_a_ceiling_above_the_baseline(tmp_path):
    runs = {cell: RUNS[cell] for cell in ("supervised", "fixmatch")}
    rows = table_rows(render_tables(load_records([write_suite(tmp_path / "a", runs=runs)]))["camvid"])
    assert rows["fixmatch"][4:6] == ["4.00 ± 2.24", "—"]
    runs["supervised_full"] = ("ceiling", "supervised", 367, [41.0])  # below the baseline: no gap to recover
    rows = table_rows(render_tables(load_records([write_suite(tmp_path / "b", runs=runs)]))["camvid"])
    assert rows["fixmatch"][5] == "—"


def test_without_ece_the_column_is_a_dash(tmp_path):
    root = write_suite(tmp_path / "r", runs={"supervised": RUNS["supervised"]}, ece=None)
    assert table_rows(render_tables(load_records([root]))["camvid"])["supervised"][6] == "—"


def test_per_class_table_is_the_mean_over_seeds_in_percent(results):
    rows = table_rows(render_class_tables(load_records([results]))["camvid"])
    assert rows["fixmatch"] == ["fixmatch", "46.00", "56.00", "36.00"]
    assert rows["supervised_full"] == ["supervised_full", "52.00", "62.00", "42.00"]


def test_suites_are_separate_and_files_or_folders_are_accepted(tmp_path):
    root = write_suite(tmp_path / "r")
    write_suite(root, suite="camvid_1_4", runs={"fixmatch": RUNS["fixmatch"]})
    (root / "camvid" / "notes.json").write_text("not a record and not seed*.json")
    tables = render_tables(load_records([root / "camvid", root / "camvid_1_4" / "fixmatch" / "seed0.json"]))
    assert sorted(tables) == ["camvid", "camvid_1_4"]
    assert table_rows(tables["camvid_1_4"])["fixmatch"][2] == "45.00 (1 seed)"


def test_suite_page_holds_both_tables(results, tmp_path):
    written = write_report([results], tmp_path / "out", figures=False)
    assert written == [tmp_path / "out" / "camvid.md"]
    page = written[0].read_text()
    assert render_tables(load_records([results]))["camvid"] in page
    assert render_class_tables(load_records([results]))["camvid"] in page
    assert ".png" not in page


README = """# Project

Intro text.

<!-- report:camvid:begin -->
old table
<!-- report:camvid:end -->

Between.
<!-- report:pascal:begin -->
kept: no pascal records
<!-- report:pascal:end -->
Tail text.
"""


def test_readme_markers_are_replaced_and_the_rest_kept(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    written = write_report([results], tmp_path / "out", readme=readme, figures=False)
    assert readme in written
    text = readme.read_text()
    table = render_tables(load_records([results]))["camvid"]
    assert text == README.replace("old table\n", table)
    assert "kept: no pascal records" in text
    assert replace_marked_sections(text, render_tables(load_records([results]))) == text  # up to date

    written = write_report([results], tmp_path / "out", readme=readme, figures=False)
    assert readme.read_text() == text and readme not in written  # idempotent: second run changes nothing


def test_a_readme_without_the_suites_markers_is_left_alone(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Nothing marked\n")
    assert readme not in write_report([results], tmp_path / "out", readme=readme, figures=False)
    assert readme.read_text() == "# Nothing marked\n"


def test_a_begin_marker_without_its_end_is_an_error(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- report:camvid:begin -->\n")
    with pytest.raises(SemisegError, match="report:camvid:end"):
        write_report([results], tmp_path / "out", readme=readme, figures=False)


def test_outputs_are_deterministic(results, tmp_path):
    readmes = []
    for name in ("one", "two"):
        readme = tmp_path / f"{name}.md"
        readme.write_text(README)
        write_report([results], tmp_path / name, readme=readme, figures=False)
        readmes.append(readme.read_bytes())
    assert readmes[0] == readmes[1]
    assert (tmp_path / "one" / "camvid.md").read_bytes() == (tmp_path / "two" / "camvid.md").read_bytes()


def assert_one_line_naming(error, *parts):
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert part in message


def test_broken_json_is_one_line_naming_the_file(results, tmp_path):
    broken = results / "camvid" / "fixmatch" / "seed1.json"
    broken.write_text('{"schema": "semiseg.bench.quality/1",')
    with pytest.raises(SemisegError) as error:
        write_report([results], tmp_path / "out", figures=False)
    assert_one_line_naming(error, str(broken), "not valid JSON")


def test_a_missing_key_is_one_line_naming_the_file_and_the_key(results, tmp_path):
    path = results / "camvid" / "cps" / "seed0.json"
    data = json.loads(path.read_text())
    del data["last_miou"]
    path.write_text(json.dumps(data))
    with pytest.raises(SemisegError) as error:
        write_report([results], tmp_path / "out", figures=False)
    assert_one_line_naming(error, str(path), "'last_miou'")


def test_a_wrong_type_and_a_wrong_schema_name_the_key(tmp_path):
    path = write_record(tmp_path, record("camvid", "cps", "method", "cps", 46, 0, 40.0, last_miou="high"))
    with pytest.raises(SemisegError) as error:
        load_records([path])
    assert_one_line_naming(error, str(path), "'last_miou'")
    path = write_record(tmp_path, record("camvid", "cps", "method", "cps", 46, 0, 40.0, schema="other/1"))
    with pytest.raises(SemisegError) as error:
        load_records([path])
    assert_one_line_naming(error, str(path), "'schema'")


def test_no_records_and_a_missing_path_are_errors(tmp_path):
    with pytest.raises(SemisegError, match="no benchmark records"):
        load_records([tmp_path])
    with pytest.raises(SemisegError, match="not found"):
        load_records([tmp_path / "nowhere"])


def test_two_baselines_in_a_suite_are_an_error(tmp_path):
    runs = {"supervised": RUNS["supervised"], "supervised_b": RUNS["supervised"]}
    with pytest.raises(SemisegError, match="2 cells with role 'baseline'"):
        render_tables(load_records([write_suite(tmp_path, runs=runs)]))


def test_missing_matplotlib_is_a_one_line_error(results, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.raises(SemisegError) as error:
        write_report([results], tmp_path / "out")
    assert str(error.value) == ("the report's figures need matplotlib: pip install 'semiseg[report]' "
                                "(or pass --no-figures)")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------- figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_camvid(root: Path, stems) -> Path:
    """A CamVid-like root: val/<stem>.png RGB images, valannot/<stem>.png label maps (11 = void), val.txt."""
    labels = np.array([0, 1, 2, 11], dtype=np.uint8)  # the fake records' 3 classes
    rng = np.random.default_rng(0)
    (root / "val").mkdir(parents=True)
    (root / "valannot").mkdir()
    for stem in stems:
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(root / "val" / f"{stem}.png")
        Image.fromarray(rng.choice(labels, (12, 16))).save(root / "valannot" / f"{stem}.png")
    (root / "val.txt").write_text("".join(f"val/{stem}.png valannot/{stem}.png\n" for stem in stems))
    return root


def with_predictions(root: Path, names) -> None:
    """Give every record under `root` a prediction folder of palette PNGs `<name>.png` (as bench/results.py)."""
    rng = np.random.default_rng(1)
    for path in sorted(root.rglob("seed*.json")):
        data = json.loads(path.read_text())
        folder = path.with_suffix(".pred")
        for name in names:
            (folder / f"{name}.png").parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 3, (12, 16), dtype=np.uint8), mode="L").convert("P").save(
                folder / f"{name}.png")
        data["predictions"] = {"dir": folder.name, "images": list(names)}
        path.write_text(json.dumps(data))


def test_figures_are_small_deterministic_pngs(tmp_path):
    stems = ["0001TP_008550", "0016E5_07959"]
    names = ["val/0001TP_008550.png", "0016E5_07959"]  # a val-list path (what the benchmarks write) or a stem
    results = write_suite(tmp_path / "results")
    write_suite(results, suite="camvid_1_4", runs={"supervised": ("baseline", "supervised", 92, [50.0, 52.0]),
                                                   "fixmatch": ("method", "fixmatch", 92, [55.0, 56.0])})
    with_predictions(results, names)
    root = fake_camvid(tmp_path / "camvid", stems)

    written = write_report([results], tmp_path / "one", dataset_root=root)
    pictures = sorted(p.name for p in written if p.suffix == ".png")
    assert pictures == ["camvid_1_4_curves.png", "camvid_1_4_per_class.png", "camvid_1_4_predictions.png",
                        "camvid_curves.png", "camvid_fractions.png", "camvid_per_class.png",
                        "camvid_predictions.png"]
    for name in pictures:
        data = (tmp_path / "one" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) < 400_000, name
    page = (tmp_path / "one" / "camvid.md").read_text()
    for name in ("camvid_curves.png", "camvid_per_class.png", "camvid_predictions.png", "camvid_fractions.png"):
        assert f"({name})" in page

    write_report([results], tmp_path / "two", dataset_root=root)
    for name in pictures:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name

    # Without the dataset the grid has no input and ground-truth columns: a narrower picture.
    write_report([results], tmp_path / "bare")
    with Image.open(tmp_path / "one" / "camvid_predictions.png") as full, \
            Image.open(tmp_path / "bare" / "camvid_predictions.png") as bare:
        assert bare.width < full.width and bare.height == full.height


def test_val_images_are_found_through_the_list_or_the_camvid_layout(tmp_path):
    from semiseg.bench.report_figures import val_samples

    root = fake_camvid(tmp_path / "camvid", ["a", "b"])
    by_list = val_samples(root, ["val/a.png", "b"], "camvid", 3)
    (root / "val.txt").unlink()
    by_layout = val_samples(root, ["a", "b"], "camvid", 3)  # <root>/val/<name>.png, <root>/valannot/<name>.png
    for samples in (by_list, by_layout):
        assert [image.shape for image, _ in samples] == [(12, 16, 3)] * 2
        assert set(np.unique(samples[0][1])) <= {0, 1, 2, 255}  # CamVid's void 11 read as ignore
    assert val_samples(root, ["a", "missing"], "camvid", 3) is None
    assert val_samples(None, ["a"], "camvid", 3) is None


def test_selection_signals_are_read_and_drawn(tmp_path):
    from semiseg.bench.report_tables import load_records

    results = write_suite(tmp_path / "results", suite="synthetic",
                          runs={"supervised": ("baseline", "supervised", 24, [40.0, 42.0])})
    signals = [{"step": s, "loss": 1.0, "loss_st": 0.1, "accepted_own": s / 40, "accepted_cross": s / 80}
               for s in (1, 10, 20, 30)]
    for seed in (0, 1):
        data = record("synthetic", "rrn", "method", "rrn", 24, seed, 45.0)
        data["curve"]["train"] = signals
        write_record(results, data)
    rrn = [r for r in load_records([results]) if r.cell == "rrn"][0]
    assert set(rrn.signals) == {"accepted_cross", "accepted_own"}  # loss_st is not a fraction
    assert rrn.signals["accepted_own"] == ((1.0, 1 / 40), (10.0, 0.25), (20.0, 0.5), (30.0, 0.75))
    written = write_report([results], tmp_path / "out", figures=True)
    assert "synthetic_signals.png" in {p.name for p in written}
    assert "(synthetic_signals.png)" in (tmp_path / "out" / "synthetic.md").read_text()


def test_the_training_curve_keeps_every_logged_number(tmp_path):
    from semiseg.bench.results import read_curves

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"kind": "train", "step": 10, "loss": 2.0, "accepted_own": 0.5, "note": "x", "ok": true}\n'
                       '{"kind": "val", "step": 10, "miou": 40.0}\n{"kind": "tra')  # a torn last line
    curves = read_curves(metrics)
    assert curves["train"] == [{"step": 10, "loss": 2.0, "accepted_own": 0.5}]
    assert curves["eval"] == [{"step": 10, "miou": 40.0}]


def test_report_fills_the_marked_speed_table_of_each_readme(tmp_path, results):
    speed = results / "speed"
    speed.mkdir()
    (speed / "pascal.json").write_text(json.dumps(speed_record()))
    pages = [tmp_path / "a.md", tmp_path / "b.md"]
    pages[0].write_text("x\n<!-- report:speed/pascal:begin -->\nold\n<!-- report:speed/pascal:end -->\ny\n")
    pages[1].write_text("no markers\n")
    written = write_report([results], tmp_path / "out", readme=pages, figures=False)
    assert pages[0] in written and pages[1] not in written
    text = pages[0].read_text()
    assert "old" not in text and "| fixmatch | fp32 | 10.00 |" in text and text.startswith("x\n") and text.endswith("y\n")
