"""Workshop preparation: everything slow happens before the session, not in the room.

    python -m cosuda.workshop prepare [--iterations N]   # before the workshop (~10 min on 2 cores)
    python -m cosuda.workshop check                         # in the room: is everything there?

`prepare` generates the synthetic benchmark, trains the shared source-only lesson model
(`runs/lessons/source-only`), writes its pseudo-labels (`runs/lessons/pseudo_labels`) and the
student versions of the notebooks (`student/`), and records how long each step took in
`runs/lessons/prepare.json`, with the total and the machine it ran on (CPU model, threads); it
prints them at the end. The lesson notebooks then load the cached model instead of training one,
so each in-room step takes minutes (see WORKSHOP.md for measured times).

`check` reports, each with its fix: the benchmark, the lesson model and the pseudo-labels
missing; `student/` missing or not written from the current `notebooks/` (students' own edits
do not count); a student version whose outputs or metadata show an exercise's expected answer
(`cosuda.exercises.student.student_answer_leaks`); and the `python3` kernel JupyterLab starts being unable to import cosuda (it runs
the kernel's Python with `-c "import ipykernel, cosuda"` in `student/`, as JupyterLab would).
Run it with the Python that runs JupyterLab (`.venv/bin/python`): a kernel spec whose command
is plain `python` means that Python, as for JupyterLab.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .config import REPO_ROOT
from .paths import RUNS_ROOT

LESSONS = RUNS_ROOT / "lessons"
SOURCE_RUN = LESSONS / "source-only"
PSEUDO_ROOT = LESSONS / "pseudo_labels"
STUDENT_DIR = REPO_ROOT / "student"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
KERNEL = "python3"


def prepare(iterations: int | None = None, progress: bool = True) -> dict:
    """Run every slow step once; returns {step: seconds} (also saved to prepare.json), plus
    "total" (seconds, all steps) and "machine" ({"cpu": CPU model, "threads": torch's threads}):
    how long prepare took on the machine it ran on.

    The lesson source-only model is the synthetic pipeline's stage 1 (`iterations` default:
    config.SYNTHETIC_STAGES["source_iterations"]), so that lesson 07's live run starts from the
    same kind of model as the committed grid."""
    from . import executors, jobs
    from .config import SYNTHETIC_STAGES
    from .exercises.student import write_student_versions
    from .provenance import machine
    from .synthetic import DEFAULT_ROOT, ensure

    iterations = iterations or SYNTHETIC_STAGES["source_iterations"]
    source = jobs.train_job("lessons/source-only", "synthetic-source-only", SOURCE_RUN,
                            {"iterations": iterations, "progress": progress})
    pseudo = jobs.pseudo_job("lessons/pseudo_labels", SOURCE_RUN, PSEUDO_ROOT)  # run after `source`, below
    timings: dict[str, object] = {}
    started = time.perf_counter()

    def step(name, fn):
        print(f"[prepare] {name} ...", flush=True)
        start = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"[prepare] {name}: {timings[name]} s", flush=True)

    def run(job):  # through the executors, in this process: a finished model is kept, a stopped one resumed
        if not executors.run([job], "inline", progress=False)[job.name].ok:
            raise RuntimeError(f"prepare: {job.name} failed (see the lines above)")

    step("generate the synthetic benchmark", lambda: ensure(DEFAULT_ROOT, progress=progress))
    step(f"train the source-only lesson model ({iterations} iterations)", lambda: run(source))
    step("pseudo-labels for the target train set", lambda: run(pseudo))
    step("student versions of the notebooks", lambda: write_student_versions(STUDENT_DIR, NOTEBOOKS_DIR))
    timings["total"] = round(time.perf_counter() - started, 1)
    timings["machine"] = machine()
    print(f"[prepare] total: {timings['total']} s on {timings['machine']['cpu']}, "
          f"{timings['machine']['threads']} threads", flush=True)
    LESSONS.mkdir(parents=True, exist_ok=True)
    (LESSONS / "prepare.json").write_text(json.dumps(timings, indent=2))
    return timings


def student_problems(student_dir: Path = STUDENT_DIR, notebooks_dir: Path = NOTEBOOKS_DIR) -> list[str]:
    """What is wrong with the student notebooks, with the fix (empty list: up to date and no
    exercise's answer in what they show)."""
    from .exercises.student import stale_student_versions, student_answer_leaks

    fix = ("run `python -m cosuda.exercises.student` (or `python -m cosuda.workshop prepare`); "
           f"it overwrites {student_dir.name}/, so do it before the students start")
    if not Path(student_dir).is_dir():
        return [f"student notebooks ({student_dir}) not written: {fix}"]
    stale = stale_student_versions(student_dir, notebooks_dir)
    if stale:
        names = ", ".join(Path(n).stem for n in stale)
        return [f"student notebooks ({student_dir}) out of date, not written from the current {Path(notebooks_dir).name}/ "
                f"({names}): {fix}"]
    return [f"a student notebook shows an exercise's answer: {leak}; change that lesson cell so that it does not "
            f"print the answer, then run `python -m cosuda.exercises.student`" for leak in student_answer_leaks(notebooks_dir)]


def kernel_command(name: str = KERNEL) -> tuple[list[str], dict]:
    """The argv and environment of the kernel `name` as JupyterLab starts it (jupyter_client
    replaces a plain `python` by the Python running Jupyter). Raises NoSuchKernel."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(name)
    argv = list(spec.argv)
    v = sys.version_info
    if argv and argv[0] in {"python", f"python{v.major}", f"python{v.major}.{v.minor}"}:
        argv[0] = sys.executable
    return argv, {**os.environ, **(spec.env or {})}


def kernel_problem(name: str = KERNEL, cwd: Path | None = None, timeout: float = 300) -> str | None:
    """Why the kernel `name` cannot import cosuda, with the fix; None when it can. Runs the kernel's
    Python in `cwd` (the student folder, where JupyterLab starts it; default: a temporary folder),
    not in the repository root, whose cosuda/ would be found even without an installed package."""
    from jupyter_client.kernelspec import NoSuchKernel

    fix = (f"install the project's kernel: `{sys.executable} -m ipykernel install --user --name {name}` "
           f"(and `{sys.executable} -m pip install -e {REPO_ROOT}` if cosuda is not installed in it)")
    try:
        argv, env = kernel_command(name)
    except NoSuchKernel:
        return f"JupyterLab has no kernel {name!r}: {fix}"
    if not argv:
        return f"the kernel {name!r} has an empty command: {fix}"
    with tempfile.TemporaryDirectory() as tmp:
        where = cwd or Path(tmp)
        try:
            run = subprocess.run([argv[0], "-c", "import ipykernel, cosuda"], cwd=where, env=env,
                                 capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.SubprocessError) as error:
            return f"the kernel {name!r} JupyterLab starts ({argv[0]}) does not run ({error}): {fix}"
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["exit status %d" % run.returncode])[-1]
        return f"the kernel {name!r} JupyterLab starts ({argv[0]}) cannot import cosuda ({last}): {fix}"
    return None


def check(student_dir: Path = STUDENT_DIR, notebooks_dir: Path = NOTEBOOKS_DIR, kernel: str | None = KERNEL) -> list[str]:
    """What is missing for the in-room steps, each with its fix (empty list: ready). kernel=None
    skips the kernel check."""
    from .synthetic import DEFAULT_ROOT, is_complete
    from .train import latest_checkpoint

    fix = "run `python -m cosuda.workshop prepare`"
    missing = []
    if not is_complete(DEFAULT_ROOT):
        missing.append(f"synthetic benchmark ({DEFAULT_ROOT}) missing: {fix}")
    if latest_checkpoint(SOURCE_RUN) is None:
        missing.append(f"source-only lesson model ({SOURCE_RUN}) missing: {fix}")
    if not (PSEUDO_ROOT / "thresholds.json").is_file():
        missing.append(f"pseudo-labels ({PSEUDO_ROOT}) missing: {fix}")
    missing += student_problems(student_dir, notebooks_dir)
    if kernel is not None:
        problem = kernel_problem(kernel, cwd=student_dir if Path(student_dir).is_dir() else None)
        if problem:
            missing.append(problem)
    return missing


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosuda.workshop", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="generate data, train and cache the lesson model and pseudo-labels")
    p.add_argument("--iterations", type=int, default=None,
                   help="the lesson source-only model (default: the synthetic stage 1, 1200)")
    sub.add_parser("check", help="report what is missing for the in-room steps (data, model, student notebooks, kernel)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        timings = prepare(args.iterations)
        print(json.dumps(timings, indent=2))
        return 0
    missing = check()
    if missing:
        print("not ready:\n" + "\n".join(f"  - {m}" for m in missing))
        return 1
    print("ready: benchmark, lesson model, pseudo-labels and up-to-date student notebooks are in place, "
          f"and the {KERNEL!r} kernel imports cosuda")
    return 0


if __name__ == "__main__":
    sys.exit(main())
