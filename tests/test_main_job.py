"""The main job's contract: benchmark seed and place, training seed, summary.json, config.json,
what is published under docs/results/main/."""
import json
from pathlib import Path

import pytest

from cosuda import executors, main_job

MIOU = {"source-only": 30.0, "ours": 36.5, "source-only-continued": 31.0}


def _fake_run(seen: list, fail: str | None = None):
    """An executor that 'trains' each job: writes the metrics.json and config.json a run would."""
    def run(plan, executor="local", parallel=1, gpus=None, slurm=None, **kw):
        seen.extend(plan)
        out = {}
        for job in plan:
            if any(not out[a].ok for a in job.after):
                out[job.name] = executors.JobResult(job.name, False, 0.0, None, None, "needs", skipped=True)
                continue
            ok = fail is None or fail not in job.name
            if ok and job.kind == "train":
                variant = "_prep" if "_prep" in str(job.out) else job.out.parent.name
                miou = MIOU[{"_prep": "source-only", "source-only": "source-only-continued"}.get(variant, variant)]
                job.out.mkdir(parents=True, exist_ok=True)
                (job.out / "metrics.json").write_text(json.dumps({"miou19": miou, "iteration": 10, "finished": True,
                                                                  "history": [{"iteration": 10, "miou19": miou}]}))
                (job.out / "config.json").write_text(json.dumps({"seed": 3, "provenance": {"commit": "abc"}}))
            out[job.name] = executors.JobResult(job.name, ok, 1.0, job.out / "log.txt", None,
                                                None if ok else "RuntimeError: boom")
        return out
    return run


def _arg(job, key):
    sets = [job.args[i + 1] for i, a in enumerate(job.args) if a == "--set"]
    return dict(s.split("=", 1) for s in sets).get(key)


def test_summary_holds_the_contract_fields_and_the_equal_budget_baseline(tmp_path, monkeypatch):
    made, seen = {}, []
    monkeypatch.setattr("cosuda.synthetic.ensure", lambda root, seed=0, progress=True: made.update(root=root, seed=seed))
    monkeypatch.setattr(executors, "run", _fake_run(seen))
    summary = main_job.main_job(tmp_path / "main", seed=3, data_seed=7, baseline="continued")
    # a non-default benchmark seed never overwrites the default benchmark
    assert made == {"root": tmp_path / "main" / "data", "seed": 7}
    assert [j.name for j in seen] == ["main/gta5/_prep/seed3/source-only", "main/gta5/_prep/seed3/pseudo-source-only",
                                      "main/gta5/source-only/seed3", "main/gta5/ours/seed3"]
    trains = [j for j in seen if j.kind == "train"]
    assert all(_arg(j, "seed") == "3" and _arg(j, "data_root") == str(made["root"]) for j in trains)
    assert _arg(trains[0], "eval_every") == "600"  # two evaluations: half-way and final
    on_disk = json.loads((tmp_path / "main" / "summary.json").read_text())
    assert on_disk == summary
    assert summary["seed"] == 3 and summary["data_seed"] == 7 and isinstance(summary["seconds"], float)
    assert summary["runs"]["ours"]["miou19"] == 36.5
    assert summary["runs"]["source-only"]["miou19"] == 31.0          # trained as long as Ours
    assert summary["runs"]["source-only-stage1"]["miou19"] == 30.0   # the model that made the pseudo-labels
    config = json.loads((tmp_path / "main" / "config.json").read_text())
    assert config["command"]["baseline"] == "continued" and config["runs"]["ours"]["provenance"]["commit"] == "abc"
    assert config["provenance"]["seconds"] == summary["seconds"] and config["provenance"]["cpu"]


def test_default_seed_uses_the_default_benchmark(tmp_path, monkeypatch):
    from cosuda.config import SYNTHETIC_ROOT

    made = {}
    monkeypatch.setattr("cosuda.synthetic.ensure", lambda root, seed=0, progress=True: made.update(root=root, seed=seed))
    monkeypatch.setattr(executors, "run", _fake_run([]))
    summary = main_job.main_job(tmp_path / "main", baseline="stage1")
    assert made == {"root": SYNTHETIC_ROOT, "seed": 0}
    assert summary["runs"]["source-only"]["miou19"] == 30.0 and summary["baseline"] == "stage1"


def test_a_relative_out_is_taken_from_cosuda_home(tmp_path, monkeypatch):
    from cosuda import paths

    monkeypatch.setattr(paths, "HOME", tmp_path)
    made, seen = {}, []
    monkeypatch.setattr("cosuda.synthetic.ensure", lambda root, seed=0, progress=True: made.update(root=root, seed=seed))
    monkeypatch.setattr(executors, "run", _fake_run(seen))
    main_job.main_job("runs/x", data_seed=1)
    assert made["root"] == tmp_path / "runs" / "x" / "data"
    assert (tmp_path / "runs" / "x" / "summary.json").is_file()
    assert all(j.out.is_absolute() and str(j.out).startswith(str(tmp_path)) for j in seen)


def test_a_failed_step_stops_the_main_job_and_the_summary_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr("cosuda.synthetic.ensure", lambda root, seed=0, progress=True: None)
    monkeypatch.setattr(executors, "run", _fake_run([], fail="_prep/seed0/source-only"))
    summary = main_job.main_job(tmp_path / "main", data_seed=1)
    jobs = summary["jobs"]
    assert summary["ok"] is False and jobs["main/gta5/_prep/seed0/source-only"]["error"] == "RuntimeError: boom"
    assert jobs["main/gta5/ours/seed0"]["skipped"] and "ours" not in summary["runs"]


def test_publish_copies_summary_and_config_with_portable_paths(tmp_path, monkeypatch):
    from cosuda import paths

    monkeypatch.setattr(paths, "HOME", tmp_path)
    monkeypatch.setattr("cosuda.results.HOME", tmp_path)
    monkeypatch.setattr("cosuda.synthetic.ensure", lambda root, seed=0, progress=True: None)
    monkeypatch.setattr(executors, "run", _fake_run([]))
    main_job.main_job("runs/m", data_seed=2)
    target = main_job.publish_main("runs/m", "seed0-data2", dest=tmp_path / "docs")
    summary = json.loads((target / "summary.json").read_text())
    assert summary["data_root"] == "runs/m/data" and summary["runs"]["ours"]["miou19"] == 36.5
    assert json.loads((target / "config.json").read_text())["command"]["data_seed"] == 2


@pytest.mark.parametrize("argv", [["main", "--pseudo-from", "ourz"], ["main", "--baseline", "longer"]])
def test_bad_main_options_are_refused_by_the_parser(argv, tmp_path):
    from cosuda import runner

    with pytest.raises(SystemExit):
        runner.main(argv + ["--out", str(tmp_path / "m")])
    assert not Path(tmp_path / "m").exists()
