"""How long the workshop takes, measured: `prepare` and a Run All of every student notebook,
idle and with other work beside it, recorded, and WORKSHOP.md's times
written from the records (never typed).

    python -m cosuda.workshop_times measure --label idle              # no other work at normal priority
    python -m cosuda.workshop_times measure --label loaded --load 2   # two busy processes beside it
    python -m cosuda.workshop_times write                              # WORKSHOP.md's times from the records

`measure` starts from nothing, as a teacher's fresh laptop would: `COSUDA_HOME` is an empty
folder, so `prepare` generates the benchmark, trains the lesson model and writes its pseudo-labels,
then each `student/NN_*.ipynb` is run top to bottom in a fresh `python3` kernel (JupyterLab's
Kernel → Restart and run all), in `student/`, with its default parameters. `--load N` keeps N
busy-looping processes running throughout (on a 2-core laptop, N = 2 gives a load average near
4: a browser, a video call and the notebook). The record, `docs/results/workshop/<label>.json`,
holds every time, the machine (CPU model, threads), the load average seen, the commit and the
date. `write` rewrites the tables of WORKSHOP.md between its `workshop-times` markers and the
"run time" cells of its schedule; tests/test_workshop_times.py fails when WORKSHOP.md and the
records disagree.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .config import REPO_ROOT

RECORDS = REPO_ROOT / "docs" / "results" / "workshop"
WORKSHOP_MD = REPO_ROOT / "WORKSHOP.md"
STUDENT_DIR = REPO_ROOT / "student"
LABELS = ("idle", "loaded")  # the two records WORKSHOP.md quotes, in its column order
BEGIN, END = "<!-- workshop-times: begin (python -m cosuda.workshop_times write) -->", "<!-- workshop-times: end -->"
NOTEBOOK_CELL = re.compile(r"`(\d\d_\w+)`")


# ==========================================================================================
# Measuring
# ==========================================================================================
def run_all(notebook: Path, cwd: Path, timeout: float = 3600, kernel: str = "python3") -> dict:
    """Run `notebook` top to bottom in a fresh kernel, as JupyterLab's "Restart and run all" does
    (the notebook file is not changed). Returns {"seconds": wall time from kernel start to the
    last cell, "error": None or the first line of the failing cell's error, "cells": code cells}."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel, timeout=timeout, resources={"metadata": {"path": str(cwd)}})
    error = None
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as failure:
        lines = [line for line in str(failure).splitlines() if line.strip()]
        error = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "error")
    except Exception as failure:  # a dead kernel, a timeout: the lesson did not finish
        error = f"{type(failure).__name__}: {failure}".splitlines()[0]
    return {"seconds": round(time.perf_counter() - start, 1), "error": error,
            "cells": sum(cell.cell_type == "code" for cell in nb.cells)}


class Load:
    """`processes` busy loops beside the measurement, and the 1-minute load average sampled every
    `every` seconds while they run (context manager; with 0 processes it only samples)."""

    def __init__(self, processes: int = 0, every: float = 5.0):
        self.processes, self.every = processes, every
        self.samples: list[float] = []
        self._children: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> "Load":
        self._children = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.processes)]
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for child in self._children:
            child.kill()
            child.wait()

    def summary(self) -> dict:
        s = self.samples
        return {"busy_processes": self.processes, "loadavg_1min_mean": round(sum(s) / len(s), 2) if s else None,
                "loadavg_1min_max": round(max(s), 2) if s else None, "samples": len(s)}


def measure(label: str, load: int = 0, home: Path | None = None, lessons: list[str] | None = None,
            out_dir: Path = RECORDS, timeout: float = 3600, note: str = "") -> dict:
    """Time `prepare` from an empty COSUDA_HOME, then a Run All of each student notebook (all of
    them, or the stems in `lessons`), with `load` busy processes beside them; writes and returns
    the record (out_dir/<label>.json)."""
    from .provenance import git_state, machine

    keep = home is not None
    home = Path(home or tempfile.mkdtemp(prefix="cosuda-workshop-"))
    env = {**os.environ, "COSUDA_HOME": str(home), "COSUDA_TEXT_PROGRESS": "1"}
    env.pop("OMP_WAIT_POLICY", None)  # as on a student's laptop: the package sets its own default
    commit, dirty = git_state()
    record: dict = {"label": label, "date": datetime.date.today().isoformat(), "machine": machine(),
                    "commit": commit, "dirty": dirty, "home_was_empty": not any(home.iterdir())}
    if note:
        record["note"] = note  # what else ran, in words: the load average alone does not say
    with Load(load) as busy:
        print(f"[workshop_times] prepare in {home} ...", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cosuda.workshop", "prepare"], env=env, cwd=REPO_ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"prepare failed (exit status {done.returncode}); see its output above")
        prepare = json.loads((home / "runs" / "lessons" / "prepare.json").read_text())
        prepare["wall"] = round(time.perf_counter() - start, 1)  # with the interpreter's start
        record["prepare"] = prepare
        record["lesson_model"] = lesson_model_facts(home / "runs" / "lessons" / "source-only")
        saved = dict(os.environ)  # the kernels nbclient starts inherit this process's environment
        os.environ.clear()
        os.environ.update(env)
        try:
            record["lessons"] = {}
            stems = lessons or sorted(p.stem for p in STUDENT_DIR.glob("[0-9][0-9]_*.ipynb"))
            for stem in stems:
                print(f"[workshop_times] Run All {stem} ...", flush=True)
                record["lessons"][stem] = run_all(STUDENT_DIR / f"{stem}.ipynb", STUDENT_DIR, timeout=timeout)
                print(f"[workshop_times] {stem}: {record['lessons'][stem]}", flush=True)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    record["load"] = busy.summary()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{label}.json").write_text(json.dumps(record, indent=2) + "\n")
    if not keep:
        shutil.rmtree(home, ignore_errors=True)
    return record


def lesson_model_facts(run: Path) -> dict:
    """What WORKSHOP.md says of the lesson model: its iterations, target-val mIoU19, checkpoint size."""
    metrics = json.loads((run / "metrics.json").read_text())
    checkpoints = sorted((run / "checkpoints").glob("*.pt"))
    return {"iterations": metrics.get("iteration"), "miou19": metrics.get("miou19"),
            "checkpoint_mb": round(checkpoints[-1].stat().st_size / 2**20) if checkpoints else None}


# ==========================================================================================
# Writing WORKSHOP.md's times from the records
# ==========================================================================================
def load_records(records: Path = RECORDS) -> dict[str, dict]:
    """{label: record} for LABELS; a missing record is an error naming the command that makes it."""
    out = {}
    for label in LABELS:
        path = Path(records) / f"{label}.json"
        if not path.is_file():
            load = " --load 2" if label == "loaded" else ""
            raise FileNotFoundError(f"{path} missing: run `python -m cosuda.workshop_times measure --label {label}{load}`")
        out[label] = json.loads(path.read_text())
    return out


def fmt_seconds(seconds: float) -> str:
    """42 s below 90 s, else minutes with one decimal (7.4 min)."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def run_time_cell(records: dict[str, dict], stems: list[str]) -> str:
    """The schedule's "run time" cell for the notebooks `stems`: idle / loaded."""
    parts = []
    for label in LABELS:
        lessons = records[label]["lessons"]
        missing = [s for s in stems if s not in lessons]
        if missing:
            raise KeyError(f"the {label!r} record has no Run All of {', '.join(missing)}: "
                           f"run `python -m cosuda.workshop_times measure --label {label}`")
        seconds = [lessons[s]["seconds"] for s in stems]
        stopped = " (stopped with an error)" if any(lessons[s].get("error") for s in stems) else ""
        parts.append((fmt_seconds(seconds[0]) if len(seconds) == 1 else
                      f"{fmt_seconds(min(seconds))}–{fmt_seconds(max(seconds))} each") + stopped)
    return " / ".join(parts)


def times_block(records: dict[str, dict]) -> str:
    """The markdown between the markers: where and how it was measured, the prepare steps and the
    whole Run All of every lesson, idle and loaded."""
    idle, loaded = records["idle"], records["loaded"]
    m = idle["machine"]
    model = idle["lesson_model"]
    lines = [BEGIN,
             f"Measured with `python -m cosuda.workshop_times measure` on {m['cpu']}, {m['threads']} threads: "
             f"**idle** ({idle['date']}, commit {str(idle['commit'])[:7]}, mean load average "
             f"{idle['load']['loadavg_1min_mean']}) and **with other load** ({loaded['date']}, commit "
             f"{str(loaded['commit'])[:7]}, {loaded['load']['busy_processes']} busy processes beside it, mean load "
             f"average {loaded['load']['loadavg_1min_mean']}); the records are in `docs/results/workshop/`. Every "
             f"step ran from an empty `COSUDA_HOME`. The lesson model: {model['iterations']:,} iterations, "
             f"{model['miou19']:.1f} mIoU19 on target val, {model['checkpoint_mb']} MB per checkpoint."
             + "".join(f" {label.capitalize()}: {r['note']}" for label, r in records.items() if r.get("note")), "",
             "| prepare step | idle | with other load |", "|---|---|---|"]
    for step, seconds in idle["prepare"].items():
        if step in {"total", "machine", "wall"}:
            continue
        lines.append(f"| {step} | {fmt_seconds(seconds)} | {fmt_seconds(loaded['prepare'][step])} |")
    lines.append(f"| **whole `prepare`** | **{fmt_seconds(idle['prepare']['total'])}** | "
                 f"**{fmt_seconds(loaded['prepare']['total'])}** |")
    per_iteration = [r["prepare"][_train_step(r)] / r["lesson_model"]["iterations"] for r in (idle, loaded)]
    lines += ["", f"Training runs at {per_iteration[0]:.2f} s per iteration idle and {per_iteration[1]:.2f} s "
                  f"loaded: 100 iterations take {fmt_seconds(100 * per_iteration[0])} / {fmt_seconds(100 * per_iteration[1])}.",
              "", "| lesson (student version, Run All) | idle | with other load |", "|---|---|---|"]
    for stem in sorted(set(idle["lessons"]) | set(loaded["lessons"])):
        lines.append(f"| `{stem}` | {_lesson_cell(idle, stem)} | {_lesson_cell(loaded, stem)} |")
    lines.append(END)
    return "\n".join(lines)


def _lesson_cell(record: dict, stem: str) -> str:
    lesson = record["lessons"].get(stem)
    if lesson is None:
        return "not measured"
    return fmt_seconds(lesson["seconds"]) + (f" (stopped: {lesson['error']})" if lesson.get("error") else "")


def _train_step(record: dict) -> str:
    steps = [s for s in record["prepare"] if s.startswith("train the source-only")]
    if len(steps) != 1:
        raise KeyError("the record's prepare has no 'train the source-only ...' step")
    return steps[0]


def render(markdown: str, records: dict[str, dict]) -> str:
    """WORKSHOP.md with its times written from `records`: the block between the markers, and the
    "run time" column of every table row whose notebook column names lessons (`NN_name`)."""
    if BEGIN not in markdown or END not in markdown:
        raise ValueError(f"WORKSHOP.md has no {BEGIN} ... {END} block: add the two markers where the times go")
    head, rest = markdown.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    markdown = head + times_block(records) + tail
    out, column = [], None
    for line in markdown.split("\n"):
        cells = line.split("|")
        if line.startswith("|") and "run time" in line and column is None:
            column = [c.strip() for c in cells].index(next(c.strip() for c in cells if "run time" in c))
            cells[column] = " run time (idle / loaded) "
        elif line.startswith("|") and column is not None and len(cells) > column + 1:
            stems = NOTEBOOK_CELL.findall(cells[column - 1])
            if stems:
                cells[column] = f" {run_time_cell(records, stems)} "
        elif not line.startswith("|"):
            column = None
        out.append("|".join(cells))
    return "\n".join(out)


def write(path: Path = WORKSHOP_MD, records: Path = RECORDS) -> bool:
    """Rewrite WORKSHOP.md's times from the records; True if it changed."""
    text = Path(path).read_text()
    new = render(text, load_records(records))
    Path(path).write_text(new)
    return new != text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosuda.workshop_times", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("measure", help="time prepare and a Run All of every student notebook, from an empty COSUDA_HOME")
    p.add_argument("--label", required=True, help=f"the record's name ({' or '.join(LABELS)} are quoted by WORKSHOP.md)")
    p.add_argument("--load", type=int, default=0, help="busy processes beside the measurement (default 0)")
    p.add_argument("--home", type=Path, default=None, help="an empty COSUDA_HOME to use and keep (default: a temporary one)")
    p.add_argument("--lessons", nargs="*", default=None, help="only these notebook stems (default: all)")
    p.add_argument("--note", default="", help="what else ran on the machine, quoted beside the times")
    sub.add_parser("write", help="rewrite WORKSHOP.md's times from docs/results/workshop/")
    args = parser.parse_args(argv)
    if args.command == "measure":
        if args.home is not None and args.home.exists() and any(args.home.iterdir()):
            parser.error(f"--home {args.home} is not empty: the times are from nothing; give an empty or new folder")
        if args.home is not None:
            args.home.mkdir(parents=True, exist_ok=True)
        record = measure(args.label, args.load, args.home, args.lessons, note=args.note)
        print(json.dumps({k: record[k] for k in ("prepare", "lessons", "load")}, indent=2))
        return 0
    changed = write()
    print(f"WORKSHOP.md {'updated' if changed else 'already up to date'} from {RECORDS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
