"""benchmarks/gpu_check.sh, the one command a session with a GPU runs: proven here on CPU with
--smoke (the same sections at tiny sizes), and its failure paths."""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("step", "eval", "pseudo", "synthetic", "gpu_tests")


def _gpu_check(*args, timeout=600):
    """Run the script as a GPU session would (plus `args`); (process, wall seconds)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


def _numbers(x):
    """Every number in a JSON value."""
    if isinstance(x, bool):
        return []
    if isinstance(x, (int, float)):
        return [x]
    if isinstance(x, dict):
        return [n for v in x.values() for n in _numbers(v)]
    if isinstance(x, list):
        return [n for v in x for n in _numbers(v)]
    return []


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    proc, seconds = _gpu_check("--smoke", "--out", str(out))
    print(f"\nbash benchmarks/gpu_check.sh --smoke: {seconds:.1f} s (target < 120 s)")
    return proc, out, seconds


def test_smoke_run_measures_every_section_without_error(smoke):
    proc, out, seconds = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["mode"] == "smoke" and report["machine"]["status"] == "ok"
    for name in SECTIONS:
        section = report["sections"][name]
        assert section["status"] == "ok" and "error" not in section, (name, section.get("error"))
        assert _numbers({k: v for k, v in section.items() if k != "section_s"}), f"{name} holds no figure"
    sections = report["sections"]
    for key in ("defaults", "fast"):
        step = sections["step"][key]
        assert step["ms_per_step"] > 0 and 0 < step["cos_share_pct"] < 100
    assert sections["step"]["fast"]["cos_impl"] == "grouped" and sections["step"]["fast"]["fold_bn"]
    assert sections["eval"]["images_per_s"] > 0
    assert sections["pseudo"]["cli"]["images_per_s"] > 0 and sections["pseudo"]["fast"]["cityscapes_train_s"] > 0
    synthetic = sections["synthetic"]
    for run in ("source_only", "ours_bf16", "ours_fp32"):
        assert synthetic[run]["miou19"] is not None and synthetic[run]["iterations_per_s"] > 0, run
        assert synthetic[run]["non_finite_loss"] is False, run
    assert (synthetic["ours_bf16"]["precision"], synthetic["ours_fp32"]["precision"]) == ("bf16", "fp32")
    assert isinstance(synthetic["miou19_bf16_minus_fp32"], float)
    assert isinstance(sections["gpu_tests"]["files_with_gpu_tests"], int)


def test_smoke_report_is_markdown_that_names_the_device_and_says_it_means_nothing(smoke):
    proc, out, _ = smoke
    report = json.loads((out / "gpu_check.json").read_text())
    markdown = (out / "gpu_check.md").read_text()
    assert markdown.startswith("### GPU check, ")
    assert "smoke (CPU, tiny sizes): these numbers mean nothing" in markdown
    assert report["machine"]["cpu"] in markdown and report["machine"]["torch"] in markdown
    assert "| configuration | ms/step |" in markdown and "| run | final mIoU19 (%) |" in markdown
    assert markdown in proc.stdout  # also printed, for a session that sees only the output
    # Only the three report files: the device machines hand back at most 8 files from --out.
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]


def test_smoke_run_is_fast(smoke):
    _, _, seconds = smoke
    assert seconds < 170, f"gpu_check --smoke took {seconds:.0f} s (target < 120 s)"


def test_missing_out_is_a_one_line_error():
    proc, _ = _gpu_check("--smoke", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--out" in proc.stderr, proc.stderr


def test_exhausted_budget_skips_every_section_with_a_note(tmp_path):
    proc, _ = _gpu_check("--smoke", "--out", str(tmp_path), "--budget-s", "0", timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    for name in SECTIONS:
        section = report["sections"][name]
        assert section["status"] == "skipped" and "budget" in section["error"], (name, section)
    assert "**Skipped:**" in (tmp_path / "gpu_check.md").read_text()


def test_a_failed_capture_is_recorded_and_the_other_step_figures_stay(tmp_path, monkeypatch):
    """On the GPU: compile=step failing leaves the defaults and the uncaptured fast path measured
    (bench_step.measure stubbed: this checks gpu_check's bookkeeping, not the step)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import bench_step
    import gpu_check

    def measure(args, fast, device):
        if fast and args.compile == "step":
            raise RuntimeError("Inductor failed\nCUDA graphs: something unsupported")
        return {"precision": "bf16" if fast else "fp32", "fold_bn": fast, "compile": args.compile if fast else "off",
                "channels_last": fast, "cos_impl": "grouped" if fast else "reference",
                "dict_dtype": "bfloat16" if fast else "float32", "fused_sgd": fast,
                "s_per_iter": 0.1 if fast else 0.3, "first_step_s": 1.0, "peak_gib": 20.0,
                "method_share_profiled": 0.05, "method_ms_profiled": 5.0, "tflop_per_step": 10.0}, None

    monkeypatch.setattr(bench_step, "measure", measure)
    ctx = gpu_check.SectionContext("step", smoke=False, work=tmp_path)
    gpu_check.section_step(ctx)
    result = ctx.result
    assert result["error"] == "fast (compile=step): RuntimeError: CUDA graphs: something unsupported"
    assert "fast" not in result and result["fast_compile_off"]["compile"] == "off"
    assert result["speedup"] == pytest.approx(3.0) and result["speedup_compile"] == "off"
    assert json.loads(ctx.path.read_text()) == result  # saved for the orchestrator
    report = {"mode": "gpu", "started": "2026-01-01T00:00:00", "command": "bash benchmarks/gpu_check.sh --out DIR",
              "budget_s": 450, "wall_s": 10.0, "machine": {"gpu": "NVIDIA H100", "torch": "2.11.0"},
              "sections": {"step": {**result, "status": "error"}}}
    markdown = gpu_check.render(report)
    assert "| PyTorch's defaults: fp32, BN not folded, reference loss" in markdown
    assert "| fast path: bf16, BN folded, grouped loss, bfloat16 dictionary, fused SGD, channels_last, " \
           "compile=off | 100.0 | 20.00 | 5.0 | 100.0 | 1.0 |" in markdown
    assert "**Error:** fast (compile=step): RuntimeError" in markdown
