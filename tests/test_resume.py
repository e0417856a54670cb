"""Resume is exact: a run killed with SIGKILL at any moment -- after a step, in the middle of
writing a checkpoint, metrics.json or best.pt, or while a resumed run sets up -- and resumed with
`--resume` ends bit for bit like an uninterrupted run on CPU (CONTRACT.md): the same metrics.json
(per-class IoUs, mIoUs, history) and the same final checkpoint (model, optimiser, scheduler,
feature dictionaries with their pointers and norms, RNG states, mean losses).

The kills are exact, not timed: the engine's test hook `COSUDA_TEST_KILL_AT` (cosuda/train.py,
`_kill_point`) makes the process SIGKILL itself at a named point. Runs drive the real command
line in subprocesses on the tiny benchmark of conftest.py, one thread each.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cosuda import train as engine
from cosuda.config import make_config

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
ENV.pop("COSUDA_TEST_KILL_AT", None)
SETTINGS = {"source_size": "32x18", "target_size": "32x16", "eval_size": "32x16", "backbone": "resnet18",
            "output_stride": "8", "weights": "random", "norm": "group", "dict_size": "20", "num_workers": "0", "progress": "false",
            "iterations": "6", "eval_every": "2", "checkpoint_every": "2", "log_every": "1"}
# Where each run is killed, in order. First always: checkpoint 4's tmp file written but not renamed
# (before the evaluation of iteration 4, which comes after its checkpoint), so the run resumes
# from 2 and removes the stale tmp file once it holds the folder's lock. Then the resumed run is
# killed right after a step between checkpoints (it resumes from
# the checkpoint it wrote itself), or while it rewrites metrics.json at its start.
KILLS = {"synthetic-ours11": ["save:iter_0000004.pt", "iter:5"],
         "synthetic-ours": ["save:iter_0000004.pt", "save:metrics.json"]}


@pytest.fixture(scope="module")
def pseudo_root(tiny_benchmark, tmp_path_factory):
    """Pseudo-labels for synthetic-ours, made the documented way from a tiny source-only run."""
    run = tmp_path_factory.mktemp("resume_source_only") / "run"
    values = dict(SETTINGS, data_root=str(tiny_benchmark), iterations="2")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine.train(make_config("synthetic-source-only", values), run)
        return engine.make_pseudo_labels(run, tmp_path_factory.mktemp("resume_pseudo") / "labels", device="cpu",
                                         progress=False)
    finally:
        torch.set_num_threads(threads)


def _run(preset: str, out: Path, root: Path, pseudo: Path | None, resume: bool = False,
         kill_at: str | None = None) -> None:
    args = [sys.executable, "-m", "cosuda.train", "--preset", preset, "--out", str(out)]
    for k, v in dict(SETTINGS, data_root=str(root), **({"pseudo_root": str(pseudo)} if pseudo else {})).items():
        args += ["--set", f"{k}={v}"]
    env = dict(ENV, COSUDA_TEST_KILL_AT=kill_at) if kill_at else ENV
    proc = subprocess.run(args + (["--resume"] if resume else []), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    if kill_at:
        assert proc.returncode == -signal.SIGKILL, f"not killed at {kill_at}: rc {proc.returncode}\n{proc.stderr}"
    else:
        assert proc.returncode == 0, proc.stderr


def _assert_same(a, b, where: str = "") -> None:
    """Bitwise equality of nested checkpoint contents."""
    if torch.is_tensor(a):
        same = torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        assert same, f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif hasattr(a, "shape") and hasattr(a, "dtype"):  # numpy arrays of the numpy RNG state
        same = bool((a == b).all())
        assert same, f"{where} differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("preset", sorted(KILLS))
def test_sigkill_anywhere_then_resume_is_bit_exact(preset, tiny_benchmark, pseudo_root, tmp_path):
    pseudo = pseudo_root if preset == "synthetic-ours" else None
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(preset, whole, tiny_benchmark, pseudo)

    for n, point in enumerate(KILLS[preset]):
        _run(preset, killed, tiny_benchmark, pseudo, resume=n > 0, kill_at=point)
        if point == "save:iter_0000004.pt":  # the half-written checkpoint is never the one resumed
            assert len(list((killed / "checkpoints").glob("iter_0000004.pt.*.tmp"))) == 1  # NAME.<pid>.tmp
            assert engine.latest_checkpoint(killed).name == "iter_0000002.pt"
            # the checkpoint of an iteration comes before its evaluation: 4 was not evaluated yet
            assert [h["iteration"] for h in json.loads((killed / "metrics.json").read_text())["history"]] == [2]
    _run(preset, killed, tiny_benchmark, pseudo, resume=True)
    assert not list(killed.rglob("*.tmp"))  # the killed writers' leftovers are gone

    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (whole, killed))
    assert mb["finished"] is True and mb["iteration"] == 6
    assert [h["iteration"] for h in mb["history"]] == [2, 4, 6]
    for key in ("per_class_iou", "miou19", "miou16", "miou13", "history", "best", "alignment"):
        assert mb[key] == ma[key], key
    assert {k: v for k, v in mb.items() if k != "train"} == {k: v for k, v in ma.items() if k != "train"}
    rows = [json.loads(line) for line in (killed / "scalars.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]  # each logged once, in order

    final_a, final_b = (torch.load(d / "checkpoints" / "iter_0000006.pt", map_location="cpu", weights_only=False)
                        for d in (whole, killed))
    for key in ("model", "optimizer", "scheduler", "uda", "rng", "history", "loss_sums", "loss_steps", "iteration"):
        _assert_same(final_a[key], final_b[key], key)
    if preset in ("synthetic-ours", "synthetic-ours11"):
        (bank,) = final_b["uda"]["dictionaries"]
        assert int(bank["total"].sum()) > 0  # a dictionary with vectors took part in the comparison
    _assert_same(*(torch.load(d / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)["model"]
                   for d in (whole, killed)), "best.pt")


def test_dictionary_round_trip_keeps_the_reciprocal_norms_bit_for_bit():
    """The norms enqueue computed are saved, not recomputed: recomputing them over the (C, size, dim)
    buffer rounds differently from enqueue's reduction over the model's (N, k) view of (1, k, h, w)
    features (channel stride h*w), which made every resumed `ours` run drift in the last bits."""
    from cosuda.method import FeatureDictionary, cosine_loss

    torch.manual_seed(0)
    d = FeatureDictionary(19, 20, 512)
    for _ in range(3):
        feats = torch.randn(1, 512, 8, 6).permute(0, 2, 3, 1).reshape(-1, 512)  # a view, as process A gives
        assert not feats.is_contiguous()
        d.enqueue(feats, torch.randint(0, 19, (feats.shape[0],)))
    e = FeatureDictionary(19, 20, 512)
    e.load_state_dict(d.state_dict())
    assert torch.equal(e.inv_norms, d.inv_norms) and torch.equal(e.buffer, d.buffer)
    target, classes = torch.randn(40, 512), torch.randint(0, 19, (40,))
    assert torch.equal(cosine_loss(target, classes, d, 0.0, 19), cosine_loss(target, classes, e, 0.0, 19))
    # a state saved before the norms were part of it still loads (they are recomputed then)
    old = {k: v for k, v in d.state_dict().items() if k != "inv_norms"}
    f = FeatureDictionary(19, 20, 512)
    f.load_state_dict(old)
    torch.testing.assert_close(f.inv_norms, d.inv_norms)


def test_scalars_truncation_drops_later_rows_and_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "scalars.jsonl"
    path.write_text("".join(json.dumps({"iteration": i, "loss": 1.0}) + "\n" for i in (1, 2, 3)) + '{"itera')
    engine._truncate_scalars(path, 2)
    assert [json.loads(line)["iteration"] for line in path.read_text().splitlines()] == [1, 2]
    assert not list(tmp_path.glob("*.tmp"))
