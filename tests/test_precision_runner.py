"""Precision as configuration (bf16 autocast runs on CPU)."""
import json
import subprocess
import sys
from pathlib import Path

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
