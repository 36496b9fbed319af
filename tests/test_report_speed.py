"""`report_speed`: the markdown table of a `bench speed` record, checked against values written by hand, and its
place in `semiseg report --readme` (docs/benchmarks.md: Report)."""

import json

import pytest

from semiseg.bench.report_speed import find_speed_records, speed_table, speed_tables
from semiseg.errors import SemisegError

GIB = 1024 ** 3


def summary(step, forward, backward, optimizer, original, sliding, peak_gib):
    rest = step - forward - backward - optimizer
    return {"step_s": step, "split": {"step_s": step, "forward_s": forward, "backward_s": backward,
                                      "optimizer_s": optimizer, "rest_s": rest,
                                      "non_network_fraction": rest / step},
            "eval_s_per_image": {"original": original, "sliding_window": sliding},
            "peak_rss_bytes": int(peak_gib * GIB)}


def record(against=True):
    this_fp32 = summary(10.0, 3.0, 6.5, 0.1, 0.5, 1.0, 4.0)
    other_fp32 = summary(12.5, 4.0, 8.0, 0.1, 0.6, 1.25, 5.0)
    cells = {
        "fixmatch/fp32": {"method": "fixmatch", "precision": "fp32",
                          "trees": {"this": {"summary": this_fp32}, "against": {"summary": other_fp32}},
                          "ratio": {"step_s": 0.8, "peak_rss_bytes": 0.8, "eval_original": 0.5 / 0.6,
                                    "eval_sliding_window": 0.8}},
        "u2pl/bf16": {"method": "u2pl", "precision": "bf16", "note": "no method 'u2pl' in the against tree",
                      "trees": {"this": {"summary": summary(4.0, 1.0, 2.0, 0.04, 0.25, 0.5, 2.5)}}, "ratio": None},
    }
    trees = {"this": {"commit": "a" * 40, "dirty": False}}
    if against:
        trees["against"] = {"commit": "8b782d0" + "0" * 33}
    else:
        for cell in cells.values():
            cell["trees"].pop("against", None)
    return {"schema": "semiseg.bench.speed/1", "machine": {"cpu": "Test CPU", "torch": "2.x"},
            "trees": trees, "protocol": {"threads": 2, "steps": 10, "warmup": 3, "repeats": 1},
            "command": "semiseg bench speed --setting pascal", "cells": cells}


def test_rows_hold_the_summary_values_and_the_ratios():
    lines = speed_table(record()).splitlines()
    assert lines[0].startswith("| method | precision | step (s) |") and "| 8b782d0 step (s) | step ratio |" in lines[0]
    # rest = 10 − 3 − 6.5 − 0.1 = 0.4 s, 4 % of the step; 4 GiB; the other tree's step 12.5 s, ratios 0.80x ...
    assert lines[2] == ("| fixmatch | fp32 | 10.00 | 3.00 | 6.50 | 0.100 | 0.40 | 4.0 % | 0.50 | 1.00 | 4.00 "
                        "| 12.50 | 0.80x | 0.80x | 0.83x | 0.80x |")
    # a method the other commit lacks: dashes on the other side
    assert lines[3] == "| u2pl | bf16 | 4.00 | 1.00 | 2.00 | 0.040 | 0.96 | 24.0 % | 0.25 | 0.50 | 2.50 | — | — | — | — | — |"
    assert lines[-1].startswith("`semiseg bench speed --setting pascal`: this tree aaaaaaa, against 8b782d0; Test CPU")


def test_without_against_there_are_no_ratio_columns():
    table = speed_table(record(against=False))
    assert "ratio" not in table and "against" not in table
    assert "| fixmatch | fp32 | 10.00 |" in table


def test_records_are_found_by_schema_and_keyed_by_path(tmp_path):
    folder = tmp_path / "results" / "speed" / "all"
    folder.mkdir(parents=True)
    (folder / "pascal.json").write_text(json.dumps(record()))
    (tmp_path / "results" / "speed" / "component_costs.json").write_text(json.dumps({"csl_speed": {}}))
    (folder / "seed0.json").write_text("not json")  # quality records are not read here
    assert [key for key, _, _ in find_speed_records([tmp_path / "results"])] == ["speed/all/pascal"]
    assert list(speed_tables([tmp_path / "results" / "speed"])) == ["speed/all/pascal"]
    with pytest.raises(SemisegError, match="not found"):
        find_speed_records([tmp_path / "nowhere"])
