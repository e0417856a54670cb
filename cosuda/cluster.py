"""Slurm through submitit: one Slurm job per planned job, requeued and resumed when preempted.

`cosuda.executors.run(jobs, executor="slurm", slurm=parse_slurm_options([...]))` submits each job
when the jobs it needs have succeeded, as a `RequeueableJob`: a `submitit.helpers.Checkpointable`,
so when Slurm preempts it or its time limit comes near (submitit's USR2), submitit requeues the
same job; meanwhile the training gets a SIGTERM and writes its checkpoint, and the requeued job
continues it (`--resume auto`). `executor="submitit-local"` does the same on this machine
(submitit's local executor: the tests). submitit's own logs go to `<root>/submitit/<job id>/`.
"""
from __future__ import annotations

import math
import re
import threading
from pathlib import Path
from typing import Any, Callable

try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # no submitit: no slurm executor either (SlurmSubmitter says how to install it)
    class _Checkpointable:  # type: ignore[no-redef]
        pass

INSTALL = "pip install 'cosuda[cluster]' (or pip install submitit)"
SLURM_DEFAULTS = {"timeout_min": 24 * 60, "gpus_per_node": 1, "tasks_per_node": 1, "cpus_per_task": 16,
                  "slurm_signal_delay_s": 120}
SLURM_MAX_TIMEOUTS = 20  # how often a job may reach its time limit and come back (preemptions do not count)
_LOCAL_KEYS = ("timeout_min", "gpus_per_node", "visible_gpus", "tasks_per_node", "nodes", "signal_delay_s")


class RequeueableJob(_Checkpointable):
    """What a Slurm job runs: `fn(*args)` (the executors' child process of one planned job)."""

    def __init__(self, name: str, fn: Callable, args: tuple):
        self.name, self.fn, self.args = name, fn, args

    def __call__(self):
        return self.fn(*self.args)

    def checkpoint(self, *args, **kwargs):
        import submitit

        print(f"[runner] {self.name}: preempted or near its time limit; requeued, it resumes from its newest "
              "checkpoint", flush=True)
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


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
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(value).strip())
    if not m:
        raise ValueError(f"time={value!r} is no Slurm time (MM, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is None:
        minutes, seconds = (a, 0) if b is None else (a, b) if c is None else (a * 60 + b, c)
    else:
        minutes, seconds = days * 1440 + a * 60 + (b or 0), c or 0
    return max(1, minutes + math.ceil(seconds / 60))


def parse_slurm_options(pairs: list[str]) -> dict[str, Any]:
    """`--slurm KEY=VALUE ...` as submitit parameters. KEY: one of submitit's shared keys
    (timeout_min, gpus_per_node, cpus_per_task, mem_gb, nodes, tasks_per_node, name), any
    parameter of its Slurm executor (partition, account, qos, constraint, ..., with or without
    the `slurm_` prefix), `time` (a Slurm time, as timeout_min) or `max_num_timeout`. Raises
    ValueError naming a malformed pair or an unknown key (with the known ones)."""
    try:
        from submitit.auto.auto import AutoExecutor
        from submitit.slurm.slurm import SlurmExecutor
    except ImportError:
        raise RuntimeError(f"--slurm needs submitit: {INSTALL}") from None
    generic, specific = AutoExecutor._valid_parameters(), SlurmExecutor._valid_parameters()
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


class SlurmSubmitter:
    """Submits one planned job at a time (executor "slurm", or "submitit-local" for tests) and
    waits for it; `cancel_all` cancels what is still queued or running (Ctrl-C)."""

    def __init__(self, executor: str, slurm: dict, root: Path):
        try:
            import submitit
        except ImportError:
            raise RuntimeError(f"the slurm executor needs submitit: {INSTALL}") from None
        params = dict(slurm)
        max_timeouts = int(params.pop("max_num_timeout", SLURM_MAX_TIMEOUTS))
        folder = Path(root) / "submitit" / "%j"
        if executor == "submitit-local":
            self.ex = submitit.LocalExecutor(folder=folder, max_num_timeout=max_timeouts)
            local = {k.removeprefix("slurm_"): v for k, v in params.items() if k.removeprefix("slurm_") in _LOCAL_KEYS}
            self.ex.update_parameters(**{"timeout_min": SLURM_DEFAULTS["timeout_min"], **local})
        else:
            self.ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=max_timeouts)
            self.ex.update_parameters(**{**SLURM_DEFAULTS, **params})
        self.named, self.local = "name" in params, executor == "submitit-local"
        self.handles: list = []
        self._lock = threading.Lock()

    def submit(self, name: str, fn: Callable, args: tuple):
        with self._lock:  # update_parameters + submit: one job at a time
            if not self.local and not self.named:
                self.ex.update_parameters(name=f"cosuda-{name.replace('/', '-')}")
            handle = self.ex.submit(RequeueableJob(name, fn, args))
            self.handles.append(handle)
        print(f"[runner] {name}: submitted as job {handle.job_id}", flush=True)
        return handle

    def run(self, job, fn: Callable, args: tuple) -> tuple[bool, str | None]:
        """Submit `fn(*args)` (returns an exit status) for `job` and wait for it."""
        handle = self.submit(job.name, fn, args)
        try:
            code = handle.result()
        except Exception as e:  # node failure, time limit without requeue: submitit's own log says more
            text = str(e).strip().splitlines()
            return False, f"{type(e).__name__}: {text[-1] if text else ''} (submitit log: {handle.paths.stderr})"
        return code == 0, None if code == 0 else f"exit status {code}"

    def cancel_all(self) -> None:
        for handle in self.handles:
            try:
                if not handle.done():
                    handle.cancel(check=False)
            except Exception:
                pass
