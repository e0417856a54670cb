"""The main job's contract: benchmark seed and place, training seed, summary.json."""
import json
from pathlib import Path

from cosuda import runner


def _fake_results(out_root, miou):
    results = []
    for name in ("datasets", "source-only", "pseudo-labels", "ours", "source-only-continued"):
        metrics = None if name in ("datasets", "pseudo-labels") else {"miou19": miou[name], "iteration": 10}
        results.append(runner.JobResult(name, True, 1.0, out_root / name / "notebook.ipynb", metrics))
    return results


def test_summary_holds_the_contract_fields_and_the_equal_budget_baseline(tmp_path, monkeypatch):
    made = {}
    monkeypatch.setattr("cosuda.synthetic.ensure", lambda root, seed=0, progress=True: made.update(root=root, seed=seed))
    seen = {}

    def fake_run_jobs(jobs, out_root, *a, **k):  # called once per step, in order
        seen.setdefault("jobs", []).extend(jobs)
        return [r for r in _fake_results(out_root, {"source-only": 30.0, "ours": 36.5, "source-only-continued": 31.0})
                if r.name == jobs[0].name]

    monkeypatch.setattr(runner, "run_jobs", fake_run_jobs)
    summary = runner.main_job(tmp_path / "main", seed=3, data_seed=7, baseline="continued")
    # a non-default benchmark seed never overwrites the default benchmark
    assert made == {"root": tmp_path / "main" / "data", "seed": 7}
    assert [j.name for j in seen["jobs"]] == ["datasets", "source-only", "pseudo-labels", "ours", "source-only-continued"]
    assert all(j.parameters.get("seed", 3) == 3 for j in seen["jobs"])
    assert all(j.parameters.get("data_root", str(made["root"])) == str(made["root"]) for j in seen["jobs"])
    on_disk = json.loads((tmp_path / "main" / "summary.json").read_text())
    assert on_disk == summary
    assert summary["seed"] == 3 and summary["data_seed"] == 7 and isinstance(summary["seconds"], float)
    assert summary["runs"]["ours"]["miou19"] == 36.5
    assert summary["runs"]["source-only"]["miou19"] == 31.0          # trained as long as Ours
    assert summary["runs"]["source-only-stage1"]["miou19"] == 30.0   # the model that made the pseudo-labels


def test_default_seed_uses_the_default_benchmark(tmp_path, monkeypatch):
    from cosuda.config import SYNTHETIC_ROOT

    made = {}
    monkeypatch.setattr("cosuda.synthetic.ensure", lambda root, seed=0, progress=True: made.update(root=root, seed=seed))
    monkeypatch.setattr(runner, "run_jobs", lambda jobs, out_root, *a, **k: [r for r in _fake_results(
        out_root, {"source-only": 30.0, "ours": 36.5, "source-only-continued": 31.0}) if r.name == jobs[0].name])
    summary = runner.main_job(tmp_path / "main", baseline="stage1")
    assert made == {"root": SYNTHETIC_ROOT, "seed": 0}
    assert summary["runs"]["source-only"]["miou19"] == 30.0 and summary["baseline"] == "stage1"


def test_a_relative_out_is_taken_from_cosuda_home(tmp_path, monkeypatch):
    """`runner main --out runs/x --data-seed 1`: the steps get absolute paths (papermill's kernel
    starts in notebooks/, where a relative data_root named no folder)."""
    from cosuda import paths

    monkeypatch.setattr(paths, "HOME", tmp_path)
    made = {}
    monkeypatch.setattr("cosuda.synthetic.ensure", lambda root, seed=0, progress=True: made.update(root=root, seed=seed))
    seen = []

    def fake_run_jobs(jobs, out_root, *a, **k):
        seen.extend(jobs)
        return [r for r in _fake_results(out_root, {"source-only": 30.0, "ours": 36.5, "source-only-continued": 31.0})
                if r.name == jobs[0].name]

    monkeypatch.setattr(runner, "run_jobs", fake_run_jobs)
    runner.main_job("runs/x", data_seed=1)
    assert made["root"] == tmp_path / "runs" / "x" / "data"
    assert (tmp_path / "runs" / "x" / "summary.json").is_file()
    roots = [j.parameters["data_root"] for j in seen if "data_root" in j.parameters]
    assert roots and set(roots) == {str(made["root"])}
    assert all(Path(j.parameters[k]).is_absolute() for j in seen for k in ("run_dir", "source_run", "pseudo_root")
               if j.parameters.get(k))


def test_a_failed_step_stops_the_main_job_and_the_summary_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("cosuda.synthetic.ensure", lambda root, seed=0, progress=True: None)
    seen = []

    def fake_run_jobs(jobs, out_root, *a, **k):
        seen.append(jobs[0].name)
        ok = jobs[0].name != "source-only"
        return [runner.JobResult(jobs[0].name, ok, 1.0, out_root / jobs[0].name / "notebook.ipynb", None,
                                 None if ok else "RuntimeError: boom")]

    monkeypatch.setattr(runner, "run_jobs", fake_run_jobs)
    summary = runner.main_job(tmp_path / "main", data_seed=1)
    assert seen == ["datasets", "source-only"]
    assert summary["ok"] is False and summary["jobs"]["source-only"]["error"] == "RuntimeError: boom"
    assert "not run: pseudo-labels, ours" in capsys.readouterr().out
