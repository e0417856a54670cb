"""What the engine writes besides metrics.json: scalars.jsonl, best.pt, the alignment measures,
and a warm start from another run's model."""
import json

import pytest
import torch

from cosuda import train as engine
from cosuda.config import make_config

SMALL = {"source_size": (32, 18), "target_size": (32, 16), "eval_size": (32, 16), "dict_size": 20,
         "num_workers": 0, "progress": False}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(preset, root, out, **kw):
    cfg = make_config(preset, {**SMALL, "data_root": str(root), **kw})
    return engine.train(cfg, out)


def test_scalars_best_snapshot_and_alignment(tiny_benchmark, tmp_path):
    metrics = _train("synthetic-ours11", tiny_benchmark, tmp_path / "run", iterations=4, eval_every=2,
                     checkpoint_every=2, log_every=1, align_items=2)
    rows = [json.loads(l) for l in (tmp_path / "run" / "scalars.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert all(r["time"] > 0 for r in rows) and rows[-1]["time"] >= rows[0]["time"]
    for r in rows:  # the contract's fields: lr and every loss term of the step
        assert {"lr", "lr_backbone", "lr_classifier", "seg_s", "cos", "total"} <= set(r)
        assert r["lr_classifier"] == pytest.approx(10 * r["lr_backbone"])
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    assert best["iteration"] == metrics["best"]["iteration"]
    assert best["miou19"] == pytest.approx(metrics["best"]["miou19"], abs=1e-3)
    for h in metrics["history"]:
        assert set(h["alignment"]) == {"nn_accuracy", "cos_same", "cos_other", "cos_gap"}
    assert metrics["alignment"] == metrics["history"][-1]["alignment"]


def test_warm_start_from_a_run_folder(tiny_benchmark, tmp_path):
    _train("synthetic-source-only", tiny_benchmark, tmp_path / "stage1", iterations=2, eval_every=2,
           checkpoint_every=2)
    # lr 0: nothing moves, so the second run ends with the first run's weights exactly
    _train("synthetic-ours11", tiny_benchmark, tmp_path / "stage2", iterations=1, eval_every=1,
           checkpoint_every=1, lr=0.0, weight_decay=0.0, weights=str(tmp_path / "stage1"))
    first = torch.load(engine.latest_checkpoint(tmp_path / "stage1"), weights_only=False)["model"]
    second = torch.load(engine.latest_checkpoint(tmp_path / "stage2"), weights_only=False)["model"]
    assert all(torch.equal(first[k], second[k]) for k in first)
    with pytest.raises(engine.ConfigError, match="without checkpoints"):
        engine.resolve_weights(str(tmp_path))


def test_resumed_runs_rewrite_the_scalars_after_their_checkpoint(tmp_path):
    path = tmp_path / "scalars.jsonl"
    path.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in (10, 20, 30)))
    engine._truncate_scalars(path, 20)
    assert [json.loads(l)["iteration"] for l in path.read_text().splitlines()] == [10, 20]
