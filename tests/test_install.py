"""The package installed for real (non-editable) into a fresh virtual environment, used from
another directory: the entry points run, the synthetic generator and a 4-iteration training run
write into the current directory (cosuda.paths), and nothing is written into site-packages.

Offline: the fresh environment reuses this environment's installed dependencies (torch, ...)
through a .pth line, and pip builds the wheel with this environment's setuptools
(--no-build-isolation --no-deps --no-index). The wheel is built from a copy of the sources, so
the checkout gets no build/ or *.egg-info.

The main job runs there too, with the notebooks' tools made unimportable (this environment has
them; a plain `pip install .` does not): it must need neither them nor the repository's notebooks.
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


# What the notebooks extra adds: the main job and every command must work without it.
NOTEBOOK_TOOLS = ("jupytext", "nbformat", "nbclient", "papermill", "ipykernel", "jupyterlab", "IPython", "nbval")
_BLOCKER = f"""import sys


class _NoNotebookTools:
    \"\"\"Installed by tests/test_install.py: the notebooks extra is absent here.\"\"\"
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOTEBOOK_TOOLS!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (the test hides the notebooks extra)")
        return None


sys.meta_path.insert(0, _NoNotebookTools())
"""


def _install(tmp_path):
    """(venv, site-packages, environment) with cosuda built from a copy of the sources and
    installed for real, this environment's dependencies reused and the notebooks' tools hidden."""
    src, venv = tmp_path / "src", tmp_path / "venv"
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
    (site / "_test_no_notebook_tools.py").write_text(_BLOCKER)
    (site / "_test_no_notebook_tools.pth").write_text("import _test_no_notebook_tools\n")
    blocked = subprocess.run([str(python), "-c", "import jupytext"], env=env, capture_output=True, text=True)
    assert "the test hides the notebooks extra" in blocked.stderr, blocked.stderr
    return venv, site, env


def test_installed_package_runs_from_another_directory(tmp_path):
    venv, site, env = _install(tmp_path)
    python, work = venv / "bin" / "python", tmp_path / "work"
    before = _files(site)
    installed = [p for p in before if p.startswith("cosuda/")]
    assert "cosuda/train.py" in installed and "cosuda/models/__init__.py" in installed
    work.mkdir()
    where = _run([python, "-c", "import cosuda, cosuda.paths as p; print(cosuda.__file__); print(p.HOME)"],
                 work, env).stdout.split()
    assert Path(where[0]).is_relative_to(site) and Path(where[1]) == work.resolve()
    for script in ("cosuda-train", "cosuda-evaluate", "cosuda-predict", "cosuda-runner", "cosuda-synthetic"):
        assert (venv / "bin" / script).is_file(), script
        usage = _run([venv / "bin" / script, "--help"], work, env).stdout
        # train, predict and synthetic set prog in files other work changes (tests/test_console_scripts.py)
        assert usage.startswith(f"usage: {script} ")

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


def test_installed_main_job_runs_from_another_directory(tmp_path):
    """`cosuda-runner main` after `pip install .`, from a folder outside the repository: it writes
    its benchmark, runs and summary there (cosuda.paths), and needs no notebook. Two iterations
    per stage; the benchmark is the checkout's when it is complete (else generated, ~1 min)."""
    from cosuda.config import SYNTHETIC_ROOT
    from cosuda.synthetic import is_complete

    venv, site, env = _install(tmp_path)
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    if is_complete(SYNTHETIC_ROOT, 0):  # read only: the main job's runs and pseudo-labels go under --out
        (work / "data" / "synthetic").symlink_to(SYNTHETIC_ROOT, target_is_directory=True)
    before = _files(site)
    usage = _run([venv / "bin" / "cosuda-runner", "main", "--help"], work, env).stdout
    assert usage.startswith("usage: cosuda-runner main ") and "--source-iterations" in usage

    done = _run([venv / "bin" / "cosuda-runner", "main", "--out", "job", "--source-iterations", 2,
                 "--iterations", 2], work, env, timeout=900)
    summary = json.loads((work / "job" / "summary.json").read_text())
    assert summary["ok"], done.stdout[-3000:]
    assert {"source-only", "ours"} <= set(summary["runs"]) and summary["runs"]["ours"]["iteration"] == 2
    assert (work / "job" / "config.json").is_file() and (work / "job" / "miou_curves.png").is_file()
    assert (work / "job" / "gta5" / "ours" / "seed0" / "checkpoints").is_dir()
    assert "source-only" in done.stdout.splitlines()[-1] and "mIoU19" in done.stdout.splitlines()[-1]
    assert _files(site) == before, "something was written into site-packages"
