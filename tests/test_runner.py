"""The results table: seeds aggregated honestly, paper numbers labelled as another benchmark."""
import json
import math

from cosuda.runner import collect, mean_std, results_table


def _write(root, name, seed, final, best, history=()):
    d = root / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({
        "seed": seed, "miou19": final, "best": {"miou19": best, "iteration": 10},
        "history": [{"iteration": i, "miou19": v} for i, v in history]}))


def test_mean_std_uses_sample_std_and_skips_missing():
    m, s = mean_std([1.0, 2.0, 3.0, None])
    assert m == 2.0 and abs(s - 1.0) < 1e-12
    assert mean_std([5.0]) == (5.0, 0.0)
    assert all(math.isnan(x) for x in mean_std([]))


def test_collect_groups_seeds_and_table_shows_them(tmp_path):
    _write(tmp_path, "ours-seed0", 0, 40.0, 41.0)
    _write(tmp_path, "ours-seed1", 1, 44.0, 45.0)
    _write(tmp_path, "only-ssl-seed0", 0, 30.0, 30.0)
    runs = collect(tmp_path)
    assert sorted(runs) == ["only-ssl", "ours"] and len(runs["ours"]) == 2
    table = results_table(tmp_path)
    row = next(l for l in table.splitlines() if l.startswith("| ours |"))
    assert "0,1" in row and "42.00 ± 2.83" in row and "43.00 ± 2.83" in row
    assert "49.70" in row  # the paper's number, in its own column
    assert "real data" in table.splitlines()[0]


def test_interrupted_runs_are_not_results(tmp_path):
    _write(tmp_path, "ours-seed0", 0, 40.0, 41.0)
    d = tmp_path / "ours-seed1"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"seed": 1, "miou19": 5.0, "finished": False}))
    assert len(collect(tmp_path)["ours"]) == 1


def test_torchrun_reports_a_failed_run_with_its_log(tmp_path):
    """A run that fails inside torchrun raises, naming the log and showing its last lines (the
    successful path runs in notebooks/12_scale_out, executed by the test command)."""
    import pytest

    from cosuda.runner import torchrun

    with pytest.raises(RuntimeError, match="unknown preset") as err:
        torchrun("synthetic-no-such-variant", tmp_path / "run", nproc_per_node=1, progress=False)
    assert "torchrun.log" in str(err.value)
    assert (tmp_path / "run" / "torchrun.log").read_text().count("unknown preset") >= 1
