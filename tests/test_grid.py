"""The synthetic grid: its plan (paired by seed), its scheduler, the committed layout, paired stats."""
import json
import math

import pytest

from cosuda import grid


def test_plan_pairs_every_variant_with_its_seeds_stage1_model_and_pseudo_labels(tmp_path):
    jobs = {j.name: j for j in grid.plan(tmp_path, "gta5", seeds=[0, 1], iterations=50, source_iterations=70,
                                         pseudo_from="source-only")}
    stage1 = jobs["gta5/_prep/seed1/source-only"]
    assert "iterations=70" in stage1.args and "seed=1" in stage1.args
    ours = jobs["gta5/ours/seed1"]
    assert ours.after == ("gta5/_prep/seed1/source-only", "gta5/_prep/seed1/pseudo-source-only")
    assert f"weights={stage1.out}" in ours.args and "iterations=50" in ours.args
    assert jobs["gta5/_prep/seed1/pseudo-source-only"].after == ("gta5/_prep/seed1/source-only",)
    # variants without pseudo-labels do not wait for them; the source-only row is trained further too
    assert jobs["gta5/ours11/seed0"].after == ("gta5/_prep/seed0/source-only",)
    assert jobs["gta5/source-only/seed0"].out == tmp_path / "source-only" / "seed0"


def test_plan_with_pseudo_labels_from_an_adapted_model_by_default(tmp_path):
    jobs = {j.name: j for j in grid.plan(tmp_path, "synthia", seeds=[0])}
    assert jobs["synthia/_prep/seed0/pseudo-ours11"].after == ("synthia/ours11/seed0",)
    assert "synthia/_prep/seed0/pseudo-ours11" in jobs["synthia/only-ssl/seed0"].after
    assert "source=synthia" in jobs["synthia/ours/seed0"].args and "source_size=320,190" in jobs["synthia/ours/seed0"].args
    with pytest.raises(ValueError, match="pseudo_from"):
        grid.plan(tmp_path, "gta5", variants=["ours"], pseudo_from="ours11")
    with pytest.raises(ValueError, match="task"):
        grid.plan(tmp_path, "kitti")


def test_run_respects_order_and_skips_what_depends_on_a_failure(tmp_path, capsys):
    ok_a = grid.TrainJob("a", ["--list-presets"], tmp_path / "a", kind="pseudo")
    bad = grid.TrainJob("b", ["--preset", "synthetic-no-such-variant", "--out", str(tmp_path / "b")], tmp_path / "b",
                        after=("a",))
    child = grid.TrainJob("c", ["--list-presets"], tmp_path / "c", after=("b",), kind="pseudo")
    results = grid.run([ok_a, bad, child], parallel=2, status_every=1000)
    assert results == {"a": True, "b": False, "c": False}
    out = capsys.readouterr().out
    assert "FAILED b" in out and "unknown preset" in out and "skipped c" in out
    assert (tmp_path / "b.log").read_text().count("unknown preset") >= 1


def _metrics(miou, finished=True):
    return {"miou19": miou, "finished": finished, "iteration": 10}


def test_publish_and_load_the_committed_layout(tmp_path):
    runs = tmp_path / "runs"
    for variant, seed, miou, fin in [("ours", 0, 50.0, True), ("ours", 1, 52.0, True), ("only-ssl", 0, 49.0, True),
                                     ("only-ssl", 1, 1.0, False)]:
        (runs / variant / f"seed{seed}").mkdir(parents=True)
        (runs / variant / f"seed{seed}" / "metrics.json").write_text(json.dumps(_metrics(miou, fin)))
    written = grid.publish(runs, "gta5", tmp_path / "docs")
    assert len(written) == 3  # the unfinished run is not a result
    assert (tmp_path / "docs" / "gta5" / "ours" / "seed1" / "metrics.json").is_file()
    loaded = grid.load("gta5", tmp_path / "docs")
    assert sorted(loaded) == ["only-ssl", "ours"] and sorted(loaded["ours"]) == [0, 1]


def test_paired_differences_with_a_t_interval():
    runs = {"a": {0: _metrics(10.0), 1: _metrics(12.0), 2: _metrics(14.0)},
            "b": {0: _metrics(9.0), 1: _metrics(10.0), 2: _metrics(11.0), 3: _metrics(0.0)}}
    p = grid.paired(runs, "a", "b")
    assert p["seeds"] == [0, 1, 2] and p["diffs"] == [1.0, 2.0, 3.0] and p["mean"] == 2.0
    assert p["low"] == pytest.approx(2.0 - 4.303 * 1.0 / math.sqrt(3))
    one = grid.paired({"a": {0: _metrics(1.0)}, "b": {0: _metrics(0.5)}}, "a", "b")
    assert one["mean"] == 0.5 and math.isnan(one["low"])


def test_sweep_points_are_paired_with_the_grid(tmp_path):
    grid_jobs = {j.name for j in grid.plan(tmp_path / "gta5", "gta5", seeds=[0, 1])}
    sweep = grid.sweep_plan(tmp_path / "gta5", tmp_path / "gta5-sweep", {"t_cos": [0.5], "dict_size": [100]},
                            seeds=[0, 1])
    assert [j.name for j in sweep] == ["gta5-sweep/tcos0.5/seed0", "gta5-sweep/tcos0.5/seed1",
                                       "gta5-sweep/dict100/seed0", "gta5-sweep/dict100/seed1"]
    for job in sweep:
        assert set(job.after) <= grid_jobs  # the grid's stage-1 model and pseudo-labels of the seed
    assert "t_cos=0.5" in sweep[0].args and f"weights={tmp_path / 'gta5' / '_prep' / 'seed0' / 'source-only'}" in sweep[0].args
    with pytest.raises(ValueError, match="sweep over"):
        grid.sweep_plan(tmp_path, tmp_path, {"lr": [1e-3]})


def test_the_committed_grid_keeps_the_contract_layout():
    """docs/results/synthetic/<task>/<variant>/seed<N>/metrics.json, task gta5 or synthia, variant a
    preset's: what outside checks read. Sweeps live in the sibling folder, never in between."""
    from cosuda.config import make_config

    tasks = sorted(p.name for p in grid.PUBLISHED.iterdir() if p.is_dir())
    assert tasks and set(tasks) <= {"gta5", "synthia"}, tasks
    for task in tasks:
        for seed_dir in sorted((grid.PUBLISHED / task).glob("*/*")):
            variant = seed_dir.parent.name
            assert variant in grid.GRID_VARIANTS and seed_dir.name.startswith("seed"), seed_dir
            metrics = json.loads((seed_dir / "metrics.json").read_text())
            assert metrics["finished"] and metrics["seed"] == int(seed_dir.name[4:])
            assert metrics["preset"] == f"synthetic-{variant}" and make_config(metrics["preset"]).variant == variant
            assert isinstance(metrics["miou19"], float)
    assert grid.PUBLISHED_SWEEPS == grid.PUBLISHED.with_name("synthetic-sweeps")


def test_the_grid_command_publishes_rows_and_sweeps_apart(tmp_path, capsys):
    from cosuda import runner

    out, dest = tmp_path / "runs" / "gta5", tmp_path / "pub" / "synthetic"
    jobs = grid.plan(out, "gta5", ["ours11", "ours"], [0])
    jobs += grid.sweep_plan(out, out.parent / "gta5-sweep", {"t_cos": [0.5]}, "gta5", [0])
    for job in jobs:  # every job already finished: the command only publishes
        job.out.mkdir(parents=True, exist_ok=True)
        name = "thresholds.json" if job.kind == "pseudo" else "metrics.json"
        (job.out / name).write_text(json.dumps(_metrics(30.0)))
    code = runner.main(["grid", "--task", "gta5", "--out", str(out), "--variants", "ours11", "ours", "--seeds", "0",
                        "--sweep", "t_cos=0.5", "--publish", str(dest)])
    assert code == 0 and "3 metrics.json copied" in capsys.readouterr().out  # two rows and the sweep point
    assert sorted(p.name for p in dest.iterdir()) == ["gta5"]
    assert sorted(grid.load("gta5", dest)) == ["ours", "ours11"]  # not the stage-1 model under _prep
    assert sorted(grid.load("gta5", grid.sweeps_dest(dest))) == ["tcos0.5"]
