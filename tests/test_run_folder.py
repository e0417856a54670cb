"""A run folder cannot be silently corrupted (issue 21, items 1-4): one writer at a time, a resume
that continues the run as it was started, a checkpoint before every evaluation, and disk and file
errors as one line with nothing half-written left behind.

Runs on the tiny synthetic benchmark of conftest.py (ResNet-18 at 32x16, random weights), in this
process through `cosuda.train.main` where the error line is what is tested, in subprocesses where
two processes are.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cosuda import train as engine

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
ENV.pop("COSUDA_TEST_KILL_AT", None)
TINY = {"source_size": "32x18", "target_size": "32x16", "eval_size": "32x16", "backbone": "resnet18",
        "weights": "random", "norm": "group", "output_stride": "8", "dict_size": "20", "num_workers": "0",
        "progress": "false", "align_items": "0", "log_every": "1"}
PRESET = "synthetic-ours11"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _args(out: Path, root: Path, resume: bool = False, **sets) -> list[str]:
    values = dict(TINY, data_root=str(root), **{k: str(v) for k, v in sets.items()})
    return (["--preset", PRESET, "--out", str(out)] + sum((["--set", f"{k}={v}"] for k, v in values.items()), [])
            + (["--resume"] if resume else []))


def _main(argv: list[str], capsys) -> tuple[int, str]:
    """engine.main's exit code and its stderr."""
    code = engine.main(argv)
    return code, capsys.readouterr().err.strip()


def _one_line(err: str) -> str:
    assert len(err.splitlines()) == 1, err
    return err


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def _comparable(run: Path) -> dict:
    return {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k != "train"}


def _interrupt_at_steps(monkeypatch, steps: set[int]) -> None:
    """SIGINT (what Ctrl-C sends) during the n-th step call of this process, for n in `steps`."""
    from cosuda.uda import UDAStep

    calls = {"n": 0}
    step_call = UDAStep.__call__

    def interrupting(self, source, target):
        calls["n"] += 1
        if calls["n"] in steps:
            os.kill(os.getpid(), signal.SIGINT)
        return step_call(self, source, target)

    monkeypatch.setattr(UDAStep, "__call__", interrupting)


# --- 2. one writer per run folder ----------------------------------------------------------
def test_a_second_training_on_the_same_folder_exits_at_once_and_leaves_the_first_intact(tiny_benchmark, tmp_path):
    run = tmp_path / "run"
    endless = dict(seed=0, iterations=100000, eval_every=100000, checkpoint_every=100000)
    first = subprocess.Popen([sys.executable, "-m", "cosuda.train", *_args(run, tiny_benchmark, **endless)],
                             cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (run / "scalars.jsonl").is_file():  # the first is training (it locked the folder before)
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline, "the first run wrote no step within the time limit"
            time.sleep(0.05)
        started = time.time()
        second = subprocess.run([sys.executable, "-m", "cosuda.train",
                                 *_args(run, tiny_benchmark, seed=1, iterations=2, eval_every=2, checkpoint_every=2)],
                                cwd=REPO, env=ENV, capture_output=True, text=True, timeout=240)
        assert first.poll() is None, "the first run ended before the second one tried"
        assert second.returncode != 0
        err = _one_line(second.stderr.strip())
        assert str(run) in err and f"PID {first.pid}" in err, err
        assert time.time() - started < 120  # at once: it did not train
    finally:
        first.send_signal(signal.SIGTERM)  # stops after its step, with a checkpoint
        first.wait(timeout=120)
    assert first.returncode == 130, first.stderr.read()
    assert json.loads((run / "config.json").read_text())["seed"] == 0
    rows = [json.loads(line)["iteration"] for line in (run / "scalars.jsonl").read_text().splitlines()]
    assert rows == list(range(1, len(rows) + 1))  # one run's rows, each once
    state = torch.load(engine.latest_checkpoint(run), map_location="cpu", weights_only=False)
    assert state["config"]["seed"] == 0 and state["iteration"] == rows[-1]
    assert not list(run.rglob("*.tmp"))


def test_a_killed_holder_leaves_no_stale_lock_and_its_temporary_files_are_removed(tmp_path):
    from cosuda.runfolder import RunError, locked

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom cosuda.runfolder import locked\n"
                               f"with locked({str(run)!r}):\n    print('held', flush=True)\n    time.sleep(120)"],
                              cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=f"PID {holder.pid}"):
            with locked(run):
                pass
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / f"iter_0000002.pt.{holder.pid}.tmp").write_bytes(b"half")
    finally:
        holder.kill()  # SIGKILL: no clean-up of its own
        holder.wait(timeout=30)
    with locked(run):  # the kernel dropped the lock with the process
        assert (run / ".lock").read_text().strip() == str(os.getpid())
        assert not list(run.rglob("*.tmp"))


# --- 1. resume continues the run that was started ------------------------------------------
def test_resume_refuses_a_changed_value_and_an_override_is_recorded(tiny_benchmark, tmp_path, capsys):
    run = tmp_path / "run"
    base = dict(iterations=2, eval_every=2, checkpoint_every=2, t_cos=0.5)
    assert engine.main(_args(run, tiny_benchmark, **base)) == 0
    before = _snapshot(run)

    code, err = _main(_args(run, tiny_benchmark, resume=True, **dict(base, t_cos=0.7)), capsys)
    assert code == 2
    assert "t_cos 0.5 (run) vs 0.7 (given)" in _one_line(err) and "--override" in err, err
    assert _snapshot(run) == before  # config.json not rewritten, nothing else touched

    code, err = _main(_args(run, tiny_benchmark, resume=True, **base) + ["--override", "backbone=resnet34"], capsys)
    assert code == 2 and "backbone" in _one_line(err)

    code, err = _main(_args(run, tiny_benchmark, resume=True, **base) + ["--override", "iterations=4"], capsys)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finished"] and [h["iteration"] for h in metrics["history"]] == [2, 4]
    config = json.loads((run / "config.json").read_text())
    change = {"iteration": 2, "key": "iterations", "from": 2, "to": 4}
    assert config["iterations"] == 4 and config["t_cos"] == 0.5 and config["changes"] == [change]
    assert torch.load(run / "checkpoints" / "iter_0000004.pt", weights_only=False)["changes"] == [change]


def test_resume_without_a_set_the_run_was_started_with_keeps_the_checkpoint_value(tiny_benchmark, tmp_path,
                                                                                   capsys, monkeypatch):
    run = tmp_path / "run"
    _interrupt_at_steps(monkeypatch, {2, 3})  # stop at iteration 2; the resumed run at 3
    code, err = _main(_args(run, tiny_benchmark, iterations=1000, t_cos=0.5, eval_every=1000), capsys)
    assert code == 130 and engine.latest_checkpoint(run).name == "iter_0000002.pt", err
    code, err = _main(_args(run, tiny_benchmark, resume=True), capsys)  # no iterations, t_cos, eval_every
    assert code == 130 and engine.latest_checkpoint(run).name == "iter_0000003.pt", err
    state = torch.load(engine.latest_checkpoint(run), weights_only=False)
    config = json.loads((run / "config.json").read_text())
    for saved in (state["config"], config):  # not the preset's 1200, 0.6 and 300
        assert (saved["iterations"], saved["t_cos"], saved["eval_every"]) == (1000, 0.5, 1000)


# --- 4. a full disk -----------------------------------------------------------------------
@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 6842816 vs 6842712"),
])
def test_a_full_disk_is_one_line_naming_the_last_good_checkpoint_and_leaves_no_partial_file(
        failure, tiny_benchmark, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if Path(f).name.startswith("iter_0000004.pt"):
            Path(f).write_bytes(b"\0" * 1000)  # what a full disk leaves: part of the file
            raise failure
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    code, err = _main(_args(run, tiny_benchmark, iterations=6, eval_every=2, checkpoint_every=2), capsys)
    assert code == 1
    last_good = run / "checkpoints" / "iter_0000002.pt"
    assert _one_line(err).startswith(f"error: no space left on device while writing {run / 'checkpoints' / 'iter_0000004.pt'} (")
    assert " MB needed, " in err and err.endswith(f" MB free); the last good checkpoint is {last_good}"), err
    assert not list(run.rglob("*.tmp")) and engine.latest_checkpoint(run) == last_good
    monkeypatch.setattr(torch, "save", save)  # space again: the run resumes from its last good checkpoint
    assert engine.main(_args(run, tiny_benchmark, resume=True, iterations=6, eval_every=2, checkpoint_every=2)) == 0
    assert json.loads((run / "metrics.json").read_text())["iteration"] == 6


def test_too_little_free_space_is_found_before_writing_a_checkpoint(tiny_benchmark, tmp_path, capsys, monkeypatch):
    from cosuda import runfolder

    run = tmp_path / "run"
    monkeypatch.setattr(runfolder, "free_bytes", lambda folder: 1024 * 1024 if folder.name == "checkpoints" else 10**12)
    code, err = _main(_args(run, tiny_benchmark, iterations=2, eval_every=2, checkpoint_every=2), capsys)
    assert code == 1
    assert _one_line(err).startswith(f"error: no space left on device while writing {run / 'checkpoints' / 'iter_0000002.pt'}")
    assert err.endswith("MB needed, 1.0 MB free); no checkpoint has been written yet"), err
    assert not list((run / "checkpoints").iterdir())


# --- 3. checkpoint before evaluation; unreadable files -------------------------------------
def _copy(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    return copy


def _truncate(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data


def test_a_corrupt_val_image_at_an_evaluation_loses_no_training_and_the_resume_repeats_it(
        tiny_benchmark, tmp_path, capsys):
    settings = dict(iterations=4, eval_every=2, checkpoint_every=4, deterministic="true")
    assert engine.main(_args(tmp_path / "whole", tiny_benchmark, **settings)) == 0
    root, run = _copy(tiny_benchmark, tmp_path), tmp_path / "run"
    cfg = engine.make_config(PRESET, dict(TINY, data_root=str(root)))
    val = engine.build_datasets(cfg, engine.resolve_paths(cfg))[2]
    bad = Path(val.images[-1])
    good = _truncate(bad)

    code, err = _main(_args(run, root, **settings), capsys)
    assert code == 1
    assert "evaluation at iteration 2" in _one_line(err) and str(bad) in err, err
    assert engine.latest_checkpoint(run).name == "iter_0000002.pt"  # written before the evaluation
    bad.write_bytes(good)  # fixed: the resume evaluates iteration 2, then goes on
    code, err = _main(_args(run, root, resume=True, **settings), capsys)
    assert code == 0, err
    assert _comparable(run) == _comparable(tmp_path / "whole")
    assert [h["iteration"] for h in json.loads((run / "metrics.json").read_text())["history"]] == [2, 4]


def test_a_truncated_training_image_mid_run_is_one_line_and_the_run_resumes(tiny_benchmark, tmp_path, capsys):
    settings = dict(iterations=4, eval_every=4, checkpoint_every=4, deterministic="true")
    assert engine.main(_args(tmp_path / "whole", tiny_benchmark, **settings)) == 0
    root, run = _copy(tiny_benchmark, tmp_path), tmp_path / "run"
    cfg = engine.make_config(PRESET, dict(TINY, data_root=str(root)))
    source = engine.build_datasets(cfg, engine.resolve_paths(cfg))[0]
    order = iter(engine.StepSampler(len(source), cfg.seed, 1))  # the source images of steps 1, 2, 3, ...
    third = [next(order) for _ in range(3)][2]
    bad = Path(source.images[third])
    good = _truncate(bad)

    code, err = _main(_args(run, root, **settings), capsys)
    assert code == 1
    assert "training image at iteration 3" in _one_line(err) and str(bad) in err, err
    assert engine.latest_checkpoint(run).name == "iter_0000002.pt"  # the two steps done are kept
    bad.write_bytes(good)
    code, err = _main(_args(run, root, resume=True, **settings), capsys)
    assert code == 0, err
    assert _comparable(run) == _comparable(tmp_path / "whole")
