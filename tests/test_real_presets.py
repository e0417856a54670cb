"""The real-data presets end to end on CPU: a handful of images at the real datasets' resolutions
(GTA5 1914x1052, SYNTHIA 1280x760, Cityscapes 2048x1024) in the real download layouts, then per
task and network what the README's real experiments run, only shorter and smaller:

    python -m cosuda.train --preset <task>-<net>-source-only --out SO --set data_root=... --resume auto
    python -m cosuda.train --pseudo-labels-from SO --out PSEUDO          (the documented command)
    python -m cosuda.train --preset <task>-<net>-ours --out RUN --set pseudo_root=PSEUDO ...
    python -m cosuda.evaluate RUN
    python -m cosuda.predict RUN IMAGE --out DIR

for gta5-deeplabv2 (ResNet-101), synthia-deeplabv2 and gta5-fcn8s (VGG16): two iterations from
random weights (norm=group, the configuration's choice for random weights: frozen BN without
ImageNet statistics diverges at once) at reduced crop sizes.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

SMALL = ["--set", "weights=random", "--set", "norm=group", "--set", "iterations=2", "--set", "eval_every=2",
         "--set", "checkpoint_every=2", "--set", "source_size=128x64", "--set", "target_size=128x64",
         "--set", "eval_size=128x64", "--set", "num_workers=0", "--set", "progress=false",
         "--set", "dict_size=50"]


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory):
    from cosuda.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("real_layout")
    generate(root, seed=0, progress=False, workers=1, config=SyntheticConfig(
        gta5_count=2, synthia_count=2, cityscapes_train_count=3, cityscapes_val_count=2, cityscapes_dev_count=0,
        gta5_size=(1914, 1052), synthia_size=(1280, 760), cityscapes_size=(2048, 1024)))
    return root


def _cli(module, *args, timeout=900):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)
    assert proc.returncode == 0, f"{module} {' '.join(map(str, args))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_layout_has_the_real_resolutions(real_layout):
    from cosuda.data import GTA5, SYNTHIA, Cityscapes

    assert GTA5(real_layout / "gta5")[0]["image"].shape == (3, 1052, 1914)
    assert SYNTHIA(real_layout / "synthia")[0]["image"].shape == (3, 760, 1280)
    assert Cityscapes(real_layout / "cityscapes", "val")[0]["label"].shape == (1024, 2048)


@pytest.mark.parametrize("task", ["gta5-deeplabv2", "synthia-deeplabv2", "gta5-fcn8s"])
def test_real_preset_end_to_end(real_layout, tmp_path, task):
    try:
        _end_to_end(real_layout, tmp_path, task)
    finally:  # FCN-8s-VGG16's checkpoints with Adam's moments are 1.6 GB each: not kept in /tmp
        for folder in tmp_path.glob("*/checkpoints"):
            shutil.rmtree(folder, ignore_errors=True)


def _end_to_end(real_layout, tmp_path, task):
    source_run, pseudo, run, predictions = (tmp_path / n for n in ("source-only", "pseudo", "ours", "predictions"))
    data = ["--set", f"data_root={real_layout}"]
    _cli("cosuda.train", "--preset", f"{task}-source-only", "--out", source_run, *data, *SMALL, "--resume", "auto")
    _cli("cosuda.train", "--pseudo-labels-from", source_run, "--out", pseudo)
    assert (pseudo / "thresholds.json").is_file()
    labels = sorted(pseudo.rglob("*.png"))
    assert len(labels) == 3
    assert Image.open(labels[0]).size == (128, 64)  # at the source run's target_size
    out = _cli("cosuda.train", "--preset", f"{task}-ours", "--out", run, *data, "--set", f"pseudo_root={pseudo}",
               *SMALL, "--resume", "auto")
    final = json.loads(out.stdout.strip().splitlines()[-1])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["iteration"] == 2 and metrics["finished"] and metrics["preset"] == f"{task}-ours"
    assert len(metrics["per_class_iou"]) == 19 and final["miou19"] == metrics["miou19"]
    assert all(np.isfinite(v) for v in metrics["train"]["last_losses"].values())
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == {"deeplabv2": "resnet101", "fcn8s": "vgg16"}[task.split("-")[1]]

    evaluated = json.loads(_cli("cosuda.evaluate", run, "--no-progress").stdout.strip().splitlines()[-1])
    assert evaluated["miou19"] == pytest.approx(metrics["miou19"], abs=1e-3)
    assert len(evaluated["per_class_iou"]) == 19

    image = next((real_layout / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))
    _cli("cosuda.predict", run, image, "--out", predictions, "--no-progress")
    stem = image.stem
    train_ids = np.array(Image.open(predictions / f"{stem}_trainIds.png"))
    assert train_ids.shape == (1024, 2048) and train_ids.dtype == np.uint8 and train_ids.max() < 19
    assert Image.open(predictions / f"{stem}_labelIds.png").size == (2048, 1024)
    assert np.array(Image.open(predictions / f"{stem}_color.png").convert("RGB")).shape == (1024, 2048, 3)
