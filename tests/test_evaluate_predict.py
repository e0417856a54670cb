"""`python -m cosuda.evaluate` and `python -m cosuda.predict` on a tiny trained run.

One run of `synthetic-source-only` (2 iterations, 64x32, ResNet-18 from random weights, CPU,
fp32) is trained once for the module on a tiny synthetic benchmark whose Cityscapes-like images
are 96x48, so the prediction path really resizes (to eval_size 64x32) and upsamples back.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cosuda import labels
from cosuda.config import ConfigError, make_config
from cosuda.evaluate import evaluate_checkpoint, load_run, resolve_checkpoint
from cosuda.evaluate import main as evaluate_main
from cosuda.predict import collect_inputs, predict_images, to_label_ids
from cosuda.predict import main as predict_main

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
           OMP_WAIT_POLICY="PASSIVE")
CITY_SIZE = (96, 48)  # (W, H) of the Cityscapes-like files: not the eval size
OVERRIDES = dict(iterations=2, eval_every=2, checkpoint_every=2, source_size=(64, 36), target_size=(64, 32),
                 eval_size=(64, 32), progress=False, num_workers=0, device="cpu", precision="fp32",
                 # explicit, so the test stays fast whatever the synthetic preset's network becomes
                 backbone="resnet18", weights="random", norm="group")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(data root, run dir) of a 2-iteration source-only run, trained once for this module."""
    from cosuda.synthetic import SyntheticConfig, generate
    from cosuda.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("eval_benchmark")
        generate(root, seed=0, workers=1, progress=False, config=SyntheticConfig(
            gta5_count=4, synthia_count=0, cityscapes_train_count=4, cityscapes_val_count=3, cityscapes_dev_count=0,
            gta5_size=(64, 36), cityscapes_size=CITY_SIZE))
        run = tmp_path_factory.mktemp("eval_run") / "run"
        train(make_config("synthetic-source-only", dict(OVERRIDES, data_root=str(root))), run)
        yield root, run
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_without_best(tiny, tmp_path_factory):
    """The tiny run as an older version left it: iter checkpoints, no checkpoints/best.pt."""
    return _copy_run(tiny[1], tmp_path_factory.mktemp("no_best") / "run")


def _copy_run(run: Path, dest: Path) -> Path:
    """A copy of `run` without best.pt; checkpoints hard-linked where the file system allows."""
    (dest / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "metrics.json"):
        shutil.copy(run / name, dest / name)
    for path in (run / "checkpoints").glob("iter_*.pt"):
        try:
            os.link(path, dest / "checkpoints" / path.name)
        except OSError:
            shutil.copy(path, dest / "checkpoints" / path.name)
    return dest


def _cli(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=600)


def _val_images(root: Path) -> list[Path]:
    return sorted((root / "cityscapes" / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))


def _one_line_error(text: str, *names) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: ") and "Traceback" not in text, text
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def _check_prediction(out_stem: Path, source: Path) -> np.ndarray:
    """The three files of one image: formats, sizes, value ranges, mutual consistency."""
    size = Image.open(source).size
    files = {fmt: out_stem.with_name(f"{out_stem.name}_{fmt}.png") for fmt in ("trainIds", "labelIds", "color")}
    for fmt, path in files.items():
        assert path.is_file(), path
        with Image.open(path) as img:
            assert img.size == size, (path, img.size, size)
            assert img.mode == ("RGB" if fmt == "color" else "L"), (path, img.mode)
    train_ids = np.asarray(Image.open(files["trainIds"]))
    label_ids = np.asarray(Image.open(files["labelIds"]))
    color = np.asarray(Image.open(files["color"]))
    assert train_ids.dtype == np.uint8 and train_ids.max() <= 18  # 255 is never predicted
    assert set(np.unique(label_ids).tolist()) <= set(labels.CITYSCAPES_TO_TRAIN)
    np.testing.assert_array_equal(labels.to_train_ids(label_ids, labels.CITYSCAPES_TO_TRAIN), train_ids)
    np.testing.assert_array_equal(color, labels.PALETTE[train_ids])
    return train_ids


# --- evaluate -------------------------------------------------------------------------------
def test_evaluate_cli_reproduces_metrics_json(tiny):
    root, run = tiny
    metrics = json.loads((run / "metrics.json").read_text())
    done = _cli("cosuda.evaluate", run, "--checkpoint", "last", "--no-progress")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # exactly one JSON line on stdout, the rest on stderr
    result = json.loads(lines[0])
    assert abs(result["miou19"] - metrics["miou19"]) <= 1e-6
    assert abs(result["miou16"] - metrics["miou16"]) <= 1e-6
    assert abs(result["miou13"] - metrics["miou13"]) <= 1e-6
    assert len(result["per_class_iou"]) == 19
    for got, want in zip(result["per_class_iou"], metrics["per_class_iou"]):
        assert (got is None and want is None) or abs(got - want) <= 1e-6, (got, want)
    assert result["iteration"] == 2 and result["split"] == "val" and result["items"] == 3
    assert Path(result["checkpoint"]).name == "iter_0000002.pt"


def test_evaluate_function_checkpoint_choices(tiny, tmp_path):
    root, run = tiny
    metrics = json.loads((run / "metrics.json").read_text())
    last = evaluate_checkpoint(run)
    assert last["miou19"] == pytest.approx(metrics["miou19"], abs=1e-6)
    assert np.asarray(last["confusion"]).shape == (19, 19)
    assert np.asarray(last["confusion"]).sum() == 3 * CITY_SIZE[0] * CITY_SIZE[1] - _ignored_pixels(root)
    # an explicit file, relative to the run's checkpoints folder, and a moved data root
    path = resolve_checkpoint(run, "last")
    same = evaluate_checkpoint(run, checkpoint="iter_0000002.pt", data_root=root)
    assert same["checkpoint"] == str(path) and same["miou19"] == last["miou19"]
    assert evaluate_checkpoint(run, max_items=1)["items"] == 1
    # best.pt as training writes it (if this version's engine does): the best evaluation's model
    if (run / "checkpoints" / "best.pt").is_file():
        best = evaluate_checkpoint(run, checkpoint="best")
        assert best["miou19"] == pytest.approx(metrics["best"]["miou19"], abs=1e-6)
        assert best["iteration"] == metrics["best"]["iteration"]
    # best.pt in the reduced format (version, iteration, config, model): the same weights
    copy = _copy_run(run, tmp_path / "run")
    state = torch.load(path, map_location="cpu", weights_only=False)
    torch.save({k: state[k] for k in ("version", "iteration", "config", "model")}, copy / "checkpoints" / "best.pt")
    best = evaluate_checkpoint(copy, checkpoint="best")
    assert best["checkpoint"] == str(copy / "checkpoints" / "best.pt")
    assert best["miou19"] == last["miou19"] and best["iteration"] == 2


def _ignored_pixels(root: Path) -> int:
    from cosuda.data import Cityscapes

    val = Cityscapes(root / "cityscapes", "val")
    return int(sum((val.read_label(i) == 255).sum() for i in range(len(val))))


def test_evaluate_errors(tiny, run_without_best, tmp_path, capsys):
    root, run = tiny
    missing = tmp_path / "no_such_run"
    done = _cli("cosuda.evaluate", missing)
    assert done.returncode != 0 and done.stdout == ""
    _one_line_error(done.stderr, missing)

    assert evaluate_main([str(run_without_best), "--checkpoint", "best", "--no-progress"]) != 0
    line = _one_line_error(capsys.readouterr().err, run_without_best / "checkpoints" / "best.pt")
    assert "--checkpoint last" in line

    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert evaluate_main([str(empty)]) != 0
    _one_line_error(capsys.readouterr().err, empty / "checkpoints")

    broken = tmp_path / "broken.pt"
    broken.write_bytes(resolve_checkpoint(run).read_bytes()[:1000])  # a truncated copy
    assert evaluate_main([str(run), "--checkpoint", str(broken)]) != 0
    _one_line_error(capsys.readouterr().err, broken)

    assert evaluate_main([str(run), "--checkpoint", str(tmp_path / "nope.pt")]) != 0
    _one_line_error(capsys.readouterr().err, tmp_path / "nope.pt")

    nowhere = tmp_path / "moved_data"
    assert evaluate_main([str(run), "--data-root", str(nowhere), "--no-progress"]) != 0
    _one_line_error(capsys.readouterr().err, nowhere, "--data-root")


# --- predict --------------------------------------------------------------------------------
def test_predict_follows_the_evaluation_protocol(tiny, tmp_path):
    """Each trainIds file is what evaluation compares with the label: the val reader's image at
    eval_size, logits upsampled to the label (= image) resolution, argmax."""
    from cosuda.data import Cityscapes

    root, run = tiny
    images = _val_images(root)
    written = predict_images(run, images, tmp_path / "out", device="cpu", progress=False, num_workers=0)
    assert len(written) == 3 * len(images)
    assert [p.name for p in written[:3]] == [f"{images[0].stem}_{f}.png" for f in ("trainIds", "labelIds", "color")]
    loaded = load_run(run, device="cpu")
    val = Cityscapes(root / "cityscapes", "val", size=tuple(loaded.cfg.eval_size), label_size="original")
    assert [root / "cityscapes" / "leftImg8bit" / "val" / n for n in val.names] == images
    for i, image in enumerate(images):
        item = val[i]
        with torch.inference_mode():
            _, logits = loaded.model(item["image"][None])
            expected = loaded.model.upsample(logits.float(), tuple(item["label"].shape)).argmax(1)[0].numpy()
        got = _check_prediction(tmp_path / "out" / image.stem, image)
        assert got.shape == (CITY_SIZE[1], CITY_SIZE[0])
        np.testing.assert_array_equal(got, expected)


def test_predict_cli_file_and_folder(tiny, tmp_path):
    root, run = tiny
    images = _val_images(root)
    # a single file, written straight into --out (created, nested)
    out = tmp_path / "single" / "nested"
    done = _cli("cosuda.predict", run, images[0], "--out", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    _check_prediction(out / images[0].stem, images[0])
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{images[0].stem}_{f}.png"
                                                          for f in ("trainIds", "labelIds", "color"))
    # a folder: the Cityscapes val split (city subfolders mirrored) plus same-named JPEGs of
    # another size in two subfolders, which must not overwrite each other
    folder = tmp_path / "inputs"
    shutil.copytree(root / "cityscapes" / "leftImg8bit" / "val", folder / "val")
    rng = np.random.default_rng(0)
    for sub in ("a", "b"):
        (folder / "other" / sub).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(folder / "other" / sub / "x.jpg")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "folder_out"
    done = _cli("cosuda.predict", run, folder, "--out", out)
    assert done.returncode == 0, done.stderr
    assert "predict" in done.stderr and "5/5" in done.stderr  # the progress bar, on stderr
    sources = sorted(p for p in folder.rglob("*") if p.suffix in (".png", ".jpg"))
    assert len(sources) == 5
    for source in sources:
        _check_prediction(out / source.relative_to(folder).with_suffix(""), source)
    assert len(list(out.rglob("*.png"))) == 15
    assert Image.open(out / "other" / "a" / "x_trainIds.png").size == (50, 30)


def test_predict_inputs_and_formats(tiny, tmp_path):
    root, run = tiny
    images = _val_images(root)
    # labelIds alone (what cityscapesScripts needs in a folder of its own)
    written = predict_images(run, [images[1]], tmp_path / "ids", formats=["labelIds"], device="cpu",
                             progress=False, num_workers=0)
    assert [p.name for p in written] == [f"{images[1].stem}_labelIds.png"]
    np.testing.assert_array_equal(to_label_ids(np.array([[0, 18, 255]])), np.array([[7, 33, 0]]))
    # the same file twice is predicted once; two files with one stem collide
    assert len(collect_inputs([images[0], images[0]])) == 1
    twin = tmp_path / "twin" / images[0].name
    twin.parent.mkdir()
    shutil.copy(images[0], twin)
    with pytest.raises(ConfigError, match="would both write"):
        collect_inputs([images[0], twin])
    # a folder inside which --out lies: earlier predictions are not inputs
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(images[0], folder / "a.png")
    predict_images(run, [folder], folder / "pred", device="cpu", progress=False, num_workers=0)
    assert [p for _, p in collect_inputs([folder], folder / "pred")] == [Path("a")]


def test_predict_errors(tiny, run_without_best, tmp_path, capsys):
    root, run = tiny
    image = _val_images(root)[0]
    missing_image = tmp_path / "missing.png"
    done = _cli("cosuda.predict", run, image, missing_image, "--out", tmp_path / "out")
    assert done.returncode != 0
    _one_line_error(done.stderr, missing_image)
    assert not (tmp_path / "out").exists()  # checked before anything is written

    assert predict_main([str(tmp_path / "no_run"), str(image), "--out", str(tmp_path / "o")]) != 0
    _one_line_error(capsys.readouterr().err, tmp_path / "no_run")

    assert predict_main([str(run_without_best), str(image), "--out", str(tmp_path / "o"),
                         "--checkpoint", "best"]) != 0
    _one_line_error(capsys.readouterr().err, run_without_best / "checkpoints" / "best.pt")

    empty = tmp_path / "no_images"
    empty.mkdir()
    assert predict_main([str(run), str(empty), "--out", str(tmp_path / "o")]) != 0
    _one_line_error(capsys.readouterr().err, empty)

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(image.read_bytes()[:200])
    assert predict_main([str(run), str(corrupt), "--out", str(tmp_path / "o"), "--no-progress",
                         "--num-workers", "0"]) != 0
    _one_line_error(capsys.readouterr().err, corrupt)


@pytest.mark.parametrize("module", ["cosuda.evaluate", "cosuda.predict"])
def test_help_lists_defaults(module, capsys):
    main = evaluate_main if module == "cosuda.evaluate" else predict_main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--checkpoint" in text and "(default: last)" in text and "--device" in text
    # --split: the run's own eval_split (val, or dev), so that `evaluate RUN` reproduces its metrics.json
    assert ("the run's eval_split" in text) if module == "cosuda.evaluate" else ("--out" in text)


# --- unreadable images and an interrupted benchmark (issue 21, items 4 and 5) ----------------
def _folder_with_a_bad_image(root: Path, folder: Path) -> tuple[list[Path], Path]:
    """a.png, b.png (truncated), c.png: copies of val images; returns (good images, bad image)."""
    folder.mkdir()
    sources = _val_images(root)
    good = [folder / "a.png", folder / "c.png"]
    shutil.copy(sources[0], good[0])
    shutil.copy(sources[1], good[1])
    bad = folder / "b.png"
    bad.write_bytes(sources[2].read_bytes()[:300])
    return good, bad


@pytest.mark.parametrize("workers", ["0", "1"])  # 1: the image is decoded in a DataLoader worker
def test_predict_stops_at_a_bad_image_with_one_line_and_a_count(tiny, tmp_path, capsys, workers):
    root, run = tiny
    good, bad = _folder_with_a_bad_image(root, tmp_path / "imgs")
    out = tmp_path / "out"
    assert predict_main([str(run), str(tmp_path / "imgs"), "--out", str(out), "--no-progress",
                         "--num-workers", workers]) == 2
    line = _one_line_error(capsys.readouterr().err, bad, "truncated", "--skip-bad")
    assert f"3 files written for 1 of 3 images under {out}" in line, line
    assert sorted(p.name for p in out.iterdir()) == [f"a_{f}.png" for f in ("color", "labelIds", "trainIds")]


def test_predict_skip_bad_counts_and_names_the_skipped_images(tiny, tmp_path, capsys):
    root, run = tiny
    good, bad = _folder_with_a_bad_image(root, tmp_path / "imgs")
    out = tmp_path / "out"
    assert predict_main([str(run), str(tmp_path / "imgs"), "--out", str(out), "--no-progress",
                         "--num-workers", "0", "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == (f"wrote 6 files (2 images x trainIds, labelIds, color) under {out}; "
                                    f"skipped 1 unreadable image(s): {bad}")
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 1 and str(bad) in skipped[0] and "truncated" in skipped[0]
    for image in good:
        _check_prediction(out / image.stem, image)
    written = predict_images(run, [tmp_path / "imgs"], tmp_path / "out2", device="cpu", progress=False,
                             num_workers=0, skip_bad=True)
    assert len(written) == 6 and [image for image, _ in written.skipped] == [bad]


def test_evaluation_refuses_an_interrupted_benchmark_at_any_root(tiny, tmp_path, capsys):
    root, run = tiny
    copy = Path(shutil.copytree(root, tmp_path / "data"))
    marker = copy / "cosuda_synthetic.json"
    marker.write_text(marker.read_text().replace('"complete": true', '"complete": false'))
    assert evaluate_main([str(run), "--data-root", str(copy), "--no-progress"]) == 2
    line = _one_line_error(capsys.readouterr().err, copy, "incomplete", f"python -m cosuda.synthetic --out {copy}")
    assert "--data-root" not in line  # the fix is to regenerate, not to move the data
