"""The package installed for real (non-editable) into a fresh virtual environment, used from
another directory: the entry points run, the synthetic generator and a 4-iteration training run
write into the current directory (cosuda.paths), and nothing is written into site-packages.

Offline: the fresh environment reuses this environment's installed dependencies (torch, ...)
through a .pth line, and pip builds the wheel with this environment's setuptools
(--no-build-isolation --no-deps --no-index). The wheel is built from a copy of the sources, so
the checkout gets no build/ or *.egg-info.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _files(root: Path) -> dict[str, int]:
    """Every file under root (bytecode caches aside) with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_installed_package_runs_from_another_directory(tmp_path):
    src, venv, work = tmp_path / "src", tmp_path / "venv", tmp_path / "work"
    shutil.copytree(REPO / "cosuda", src / "cosuda", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # this environment's dependencies (and pip, setuptools), but not its editable cosuda: a plain
    # path line, whose own .pth files (the editable finder among them) are not processed
    (site / "_test_base_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COSUDA_HOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1",
               OMP_WAIT_POLICY="PASSIVE", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet", str(src)],
         tmp_path, env)
    before = _files(site)
    installed = [p for p in before if p.startswith("cosuda/")]
    assert "cosuda/train.py" in installed and "cosuda/models/__init__.py" in installed
    work.mkdir()
    where = _run([python, "-c", "import cosuda, cosuda.paths as p; print(cosuda.__file__); print(p.HOME)"],
                 work, env).stdout.split()
    assert Path(where[0]).is_relative_to(site) and Path(where[1]) == work.resolve()
    for script in ("cosuda-train", "cosuda-evaluate", "cosuda-predict", "cosuda-runner", "cosuda-synthetic"):
        assert (venv / "bin" / script).is_file(), script
        assert "usage:" in _run([venv / "bin" / script, "--help"], work, env).stdout

    _run([venv / "bin" / "cosuda-synthetic", "--out", "bench", "--gta5", 2, "--synthia", 0, "--cityscapes-train", 2,
          "--cityscapes-val", 1, "--gta5-size", "64x36", "--cityscapes-size", "64x32", "--no-progress"], work, env)
    assert (work / "bench" / "gta5" / "images").is_dir() and (work / "bench" / "cityscapes").is_dir()
    tiny = ["--set", "backbone=resnet18", "--set", "weights=random", "--set", "norm=group",
            "--set", "source_size=32,18", "--set", "target_size=32,16", "--set", "eval_size=32,16",
            "--set", "dict_size=20", "--set", "num_workers=0", "--set", "progress=false", "--set", "align_items=0"]
    train = _run([venv / "bin" / "cosuda-train", "--preset", "synthetic-ours11", "--out", "run",
                  "--set", "data_root=bench", "--set", "iterations=4", "--set", "eval_every=2",
                  "--set", "checkpoint_every=2", *tiny, "--resume", "auto"], work, env)
    assert json.loads(train.stdout.strip().splitlines()[-1])["iteration"] == 4
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    assert metrics["iteration"] == 4 and metrics["finished"]
    assert (work / "run" / "checkpoints" / "iter_0000004.pt").is_file()
    evaluated = _run([venv / "bin" / "cosuda-evaluate", "run"], work, env)
    assert "miou19" in json.loads(evaluated.stdout.strip().splitlines()[-1])

    assert _files(site) == before, "something was written into site-packages"
    assert not any((site / name).exists() for name in ("data", "runs")) and not (site.parent / "runs").exists()
