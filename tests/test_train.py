"""The training engine as users rely on it: every variant trains, a killed run resumes to the same
numbers, checkpoints hold the whole state, and bad configurations fail before anything is written.

Runs on the tiny synthetic benchmark of conftest.py at 32x16 pixels (64x32 for the adversarial
variants), so each run takes a second or two; the kill-and-resume test drives the real command
line in subprocesses.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cosuda import train as engine
from cosuda.config import PRESETS, VARIANTS, ConfigError, make_config

REPO = Path(__file__).resolve().parent.parent
# The network spelled out (ResNet-18, random init, GroupNorm, stride 8) rather than taken from the
# synthetic presets, whose default backbone and weights may change: the engine is what is tested.
TINY = {"source_size": "32x18", "target_size": "32x16", "eval_size": "32x16", "backbone": "resnet18",
        "weights": "random", "norm": "group", "output_stride": "8",
        "dict_size": "20", "num_workers": "0", "progress": "false"}
# The discriminator's five stride-2 4x4 convolutions need at least 32 pixels on each side.
ADVERSARIAL_SIZES = {"source_size": "64x36", "target_size": "64x32"}
# One thread: on a shared 2-core machine, two OpenMP threads per process oversubscribe the
# cores and tiny convolutions become 20x slower (measured), without changing what is tested.
ONE_THREAD_ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
# Which loss terms each variant must log (eq. 11, eq. 12, Table 4, supplementary C).
TERMS = {
    "source-only": {"seg_s"}, "oracle": {"seg_t"}, "only-ssl": {"seg_s", "seg_t"},
    "ssl-adv": {"seg_s", "seg_t", "adv", "disc"}, "adversarial": {"seg_s", "adv", "disc"},
    "ours11": {"seg_s", "cos"}, "ours": {"seg_s", "seg_t", "cos"}, "wo-dict": {"seg_s", "seg_t", "cos"},
    "wo-split": {"seg_s", "seg_t", "cos"}, "with-adv": {"seg_s", "seg_t", "cos", "adv", "disc"},
}
CONTRACT_VARIANTS = ["source-only", "oracle", "only-ssl", "ssl-adv", "adversarial", "ours11", "ours",
                     "wo-dict", "wo-split", "with-adv"]


@pytest.fixture(scope="session")
def tiny_root(tiny_benchmark):
    """The shared tiny benchmark of conftest.py (6 GTA5-like, 6 + 3 Cityscapes-like images)."""
    return tiny_benchmark


@pytest.fixture(scope="session")
def pseudo_root(tiny_root, tmp_path_factory):
    """Pseudo-labels made the documented way: a tiny source-only run, then make_pseudo_labels."""
    run = tmp_path_factory.mktemp("source_only") / "run"
    engine.train(_config("synthetic-source-only", tiny_root, iterations=2, eval_every=2, checkpoint_every=2), run)
    return engine.make_pseudo_labels(run, tmp_path_factory.mktemp("pseudo") / "labels", device="cpu",
                                     progress=False)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _restore_determinism():
    # train(deterministic=True) switches PyTorch's global flag on; keep the other tests unaffected
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def _sizes(preset):
    return dict(TINY, **ADVERSARIAL_SIZES) if VARIANTS[PRESETS[preset]["variant"]].adversarial else TINY


def _config(preset, root, pseudo=None, **overrides):
    values = dict(_sizes(preset), data_root=str(root))
    if pseudo is not None:
        values["pseudo_root"] = str(pseudo)
    values.update({k: str(v) if not isinstance(v, str) else v for k, v in overrides.items()})
    return make_config(preset, values)


def _cli_args(preset, out, root, pseudo=None, **overrides):
    values = dict(_sizes(preset), data_root=str(root), **{k: str(v) for k, v in overrides.items()})
    if pseudo is not None:
        values["pseudo_root"] = str(pseudo)
    args = [sys.executable, "-m", "cosuda.train", "--preset", preset, "--out", str(out)]
    for k, v in values.items():
        args += ["--set", f"{k}={v}"]
    return args


def _comparable(metrics: dict) -> dict:
    """metrics.json without what legitimately differs between two runs (timings)."""
    return {k: v for k, v in metrics.items() if k != "train"}


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")} if folder.exists() else {}


# --- every variant -------------------------------------------------------------------------
@pytest.mark.parametrize("variant", CONTRACT_VARIANTS)
def test_every_variant_trains_and_writes_the_contract_metrics(variant, tiny_root, pseudo_root, tmp_path, monkeypatch):
    from cosuda.uda import UDAStep

    seen = []
    step_call = UDAStep.__call__

    def spy(self, source, target):
        seen.append((source is not None, None if target is None else "label" in target))
        return step_call(self, source, target)

    monkeypatch.setattr(UDAStep, "__call__", spy)
    cfg = _config(f"synthetic-{variant}", tiny_root, pseudo_root, iterations=2, eval_every=2, checkpoint_every=2)
    run = tmp_path / "run"
    returned = engine.train(cfg, run, preset=f"synthetic-{variant}")

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(returned))
    assert metrics["iteration"] == 2 and metrics["finished"] is True
    assert isinstance(metrics["miou19"], float) and 0.0 <= metrics["miou19"] <= 100.0
    assert len(metrics["per_class_iou"]) == 19
    assert all(v is None or 0.0 <= v <= 100.0 for v in metrics["per_class_iou"])
    assert [h["iteration"] for h in metrics["history"]] == [2]
    # the variant switches on exactly its loss terms, and "total" is their weighted sum
    losses = metrics["train"]["last_losses"]
    assert set(losses) - {"total"} == TERMS[variant]
    weighted = (losses.get("seg_s", 0) + losses.get("seg_t", 0) + cfg.lambda_cos * losses.get("cos", 0)
                + cfg.lambda_adv * losses.get("adv", 0))
    assert losses["total"] == pytest.approx(weighted, abs=1e-4)
    # target labels reach the step only where the variant trains on them (pseudo or oracle)
    assert len(seen) == 2
    for has_source, target_has_label in seen:
        assert has_source == (variant != "oracle")
        if variant == "source-only":
            assert target_has_label is None  # no target image is even loaded
        else:
            assert target_has_label == (VARIANTS[variant].target_seg != "none")
    assert json.loads((run / "config.json").read_text())["variant"] == variant


def test_checkpoints_hold_the_whole_state_and_are_written_atomically(tiny_root, pseudo_root, tmp_path):
    run = tmp_path / "run"
    engine.train(_config("synthetic-with-adv", tiny_root, pseudo_root, iterations=6, eval_every=3,
                         checkpoint_every=2, keep_checkpoints=2), run)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.pt", "iter_0000004.pt", "iter_0000006.pt"]  # the two newest kept, and the best
    assert not list(run.rglob("*.tmp"))
    state = torch.load(run / "checkpoints" / "iter_0000006.pt", map_location="cpu", weights_only=False)
    for key in ("model", "optimizer", "scheduler", "uda", "discriminator", "d_optimizer", "d_scheduler",
                "iteration", "rng", "history", "config"):
        assert key in state, key
    assert state["iteration"] == 6
    assert set(state["rng"]) >= {"torch", "numpy", "python"}
    (bank,) = state["uda"]["dictionaries"]  # one dictionary for DeepLabV2's one feature layer
    assert bank  # the dictionary is saved, not an empty placeholder
    assert [h["iteration"] for h in state["history"]] == [3, 6]

    plain = tmp_path / "plain"
    engine.train(_config("synthetic-only-ssl", tiny_root, pseudo_root, iterations=2, eval_every=2,
                         checkpoint_every=2), plain)
    state = torch.load(plain / "checkpoints" / "iter_0000002.pt", map_location="cpu", weights_only=False)
    assert "discriminator" not in state and state["uda"]["dictionaries"] == []


# The keys of every checkpoint written since CHECKPOINT_VERSION 1 (the grid's runs resume from them).
CHECKPOINT_KEYS = {"version", "iteration", "config", "model", "optimizer", "scheduler", "uda", "rng", "history",
                   "world_size", "loss_sums", "loss_steps", "elapsed", "scaler"}
ADVERSARIAL_KEYS = {"discriminator", "d_optimizer", "d_scheduler"}


def _same(a, b) -> bool:
    """Bitwise equality of nested state: tensors, NumPy arrays (RNG), dicts, lists, plain values."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return bool((a == b).all())
    return a == b


def _random_batch(size_wh, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    w, h = size_wh
    return {"image": torch.rand(1, 3, h, w, generator=g), "label": torch.randint(0, 19, (1, h, w), generator=g)}


def test_training_state_round_trips_through_one_state_dict(tmp_path):
    """TrainingState.state_dict() is one checkpoint file (the version-1 keys) and load_state_dict()
    restores all of it: a fresh state loaded from it saves the same contents and takes the same
    next step as the state that wrote it. No data is read: batches are random tensors."""
    cfg = _config("synthetic-with-adv", tmp_path)  # discriminator, dictionary, loss sums: all of it
    device = torch.device("cpu")
    a = engine.build_state(cfg, device, "fp32")
    src, tgt = _random_batch(cfg.source_size, 1), _random_batch(cfg.target_size, 2)
    for _ in range(2):
        a.train_step(src, tgt)
    a.history.append({"iteration": 2, "miou19": 12.5})
    torch.save(a.state_dict(), tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=False)
    assert set(saved) == CHECKPOINT_KEYS | ADVERSARIAL_KEYS
    assert saved["iteration"] == 2 and saved["loss_steps"] == 2 and set(saved["loss_sums"]) >= {"seg_s", "cos", "adv"}
    assert int(saved["uda"]["dictionaries"][0]["total"].sum()) > 0

    b = engine.build_state(cfg, device, "fp32")  # iteration 0: other weights, empty dictionary
    assert not _same(b.model.state_dict(), saved["model"])
    b.load_state_dict(saved)
    assert (b.iteration, b.history, b.loss_steps, b.loss_sums) == (2, a.history, 2, a.loss_sums)
    assert b.seconds >= saved["elapsed"]
    again = b.state_dict()
    assert _same({k: v for k, v in again.items() if k != "elapsed"},
                 {k: v for k, v in saved.items() if k != "elapsed"})

    logs_b = b.train_step(src, tgt)  # the generators as saved (load_state_dict restored them)
    engine._set_rng_state(saved["rng"], device)
    logs_a = a.train_step(src, tgt)
    assert logs_a == logs_b
    assert _same(a.model.state_dict(), b.model.state_dict())
    assert _same(a.step.state_dict(), b.step.state_dict())
    assert _same(a.d_optimizer.state_dict(), b.d_optimizer.state_dict())


def test_training_state_without_discriminator_saves_the_version_1_keys(tmp_path):
    state = engine.build_state(_config("synthetic-only-ssl", tmp_path), torch.device("cpu"), "fp32")
    saved = state.state_dict()
    assert set(saved) == CHECKPOINT_KEYS and saved["version"] == engine.CHECKPOINT_VERSION == 1
    assert saved["uda"] == {"dictionaries": []} and saved["scaler"] is None


def test_step_takes_a_variant_never_a_dict_of_strings():
    from cosuda.uda import UDAStep

    with pytest.raises(TypeError, match="Variant"):
        UDAStep(None, None, {"source_seg": True, "cos": "dict"}, num_classes=19, t_cos=0.6, lambda_cos=0.1,
                dict_size=4, feature_dims=[8])
    with pytest.raises(ValueError, match="ourz"):
        UDAStep(None, None, "ourz", num_classes=19, t_cos=0.6, lambda_cos=0.1, dict_size=4, feature_dims=[8])


# --- interrupt and resume ------------------------------------------------------------------
def test_killed_run_resumed_from_the_command_line_ends_like_an_uninterrupted_one(tiny_root, pseudo_root, tmp_path):
    """SIGKILL at some point after the checkpoint at iteration 4, then --resume: same metrics.json."""
    settings = dict(iterations=8, eval_every=2, checkpoint_every=2, deterministic="true")
    env = ONE_THREAD_ENV
    a, b = tmp_path / "a", tmp_path / "b"
    subprocess.run(_cli_args("synthetic-with-adv", a, tiny_root, pseudo_root, **settings), cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(_cli_args("synthetic-with-adv", b, tiny_root, pseudo_root, **settings), cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while not any(int(p.stem[5:]) >= 4 for p in (b / "checkpoints").glob("iter_*.pt")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no checkpoint at iteration 4 within the time limit"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = json.loads((b / "metrics.json").read_text())
    assert killed["finished"] is False and killed["iteration"] < 8, "the kill came too late to test anything"

    subprocess.run(_cli_args("synthetic-with-adv", b, tiny_root, pseudo_root, **settings) + ["--resume"],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert mb["finished"] is True and mb["iteration"] == 8
    assert [h["iteration"] for h in mb["history"]] == [2, 4, 6, 8]
    assert _comparable(mb) == _comparable(ma)


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_and_resume_matches(tiny_root, tmp_path, monkeypatch):
    """In process: SIGINT during step 4 -> checkpoint at 4 and KeyboardInterrupt; resume to 6."""
    from cosuda.uda import UDAStep

    cfg = _config("synthetic-ours11", tiny_root, iterations=6, eval_every=2, checkpoint_every=3, deterministic="true")
    whole = engine.train(cfg, tmp_path / "whole")

    calls = {"n": 0}
    step_call = UDAStep.__call__

    def interrupting(self, source, target):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends; the engine's handler takes it
        return step_call(self, source, target)

    monkeypatch.setattr(UDAStep, "__call__", interrupting)
    run = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt, match="iteration 4"):
        engine.train(cfg, run)
    assert engine.latest_checkpoint(run).name == "iter_0000004.pt"  # written on stop, off the schedule
    monkeypatch.setattr(UDAStep, "__call__", step_call)
    resumed = engine.train(cfg, run, resume=True)
    assert _comparable(resumed) == _comparable(whole)


# --- the command line ----------------------------------------------------------------------
def test_list_presets_prints_every_contract_preset(capsys):
    assert engine.main(["--list-presets"]) == 0
    printed = capsys.readouterr().out.split()
    expected = {f"synthetic-{v}" for v in CONTRACT_VARIANTS} | {
        f"{s}-{n}-{v}" for s in ("gta5", "synthia") for n in ("deeplabv2", "fcn8s") for v in CONTRACT_VARIANTS}
    assert set(printed) >= expected and len(printed) == len(set(printed)) == len(PRESETS)


def _fails(argv, capsys, needle):
    """main() returns non-zero with one line on stderr that names `needle`."""
    code = engine.main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert needle in err, err
    return err


@pytest.mark.parametrize("sets, needle", [
    (["iterations=abc"], "iterations"),
    (["no_such_key=1"], "no_such_key"),
    (["data_root=/no/such/folder"], "/no/such/folder"),
    (["t_cos=2"], "t_cos"),
    (["lr=-1"], "lr must be 0 or more"),
    (["lambda_cos=-0.1"], "lambda_cos must be 0 or more"),
    (["compile=graphs"], "compile"),
    (["compile=step", "precision=fp32"], "compile=step needs the grouped cosine loss"),
])
def test_bad_settings_fail_in_one_line_before_the_run_dir_exists(sets, needle, tmp_path, capsys):
    out = tmp_path / "run"
    _fails(["--preset", "synthetic-ours11", "--out", str(out)] + sum((["--set", s] for s in sets), []),
           capsys, needle)
    assert not out.exists()


def test_unknown_preset_exits_non_zero_from_the_shell(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "cosuda.train", "--preset", "gta5-deeplabv3-ours", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=ONE_THREAD_ENV)
    assert proc.returncode != 0
    assert "gta5-deeplabv3-ours" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_pseudo_labels_missing_or_not_matching_the_target_set(tiny_root, pseudo_root, tmp_path, capsys):
    base = ["--preset", "synthetic-ours"] + sum((["--set", f"{k}={v}"] for k, v in TINY.items()), []) + [
        "--set", f"data_root={tiny_root}"]
    out = tmp_path / "run"
    _fails(base + ["--out", str(out)], capsys, "pseudo_root")  # no folder given at all
    assert not out.exists()
    # a folder holding labels for only part of the target train set (e.g. another dataset's)
    partial = tmp_path / "partial"
    labels = sorted(p for p in Path(pseudo_root).rglob("*.png"))
    for p in labels[:2]:
        dest = partial / p.relative_to(pseudo_root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(p.read_bytes())
    _fails(base + ["--out", str(out), "--set", f"pseudo_root={partial}"], capsys, str(partial))
    assert not out.exists()


def test_resuming_a_run_of_another_variant_is_refused_and_leaves_it_untouched(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    engine.train(_config("synthetic-source-only", tiny_root, iterations=2, eval_every=2, checkpoint_every=2), run)
    before = _snapshot(run)
    sets = sum((["--set", f"{k}={v}"] for k, v in TINY.items()), []) + ["--set", f"data_root={tiny_root}"]
    err = _fails(["--preset", "synthetic-ours11", "--out", str(run), "--resume"] + sets, capsys, "variant")
    assert "iter_0000002.pt" in err
    assert _snapshot(run) == before
    # the same run without --resume would overwrite it: refused as well
    _fails(["--preset", "synthetic-source-only", "--out", str(run)] + sets, capsys, "--resume")
    assert _snapshot(run) == before


def test_ensure_trained_reuses_a_finished_run_and_refuses_another(tiny_root, tmp_path):
    from cosuda import runs

    run = tmp_path / "run"
    overrides = dict(TINY, data_root=str(tiny_root), iterations="2", eval_every="2", checkpoint_every="2")
    first = runs.ensure_trained("synthetic-source-only", run, overrides, progress=False)
    before = _snapshot(run)
    again = runs.ensure_trained("synthetic-source-only", run, overrides, progress=False)
    assert again == json.loads(json.dumps(first)) and _snapshot(run) == before
    with pytest.raises(ConfigError, match="iterations"):
        runs.ensure_trained("synthetic-source-only", run, dict(overrides, iterations="4"), progress=False)
    # a config.json written before `compile` took three values (it held false) is the same run
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(saved, compile=False)))
    assert runs.ensure_trained("synthetic-source-only", run, overrides, progress=False) == again


def test_config_json_records_settings_inputs_and_provenance(tiny_root, pseudo_root, tmp_path):
    """Beside every metrics.json: the resolved configuration, what the weights and pseudo-labels
    came from (the run folder's own record, the pseudo-labels' provenance.json), and the
    provenance of the run (commit, versions, CPU, threads, its seconds once it has ended)."""
    stage1 = tmp_path / "stage1"
    engine.train(_config("synthetic-source-only", tiny_root, iterations=2, eval_every=2, checkpoint_every=2), stage1)
    run = tmp_path / "ours"
    engine.train(_config("synthetic-ours", tiny_root, pseudo_root, weights=str(stage1), iterations=2, eval_every=2,
                         checkpoint_every=2), run, preset="synthetic-ours")
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "synthetic-ours" and config["t_cos"] == 0.6 and config["dict_size"] == 20
    assert config["weights"] == str(stage1) and config["pseudo_root"] == str(pseudo_root)
    weights = config["inputs"]["weights"]
    assert weights["path"] == str(stage1) and weights["checkpoint"] == "iter_0000002.pt"
    assert weights["variant"] == "source-only" and weights["iterations"] == 2
    made_by = config["inputs"]["pseudo_labels"]["model"]
    assert made_by["variant"] == "source-only" and made_by["checkpoint"] == "iter_0000002.pt"
    assert config["inputs"]["pseudo_labels"]["provenance"]["seconds"] > 0
    prov = config["provenance"]
    assert prov["torch"] == torch.__version__ and prov["threads"] == 1 and prov["cpu"]
    assert prov["seconds"] > 0 and len(prov["commit"] or "x" * 40) == 40 and prov["dirty"] in (True, False, None)


def test_a_config_json_trains_its_run_again_to_the_same_metrics(tiny_root, pseudo_root, tmp_path, capsys,
                                                                 monkeypatch):
    """`python -m cosuda.train --config RUN/config.json --out DIR`: the same run again (CPU, same
    threads), also from a published copy whose paths are relative to cosuda's home."""
    first = tmp_path / "first"
    assert engine.main(_cli_args("synthetic-ours", first, tiny_root, pseudo_root, iterations=3, eval_every=3,
                                 checkpoint_every=3)[3:]) == 0
    again = tmp_path / "again"
    assert engine.main(["--config", str(first / "config.json"), "--out", str(again)]) == 0
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (first, again))
    assert _comparable(a) == _comparable(b) and a["preset"] == "synthetic-ours"
    saved = json.loads((again / "config.json").read_text())
    assert {k: v for k, v in saved.items() if k not in ("provenance", "inputs")} == \
        {k: v for k, v in json.loads((first / "config.json").read_text()).items() if k not in ("provenance", "inputs")}
    # a published copy: paths relative to cosuda's home, taken from it
    from cosuda import paths
    from cosuda.results import portable_config

    home = Path(os.path.commonpath([tiny_root, pseudo_root, tmp_path]))
    monkeypatch.setattr(paths, "HOME", home)
    monkeypatch.setattr("cosuda.results.HOME", home)
    published = portable_config(json.loads((first / "config.json").read_text()))
    assert not Path(published["data_root"]).is_absolute() and not Path(published["pseudo_root"]).is_absolute()
    (tmp_path / "published.json").write_text(json.dumps(published))
    assert engine.main(["--config", str(tmp_path / "published.json"), "--out", str(tmp_path / "third")]) == 0
    assert _comparable(json.loads((tmp_path / "third" / "metrics.json").read_text())) == _comparable(a)
    # --set still applies on top; a file that is no config.json is one line, nothing written
    assert engine.main(["--config", str(first / "config.json"), "--out", str(tmp_path / "x"), "--set", "t_cos=3"]) == 2
    assert "t_cos" in capsys.readouterr().err and not (tmp_path / "x").exists()
    (tmp_path / "bad.json").write_text("{}")
    assert engine.main(["--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "y")]) == 2
    assert "not a run's config.json" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_ensure_pseudo_labels_keeps_present_ones_and_needs_a_real_source_model(tmp_path, monkeypatch):
    present = tmp_path / "present"
    present.mkdir()
    (present / "thresholds.json").write_text("{}")
    from cosuda import runs

    monkeypatch.setattr(runs, "make_pseudo_labels", lambda *a, **k: pytest.fail("remade existing pseudo-labels"))
    assert runs.ensure_pseudo_labels(present, None) == present  # no source run needed then
    with pytest.raises(FileNotFoundError, match="source-only"):  # real data: never trained implicitly
        runs.ensure_pseudo_labels(tmp_path / "missing", tmp_path / "no-run", synthetic=False)
