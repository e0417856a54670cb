"""The benchmark scripts still run (at a tiny scale: speed targets live in the scripts, not here)."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_step_benchmark_smoke_runs_and_reports_both_configurations():
    proc = subprocess.run([sys.executable, "benchmarks/bench_step.py", "--smoke", "--device", "cpu"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    for key in ("defaults", "fast"):
        assert report[key]["s_per_iter"] > 0 and report[key]["tflop_per_step"] > 0
        assert 0 < report[key]["method_share_profiled"] < 1
    assert report["eval_images_per_s"] > 0
