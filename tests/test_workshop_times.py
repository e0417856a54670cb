"""WORKSHOP.md's times are written from the committed records of `python -m cosuda.workshop_times
measure` (docs/results/workshop/), never typed; the measuring pieces time a Run All and keep a
load beside it."""
import copy
import json
from pathlib import Path

import nbformat
import pytest

from cosuda import workshop_times as wt

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
STEMS = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def fake_records(seconds=30.0):
    def record(label, busy, scale):
        return {"label": label, "date": "2026-12-06", "commit": "abcdef1234", "machine": {"cpu": "Some CPU", "threads": 2},
                "load": {"busy_processes": busy, "loadavg_1min_mean": 1.0 + busy, "loadavg_1min_max": 2.0 + busy, "samples": 9},
                "prepare": {"generate the synthetic benchmark": 30.0 * scale,
                            "train the source-only lesson model (1200 iterations)": 440.0 * scale,
                            "pseudo-labels for the target train set": 70.0 * scale,
                            "student versions of the notebooks": 1.0, "total": 541.0 * scale,
                            "machine": {"cpu": "Some CPU", "threads": 2}},
                "lesson_model": {"iterations": 1200, "miou19": 28.34, "checkpoint_mb": 38},
                "lessons": {s: {"seconds": seconds * scale, "error": None, "cells": 10} for s in STEMS}}
    return {"idle": record("idle", 0, 1.0), "loaded": record("loaded", 2, 2.0)}


def test_workshop_md_quotes_the_committed_records():
    text = wt.WORKSHOP_MD.read_text()
    assert wt.render(text, wt.load_records()) == text, (
        "WORKSHOP.md's times differ from docs/results/workshop/: run `python -m cosuda.workshop_times write`")


@pytest.mark.parametrize("label", wt.LABELS)
def test_records_cover_prepare_and_every_lesson_without_error(label):
    record = wt.load_records()[label]
    assert record["machine"]["cpu"] and record["machine"]["threads"] >= 1
    assert record["home_was_empty"], "the times must be from an empty COSUDA_HOME"
    assert set(record["lessons"]) == set(STEMS), "a Run All of every lesson"
    failed = {s: r["error"] for s, r in record["lessons"].items() if r["error"]}
    assert not failed, f"lessons that stopped with an error in the {label} measurement: {failed}"
    assert record["prepare"]["total"] >= sum(v for k, v in record["prepare"].items()
                                             if k not in {"total", "machine", "wall"}) - 1
    assert (record["load"]["busy_processes"] > 0) == (label == "loaded")


def test_render_rewrites_a_typed_time_and_fills_the_block():
    records = fake_records()
    text = wt.WORKSHOP_MD.read_text()
    fresh = wt.render(text, records)
    assert "| `01_datasets` | 30 s | 60 s |" in fresh and "**9.0 min**" in fresh and "**18.0 min**" in fresh
    row = next(line for line in fresh.splitlines() if "`07_adapt`" in line and line.count("|") > 5)
    assert "| 30 s / 60 s |" in row
    typed = fresh.replace(row, row.replace("| 30 s / 60 s |", "| about 1–2 min |"))
    assert typed != fresh and wt.render(typed, records) == fresh
    wrap_up = next(line for line in fresh.splitlines() if "`08_ablations`, `10_adversarial`" in line)
    assert "30 s–30 s each / 60 s–60 s each" in wrap_up


def test_render_names_what_is_missing():
    records = fake_records()
    del records["loaded"]["lessons"]["07_adapt"]
    with pytest.raises(KeyError, match="07_adapt.*workshop_times measure --label loaded"):
        wt.render(wt.WORKSHOP_MD.read_text(), records)
    with pytest.raises(ValueError, match="markers"):
        wt.render("# no block here\n", fake_records())
    with pytest.raises(FileNotFoundError, match="measure --label idle"):
        wt.load_records(Path("/nonexistent/records"))


def test_an_error_in_a_lesson_shows_in_the_schedule():
    records = fake_records()
    records["idle"]["lessons"]["07_adapt"]["error"] = "ValueError: boom"
    fresh = wt.render(wt.WORKSHOP_MD.read_text(), records)
    assert "30 s (stopped with an error) / 60 s" in fresh
    assert "| `07_adapt` | 30 s (stopped: ValueError: boom) | 60 s |" in fresh


def test_fmt_seconds():
    assert [wt.fmt_seconds(s) for s in (4.2, 89.4, 90, 442)] == ["4 s", "89 s", "1.5 min", "7.4 min"]


def test_run_all_times_a_notebook_and_reports_its_error(tmp_path):
    def notebook(name, *sources):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = tmp_path / name
        nbformat.write(nb, path)
        return path

    good = wt.run_all(notebook("good.ipynb", "import time; time.sleep(0.2)", "x = 1"), tmp_path)
    assert good["error"] is None and good["cells"] == 2 and good["seconds"] >= 0.2
    bad = wt.run_all(notebook("bad.ipynb", "x = 1", "raise ValueError('boom')", "y = 2"), tmp_path)
    assert "ValueError" in bad["error"] and "boom" in bad["error"]
    assert nbformat.read(tmp_path / "bad.ipynb", as_version=4).cells[1].outputs == [], "the file is not changed"


def test_load_keeps_busy_processes_and_stops_them():
    with wt.Load(1, every=0.05) as load:
        import time
        time.sleep(0.4)
        children = list(load._children)
        assert all(c.poll() is None for c in children)
    assert all(c.poll() is not None for c in children), "the busy processes end with the measurement"
    summary = load.summary()
    assert summary["busy_processes"] == 1 and summary["samples"] >= 2 and summary["loadavg_1min_mean"] >= 0


def test_measure_refuses_a_home_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "something").write_text("x")
    with pytest.raises(SystemExit):
        wt.main(["measure", "--label", "x", "--home", str(tmp_path)])
    assert "not empty" in capsys.readouterr().err
