"""Precision as configuration (bf16 autocast runs on CPU) and the batch runner's executors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_SETS
from cosuda.config import make_config
from cosuda.train import resolve_precision

REPO = Path(__file__).resolve().parent.parent


def test_auto_precision_is_fp32_on_cpu():
    cfg = make_config("synthetic-ours")
    assert resolve_precision(cfg, torch.device("cpu")) == "fp32"
    assert resolve_precision(make_config("synthetic-ours", {"precision": "bf16"}), torch.device("cpu")) == "bf16"


def test_bf16_training_runs_on_cpu_and_losses_stay_finite(tmp_path, tiny_benchmark):
    run = tmp_path / "bf16"
    proc = subprocess.run([sys.executable, "-m", "cosuda.train", "--preset", "synthetic-ours11", "--out", str(run),
                           "--set", f"data_root={tiny_benchmark}", "--set", "iterations=2", "--set", "eval_every=2",
                           "--set", "checkpoint_every=2", "--set", "precision=bf16", *TINY_SETS],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision"] == "bf16"
    assert all(v == v and abs(v) < 1e6 for v in metrics["train"]["last_losses"].values())


def test_runner_reports_a_failed_job_and_runs_the_others(tmp_path, monkeypatch):
    from cosuda import runner

    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    good = ('# %% tags=["parameters"]\nrun_dir: str = ""\nvalue: int = 1\n\n# %%\nimport json, pathlib\n'
            'pathlib.Path(run_dir).mkdir(parents=True, exist_ok=True)\n'
            '(pathlib.Path(run_dir) / "metrics.json").write_text(json.dumps({"miou19": float(value), "seed": 0}))\n')
    bad = '# %% tags=["parameters"]\nrun_dir: str = ""\n\n# %%\nraise ValueError("boom")\n'
    (nb_dir / "90_good.py").write_text(good)
    (nb_dir / "91_bad.py").write_text(bad)
    monkeypatch.setattr(runner, "NOTEBOOKS", nb_dir)
    jobs = [runner.Job("bad", "91_bad"), runner.Job("good-seed0", "90_good", {"value": 7})]
    results = runner.run_jobs(jobs, tmp_path / "out")
    assert [r.ok for r in results] == [False, True]
    assert "boom" in results[0].error and results[0].output.is_file()  # the partial notebook is kept
    assert results[1].metrics["miou19"] == 7.0
    assert "| good |" in runner.results_table(tmp_path / "out")


def test_runner_through_submitit_local_executor(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from cosuda import runner

    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    (nb_dir / "90_good.py").write_text(
        '# %% tags=["parameters"]\nrun_dir: str = ""\nvalue: int = 1\n\n# %%\nimport json, pathlib\n'
        'pathlib.Path(run_dir).mkdir(parents=True, exist_ok=True)\n'
        '(pathlib.Path(run_dir) / "metrics.json").write_text(json.dumps({"miou19": float(value)}))\n')
    # submitit runs each job in another process: name the notebooks by path
    results = runner.run_jobs([runner.Job("a", str(nb_dir / "90_good.py"), {"value": 3}),
                               runner.Job("b", str(nb_dir / "90_missing.py"))],
                              tmp_path / "out", executor="submitit-local")
    assert results[0].ok and results[0].metrics["miou19"] == 3.0
    assert not results[1].ok
