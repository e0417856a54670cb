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
