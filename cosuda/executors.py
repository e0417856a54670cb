"""The executors: run the planner's jobs (`cosuda.jobs`) where the work should happen.

    run(jobs, executor="local", parallel=2)   this machine's cores, `parallel` runs at a time
    run(jobs, executor="gpus")                one run per free GPU; the next starts on the GPU that finished
    run(jobs, executor="slurm", slurm={...})  one Slurm job per run (cosuda.cluster), requeued when preempted
    run(jobs, executor="inline")              in this process, one after the other (a notebook's live runs)

One scheduler serves them all: a job starts once the jobs in its `after` succeeded; a finished
job is skipped and an interrupted one resumed (`--resume auto`), so the same command run again
continues a set of runs; a failed job is reported with the last lines of its log and the jobs
that need it are skipped, the others go on. Each job's output goes to `<out>/log.txt` (`tail -f`
it), and a status line every `status_every` seconds gives every running job's iteration.

One Ctrl-C policy: the running jobs get one SIGTERM each (the training writes a checkpoint after
its step and stops; Slurm jobs are cancelled, which sends the same signal), no other job
starts, and the runner waits up to STOP_GRACE_S for them before it kills what is left.
"""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .jobs import Job
from .paths import PACKAGE_DIR, resolve_path

EXECUTORS = ("local", "gpus", "slurm", "submitit-local", "inline")
LOG_TAIL_LINES = 20      # the lines of a failed job's log that are printed
STOP_GRACE_S = 90.0      # a stopped job gets this long to write its checkpoint (SIGTERM, then SIGKILL)


@dataclass
class JobResult:
    name: str
    ok: bool
    seconds: float
    log: Path | None
    metrics: dict | None = None
    error: str | None = None
    log_tail: str = ""      # the log's last lines, for a failed job
    skipped: bool = False   # already done, or not started because a job it needs failed


# --- child processes -----------------------------------------------------------------------
_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()
_STOPPING = threading.Event()  # set while the runner stops its jobs: no new one starts


def child_env(env: dict | None = None) -> dict:
    """A job's environment: this one's, cosuda importable from the clone it runs from (a clone need
    not be installed; site-packages never goes on PYTHONPATH), text progress bars, `env` on top."""
    clone = PACKAGE_DIR.parent
    own = [str(clone)] if (clone / "pyproject.toml").is_file() and "site-packages" not in clone.parts else []
    pythonpath = os.pathsep.join(filter(None, [*own, os.environ.get("PYTHONPATH")]))
    return {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {}), "COSUDA_TEXT_PROGRESS": "1",
            "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), **(env or {})}


def run_child(cmd: list[str], log_path: Path, env: dict | None = None, grace: float = STOP_GRACE_S) -> int:
    """Run `cmd` with its output appended to `log_path`, in its own session (a terminal's Ctrl-C
    does not reach it at once); if this thread is interrupted while it runs (Ctrl-C, submitit's
    preemption handler), the child gets one SIGTERM and `grace` seconds to checkpoint and stop."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"[runner] {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        log.flush()
        with _CHILDREN_LOCK:
            if _STOPPING.is_set():
                raise RuntimeError("the runner is stopping: job not started")
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(env),
                                    start_new_session=True)
            _CHILDREN.add(proc)
        try:
            return proc.wait()
        except BaseException:
            stop_child(proc, grace)
            raise
        finally:
            with _CHILDREN_LOCK:
                _CHILDREN.discard(proc)


def stop_child(proc: subprocess.Popen, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM to the child itself only (torchrun forwards it to its workers; a second signal
    would stop the training without its checkpoint), SIGKILL to its process group after `grace` s."""
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
    for proc in children:  # all signalled first: they checkpoint at the same time
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in children:
        stop_child(proc, max(0.0, deadline - time.monotonic()))


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log ('' if there is none); progress-bar redraws (carriage
    returns) count as the line they end on."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    rows = [r.rstrip("\r").rsplit("\r", 1)[-1] for r in text.split("\n")]
    return "\n".join([r for r in rows if r.strip()][-lines:])


def _error_lines(text: str) -> list[str]:
    """The process's own errors ("error: ...", "ValueError: ..."), which torchrun's summary hides."""
    return [l.strip() for l in text.splitlines() if re.match(r"\s*(error:|\w+(Error|Exception|Interrupt):)", l)]


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or being replaced at this moment
        return None


# --- where one job runs ----------------------------------------------------------------------
def _launch_process(job: Job, env: dict | None) -> tuple[bool, str | None]:
    code = run_child(job.command(), job.out / "log.txt", env)
    if code == 0:
        return True, None
    errors = _error_lines(log_tail(job.out / "log.txt", 200))
    return False, " ".join(filter(None, [f"exit status {code}", errors[-1] if errors else ""]))


def _launch_inline(job: Job) -> tuple[bool, str | None]:
    """The job's `python -m cosuda.train` in this process (what a notebook's live runs use)."""
    from .train import main as train_main

    code = train_main(job.args)
    return code == 0, None if code == 0 else f"exit status {code}"


def visible_gpus(gpus: int | list | tuple | None = None) -> list[str]:
    """The GPU ids the gpus executor hands out: `gpus` as given (a list of ids), the first `gpus`
    visible ones (an int), or every visible one (CUDA_VISIBLE_DEVICES' entries when it is set,
    else 0 .. device_count - 1)."""
    if isinstance(gpus, (list, tuple)):
        return [str(g).strip() for g in gpus if str(g).strip()]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [x.strip() for x in env.split(",") if x.strip()]
    else:
        try:
            import torch

            ids = [str(i) for i in range(torch.cuda.device_count())]
        except Exception:
            ids = []
    if gpus:
        if env is None and not ids:  # no CUDA here to count them: trust the number
            return [str(i) for i in range(gpus)]
        if gpus > len(ids):
            raise RuntimeError(f"--executor gpus: {gpus} GPUs asked for, {len(ids)} visible ({', '.join(ids) or 'none'})")
        ids = ids[:gpus]
    return ids


def _slots(jobs: list[Job], executor: str, parallel: int, gpus) -> list[dict]:
    """One environment per job that may run at once: threads shared out on this machine's cores,
    or GPUs (as many per job as its processes)."""
    if executor == "inline":
        return [{}]
    if executor == "gpus":
        ids = visible_gpus(gpus)
        per_job = max((j.nproc_per_node for j in jobs), default=1)
        if not ids:
            raise RuntimeError("--executor gpus: no GPU visible (CUDA_VISIBLE_DEVICES / nvidia-smi)")
        if per_job > len(ids):
            raise RuntimeError(f"--executor gpus: {per_job} GPUs per job, {len(ids)} visible")
        return [{"CUDA_VISIBLE_DEVICES": ",".join(ids[i:i + per_job])}
                for i in range(0, len(ids) - per_job + 1, per_job)]
    if executor in ("slurm", "submitit-local"):
        return [{}] * max(1, parallel if parallel > 1 else len(jobs))
    if executor != "local":
        raise ValueError(f"unknown executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    # small CPU runs scale better as several 1-thread processes than as one multi-threaded one
    threads = str(max(1, (os.cpu_count() or 1) // max(1, parallel)))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}] * max(1, parallel)


# --- the scheduler -------------------------------------------------------------------------
def _progress_line(job: Job) -> str:
    rows = (job.out / "scalars.jsonl").read_text().strip().splitlines() if (job.out / "scalars.jsonl").is_file() else []
    try:
        last = json.loads(rows[-1]) if rows else None
    except ValueError:  # a line being written
        last = None
    if last is None:
        return f"{job.name}: starting"
    text = f"{job.name}: iteration {last['iteration']}"
    metrics = read_json(job.out / "metrics.json")
    if metrics and metrics.get("miou19") is not None:
        text += f", mIoU19 {metrics['miou19']:.1f} at {metrics['iteration']}"
    return text


def _report(result: JobResult, say) -> None:
    if result.ok:
        miou = (result.metrics or {}).get("miou19")
        say(f"[runner] done {result.name} in {result.seconds:.0f} s" + (f", mIoU19 {miou:.2f}" if miou is not None else ""))
        return
    text = f"[runner] FAILED {result.name} ({result.error}) after {result.seconds:.0f} s; log: {result.log}"
    if result.log_tail:
        text += f"\n[runner] the last lines of {result.log}:\n" + "\n".join("    " + l for l in result.log_tail.splitlines())
    print(text, file=sys.stderr, flush=True)


def run(jobs: list[Job], executor: str = "local", parallel: int = 1, gpus=None, slurm: dict | None = None,
        progress: bool = True, status_every: float = 60.0) -> dict[str, JobResult]:
    """Run `jobs` respecting `after` (see the module docstring); returns {name: JobResult} in
    the jobs' order. A job that is already done is not run again."""
    slots: queue.Queue = queue.Queue()
    for env in _slots(jobs, executor, parallel, gpus):
        slots.put(env)
    say = (lambda text: print(text, flush=True)) if progress else (lambda text: None)
    results: dict[str, JobResult] = {}
    for job in jobs:
        if job.done():
            results[job.name] = JobResult(job.name, True, 0.0, job.out / "log.txt",
                                          read_json(job.out / "metrics.json"), skipped=True)
    pending = [j for j in jobs if j.name not in results]
    say(f"[runner] {len(jobs)} jobs, {len(results)} already done, executor {executor}"
        + (f", {slots.qsize()} at a time" if executor != "inline" else ""))
    submitter = None
    if executor in ("slurm", "submitit-local"):
        from .cluster import SlurmSubmitter

        root = Path(os.path.commonpath([j.out for j in jobs])) if jobs else Path(".")
        submitter = SlurmSubmitter(executor, slurm or {}, root)  # its logs under <root>/submitit/

    def execute(job: Job, env: dict) -> JobResult:
        start = time.perf_counter()
        try:
            if executor == "inline":
                ok, error = _launch_inline(job)
            elif submitter is not None:
                ok, error = submitter.run(job, run_child, (job.command(), job.out / "log.txt", env))
            else:
                ok, error = _launch_process(job, env)
        except Exception as e:  # a job that cannot even start is that job's failure only
            ok, error = False, f"{type(e).__name__}: {e}"
        finally:
            slots.put(env)
        log = job.out / "log.txt"
        return JobResult(job.name, ok, time.perf_counter() - start, log, read_json(job.out / "metrics.json"),
                         error, "" if ok or executor == "inline" else log_tail(log))

    running: dict = {}
    start_all = last_status = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=max(1, slots.qsize()))
    # Ctrl-C as a flag, acted on between waits: a KeyboardInterrupt raised anywhere could land
    # while this thread holds a future's lock (inside concurrent.futures.wait), and the workers
    # would then block for ever on set_result. Inline jobs run in this thread: Ctrl-C must reach
    # their training loop as usual.
    interrupted = threading.Event()
    previous = None
    if executor != "inline" and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    try:
        while pending or running:
            if interrupted.is_set():
                raise KeyboardInterrupt
            started = False
            for job in list(pending):
                failed = [a for a in job.after if a in results and not results[a].ok]
                if failed:
                    pending.remove(job)
                    results[job.name] = JobResult(job.name, False, 0.0, None, None, f"needs {', '.join(failed)}",
                                                  skipped=True)
                    say(f"[runner] skipped {job.name}: {', '.join(failed)} failed")
                elif all(a in results for a in job.after) and not slots.empty():
                    pending.remove(job)
                    started, env = True, slots.get()
                    say(f"[runner] started {job.name}" + (f" on GPU {env['CUDA_VISIBLE_DEVICES']}"
                                                          if "CUDA_VISIBLE_DEVICES" in env else ""))
                    if executor == "inline":  # in this thread: Ctrl-C reaches the training loop
                        results[job.name] = execute(job, env)
                        _report(results[job.name], say)
                    else:
                        running[pool.submit(execute, job, env)] = job
            if not running and not started:
                for job in pending:  # nothing can start: an `after` names no job of this plan
                    results[job.name] = JobResult(job.name, False, 0.0, None, None, f"waits for {job.after}")
                    say(f"[runner] cannot start {job.name}: it waits for {', '.join(job.after)}, not in this plan")
                break
            if not running:
                continue
            finished, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                results[job.name] = future.result()
                _report(results[job.name], say)
            if running and time.perf_counter() - last_status > status_every:
                last_status = time.perf_counter()
                say("[runner] " + "; ".join(_progress_line(j) for j in running.values())
                    + f" ({time.perf_counter() - start_all:.0f} s)")
    except BaseException:
        _STOPPING.set()
        say("[runner] stopping: every running job gets SIGTERM, writes its checkpoint and stops; "
            "run the same command again to continue")
        if submitter is not None:
            submitter.cancel_all()
        _stop_all_children()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        pool.shutdown(wait=True, cancel_futures=True)
        _STOPPING.clear()
    ordered = {j.name: results[j.name] for j in jobs}
    bad = [r for r in ordered.values() if not r.ok]
    say(f"[runner] {len(ordered) - len(bad)}/{len(ordered)} jobs ok in {time.perf_counter() - start_all:.0f} s")
    if bad:
        print(f"[runner] {len(bad)} of {len(ordered)} jobs failed or were skipped:\n" +
              "\n".join(f"    {r.name}: {r.error} (log: {r.log})" for r in bad), file=sys.stderr, flush=True)
    return ordered


# --- one run on several processes, from Python ------------------------------------------------
def torchrun(preset: str, out: str | Path, nproc_per_node: int = 2, overrides: dict[str, Any] | None = None,
             threads_per_process: int | None = None, resume: bool | str = False, progress: bool = True) -> dict:
    """One training run on `nproc_per_node` processes, started from Python (a notebook, a script):
    `python -m torch.distributed.run --standalone --nproc_per_node N -m cosuda.train --preset
    PRESET --out OUT [--set K=V ...] [--resume [auto]]`, one process per GPU, or per CPU process
    with the gloo backend where there is no GPU. The output is shown as it comes and kept in
    OUT/torchrun.log. Returns OUT/metrics.json; raises RuntimeError with the log's last lines if
    the run fails."""
    from .config import encode_sets

    out = resolve_path(out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
           "-m", "cosuda.train", "--preset", preset, "--out", str(out), *encode_sets(overrides or {})]
    if resume:  # True: --resume (a checkpoint must be there); "auto": if there is one
        cmd += ["--resume"] + ([] if resume is True else [str(resume)])
    # CPU processes share the cores: without a limit each would start one thread per core
    threads = threads_per_process or max(1, (os.cpu_count() or 1) // nproc_per_node)
    env = child_env({"OMP_NUM_THREADS": str(threads)})
    log_path = out / "torchrun.log"
    with open(log_path, "w") as log, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                                       stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        log.write(" ".join(cmd) + "\n")
        try:
            for line in proc.stdout:
                log.write(line)
                if progress:
                    sys.stdout.write(line)
                    sys.stdout.flush()
        except KeyboardInterrupt:  # a stopped notebook cell stops the run too: it checkpoints after its step
            proc.terminate()
            proc.wait()
            raise
    if proc.returncode != 0:
        text = log_path.read_text()
        lines, errors = text.splitlines(), list(dict.fromkeys(_error_lines(text)))
        tail = "\n".join(lines[-15:])
        raise RuntimeError(f"torchrun exited with status {proc.returncode}: {'; '.join(errors) or 'no error line'}"
                           f"\nthe last lines of {log_path}:\n{tail}")
    return json.loads((out / "metrics.json").read_text())
