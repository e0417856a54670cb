"""Workshop preparation: everything slow happens before the session, not in the room.

    python -m cosuda.workshop prepare [--iterations 800]   # before the workshop (~10 min on 2 cores)
    python -m cosuda.workshop check                         # in the room: is everything there?

`prepare` generates the synthetic benchmark, trains the shared source-only lesson model
(`runs/lessons/source-only`), writes its pseudo-labels (`runs/lessons/pseudo_labels`) and the
student versions of the notebooks (`student/`), and records how long each step took in
`runs/lessons/prepare.json`. The lesson notebooks then load the cached model instead of
training one, so each in-room step takes minutes (see WORKSHOP.md for measured times).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from .config import REPO_ROOT

LESSONS = REPO_ROOT / "runs" / "lessons"
SOURCE_RUN = LESSONS / "source-only"
PSEUDO_ROOT = LESSONS / "pseudo_labels"


def prepare(iterations: int = 800, progress: bool = True) -> dict:
    """Run every slow step once; returns {step: seconds} (also saved to prepare.json)."""
    from .exercises.student import write_student_versions
    from .synthetic import DEFAULT_ROOT, ensure
    from .train import ensure_trained, make_pseudo_labels

    timings: dict[str, float] = {}

    def step(name, fn):
        print(f"[prepare] {name} ...", flush=True)
        start = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"[prepare] {name}: {timings[name]} s", flush=True)

    step("generate the synthetic benchmark", lambda: ensure(DEFAULT_ROOT, progress=progress))
    step(f"train the source-only lesson model ({iterations} iterations)",
         lambda: ensure_trained("synthetic-source-only", SOURCE_RUN,
                                {"iterations": iterations, "schedule_iterations": iterations}, progress=progress))
    step("pseudo-labels for the target train set",
         lambda: make_pseudo_labels(SOURCE_RUN, PSEUDO_ROOT, device="cpu", progress=progress))
    step("student versions of the notebooks", lambda: write_student_versions(REPO_ROOT / "student"))
    LESSONS.mkdir(parents=True, exist_ok=True)
    (LESSONS / "prepare.json").write_text(json.dumps(timings, indent=2))
    return timings


def check() -> list[str]:
    """What is missing for the in-room steps (empty list: ready)."""
    from .synthetic import DEFAULT_ROOT, MARKER
    from .train import latest_checkpoint

    missing = []
    if not (DEFAULT_ROOT / MARKER).is_file():
        missing.append(f"synthetic benchmark ({DEFAULT_ROOT})")
    if latest_checkpoint(SOURCE_RUN) is None:
        missing.append(f"source-only lesson model ({SOURCE_RUN})")
    if not (PSEUDO_ROOT / "thresholds.json").is_file():
        missing.append(f"pseudo-labels ({PSEUDO_ROOT})")
    return missing


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosuda.workshop", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="generate data, train and cache the lesson model and pseudo-labels")
    p.add_argument("--iterations", type=int, default=800)
    sub.add_parser("check", help="report what is missing for the in-room steps")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        timings = prepare(args.iterations)
        print(json.dumps(timings, indent=2))
        return 0
    missing = check()
    if missing:
        print("not ready, missing: " + "; ".join(missing) + ". Run `python -m cosuda.workshop prepare`.")
        return 1
    print("ready: benchmark, lesson model and pseudo-labels are in place")
    return 0


if __name__ == "__main__":
    sys.exit(main())
