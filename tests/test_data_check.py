"""`python -m cosuda.data check ROOT` and the refusal of an interrupted synthetic benchmark
(issue 21, item 5), on a tiny benchmark in the real on-disk formats with faults made on purpose."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cosuda.data import Cityscapes, ConfigError, IncompleteBenchmarkError, check_dataset
from cosuda.data import main as data_main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    from cosuda.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("check_benchmark")
    generate(root, seed=0, workers=1, progress=False, config=SyntheticConfig(
        gta5_count=3, synthia_count=3, cityscapes_train_count=3, cityscapes_val_count=3, cityscapes_dev_count=3,
        gta5_size=(64, 36), synthia_size=(64, 38), cityscapes_size=(64, 32)))
    return root


@pytest.fixture
def copy(benchmark, tmp_path):
    """A copy of the benchmark to break."""
    return Path(shutil.copytree(benchmark, tmp_path / "data"))


def _problems(root, capsys, *args) -> list[str]:
    """Run the check; it must fail with one `error:` line per problem; returns those lines."""
    assert data_main(["check", str(root), "--no-progress", *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and err[-1].endswith("fix or regenerate those files before training")
    return [line for line in err[:-1] if line.startswith("error: ")]


def test_a_clean_benchmark_passes_with_counts_sizes_and_label_values(benchmark, capsys):
    report = check_dataset(benchmark, progress=False)
    assert report["ok"] and report["problems"] == [] and report["tasks"] == ["gta5", "synthia", "cityscapes"]
    assert set(report["parts"]) == {"gta5", "synthia", "cityscapes/train", "cityscapes/val", "cityscapes/dev"}
    assert all(p["pairs"] == p["images"] == p["labels"] == 3 for p in report["parts"].values())
    assert report["parts"]["gta5"]["image_sizes"] == {"64x36": 3}
    assert report["parts"]["synthia"]["image_sizes"] == {"64x38": 3}
    assert max(report["parts"]["synthia"]["label_values"]) <= 22  # raw SYNTHIA ids, read from 16-bit PNGs
    assert json.loads(json.dumps(report)) == report
    assert data_main(["check", str(benchmark), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "gta5: 3 image/label pairs" in out and "ok: 30 files decoded" in out
    # one dataset of it, its layout named or detected, and the dataset chosen in a data root
    for args in ([str(benchmark / "synthia")], [str(benchmark / "cityscapes"), "--task", "cityscapes"],
                 [str(benchmark), "--task", "gta5"]):
        assert data_main(["check", *args, "--no-progress"]) == 0, args
    assert "gta5:" in capsys.readouterr().out


def test_the_command_line_shows_a_bar_and_works_as_a_module(benchmark):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "cosuda.data", "check", str(benchmark / "gta5")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "3/3" in done.stderr and "gta5: 3 image/label pairs" in done.stdout


def test_a_truncated_png_is_one_line_naming_it(copy, capsys):
    image = copy / "gta5" / "images" / "00002.png"
    image.write_bytes(image.read_bytes()[:300])
    label = copy / "cityscapes" / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000019_gtFine_labelIds.png"
    label.write_bytes(label.read_bytes()[:100])
    lines = _problems(copy, capsys)
    assert len(lines) == 2, lines
    assert str(image) in lines[0] and "truncated" in lines[0]
    assert str(label) in lines[1]


def test_a_missing_label_and_an_orphan_label_name_the_file(copy, capsys):
    val = copy / "cityscapes" / "gtFine" / "val" / "lindau"
    label = next(val.glob("*_gtFine_labelIds.png"))
    label.unlink()
    orphan = copy / "synthia" / "GT" / "LABELS" / "0000099.png"
    shutil.copy(copy / "synthia" / "GT" / "LABELS" / "0000000.png", orphan)
    lines = _problems(copy, capsys)
    assert len(lines) == 2, lines
    image = copy / "cityscapes" / "leftImg8bit" / "val" / "lindau" / label.name.replace("_gtFine_labelIds", "_leftImg8bit")
    assert f"error: {image}: no label; expected {label}" in lines
    assert f"error: {orphan}: a label without its image; expected {copy / 'synthia' / 'RGB' / '0000099.png'}" in lines
    report = check_dataset(copy, progress=False)
    assert report["parts"]["cityscapes/val"]["pairs"] == 2 and report["parts"]["synthia"]["labels"] == 4


def test_label_values_outside_the_label_ids_name_the_file(copy, capsys):
    gta5 = copy / "gta5" / "labels" / "00001.png"
    ids = np.asarray(Image.open(gta5)).copy()
    ids[0, :5] = 200
    Image.fromarray(ids).save(gta5)  # an 8-bit grey PNG, as readable as the palette one
    synthia = copy / "synthia" / "GT" / "LABELS" / "0000001.png"
    raw = cv2.imread(str(synthia), cv2.IMREAD_UNCHANGED)
    raw[0, 0, 2] = 1000  # the class id is the red channel of the 16-bit label
    cv2.imwrite(str(synthia), raw)
    lines = _problems(copy, capsys)
    assert len(lines) == 2, lines
    assert str(gta5) in lines[0] and "label values 200 outside the gta5 label ids 0..33 (5 pixels)" in lines[0]
    assert str(synthia) in lines[1] and "1000 outside the synthia label ids 0..22" in lines[1]


def test_a_wrongly_sized_label_and_a_root_without_layout(copy, tmp_path, capsys):
    label = copy / "cityscapes" / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    Image.open(label).resize((32, 16), Image.NEAREST).save(label)
    lines = _problems(copy / "cityscapes", capsys)
    assert len(lines) == 1 and str(label) in lines[0] and "32x16" in lines[0] and "64x32" in lines[0]
    assert data_main(["check", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert data_main(["check", str(tmp_path / "empty"), "--task", "synthia"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "RGB/" in err and "GT/LABELS/" in err


# --- an interrupted synthetic benchmark, at a root that is not the default one -----------------
def _interrupt(root: Path) -> None:
    """What an interrupted `generate` leaves: its marker says incomplete, part of the files written."""
    marker = root / "cosuda_synthetic.json"
    marker.write_text(marker.read_text().replace('"complete": true', '"complete": false'))
    for folder in ("leftImg8bit", "gtFine"):
        for path in sorted((root / "cityscapes" / folder / "val").rglob("*.png"))[1:]:
            path.unlink()


def test_an_interrupted_benchmark_is_refused_by_readers_check_and_training(copy, tmp_path, capsys):
    from cosuda.train import main as train_main

    _interrupt(copy)
    fix = f"python -m cosuda.synthetic --out {copy} --gta5 3"
    with pytest.raises(IncompleteBenchmarkError, match="incomplete") as e:
        Cityscapes(copy / "cityscapes", "val")
    assert isinstance(e.value, ConfigError) and str(copy) in str(e.value) and fix in str(e.value)
    lines = _problems(copy, capsys)
    assert len(lines) == 1 and str(copy / "cosuda_synthetic.json") in lines[0] and fix in lines[0]

    out = tmp_path / "run"
    sets = ["source_size=32x18", "target_size=32x16", "eval_size=32x16", "backbone=resnet18", "weights=random",
            "norm=group", "iterations=1", "num_workers=0", "progress=false", f"data_root={copy}"]
    assert train_main(["--preset", "synthetic-source-only", "--out", str(out)]
                      + [a for s in sets for a in ("--set", s)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: the synthetic benchmark under "), err
    assert str(copy) in err and "incomplete" in err and fix in err
    assert not out.exists()  # refused before anything is written
