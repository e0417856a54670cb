"""What made a result: the code, the libraries and the machine, recorded beside every run.

`record()` is written into each run's `config.json` (key "provenance") when the run starts and
again, with the seconds it took, when it ends; the main job's `config.json` holds one for the
whole job. A number in the README is checked by reading the `config.json` beside its
`metrics.json` (settings) and this record (which commit, which CPU, how many threads, how long).
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

from .paths import PACKAGE_DIR


def git_state(repo: Path = PACKAGE_DIR.parent) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout cosuda runs from; (None, None) for an installed package or
    where git is missing. Dirty: tracked files differ from the commit (untracked ones do not count)."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
        return commit.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None, None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform's answer elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # not installed, or no version
        return None


def machine() -> dict:
    """The machine a timing is measured on: {"cpu": CPU model, "threads": torch's thread count}."""
    import torch

    return {"cpu": cpu_model(), "threads": torch.get_num_threads()}


def record(seconds: float | None = None, device: str | None = None) -> dict:
    """The provenance of a result made now: commit and dirty flag, torch / timm / Python
    versions, CPU model, torch's thread count, the device (and GPU name), the host's logical
    cores, the date, and `seconds` (wall time, where known)."""
    import torch

    commit, dirty = git_state()
    out = {"commit": commit, "dirty": dirty, "torch": torch.__version__, "timm": _version("timm"),
           "python": platform.python_version(), **machine(),
           "cores": os.cpu_count(), "device": device or "cpu", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "seconds": None if seconds is None else round(float(seconds), 1)}
    if device and device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out
