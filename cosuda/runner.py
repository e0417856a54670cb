"""Batch execution of notebooks and training runs, on one machine, its GPUs or a Slurm cluster,
and the results tables.

    python -m cosuda.runner main                       # the README's main job (synthetic)
    python -m cosuda.runner reproduce --seeds 0 1 2    # Table 4-style grid on the synthetic benchmark
    python -m cosuda.runner reproduce --preset-prefix gta5-deeplabv2 --data-root /data --engine train \\
        --executor gpus                                # the real experiments, one run per free GPU
    python -m cosuda.runner reproduce ... --executor slurm --slurm partition=gpu time=24:00:00
    python -m cosuda.runner table runs/reproduce       # rebuild the table from finished runs

A job is a paired notebook executed by papermill with parameters (`--engine notebook`: into
`<out>/<job>/notebook.ipynb`) or a command, normally `python -m cosuda.train ... --resume auto`
(`--engine train`, `train_job`). Either way its output goes to `<out>/<job>/log.txt` as it comes
(`tail -f` it), a status line every 30 s gives its iteration and last mIoU, and the run writes
`metrics.json`. A failed job is reported with its error and its log's last lines, and the other
jobs go on.

Executors: `local` (one after the other, or `--parallel N` CPU processes), `gpus` (a queue of
free GPUs: one run per GPU, the next run starts on the GPU that finished), `slurm` (one Slurm
job per run through submitit, with `--slurm KEY=VALUE` options; a preempted or timed-out job is
requeued and its run resumes from its newest checkpoint) and `submitit-local` (the same through
submitit's local executor, for tests).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import REPO_ROOT
from .grid import ROW_ORDER
from .paths import HOME, PACKAGE_DIR, RUNS_ROOT, resolve_path

NOTEBOOKS = REPO_ROOT / "notebooks"
LOG_TAIL_LINES = 20      # the lines of a failed job's log that are printed
STOP_GRACE_S = 90.0      # a stopped job's run gets this long to write its checkpoint (SIGTERM, then SIGKILL)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every option's default and keeps the description's line breaks."""


@dataclass
class Job:
    """One job: `notebook` (a stem of notebooks/, e.g. "07_adapt", or the path of any py:percent
    notebook) executed with `parameters`, or, when `command` is given, that command (see
    `train_job`). `run_dir` is where its run writes metrics.json and scalars.jsonl (default: the
    notebook's `run_dir` parameter, else `<out>/<name>`)."""
    name: str
    notebook: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    command: list[str] | None = None
    run_dir: str | None = None

    def run_path(self, out_root: str | Path) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        if self.command is None and self.parameters.get("run_dir"):
            return Path(self.parameters["run_dir"])
        return Path(out_root) / self.name


@dataclass
class JobResult:
    name: str
    ok: bool
    seconds: float
    output: Path
    metrics: dict | None
    error: str | None = None
    log: Path | None = None
    log_tail: str = ""  # the log's last lines, for a failed job


def _set_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def train_job(name: str, preset: str, run_dir: str | Path, sets: dict[str, Any] | None = None,
              resume: bool | str = "auto", nproc_per_node: int = 1) -> Job:
    """A job that runs `python -m cosuda.train --preset PRESET --out RUN_DIR [--set K=V ...]
    --resume auto`: it starts the run, or continues it from its newest checkpoint when the job
    runs again (a requeued Slurm job, the same command run again after a crash). With
    `nproc_per_node` > 1 it runs under torchrun, one process per GPU."""
    cmd = [sys.executable, "-m"]
    if nproc_per_node > 1:
        cmd += ["torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}", "-m"]
    cmd += ["cosuda.train", "--preset", preset, "--out", str(run_dir)]
    for key, value in (sets or {}).items():
        cmd += ["--set", f"{key}={_set_value(value)}"]
    if resume:
        cmd += ["--resume"] + ([] if resume is True else [str(resume)])
    return Job(name, command=cmd, run_dir=str(run_dir))


def pseudo_labels_job(name: str, source_run: str | Path, pseudo_root: str | Path, nproc_per_node: int = 1) -> Job:
    """A job that writes the pseudo-labels of the target train set with a finished source-only
    run's model: `python -m cosuda.train --pseudo-labels-from SOURCE_RUN --out PSEUDO_ROOT`."""
    cmd = [sys.executable, "-m"]
    if nproc_per_node > 1:
        cmd += ["torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}", "-m"]
    cmd += ["cosuda.train", "--pseudo-labels-from", str(source_run), "--out", str(pseudo_root)]
    return Job(name, command=cmd)


def _watch(run_dir: Path, name: str, stop: threading.Event, every: float) -> None:
    """Print the job's training progress (from its scalars.jsonl / metrics.json) every `every` s."""
    start = time.perf_counter()
    while not stop.wait(every):
        line = f"[runner] {name}: running ({time.perf_counter() - start:.0f} s)"
        scalars = run_dir / "scalars.jsonl"
        if scalars.is_file():
            rows = scalars.read_text().strip().splitlines()
            if rows:
                try:
                    last = json.loads(rows[-1])
                    line += f", iteration {last['iteration']}"
                    if last.get("it_per_s"):
                        line += f" at {last['it_per_s']:.1f} it/s"
                except (json.JSONDecodeError, KeyError):  # a line being written
                    pass
        metrics_path = run_dir / "metrics.json"
        if metrics_path.is_file():
            try:
                m = json.loads(metrics_path.read_text())
                if m.get("miou19") is not None:
                    line += f", mIoU19 {m['miou19']:.2f} at iteration {m['iteration']}"
            except json.JSONDecodeError:  # being replaced at this moment
                pass
        print(line, flush=True)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file ('' if there is none); progress-bar redraws
    (carriage returns) count as the line they end on."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    rows = [r.rstrip("\r").rsplit("\r", 1)[-1] for r in text.split("\n")]
    rows = [r for r in rows if r.strip()]
    return "\n".join(rows[-lines:])


def _read_metrics(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def _finish(job: Job, out_root: Path, ok: bool, start: float, error: str | None, progress: bool) -> JobResult:
    job_dir = out_root / job.name
    log_path = job_dir / "log.txt"
    output = log_path if job.command is not None else job_dir / "notebook.ipynb"
    metrics = _read_metrics(job.run_path(out_root))
    tail = "" if ok else log_tail(log_path)
    result = JobResult(job.name, ok, time.perf_counter() - start, output, metrics, error, log_path, tail)
    if progress:
        _report(result)
    return result


def _report(result: JobResult) -> None:
    """One line for a job that ended; a failed one also shows its log's last lines."""
    metrics = result.metrics
    miou = f", mIoU19 {metrics['miou19']:.2f}" if metrics and metrics.get("miou19") is not None else ""
    if result.ok:
        print(f"[runner] {result.name}: ok in {result.seconds:.0f} s{miou}", flush=True)
        return
    where = f"; see {result.log}" if result.log else ""
    if result.output and result.output != result.log:
        where += f" and {result.output}"
    text = f"[runner] {result.name}: FAILED ({result.error}) after {result.seconds:.0f} s{where}"
    if result.log_tail:
        text += f"\n[runner] the last lines of {result.log}:\n" + \
            "\n".join("    " + line for line in result.log_tail.splitlines())
    print(text, file=sys.stderr, flush=True)


# --- child processes -----------------------------------------------------------------------
_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()
_STOPPING = threading.Event()  # set while the runner stops its jobs: no new one starts


def _child_env(env: dict | None) -> dict:
    """The environment of a job's process: this one's, cosuda importable from where it is
    (a clone need not be installed), text progress bars, and `env` on top."""
    pythonpath = os.pathsep.join(filter(None, [*_clone_path(), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {}), "TQDM_MININTERVAL": "10",
            "COSUDA_TEXT_PROGRESS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}


def _clone_path() -> list[str]:
    """[the checkout] when cosuda runs from a clone (its children import the same cosuda without
    an install), [] for an installed package (site-packages never goes on PYTHONPATH)."""
    clone = PACKAGE_DIR.parent
    return [str(clone)] if (clone / "pyproject.toml").is_file() and "site-packages" not in clone.parts else []


def _run_child(cmd: list[str], env: dict, log, grace: float = STOP_GRACE_S) -> int:
    """Run `cmd` in its own session (a terminal's Ctrl-C or a scheduler's signal to this process
    group does not reach it at once); if this process is interrupted while it runs (Ctrl-C,
    submitit's preemption handler), the child gets one SIGTERM -- the training loop then writes a
    checkpoint after its step -- and `grace` seconds before it is killed."""
    with _CHILDREN_LOCK:
        if _STOPPING.is_set():
            raise RuntimeError("the runner is stopping: job not started")
        proc = subprocess.Popen(cmd, stdout=log, stderr=None if log is None else subprocess.STDOUT, env=env,
                                start_new_session=True)
        _CHILDREN.add(proc)
    try:
        return proc.wait()
    except BaseException:
        _stop_child(proc, grace)
        raise
    finally:
        with _CHILDREN_LOCK:
            _CHILDREN.discard(proc)


def _stop_child(proc: subprocess.Popen, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM to the child itself only (torchrun forwards it to its workers, a notebook job to its
    kernel: a second signal would make the training stop without its checkpoint), then SIGKILL
    to its whole process group if it is still there after `grace` seconds."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()


def _stop_all_children(grace: float = STOP_GRACE_S) -> None:
    with _CHILDREN_LOCK:
        children = list(_CHILDREN)
    for proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in children:
        _stop_child(proc, max(0.0, deadline - time.monotonic()))


# --- executing one job ---------------------------------------------------------------------
def execute(job: Job, out_root: Path, env: dict | None = None, progress: bool = True,
            status_every: float = 30.0) -> JobResult:
    """Run one job into out_root/job.name/; never raises for a failing notebook or command.

    The job's own output (the notebook's prints, the training's progress) goes to
    out_root/job.name/log.txt as it comes (`tail -f` it); with `progress`, a line every
    `status_every` seconds gives its progress while it runs, and one line says how it ended (a
    failure with the log's last lines). A notebook runs in this process (`env` is set in
    os.environ meanwhile), a command in a child process with `env`.
    """
    out_root = Path(out_root)
    job_dir = out_root / job.name
    job_dir.mkdir(parents=True, exist_ok=True)
    if job.command is not None:
        return _execute_command(job, out_root, env, progress, status_every)
    import jupytext
    import papermill

    source = Path(job.notebook) if job.notebook.endswith(".py") else NOTEBOOKS / f"{job.notebook}.py"
    notebook = jupytext.read(source)
    declared = notebook_parameters(source)
    params = dict(job.parameters)
    if "run_dir" in declared:
        params.setdefault("run_dir", str(job_dir))
    unknown = sorted(set(params) - declared)
    if unknown:  # papermill would only warn, and the notebook would run with its defaults
        raise ValueError(f"{source.name} has no parameter {', '.join(unknown)} (its parameters: "
                         f"{', '.join(sorted(declared))})")
    output = job_dir / "notebook.ipynb"
    log_path = job_dir / "log.txt"
    start = time.perf_counter()
    error = None
    old_env = {}
    stop = threading.Event()
    run_dir = Path(params.get("run_dir", job_dir))
    watcher = threading.Thread(target=_watch, args=(run_dir, job.name, stop, status_every), daemon=True)
    try:
        for k, v in {"TQDM_MININTERVAL": "10", "COSUDA_TEXT_PROGRESS": "1", **(env or {})}.items():
            old_env[k] = os.environ.get(k)
            os.environ[k] = v
        if progress:
            watcher.start()
        with open(log_path, "a") as log, warnings.catch_warnings():
            log.write(f"[runner] {time.strftime('%Y-%m-%d %H:%M:%S')} {source} with {json.dumps(params)}\n")
            log.flush()
            # jupyter_client's notice that the kernel talks over local TCP, once per kernel
            warnings.filterwarnings("ignore", message=".*without encryption.*")
            papermill.execute_notebook(notebook, str(output), parameters=params, cwd=str(NOTEBOOKS),
                                       progress_bar=False, kernel_name="python3", language="python",
                                       log_output=False, stdout_file=log, stderr_file=log,
                                       # the kernel's own notice that it talks over local TCP
                                       extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except Exception as e:  # PapermillExecutionError carries the failing cell and traceback
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    finally:
        stop.set()
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return _finish(Job(job.name, job.notebook, params, None, str(run_dir)), out_root, error is None, start,
                   error, progress)


def _last_error_line(tail: str) -> str:
    """The process's own error ("error: ...", "ValueError: ..."), which torchrun's summary hides."""
    errors = [l.strip() for l in tail.splitlines() if re.match(r"\s*(error:|\w+(Error|Exception|Interrupt):)", l)]
    return errors[-1] if errors else ""


def _execute_command(job: Job, out_root: Path, env: dict | None, progress: bool, status_every: float) -> JobResult:
    log_path = out_root / job.name / "log.txt"
    start = time.perf_counter()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(job.run_path(out_root), job.name, stop, status_every),
                               daemon=True)
    if progress:
        watcher.start()
    try:
        with open(log_path, "a") as log:
            log.write(f"[runner] {time.strftime('%Y-%m-%d %H:%M:%S')} "
                      f"{' '.join(job.command)}\n")
            log.flush()
            code = _run_child(job.command, _child_env(env), log)
    except OSError as e:  # the command itself cannot start
        code, error = None, f"{type(e).__name__}: {e}"
    finally:
        stop.set()
    if code is not None:
        error = None if code == 0 else " ".join(filter(None, [f"exit status {code}",
                                                                _last_error_line(log_tail(log_path, 200))]))
    return _finish(job, out_root, code == 0, start, error, progress)


def _execute_isolated(job: Job, out_root: Path, env: dict | None = None, progress: bool = True) -> JobResult:
    """`execute` with `env` applying to this job only (several run at once): a command gets it
    directly, a notebook runs in a child Python whose kernel inherits it."""
    if job.command is not None:
        return execute(job, out_root, env, progress)
    out_root = Path(out_root)
    job_dir = out_root / job.name
    job_dir.mkdir(parents=True, exist_ok=True)
    result_path = job_dir / "runner_result.json"
    result_path.unlink(missing_ok=True)
    spec = json.dumps(asdict(job))
    code = "import sys; from cosuda.runner import _child_main; sys.exit(_child_main(*sys.argv[1:]))"
    start = time.perf_counter()
    # the child's own lines (status, a crash outside the notebook) go where this process's go
    returncode = _run_child([sys.executable, "-c", code, spec, str(out_root), str(result_path),
                             "1" if progress else "0"], _child_env(env), None)
    if result_path.is_file():
        r = json.loads(result_path.read_text())
        return JobResult(r["name"], r["ok"], r["seconds"], Path(r["output"]), r["metrics"], r["error"],
                         Path(r["log"]) if r.get("log") else None, r.get("log_tail", ""))
    return _finish(job, out_root, False, start, f"the job's process ended with exit status {returncode}", progress)


def _child_main(spec: str, out_root: str, result_path: str, progress: str = "1") -> int:
    """The child Python of `_execute_isolated`: one notebook job, its result as JSON. A SIGTERM is
    passed on to the kernel (the training in it writes a checkpoint and stops), and the child
    waits for the notebook to end."""
    def forward(signum, frame):
        try:
            import psutil

            for child in psutil.Process().children():
                child.send_signal(signal.SIGTERM)
        except Exception:
            pass

    signal.signal(signal.SIGTERM, forward)
    job = Job(**json.loads(spec))
    start = time.perf_counter()
    try:
        result = execute(job, Path(out_root), progress=progress == "1")
    except Exception as e:  # a missing notebook, an unknown parameter
        result = _finish(job, Path(out_root), False, start, f"{type(e).__name__}: {e}", progress == "1")
    values = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
    Path(result_path).write_text(json.dumps(values))
    return 0 if result.ok else 1


def notebook_parameters(source: Path) -> set[str]:
    """The names in the `parameters` cell of the py:percent notebook `source`, as papermill parses them."""
    import tempfile

    import jupytext
    import papermill

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (Path(source).stem + ".ipynb")
        notebook = jupytext.read(source)
        # papermill infers the parameters' language from the kernel; a bare py:percent file names none
        notebook.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3",
                                                    "language": "python"})
        jupytext.write(notebook, path)
        return set(papermill.inspect_notebook(str(path)))


# --- executors -----------------------------------------------------------------------------
def run_jobs(jobs: list[Job], out_root: Path, executor: str = "local", gpus: int | list | None = None,
             slurm: dict | None = None, parallel: int = 1, gpus_per_job: int = 1) -> list[JobResult]:
    """Execute `jobs` and return their results in the same order; a failing job never stops the
    others. Executors: "local" (`parallel` at a time, each process with cores / parallel threads),
    "gpus" (`gpus_per_job` GPUs per job from a queue of free GPUs: `gpus` ids, a count, or every
    visible one),
    "slurm" (one Slurm job per job through submitit, `slurm` its parameters, see
    `parse_slurm_options`) and "submitit-local" (submitit's local executor)."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    if executor == "local" and parallel <= 1:
        results = [execute(job, out_root) for job in jobs]
    elif executor == "local":
        # Small CPU runs scale better as several 1-thread processes than as one multi-threaded one.
        threads = str(max(1, (os.cpu_count() or 1) // parallel))
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        results = _in_threads(jobs, parallel, lambda job: _execute_isolated(job, out_root, env), out_root)
    elif executor == "gpus":
        results = run_on_gpus(jobs, out_root, gpus, gpus_per_job)
    elif executor in ("slurm", "submitit-local"):
        results = wait_submitit(submit(jobs, out_root, executor, slurm or {}), out_root)
    else:
        raise ValueError(f"unknown executor {executor!r}: choose local, gpus, slurm or submitit-local")
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"[runner] {len(failed)} of {len(results)} jobs failed:\n" +
              "\n".join(f"    {r.name}: {r.error} (log: {r.log})" for r in failed), file=sys.stderr, flush=True)
    return results


def _in_threads(jobs: list[Job], workers: int, run: Callable[[Job], JobResult], out_root: Path) -> list[JobResult]:
    """`run` over `jobs`, `workers` at a time, in submission order. Ctrl-C stops the running jobs
    (each writes its checkpoint) and starts no other."""
    def guarded(job: Job) -> JobResult:
        start = time.perf_counter()
        try:
            return run(job)
        except Exception as e:  # a job that cannot even start is that job's failure only
            return _finish(job, out_root, False, start, f"{type(e).__name__}: {e}", True)

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    futures = []
    try:  # submitting inside: a Ctrl-C while the first jobs already run must stop them too
        for job in jobs:
            futures.append(pool.submit(guarded, job))
        return [f.result() for f in futures]
    except BaseException:
        _STOPPING.set()
        for f in futures:
            f.cancel()
        _stop_all_children()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _STOPPING.clear()


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def visible_gpus(gpus: int | list | tuple | None = None) -> list[str]:
    """The GPU ids the gpus executor hands out: `gpus` as given (a list of ids), or the first
    `gpus` visible ones (an int), or every visible one: CUDA_VISIBLE_DEVICES' entries (indices or
    UUIDs) when it is set, else 0 .. device_count - 1."""
    if isinstance(gpus, (list, tuple)):
        return [str(g).strip() for g in gpus if str(g).strip()]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x.strip() for x in env.split(",") if x.strip()] if env is not None else \
        [str(i) for i in range(_gpu_count())]
    if gpus:
        if env is None and not ids:  # no CUDA here to count them: trust the number
            return [str(i) for i in range(gpus)]
        if gpus > len(ids):
            raise RuntimeError(f"--executor gpus: {gpus} GPUs asked for, {len(ids)} visible ({', '.join(ids) or 'none'})")
        ids = ids[:gpus]
    return ids


def run_on_gpus(jobs: list[Job], out_root: Path, gpus: int | list | None = None,
                gpus_per_job: int = 1) -> list[JobResult]:
    """One job per GPU (or per `gpus_per_job` GPUs, for torchrun jobs): a queue holds the free
    GPUs; a job takes its GPUs (CUDA_VISIBLE_DEVICES of its process) and gives them back when it
    ends, so the next job starts on the GPU that finished and no two jobs ever share one."""
    ids = visible_gpus(gpus)
    if not ids:
        raise RuntimeError("--executor gpus: no GPU visible (CUDA_VISIBLE_DEVICES / nvidia-smi)")
    if not 1 <= gpus_per_job <= len(ids):
        raise RuntimeError(f"--executor gpus: {gpus_per_job} GPUs per job, {len(ids)} visible")
    free: queue.Queue[str] = queue.Queue()
    for gpu in ids:
        free.put(gpu)
    taking = threading.Lock()  # a job takes all its GPUs at once: two half-served jobs never wait on each other
    print(f"[runner] {len(jobs)} jobs on {len(ids)} GPUs ({', '.join(ids)})"
          + (f", {gpus_per_job} per job" if gpus_per_job > 1 else ""), flush=True)

    def on_free_gpus(job: Job) -> JobResult:
        with taking:
            mine = [free.get() for _ in range(gpus_per_job)]
        try:
            print(f"[runner] {job.name}: starting on GPU {','.join(mine)}", flush=True)
            return _execute_isolated(job, out_root, {"CUDA_VISIBLE_DEVICES": ",".join(mine)})
        finally:
            for gpu in mine:
                free.put(gpu)

    return _in_threads(jobs, len(ids) // gpus_per_job, on_free_gpus, Path(out_root))


# --- Slurm through submitit ----------------------------------------------------------------
try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # no submitit: no slurm executor either (submit() says how to install it)
    class _Checkpointable:  # type: ignore[no-redef]
        pass


class RequeueableJob(_Checkpointable):
    """What each Slurm job runs: one runner job. A `submitit.helpers.Checkpointable`, so when
    Slurm preempts it or its time limit comes near (submitit's USR2), submitit requeues the same
    job; meanwhile the run gets a SIGTERM and writes its checkpoint, and the requeued job
    continues it (`--resume auto`; notebooks resume through `ensure_trained`)."""

    def __init__(self, job: Job, out_root: str | Path, env: dict | None = None):
        self.job, self.out_root, self.env = job, str(out_root), env

    def __call__(self) -> JobResult:
        return _execute_isolated(self.job, Path(self.out_root), self.env)

    def checkpoint(self, *args, **kwargs):
        import submitit

        print(f"[runner] {self.job.name}: preempted or near its time limit; requeued, it resumes from "
              "its newest checkpoint", flush=True)
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


SLURM_DEFAULTS = {"timeout_min": 24 * 60, "gpus_per_node": 1, "tasks_per_node": 1, "cpus_per_task": 16,
                  "slurm_signal_delay_s": 120}
# how often a job may reach its time limit and come back (preemptions do not count)
SLURM_MAX_TIMEOUTS = 20
_LOCAL_KEYS = ("timeout_min", "gpus_per_node", "visible_gpus", "tasks_per_node", "nodes", "signal_delay_s")


def _parse_scalar(value: str) -> Any:
    low = value.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse_time_minutes(value: str) -> int:
    """A Slurm time limit in minutes: "MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS"."""
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise ValueError(f"time={value!r} is no Slurm time (MM, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is None:
        if b is None:
            minutes, seconds = a, 0
        elif c is None:
            minutes, seconds = a, b
        else:
            minutes, seconds = a * 60 + b, c
    else:
        minutes, seconds = days * 1440 + a * 60 + (b or 0), c or 0
    return max(1, minutes + math.ceil(seconds / 60))


def parse_slurm_options(pairs: list[str]) -> dict[str, Any]:
    """`--slurm KEY=VALUE ...` as submitit parameters. KEY is one of submitit's shared keys
    (timeout_min, gpus_per_node, cpus_per_task, mem_gb, nodes, tasks_per_node, name), any
    parameter of its Slurm executor (partition, account, qos, constraint, exclude, comment, mem,
    gres, additional_parameters, setup, ..., with or without the `slurm_` prefix), `time` (a
    Slurm time, e.g. 48:00:00, as timeout_min) or `max_num_timeout` (how often a job may hit its
    time limit and be requeued). Values are ints, floats, true/false or text. Raises ValueError
    naming a malformed pair or an unknown key (with the known ones)."""
    try:
        from submitit.auto.auto import AutoExecutor
        from submitit.slurm.slurm import SlurmExecutor
    except ImportError:
        raise RuntimeError("--slurm needs submitit: pip install 'cosuda[cluster]' (or pip install submitit)") from None
    generic = AutoExecutor._valid_parameters()
    specific = SlurmExecutor._valid_parameters()
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not value.strip():
            raise ValueError(f"--slurm expects KEY=VALUE, got {pair!r}")
        if key == "time":
            out["timeout_min"] = parse_time_minutes(value)
        elif key == "max_num_timeout":
            out[key] = int(value)
        elif key == "job_name":
            out["name"] = value
        elif key in generic:
            out[key] = _parse_scalar(value)
        elif key.removeprefix("slurm_") in specific:
            out["slurm_" + key.removeprefix("slurm_")] = _parse_scalar(value)
        else:
            known = sorted(generic | specific | {"time", "max_num_timeout"})
            raise ValueError(f"--slurm: unknown key {key!r} (known: {', '.join(known)})")
    return out


def submit(jobs: list[Job], out_root: Path, executor: str = "slurm", slurm: dict | None = None) -> list[tuple]:
    """Submit each job as a `RequeueableJob` (executor "slurm", or "submitit-local" for tests);
    returns [(job, submitit job)]. submitit's own logs go to out_root/submitit/."""
    try:
        import submitit
    except ImportError:
        raise RuntimeError("the slurm executor needs submitit: pip install 'cosuda[cluster]' "
                           "(or pip install submitit)") from None
    out_root = Path(out_root)
    params = dict(slurm or {})
    max_timeouts = int(params.pop("max_num_timeout", SLURM_MAX_TIMEOUTS))
    folder = out_root / "submitit" / "%j"
    if executor == "submitit-local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=max_timeouts)
        local = {k.removeprefix("slurm_"): v for k, v in params.items() if k.removeprefix("slurm_") in _LOCAL_KEYS}
        ex.update_parameters(**{"timeout_min": SLURM_DEFAULTS["timeout_min"], **local})
    else:
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=max_timeouts)
        ex.update_parameters(**{**SLURM_DEFAULTS, **params})
    handles = []
    for job in jobs:
        if executor != "submitit-local" and "name" not in params:
            ex.update_parameters(name=f"cosuda-{job.name}")
        handle = ex.submit(RequeueableJob(job, out_root))
        print(f"[runner] {job.name}: submitted as job {handle.job_id}; log: {out_root / job.name / 'log.txt'}",
              flush=True)
        handles.append((job, handle))
    return handles


def wait_submitit(handles: list[tuple], out_root: Path) -> list[JobResult]:
    """The results of `submit`'s jobs, in order, each reported as it is collected; a job that
    crashed (node failure, time limit without requeue) is reported with its logs' last lines."""
    results = []
    for job, handle in handles:
        start = time.perf_counter()
        try:
            result = handle.result()
            _report(result)
        except Exception as e:
            result = _finish(job, Path(out_root), False, start, f"{type(e).__name__}: "
                             f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}", False)
            try:
                stderr = handle.paths.stderr
                extra = log_tail(stderr, 10)
                if extra:
                    result.log_tail = (result.log_tail + f"\n[submitit's {stderr}]\n" + extra).strip()
            except Exception:
                pass
            _report(result)
        results.append(result)
    return results


# --- one run on several processes -----------------------------------------------------------
def torchrun(preset: str, out: str | Path, nproc_per_node: int = 2, overrides: dict[str, Any] | None = None,
             threads_per_process: int | None = None, resume: bool | str = False, progress: bool = True) -> dict:
    """One training run on `nproc_per_node` processes, started from Python (a notebook, a script).

    Runs `python -m torch.distributed.run --standalone --nproc_per_node N -m cosuda.train --preset
    PRESET --out OUT [--set K=V ...] [--resume [auto]]`: one process per GPU, or per CPU process with the
    gloo backend where there is no GPU. The processes' output is shown as it comes and kept in
    OUT/torchrun.log. Returns OUT/metrics.json as a dict; raises RuntimeError with the log's last
    lines if the run fails.
    """
    out = resolve_path(out)  # absolute, or relative to cosuda's home (the clone), as for notebooks
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
           "-m", "cosuda.train", "--preset", preset, "--out", str(out)]
    for key, value in (overrides or {}).items():
        if isinstance(value, (tuple, list)):
            value = ",".join(str(v) for v in value)
        cmd += ["--set", f"{key}={value}"]
    if resume:  # True: --resume (a checkpoint must be there); "auto": if there is one
        cmd += ["--resume"] + ([] if resume is True else [str(resume)])
    env = dict(os.environ)
    if _clone_path():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [*_clone_path(), os.environ.get("PYTHONPATH")]))
    # CPU processes share the cores: without a limit each would start one thread per core
    threads = threads_per_process or max(1, (os.cpu_count() or 1) // nproc_per_node)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["OMP_NUM_THREADS"] = str(threads)
    log_path = out / "torchrun.log"
    with open(log_path, "w") as log, subprocess.Popen(cmd, cwd=HOME, env=env, stdout=subprocess.PIPE,
                                                       stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        log.write(" ".join(cmd) + "\n")
        try:
            for line in proc.stdout:
                log.write(line)
                if progress:
                    sys.stdout.write(line)
                    sys.stdout.flush()
        except KeyboardInterrupt:  # a stopped notebook cell stops the run too: torchrun passes the
            proc.terminate()       # signal on, the run checkpoints after its step, resume=True continues
            proc.wait()
            raise
    if proc.returncode != 0:
        lines = log_path.read_text().splitlines()
        # the processes' own errors, which torchrun's closing summary does not repeat
        errors = list(dict.fromkeys(l.strip() for l in lines if re.match(r"\s*(error:|\w+(Error|Exception):)", l)))
        tail = "\n".join(lines[-15:])
        raise RuntimeError(f"torchrun exited with status {proc.returncode}: {'; '.join(errors) or 'no error line'}"
                           f"\nthe last lines of {log_path}:\n{tail}")
    return json.loads((out / "metrics.json").read_text())


# --- results tables ------------------------------------------------------------------------
def collect(out_root: Path) -> dict[str, list[dict]]:
    """{run name without the seed suffix: [metrics of each seed]} from out_root/*/metrics.json
    of finished runs."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(Path(out_root).glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        if not metrics.get("finished", True):  # an interrupted run is not a result
            continue
        name = path.parent.name.rsplit("-seed", 1)[0]
        runs.setdefault(name, []).append(metrics)
    return runs


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def format_seeds(values: list[float | None]) -> str:
    """Mean ± sample std over seeds; the mean alone for one seed (a std of one value is no
    "± 0.00"), "—" for none."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return "—"
    mean, std = mean_std(present)
    return f"{mean:.2f}" if len(present) == 1 else f"{mean:.2f} ± {std:.2f}"


def paper_row(variant: str, source: str = "gta5", arch: str = "deeplabv2") -> str:
    """The paper's mean for the variant on that task and network (mIoU19 for GTA5, mIoU13 /
    mIoU16 for SYNTHIA with DeepLabV2 / FCN-8s), as text."""
    from .paper_results import paper_miou

    value = paper_miou(source, arch, variant)
    return "—" if value is None else f"{value:.2f}"


_TASK_NAMES = {"gta5": "GTA5", "synthia": "SYNTHIA"}
_ARCH_NAMES = {"deeplabv2": "DeepLabV2", "fcn8s": "FCN-8s"}
_BACKBONE_NAMES = {"resnet101": "ResNet-101", "resnet50": "ResNet-50", "resnet18": "ResNet-18", "vgg16": "VGG16",
                   "efficientnet_lite0": "EfficientNet-Lite0"}
_PAPER_NETWORKS = {"deeplabv2": "DeepLabV2-ResNet-101", "fcn8s": "FCN-8s-VGG16"}


def _prefix_of(preset: str) -> str:
    return "synthetic" if preset.startswith("synthetic") else "-".join(preset.split("-")[:2])


def table_context(out_root: Path, preset_prefix: str | None = None) -> dict:
    """What the runs under out_root are: task (source), network, synthetic or real data, and the
    paper's metric for that task (`paper_results.paper_metric`). From `preset_prefix` (e.g.
    "gta5-deeplabv2", "synthetic") or else the runs' own metrics.json / config.json."""
    from .paper_results import paper_metric

    configs = []
    for path in sorted(Path(out_root).glob("*/metrics.json")):
        try:
            metrics = json.loads(path.read_text())
            config = json.loads((path.parent / "config.json").read_text()) \
                if (path.parent / "config.json").is_file() else {}
        except json.JSONDecodeError:
            continue
        configs.append((metrics.get("preset") or "", config))
    if preset_prefix is None:
        prefixes = [_prefix_of(p) for p, _ in configs if p]
        preset_prefix = max(set(prefixes), key=prefixes.count) if prefixes else "synthetic"
    config = next((c for p, c in configs if c and (not p or _prefix_of(p) == preset_prefix)), {})
    synthetic = preset_prefix == "synthetic"
    if synthetic:
        source, arch = config.get("source", "gta5"), config.get("arch", "deeplabv2")
        backbone = config.get("backbone", "efficientnet_lite0")
    else:
        parts = preset_prefix.split("-")
        if len(parts) != 2 or parts[0] not in _TASK_NAMES or parts[1] not in _ARCH_NAMES:
            raise ValueError(f"unknown preset prefix {preset_prefix!r}: synthetic or "
                             "{gta5,synthia}-{deeplabv2,fcn8s}")
        source, arch = parts
        backbone = config.get("backbone") or {"deeplabv2": "resnet101", "fcn8s": "vgg16"}[arch]
    metric = paper_metric(source, arch)
    network = f"{_ARCH_NAMES.get(arch, arch)}-{_BACKBONE_NAMES.get(backbone, backbone)}"
    task = (f"{_TASK_NAMES.get(source, source)}-like → Cityscapes-like" if synthetic
            else f"{_TASK_NAMES.get(source, source)} → Cityscapes")
    return {"prefix": preset_prefix, "synthetic": synthetic, "source": source, "arch": arch, "network": network,
            "task": task, "metric": metric, "metric_name": metric.replace("miou", "mIoU"),
            "paper_network": _PAPER_NETWORKS.get(arch, arch)}


def results_table(out_root: Path, metric: str | None = None, preset_prefix: str | None = None) -> str:
    """Markdown: a line that says what the runs are (task, network, metric, synthetic or real
    data), then per variant the mean ± sample std over seeds of the paper's metric for that task
    (mIoU19 for GTA5; mIoU13 with DeepLabV2, mIoU16 with FCN-8s on SYNTHIA; `metric` overrides
    it), final and best snapshot, beside the paper's number for the same task and network."""
    ctx = table_context(out_root, preset_prefix)
    metric = metric or ctx["metric"]
    name = metric.replace("miou", "mIoU")
    runs = collect(out_root)
    paper = f"paper ({ctx['metric_name']}, {ctx['paper_network']})"
    if ctx["synthetic"]:
        title = (f"Synthetic benchmark ({ctx['task']}, {ctx['network']}; not the paper's data): {name} in % on "
                 f"the target val split, mean ± sample std over seeds. The paper's column is its real-data "
                 f"{_TASK_NAMES.get(ctx['source'])} → Cityscapes result with {ctx['paper_network']}.")
        label = f"synthetic {name}"
    else:
        title = (f"{ctx['task']}, {ctx['network']}: {name} in % on Cityscapes val, mean ± sample std over "
                 f"seeds, beside the paper's Tables 1 and 4 ({ctx['paper_network']}).")
        label = name
    lines = [title, "", f"| variant | seeds | {label}, final (mean ± std) | best snapshot | {paper} |",
             "|---|---|---|---|---|"]
    for variant in ROW_ORDER + sorted(set(runs) - set(ROW_ORDER)):
        if variant not in runs:
            continue
        final = format_seeds([m.get(metric) for m in runs[variant]])
        best = format_seeds([(m.get("best") or {}).get(metric) for m in runs[variant]])
        seeds = ",".join(str(m.get("seed")) for m in runs[variant])
        lines.append(f"| {variant} | {seeds} | {final} | {best} | {paper_row(variant, ctx['source'], ctx['arch'])} |")
    return "\n".join(lines)


def per_class_table(out_root: Path, preset_prefix: str | None = None) -> str:
    """Markdown: per-class IoU (%, final snapshot, mean over seeds) of each variant, laid out as
    the paper's Table 2 (GTA5: 19 classes) or Table 3 (SYNTHIA: 16 classes), with the paper's
    "Ours" row of that table and network underneath. '' when no run has per-class values."""
    from .labels import CLASS_NAMES
    from .paper_results import PAPER_RESULTS, TABLE2_COLUMNS, TABLE3_COLUMNS

    ctx = table_context(out_root, preset_prefix)
    runs = collect(out_root)
    table, columns = ("table2", TABLE2_COLUMNS) if ctx["source"] == "gta5" else ("table3", TABLE3_COLUMNS)
    rows = []
    for variant in ROW_ORDER + sorted(set(runs) - set(ROW_ORDER)):
        per_seed = [m["per_class_iou"] for m in runs.get(variant, []) if m.get("per_class_iou")]
        if not per_seed:
            continue
        cells = []
        for column in columns:
            i = CLASS_NAMES.index(column)
            values = [v[i] for v in per_seed if v[i] is not None and not math.isnan(v[i])]
            cells.append(f"{sum(values) / len(values):.1f}" if values else "—")
        means = [m.get(ctx["metric"]) for m in runs[variant] if m.get(ctx["metric"]) is not None]
        mean = f"{sum(means) / len(means):.1f}" if means else "—"
        rows.append(f"| {variant} ({len(per_seed)} seed{'s' if len(per_seed) > 1 else ''}) | " + " | ".join(cells)
                    + f" | {mean} |")
    if not rows:
        return ""
    paper = PAPER_RESULTS[table].get(ctx["arch"], {})
    paper_iou = paper.get("per_class_iou", {})
    paper_mean = paper.get("mIoU" if table == "table2" else ctx["metric_name"])
    cells = ["—" if paper_iou.get(c) is None or math.isnan(paper_iou[c]) else f"{paper_iou[c]:.1f}" for c in columns]
    mean = "—" if paper_mean is None or math.isnan(paper_mean) else f"{paper_mean:.1f}"
    data = "synthetic benchmark" if ctx["synthetic"] else "Cityscapes val"
    number = "2" if table == "table2" else "3"
    lines = [f"Per-class IoU in % ({ctx['task']}, {ctx['network']}, {data}, final snapshot, mean over seeds), "
             f"laid out as the paper's Table {number}; its last row is the paper's Ours ({ctx['paper_network']}, "
             "real data).", "",
             "| variant | " + " | ".join(columns) + f" | {ctx['metric_name']} |",
             "|---|" + "---|" * (len(columns) + 1), *rows,
             f"| paper: Ours | " + " | ".join(cells) + f" | {mean} |"]
    return "\n".join(lines)


# --- the pipelines -------------------------------------------------------------------------
def main_jobs(out_root: Path, data_root: Path, seed: int = 0, source_iterations: int | None = None,
              iterations: int | None = None, baseline: str = "stage1", pseudo_from: str = "source-only") -> list[Job]:
    """data figures -> source-only (stage 1) -> pseudo-labels -> Ours (eq. 12) from the stage-1
    model. `pseudo_from="ours11"` first trains Ours-(11) from the stage-1 model and makes the
    pseudo-labels with it (the grid's default; the paper follows BDL's adapted model), at the
    cost of one more adaptation run; `baseline="continued"` also trains the source-only model as
    long again, the equal-budget baseline. Lengths default to config.SYNTHETIC_STAGES."""
    from .config import SYNTHETIC_STAGES

    source_dir, pseudo_dir = out_root / "source-only", out_root / "pseudo_labels"
    stage1_its = source_iterations or SYNTHETIC_STAGES["source_iterations"]
    later_its = iterations or SYNTHETIC_STAGES["iterations"]
    # two evaluations per run (half-way and final): each costs ~12 s of the 15-minute budget
    stage1 = {"seed": seed, "data_root": str(data_root), "iterations": stage1_its,
              "eval_every": max(1, stage1_its // 2)}
    later = {"seed": seed, "data_root": str(data_root), "weights": str(source_dir), "compare_with": str(source_dir),
             "iterations": later_its, "eval_every": max(1, later_its // 2)}
    maker = source_dir if pseudo_from == "source-only" else out_root / pseudo_from
    jobs = [Job("datasets", "01_datasets", {"data_root": str(data_root)}),
            Job("source-only", "02_source_only", stage1)]
    if pseudo_from != "source-only":
        jobs.append(Job(pseudo_from, "07_adapt", {**later, "preset": f"synthetic-{pseudo_from}"}))
    jobs += [Job("pseudo-labels", "03_pseudo_labels", {"source_run": str(maker), "pseudo_root": str(pseudo_dir)}),
             Job("ours", "07_adapt", {**later, "preset": "synthetic-ours", "pseudo_root": str(pseudo_dir)})]
    if baseline == "continued":
        jobs.append(Job("source-only-continued", "07_adapt", {**later, "preset": "synthetic-source-only"}))
    return jobs


def _main_figure(results: list, path: Path) -> None:
    """The main job's runs on one time axis: stage 1, then each run trained from its model."""
    import matplotlib

    matplotlib.use("Agg")
    from . import plots

    done = {r.name: r.metrics for r in results if r.metrics is not None and r.metrics.get("history")}
    if "source-only" not in done:
        return
    offset = done["source-only"]["iteration"]
    runs = {"source-only (stage 1)": [done["source-only"]]}
    for name, metrics in done.items():
        if name != "source-only":
            shifted = dict(metrics, history=[dict(h, iteration=h["iteration"] + offset) for h in metrics["history"]])
            runs[f"{name} (from stage 1)"] = [shifted]
    fig = plots.miou_curves(runs)
    fig.axes[0].set_title("Main job on the synthetic benchmark (not the paper's data)")
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main_job(out_root: str | Path, seed: int = 0, data_seed: int = 0, source_iterations: int | None = None,
             iterations: int | None = None, baseline: str = "stage1", pseudo_from: str = "source-only",
             executor: str = "local", slurm: dict | None = None) -> dict:
    """The README's main job; writes and returns out_root/summary.json (see CONTRACT.md).

    The benchmark is generated with `data_seed`: the default one under data/synthetic for the
    default seed 0 (kept if already complete), otherwise under out_root/data, never over the
    default benchmark.
    """
    from .config import SYNTHETIC_ROOT
    from .synthetic import ensure

    # absolute from here on: the steps run elsewhere (papermill's kernel starts in notebooks/)
    out_root = resolve_path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data_root = SYNTHETIC_ROOT if data_seed == 0 else out_root / "data"
    print(f"[runner] benchmark (seed {data_seed}) in {data_root}", flush=True)
    t0 = time.perf_counter()
    ensure(data_root, seed=data_seed, progress=False)
    print(f"[runner] benchmark ready in {time.perf_counter() - t0:.0f} s", flush=True)
    # each job needs the one before it (stage 1 -> pseudo-labels -> Ours): one at a time, each on `executor`
    results = []
    steps = main_jobs(out_root, data_root, seed, source_iterations, iterations, baseline, pseudo_from)
    for k, job in enumerate(steps):
        results.append(run_jobs([job], out_root, executor, slurm=slurm)[0])
        if not results[-1].ok:  # the later steps need this one's output: stop, and say what did not run
            print(f"[runner] stopped after the failed step {job.name}; not run: "
                  f"{', '.join(j.name for j in steps[k + 1:]) or 'none'}", flush=True)
            break
    runs = {}
    for r in results:
        if r.metrics is not None and r.name != "datasets":
            runs[r.name] = {"miou19": r.metrics.get("miou19"), "miou16": r.metrics.get("miou16"),
                            "miou13": r.metrics.get("miou13"), "iteration": r.metrics.get("iteration"),
                            "best": r.metrics.get("best"), "alignment": r.metrics.get("alignment")}
    # the contract's "source-only": the equal-budget baseline when it was trained, else the stage-1 model
    if "source-only" in runs:
        runs["source-only-stage1"] = runs["source-only"]
    if "source-only-continued" in runs:
        runs["source-only"] = runs.pop("source-only-continued")
    summary = {"seed": seed, "data_seed": data_seed, "data_root": str(data_root),
               "seconds": round(time.perf_counter() - start, 1), "ok": all(r.ok for r in results),
               "baseline": baseline, "pseudo_from": pseudo_from, "runs": runs,
               "jobs": {r.name: {"ok": r.ok, "seconds": round(r.seconds, 1), "error": r.error} for r in results}}
    (out_root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _main_figure(results, out_root / "miou_curves.png")
    return summary


def reproduce_jobs(out_root: Path, variants: list[str], seeds: list[int], iterations: int,
                   pseudo_root: Path, preset_prefix: str = "synthetic", data_root: str = "", eval_every: int = 0,
                   engine: str = "notebook", sets: dict[str, Any] | None = None,
                   nproc_per_node: int = 1) -> list[Job]:
    """Every variant at every seed, `<variant>-seed<N>` under out_root: notebook 07_adapt jobs
    (`engine="notebook"`) or `python -m cosuda.train ... --resume auto` jobs (`engine="train"`,
    with `sets` for every run and `nproc_per_node` processes per run). `eval_every` 0 keeps the
    notebook's / preset's spacing."""
    source_run = out_root / "_prep" / "pseudo-source-only"  # made the pseudo-labels
    jobs = []
    for seed in seeds:  # seed-major: an interrupted grid still has every variant at the first seeds
        for variant in variants:
            preset, name = f"{preset_prefix}-{variant}", f"{variant}-seed{seed}"
            if engine == "train":
                values = {"iterations": iterations, "seed": seed, "pseudo_root": str(pseudo_root)}
                if data_root:
                    values["data_root"] = data_root
                if eval_every:
                    values["eval_every"] = eval_every
                jobs.append(train_job(name, preset, out_root / name, {**values, **(sets or {})},
                                      nproc_per_node=nproc_per_node))
                continue
            params = {"preset": preset, "iterations": iterations, "seed": seed,
                      "pseudo_root": str(pseudo_root), "compare_with": str(source_run)}
            if data_root:
                params["data_root"] = data_root
            if eval_every:
                params["eval_every"] = eval_every
            jobs.append(Job(name, "07_adapt", params))
    return jobs


def preparation_jobs(out_root: Path, pseudo_root: Path, preset_prefix: str = "synthetic", iterations: int = 800,
                     data_root: str = "", eval_every: int = 0, engine: str = "notebook",
                     sets: dict[str, Any] | None = None, nproc_per_node: int = 1) -> list[Job]:
    """The two stages before the grid, to run one after the other in out_root/_prep: the
    source-only model (seed 0) whose predictions become the pseudo-labels of every SSL row, then
    the pseudo-labels themselves in `pseudo_root`."""
    prep = Path(out_root) / "_prep"
    source_run = prep / "pseudo-source-only"
    preset = f"{preset_prefix}-source-only"
    if engine == "train":
        values = {"iterations": iterations, "seed": 0}
        if data_root:
            values["data_root"] = data_root
        if eval_every:
            values["eval_every"] = eval_every
        return [train_job("pseudo-source-only", preset, source_run, {**values, **(sets or {})},
                          nproc_per_node=nproc_per_node),
                pseudo_labels_job("pseudo-labels", source_run, pseudo_root, nproc_per_node=nproc_per_node)]
    params = {"preset": preset, "iterations": iterations, "seed": 0}
    if data_root:
        params["data_root"] = data_root
    if eval_every:
        params["eval_every"] = eval_every
    return [Job("pseudo-source-only", "02_source_only", params),
            Job("pseudo-labels", "03_pseudo_labels", {"source_run": str(source_run), "pseudo_root": str(pseudo_root)})]


REPRODUCE_VARIANTS = ["source-only", "oracle", "only-ssl", "ssl-adv", "adversarial", "ours11", "ours",
                      "wo-dict", "wo-split", "with-adv"]


def _reproduce(args, parser) -> int:
    from .config import ConfigError, make_config
    from .train import _parse_sets

    out_root = Path(args.out)
    start = time.perf_counter()
    prefix = args.preset_prefix
    if args.engine == "auto":
        args.engine = "notebook" if prefix == "synthetic" else "train"
    try:
        sets = _parse_sets(args.set)
        reference = make_config(f"{prefix}-ours", {"data_root": args.data_root} if args.data_root else None)
        slurm = parse_slurm_options(args.slurm) if args.slurm else {}
    except (ConfigError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.slurm and args.executor not in ("slurm", "submitit-local"):
        parser.error("--slurm is for --executor slurm")
    if sets and args.engine != "train":
        parser.error("--set needs --engine train (notebook jobs take their parameters, not configuration fields)")
    iterations = args.iterations or (800 if prefix == "synthetic" else reference.iterations)
    eval_every = args.eval_every or reference.eval_every
    nproc = args.nproc_per_node or (int(slurm.get("gpus_per_node", SLURM_DEFAULTS["gpus_per_node"]))
                                    if args.executor == "slurm" else 1)
    if nproc > 1 and args.engine != "train":
        parser.error("several processes per run need --engine train")
    run = dict(executor=args.executor, gpus=args.gpus, slurm=slurm, parallel=args.parallel,
               gpus_per_job=nproc if args.executor == "gpus" else 1)
    pseudo_root = Path(args.pseudo_root) if args.pseudo_root else out_root / "pseudo_labels"
    if not (pseudo_root / "thresholds.json").is_file():
        # the pseudo-labels of every SSL row come from one separately trained source-only model,
        # made by the chosen executor (a GPU, a Slurm job) like every other run
        for stage in preparation_jobs(out_root, pseudo_root, prefix, iterations, args.data_root, eval_every,
                                      args.engine, sets, nproc):
            if not run_jobs([stage], out_root / "_prep", **run)[0].ok:
                print(f"[runner] the preparation failed at {stage.name}: no grid without pseudo-labels",
                      file=sys.stderr, flush=True)
                return 1
    jobs = reproduce_jobs(out_root, args.variants, args.seeds, iterations, pseudo_root, prefix, args.data_root,
                          eval_every, args.engine, sets, nproc)
    results = run_jobs(jobs, out_root, **run)
    table = results_table(out_root, preset_prefix=prefix)
    per_class = per_class_table(out_root, preset_prefix=prefix)
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "results.md").write_text(table + "\n" + ("\n" + per_class + "\n" if per_class else ""),
                                         encoding="utf-8")
    try:
        from . import plots

        if not collect(out_root):
            raise RuntimeError("no finished run")
        fig = plots.miou_curves(collect(out_root))
        fig.savefig(out_root / "miou_curves.png", dpi=120, bbox_inches="tight")
    except Exception as e:  # a figure is no reason to lose the table
        print(f"[runner] no mIoU curves figure: {type(e).__name__}: {e}", file=sys.stderr)
    print(table)
    print(f"[runner] {sum(r.ok for r in results)}/{len(results)} jobs ok in {time.perf_counter() - start:.0f} s; "
          f"results in {out_root / 'results.md'}")
    return 0 if all(r.ok for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosuda.runner", description=__doc__.split("\n\n")[0],
                                     formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_main = sub.add_parser("main", help="the synthetic pipeline end to end", formatter_class=_HelpFormatter)
    p_main.add_argument("--out", default=str(RUNS_ROOT / "main"), help="the job's folder (summary.json)")
    p_main.add_argument("--seed", type=int, default=0, help="training seed (initialisation, image order)")
    p_main.add_argument("--data-seed", type=int, default=0,
                        help="benchmark seed: 0 = the default benchmark under data/synthetic, others under OUT/data")
    p_main.add_argument("--source-iterations", type=int, default=None, help="stage 1; none: the preset's")
    p_main.add_argument("--iterations", type=int, default=None,
                        help="Ours (and the continued baseline) from the stage-1 model; none: the preset's")
    p_main.add_argument("--executor", default="local", choices=["local", "gpus", "slurm", "submitit-local"],
                        help="where each step runs (one after the other: each needs the one before)")
    p_main.add_argument("--slurm", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="--executor slurm: submitit/Slurm options (see reproduce --help)")
    p_main.add_argument("--pseudo-from", choices=["source-only", "ours11", "adversarial"], default="source-only",
                        help="the model whose predictions become the pseudo-labels; an adapted one costs one more run")
    p_main.add_argument("--baseline", choices=["continued", "stage1"], default="stage1",
                        help="source-only row: trained as long as Ours (continued) or the stage-1 model")
    p_rep = sub.add_parser("reproduce", help="variants x seeds (Tables 1 and 4), synthetic or real data",
                           formatter_class=_HelpFormatter,
                           description="Variants x seeds: the source-only model that makes the pseudo-labels\n"
                                       "(OUT/_prep), then every variant at every seed (OUT/<variant>-seed<N>),\n"
                                       "then OUT/results.md. Every job goes through --executor.")
    p_rep.add_argument("--out", default=str(RUNS_ROOT / "reproduce"), help="the grid's folder")
    p_rep.add_argument("--variants", nargs="+", default=REPRODUCE_VARIANTS, help="variants (preset suffixes)")
    p_rep.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    p_rep.add_argument("--iterations", type=int, default=None,
                       help="every run's length, the source-only model's too; none: 800 on the synthetic "
                            "benchmark, the preset's 120000 on real data")
    p_rep.add_argument("--eval-every", type=int, default=0,
                       help="evaluate on target val every N iterations; 0: the preset's (300 synthetic, 2000 "
                            "real data, the spacing of the paper's Fig. 4)")
    p_rep.add_argument("--pseudo-root", default="", help="pseudo-labels to use; empty: OUT/pseudo_labels, made "
                                                         "from a source-only run (seed 0) if missing")
    p_rep.add_argument("--engine", default="auto", choices=["auto", "notebook", "train"],
                       help="a job is notebook 07_adapt (figures beside the run) or python -m cosuda.train "
                            "--resume auto (no kernel, several GPUs per run); auto: notebook on the synthetic "
                            "benchmark, train on real data")
    p_rep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="--engine train: a configuration field for every run (repeatable)")
    p_rep.add_argument("--executor", default="local", choices=["local", "gpus", "slurm", "submitit-local"],
                       help="local: here, one after the other (or --parallel); gpus: one run per free GPU; "
                            "slurm: one Slurm job per run, requeued and resumed when preempted")
    p_rep.add_argument("--gpus", nargs="+", default=None, metavar="ID",
                       help="--executor gpus: the GPUs to use; none: every visible one")
    p_rep.add_argument("--parallel", type=int, default=1, help="--executor local: runs at a time")
    p_rep.add_argument("--slurm", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                       help="--executor slurm: submitit/Slurm options, e.g. partition=gpu account=proj "
                            "time=24:00:00 gpus_per_node=1 cpus_per_task=16 mem_gb=64 qos=normal "
                            f"max_num_timeout=20; unset keys: {', '.join(f'{k}={v}' for k, v in SLURM_DEFAULTS.items())}")
    p_rep.add_argument("--nproc-per-node", type=int, default=0,
                       help="--engine train: processes (GPUs) per run through torchrun (with --executor gpus, "
                            "each run gets that many GPUs); 0: gpus_per_node with --executor slurm, else 1")
    p_rep.add_argument("--preset-prefix", default="synthetic",
                       help="synthetic, or gta5-deeplabv2, synthia-deeplabv2, gta5-fcn8s, synthia-fcn8s for the "
                            "real experiments (then also --data-root)")
    p_rep.add_argument("--data-root", default="", help="folder with gta5/ synthia/ cityscapes/ (real data)")
    from .grid import GRID_VARIANTS, PSEUDO_MODELS

    p_grid = sub.add_parser("grid", help="the synthetic grid: variants x seeds, paired by seed (cosuda.grid)",
                            formatter_class=_HelpFormatter)
    p_grid.add_argument("--task", default="gta5", choices=["gta5", "synthia"], help="the source domain")
    p_grid.add_argument("--out", default=None, help="runs folder; none: runs/grid/<task>")
    p_grid.add_argument("--variants", nargs="+", default=GRID_VARIANTS, help="variants (preset suffixes)")
    p_grid.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    p_grid.add_argument("--source-iterations", type=int, default=None,
                        help="stage 1; none: config.SYNTHETIC_STAGES")
    p_grid.add_argument("--iterations", type=int, default=None, help="every variant; none: config.SYNTHETIC_STAGES")
    p_grid.add_argument("--pseudo-from", default="ours11", choices=PSEUDO_MODELS,
                        help="the model whose predictions become the pseudo-labels")
    p_grid.add_argument("--no-warm-start", action="store_true", help="every variant from the preset's weights")
    p_grid.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every run (sweeps)")
    p_grid.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                        help="Table 6: Ours with KEY (t_cos, dict_size, lambda_cos) set to each value, paired with the grid "
                             "(runs under <out>/../<task>-sweep/)")
    p_grid.add_argument("--parallel", type=int, default=2, help="runs at a time (each gets cores / parallel threads)")
    p_grid.add_argument("--publish", default=None, metavar="DIR",
                        help="copy finished runs' metrics.json to DIR/<task>/<variant>/seed<N>/ "
                             "(sweeps: DIR-sweeps/<task>/<point>/seed<N>/)")
    p_tab = sub.add_parser("table", help="print the results tables of finished runs", formatter_class=_HelpFormatter)
    p_tab.add_argument("out", help="a folder of runs (<variant>-seed<N>/metrics.json)")
    p_tab.add_argument("--preset-prefix", default=None,
                       help="what the runs are (synthetic, gta5-deeplabv2, ...); none: from their metrics.json")
    args = parser.parse_args(argv)

    if args.command == "table":
        print(results_table(Path(args.out), preset_prefix=args.preset_prefix))
        per_class = per_class_table(Path(args.out), preset_prefix=args.preset_prefix)
        if per_class:
            print("\n" + per_class)
        return 0
    if args.command == "grid":
        from . import grid

        out = Path(args.out) if args.out else RUNS_ROOT / "grid" / args.task
        sets = dict(pair.split("=", 1) for pair in args.set)
        jobs = grid.plan(out, args.task, args.variants, args.seeds, args.source_iterations, args.iterations,
                         warm_start=not args.no_warm_start, pseudo_from=args.pseudo_from, sets=sets)
        from .config import parse_value

        sweeps = {key: [parse_value(key, v) for v in values.split(",")]
                  for key, values in (pair.split("=", 1) for pair in args.sweep)}
        sweep_root = out.parent / f"{args.task}-sweep"
        if sweeps:
            jobs += grid.sweep_plan(out, sweep_root, sweeps, args.task, args.seeds, args.iterations, args.pseudo_from)
        results = grid.run(jobs, parallel=args.parallel)
        if args.publish:
            written = grid.publish(out, args.task, args.publish)
            if sweeps:
                written += grid.publish(sweep_root, args.task, grid.sweeps_dest(args.publish))
            print(f"[grid] {len(written)} metrics.json copied under {args.publish}")
        return 0 if all(results.values()) else 1
    if args.command == "reproduce":
        return _reproduce(args, parser)
    out_root = Path(args.out)
    summary = main_job(out_root, args.seed, args.data_seed, args.source_iterations, args.iterations, args.baseline,
                       args.pseudo_from, args.executor, parse_slurm_options(args.slurm) if args.slurm else None)
    so, ours = summary["runs"].get("source-only", {}), summary["runs"].get("ours", {})
    if so.get("miou19") is not None and ours.get("miou19") is not None:
        print(f"[runner] synthetic benchmark (data seed {args.data_seed}), seed {args.seed}: source-only "
              f"{so['miou19']:.2f} -> Ours {ours['miou19']:.2f} mIoU19 ({ours['miou19'] - so['miou19']:+.2f}); "
              f"{summary['seconds'] / 60:.1f} min; {out_root / 'summary.json'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
