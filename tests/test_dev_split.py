"""The target dev split (issue 22, item 2; docs/preregistration.md): the generator writes a labelled
Cityscapes-like split `dev` from a random stream of its own without changing a byte of any other
file, the readers, the dataset check and `evaluate --split dev` accept it, a run evaluates on it
with `--set eval_split=dev` and says so in metrics.json, and real Cityscapes (no dev) is refused
before training in one line."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from cosuda import data, synthetic
from cosuda.config import ConfigError, make_config

# Counts 3 each at small sizes: every part and every city of every split is drawn.
SMALL = dict(gta5_count=3, synthia_count=3, cityscapes_train_count=3, cityscapes_val_count=3,
             gta5_size=(48, 27), synthia_size=(48, 28), cityscapes_size=(48, 24))

# SHA-256 of every file generator version 2 (commit af50828, before the dev split) wrote for SMALL,
# seed 0, marker aside. Made with Pillow 13.0.0, zlib 1.2.13, OpenCV 5.1.0 and NumPy 2.4.6: another
# PNG encoder or random generator changes them; then recompute them with version 2's code.
VERSION2_SEED0 = {
    "cityscapes/gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png":
        "1956012dfad147893be287c4bc07345317983520669defc0f0f1feea31a567dc",
    "cityscapes/gtFine/train/bochum/bochum_000000_000019_gtFine_labelIds.png":
        "dfd43bfb1167015847a44dee30357eb4dd2194d3501de55c3dc5a5fa61bd1934",
    "cityscapes/gtFine/train/bremen/bremen_000000_000019_gtFine_labelIds.png":
        "2caae16e9828d533f8533d9e470adb94174d45cbdeb183c5b760363a88535047",
    "cityscapes/gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png":
        "686ec51b51044517c79823c54e80a5f33828402f82fc782dad15addf4036d6c9",
    "cityscapes/gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png":
        "ea39541e1104d77282a3963a7eabc93a90b3a84b8540933259a67a81990ccc2b",
    "cityscapes/gtFine/val/munster/munster_000000_000019_gtFine_labelIds.png":
        "5b6cb2c36bd03492286599099b44f1997ef63deb46af3c76b4f16290b2a70105",
    "cityscapes/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png":
        "c1471817beb89faaaf21966cdcaa4cd92393abcba3a052c49721174a2bcad055",
    "cityscapes/leftImg8bit/train/bochum/bochum_000000_000019_leftImg8bit.png":
        "e5398c6e47368cb4180c6c28d0cbe0c117129f4406f1b59ff9c57d9ff8253de6",
    "cityscapes/leftImg8bit/train/bremen/bremen_000000_000019_leftImg8bit.png":
        "540217223d210f400cd29f8f4c21a7da58e5e9068a05dd20cc06ddcaa0ef1406",
    "cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png":
        "702feddcc74c95e59ed2bf6f1d790795bcf8398ef93a3980ccbf4f58a46f4e7c",
    "cityscapes/leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png":
        "1fff413f1624bc776b68901b2829c0bfdc70b19e39bf36ac8c430ee8325b3173",
    "cityscapes/leftImg8bit/val/munster/munster_000000_000019_leftImg8bit.png":
        "4e6e049f86ae631bc6863c450449dd571ea534fdd58f432a931eafcb7699f9f1",
    "cityscapes/train.txt": "b46972ebccb18a5b8efdbd2a25bde79b5e6b9fbf5c7caba1999d38786f25b001",
    "cityscapes/val.txt": "0f2699cf9f20e76062421f33480ba81f6f201aff2eda22f92a46c3528c4b2150",
    "gta5/images/00001.png": "6f436005e0ea80039d33c1948293d5a4023eb27190d6b52f607c2a8006d97c36",
    "gta5/images/00002.png": "ae7400c2393fd3045951b01438c3f0d71adcd082fd15cd6f238999dcd9fa6dd3",
    "gta5/images/00003.png": "d3385d603a80a3f39fed8512db36bec53e7182762f614ca7d0ef8d08a600b5b9",
    "gta5/labels/00001.png": "770a74638cc01323c1283f3951d7bc19da36761b58b5dc6abca4d4ec0a11b3d0",
    "gta5/labels/00002.png": "3bbecf0b8bd75a0d0591bf67d7b4acbd65504f325dba0b8a2cf46065cd66f7ad",
    "gta5/labels/00003.png": "d7fe47aaa8cec9d15dfb3306f35e53d7ee887a051a962050b392d9d4d8337fa6",
    "gta5/train.txt": "dedde5c44deaa234f9b0451c977ae14926f69a6870e8162ab08bb02fdb9f1e3c",
    "synthia/GT/LABELS/0000000.png": "e91351f27da594cc0e16e8e314c31c792bf496378abf425b455ba48794aa83ad",
    "synthia/GT/LABELS/0000001.png": "37e33df0eb89949405cf14a5daa1ad61ba577ac4faf64fc6ccd0e58e67735a81",
    "synthia/GT/LABELS/0000002.png": "c695cf214985b8c6207a62785788fed67797671fe01be8358095599cb00c1121",
    "synthia/RGB/0000000.png": "4f41f47da17c7f442dc30d21d45ff5371e0bfb6d708eb6d4c6975e0deb4c3008",
    "synthia/RGB/0000001.png": "bbb313175713e2df68c8a0849101eb30aa326dc52886f19c474804012005bccd",
    "synthia/RGB/0000002.png": "64f2135f2c46df3faf75a79b292f2690572797ee35acf11d27edee3725fc1ec2",
    "synthia/train.txt": "790f5dc2c6f342fb1517fd1cb7c7ba4b8ec54fa1c83de3aa1e6c8b261ba600c2",
}
# The same for seed 1, as one digest of the sorted "name sha256" lines (`_digest`) of its 28 files.
VERSION2_SEED1_DIGEST = "10b4bd29a2694c2905854bbf10f11a5ea6d49cba03281889a06f29d9be337e43"

# test_train.py's network: ResNet-18 from random weights with GroupNorm, tiny images.
TINY_RUN = {"source_size": "32x18", "target_size": "32x16", "eval_size": "32x16", "backbone": "resnet18",
            "weights": "random", "norm": "group", "output_stride": "8", "dict_size": "20", "num_workers": "0",
            "progress": "false", "iterations": "2", "eval_every": "2", "checkpoint_every": "2"}


def _is_dev(name: str) -> bool:
    return name == "cityscapes/dev.txt" or "/dev/" in name


def _hashes(root: Path) -> dict[str, str]:
    """{relative path: SHA-256} of every file under `root` but the marker."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != synthetic.MARKER}


def _digest(hashes: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{k} {v}\n" for k, v in sorted(hashes.items())).encode()).hexdigest()


@pytest.fixture(scope="module")
def with_dev(tmp_path_factory):
    """{seed: root} of SMALL with 3 dev images, seeds 0 and 1."""
    roots = {}
    for seed in (0, 1):
        roots[seed] = tmp_path_factory.mktemp(f"dev_seed{seed}")
        config = synthetic.SyntheticConfig(**SMALL, cityscapes_dev_count=3)
        synthetic.generate(roots[seed], seed=seed, config=config, workers=1, progress=False)
    return roots


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory):
    """A data root in the real download layout: cityscapes/ has train and val, no dev, no marker."""
    root = tmp_path_factory.mktemp("real_layout")
    synthetic.generate(root, config=synthetic.SyntheticConfig(
        gta5_count=1, synthia_count=0, cityscapes_train_count=1, cityscapes_val_count=1, cityscapes_dev_count=0,
        gta5_size=(48, 27), cityscapes_size=(48, 24)), workers=1, progress=False)
    (root / synthetic.MARKER).unlink()
    (root / "cityscapes" / "dev.txt").unlink()
    return root


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions on a shared 2-core machine (see test_train.py)
    yield
    torch.set_num_threads(threads)


# --- the generator -------------------------------------------------------------------------
def test_every_file_but_dev_is_byte_identical_to_the_generator_before_dev(with_dev, tmp_path):
    for seed, root in with_dev.items():
        hashes = _hashes(root)
        others = {name: sha for name, sha in hashes.items() if not _is_dev(name)}
        if seed == 0:
            changed = sorted(n for n in VERSION2_SEED0.keys() | others.keys()
                             if VERSION2_SEED0.get(n) != others.get(n))
            assert not changed, f"files that differ from generator version 2: {changed}"
        else:
            assert len(others) == 28 and _digest(others) == VERSION2_SEED1_DIGEST
        assert sum(map(_is_dev, hashes)) == 2 * 3 + 1  # images, labels and dev.txt
    # without a dev split the other files are the same bytes too (whatever the libraries' versions)
    synthetic.generate(tmp_path, seed=0, config=synthetic.SyntheticConfig(**SMALL, cityscapes_dev_count=0),
                       workers=1, progress=False)
    without = {n: sha for n, sha in _hashes(tmp_path).items() if n != "cityscapes/dev.txt"}
    assert without == {n: sha for n, sha in _hashes(with_dev[0]).items() if not _is_dev(n)}
    assert not (tmp_path / "cityscapes" / "leftImg8bit" / "dev").exists()


def test_dev_is_drawn_apart_from_val_and_train(with_dev):
    root = with_dev[0] / "cityscapes"
    assert not set(synthetic.DEV_CITIES) & (set(synthetic.TRAIN_CITIES) | set(synthetic.VAL_CITIES))
    listed = (root / "dev.txt").read_text().splitlines()
    assert listed == [f"{c}/{c}_000000_000019_leftImg8bit.png" for c in synthetic.DEV_CITIES]
    for folder, suffix in (("leftImg8bit", "_leftImg8bit.png"), ("gtFine", "_gtFine_labelIds.png")):
        splits = {split: [p.read_bytes() for p in sorted((root / folder / split).rglob(f"*{suffix}"))]
                  for split in ("train", "val", "dev")}
        assert len(splits["dev"]) == 3
        for i, dev in enumerate(splits["dev"]):  # image i of dev is not image i of val (nor of train)
            assert dev != splits["val"][i] and dev != splits["train"][i], (folder, i)
        assert not set(splits["dev"]) & (set(splits["val"]) | set(splits["train"]))


def test_the_summary_marker_and_command_line_count_dev(tmp_path, capsys):
    out = tmp_path / "cli"
    assert synthetic.main(["--out", str(out), "--gta5", "1", "--synthia", "0", "--cityscapes-train", "1",
                           "--cityscapes-val", "1", "--cityscapes-dev", "2", "--gta5-size", "48x27",
                           "--cityscapes-size", "48x24", "--workers", "1", "--no-progress"]) == 0
    assert "1 + 1 + 2 Cityscapes-like (train + val + dev) images" in capsys.readouterr().out
    assert len(list((out / "cityscapes" / "leftImg8bit" / "dev").rglob("*.png"))) == 2
    assert len(list((out / "cityscapes" / "gtFine" / "dev").rglob("*_gtFine_labelIds.png"))) == 2
    marker = json.loads((out / synthetic.MARKER).read_text())
    assert marker["config"]["cityscapes_dev_count"] == 2 and marker["version"] == synthetic.GENERATOR_VERSION
    assert "--cityscapes-dev 2" in synthetic.regenerate_command(out)
    summary = synthetic.generate(tmp_path / "api", config=synthetic.SyntheticConfig(
        gta5_count=0, synthia_count=0, cityscapes_train_count=0, cityscapes_val_count=0, cityscapes_dev_count=1,
        cityscapes_size=(48, 24)), workers=1, progress=False)
    assert summary["counts"]["cityscapes_dev"] == 1
    with pytest.raises(ValueError, match="cityscapes_dev_count"):
        synthetic.SyntheticConfig(cityscapes_dev_count=-1)


def _as_before_dev(root: Path) -> None:
    """What the generator wrote before the dev split: no dev files, a marker without their count."""
    for folder in ("leftImg8bit", "gtFine"):
        shutil.rmtree(root / "cityscapes" / folder / "dev")
    (root / "cityscapes" / "dev.txt").unlink()
    marker = json.loads((root / synthetic.MARKER).read_text())
    del marker["config"]["cityscapes_dev_count"]
    (root / synthetic.MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


def test_a_benchmark_from_before_dev_is_regenerated_once(tmp_path, monkeypatch):
    from cosuda import train as engine

    cfg = synthetic.SyntheticConfig(**dict(SMALL, gta5_count=1, synthia_count=0, cityscapes_train_count=1,
                                           cityscapes_val_count=1), cityscapes_dev_count=1)
    synthetic.generate(tmp_path, seed=1, config=cfg, workers=1, progress=False)
    _as_before_dev(tmp_path)
    assert synthetic.predates_dev(tmp_path) and not synthetic.interrupted(tmp_path)
    assert synthetic.is_complete(tmp_path)  # finished, of this generator version: val runs use it as it is
    assert not synthetic.is_complete(tmp_path, 1, cfg)  # but it is not the benchmark asked for
    assert synthetic.recorded(tmp_path) == (1, dataclasses.replace(cfg, cityscapes_dev_count=100))

    synthetic.ensure(tmp_path, seed=1, config=cfg, progress=False)
    dev_image = next((tmp_path / "cityscapes" / "leftImg8bit" / "dev").rglob("*.png"))
    first = dev_image.stat().st_mtime_ns
    assert synthetic.is_complete(tmp_path, 1, cfg) and not synthetic.predates_dev(tmp_path)
    synthetic.ensure(tmp_path, seed=1, config=cfg, progress=False)
    assert dev_image.stat().st_mtime_ns == first  # once

    # as the default benchmark of training: a val run leaves it be, a dev run writes it again
    # with its recorded seed and counts (and the default dev count)
    _as_before_dev(tmp_path)
    monkeypatch.setattr(engine, "SYNTHETIC_ROOT", tmp_path)
    val_image = next((tmp_path / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))
    before = val_image.read_bytes(), val_image.stat().st_mtime_ns
    engine.resolve_paths(make_config("synthetic-source-only", {"data_root": str(tmp_path)}))
    assert val_image.stat().st_mtime_ns == before[1] and synthetic.predates_dev(tmp_path)
    engine.resolve_paths(make_config("synthetic-source-only", {"data_root": str(tmp_path), "eval_split": "dev"}))
    assert not synthetic.predates_dev(tmp_path) and synthetic.recorded(tmp_path)[0] == 1
    assert len(data.Cityscapes(tmp_path / "cityscapes", "dev")) == synthetic.SyntheticConfig().cityscapes_dev_count
    assert val_image.read_bytes() == before[0] and val_image.stat().st_mtime_ns != before[1]


# --- the readers and the dataset check -------------------------------------------------------
def test_cityscapes_reads_dev_and_the_check_covers_it(tiny_benchmark, with_dev, tmp_path, capsys):
    dev = data.Cityscapes(tiny_benchmark / "cityscapes", "dev")
    assert len(dev) == 3 and all(name.split("/")[0] in synthetic.DEV_CITIES for name in dev.names)
    for i in range(len(dev)):
        item = dev[i]
        assert item["image"].shape == (3, 32, 64) and item["label"].shape == (32, 64)
        assert set(item["label"].unique().tolist()) <= set(range(19)) | {255}
    listed = data.Cityscapes(tiny_benchmark / "cityscapes", "dev",
                             list_file=tiny_benchmark / "cityscapes" / "dev.txt")
    assert listed.names == dev.names

    report = data.check_dataset(with_dev[0], progress=False)
    assert report["ok"], report["problems"]
    assert report["parts"]["cityscapes/dev"]["pairs"] == 3
    # a dev split deleted whole leaves nothing to scan: the marker's count says it is missing
    copy = Path(shutil.copytree(with_dev[0], tmp_path / "copy"))
    shutil.rmtree(copy / "cityscapes" / "leftImg8bit" / "dev")
    shutil.rmtree(copy / "cityscapes" / "gtFine" / "dev")
    assert data.main(["check", str(copy), "--no-progress"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, errors
    assert str(copy / synthetic.MARKER) in errors[0] and "records 3 cityscapes/dev images but 0" in errors[0]
    assert f"python -m cosuda.synthetic --out {copy}" in errors[0]


# --- a run that reports on dev ---------------------------------------------------------------
def test_eval_split_is_range_checked():
    assert make_config("synthetic-ours").eval_split == "val"
    assert make_config("synthetic-ours", {"eval_split": "dev"}).eval_split == "dev"
    with pytest.raises(ConfigError) as e:
        make_config("synthetic-ours", {"eval_split": "test"})
    assert "\n" not in str(e.value) and "eval_split 'test' unknown" in str(e.value) and "val, dev" in str(e.value)


def test_a_run_with_eval_split_dev_evaluates_and_records_dev(tiny_benchmark, real_layout, tmp_path, capsys,
                                                             one_thread):
    from cosuda.evaluate import main as evaluate_main
    from cosuda.train import main as train_main

    run = tmp_path / "run"
    sets = dict(TINY_RUN, data_root=str(tiny_benchmark), eval_split="dev")
    assert train_main(["--preset", "synthetic-source-only", "--out", str(run)]
                      + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]) == 0
    capsys.readouterr()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_split"] == "dev" and metrics["finished"] and metrics["iteration"] == 2
    assert json.loads((run / "config.json").read_text())["eval_split"] == "dev"
    # one run, one split: a resumed run cannot switch (its history and best.pt are on dev)
    assert train_main(["--preset", "synthetic-source-only", "--out", str(run), "--resume",
                       "--override", "eval_split=val", "--override", "iterations=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--override eval_split" in err and "target dev split" in err, err

    # evaluate's default split is the run's: it reproduces metrics.json; --split dev says the same
    for args in ([], ["--split", "dev"]):
        assert evaluate_main([str(run), "--device", "cpu", "--no-progress", *args]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["split"] == "dev" and result["items"] == 3, args
        assert result["miou19"] == metrics["miou19"] and result["per_class_iou"] == metrics["per_class_iou"]
    assert evaluate_main([str(run), "--device", "cpu", "--no-progress", "--split", "val"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["split"] == "val"
    # moved to data without dev (real Cityscapes): one line naming the missing folder
    assert evaluate_main([str(run), "--device", "cpu", "--no-progress", "--data-root", str(real_layout)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(real_layout / "cityscapes" / "leftImg8bit" / "dev") in err, err


def test_real_cityscapes_has_no_dev_and_is_refused_before_training(real_layout, tmp_path, capsys):
    from cosuda.train import main as train_main

    root = real_layout
    out = tmp_path / "run"
    sets = dict(TINY_RUN, data_root=str(root), eval_split="dev", num_workers="0")
    assert train_main(["--preset", "gta5-deeplabv2-source-only", "--out", str(out)]
                      + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert str(root / "cityscapes" / "leftImg8bit" / "dev") in err and "Real Cityscapes has no dev split" in err
    assert not out.exists()  # refused before anything is written
