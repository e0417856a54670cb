"""The synthetic benchmark: determinism, real formats, class sets, a measurable domain gap, CLI."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cosuda import data, labels, synthetic

REPO = Path(__file__).resolve().parent.parent
TINY = dict(gta5_count=3, synthia_count=3, cityscapes_train_count=2, cityscapes_val_count=1, cityscapes_dev_count=1,
            gta5_size=(64, 36), synthia_size=(64, 38), cityscapes_size=(64, 32))


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "bench"
    summary = synthetic.generate(out, seed=0, config=synthetic.SyntheticConfig(**TINY), workers=2,
                                 progress=False)
    return out, summary


def test_default_root_is_under_the_repository():
    assert synthetic.DEFAULT_ROOT == REPO / "data" / "synthetic"


def test_layout_and_summary(tiny):
    out, summary = tiny
    files = _files(out)
    assert {"gta5/images/00001.png", "gta5/labels/00003.png", "synthia/RGB/0000000.png",
            "synthia/GT/LABELS/0000002.png",
            "cityscapes/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
            "cityscapes/gtFine/train/bochum/bochum_000000_000019_gtFine_labelIds.png",
            "cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png",
            "cityscapes/gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png",
            "gta5/train.txt", "cityscapes/val.txt", synthetic.MARKER} <= set(files)
    assert summary["counts"] == {"gta5": 3, "synthia": 3, "cityscapes_train": 2, "cityscapes_val": 1,
                                 "cityscapes_dev": 1}
    pngs = sum(len(b) for name, b in files.items() if name.endswith(".png"))
    assert summary["bytes"] == pngs and summary["seconds"] > 0


def test_same_seed_same_bytes_and_image_i_independent_of_count(tiny, tmp_path):
    out, _ = tiny
    fewer = dict(TINY, gta5_count=2, synthia_count=1)  # and one process instead of two
    synthetic.generate(tmp_path / "b", seed=0, config=synthetic.SyntheticConfig(**fewer), workers=1,
                       progress=False)
    a, b = _files(out), _files(tmp_path / "b")
    common = [n for n in b if n.endswith(".png")]
    assert len(common) == 2 * (2 + 1 + 2 + 1 + 1)
    assert all(a[n] == b[n] for n in common)
    synthetic.generate(tmp_path / "c", seed=1, config=synthetic.SyntheticConfig(**TINY), progress=False)
    c = _files(tmp_path / "c")
    assert a.keys() == c.keys()
    assert all(a[n] != c[n] for n in a if "/images/" in n or "/RGB/" in n or "leftImg8bit/" in n)


def test_readers_load_the_output(tiny):
    out, _ = tiny
    for ds, w, h in [(data.GTA5(out / "gta5"), 64, 36), (data.SYNTHIA(out / "synthia"), 64, 38),
                     (data.Cityscapes(out / "cityscapes", "train"), 64, 32),
                     (data.Cityscapes(out / "cityscapes", "val"), 64, 32)]:
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape == (3, h, w) and item["label"].shape == (h, w)
            assert set(item["label"].unique().tolist()) <= set(range(19)) | {255}
    listed = data.Cityscapes(out / "cityscapes", "train", list_file=out / "cityscapes" / "train.txt")
    assert listed.names == data.Cityscapes(out / "cityscapes", "train").names
    assert data.GTA5(out / "gta5", list_file=out / "gta5" / "train.txt").names == ["00001.png", "00002.png",
                                                                                   "00003.png"]


def test_file_formats_are_the_real_ones(tiny):
    from PIL import Image
    out, _ = tiny
    assert Image.open(out / "gta5" / "labels" / "00001.png").mode == "P"
    assert Image.open(out / "cityscapes" / "gtFine" / "val" / "frankfurt" /
                      "frankfurt_000000_000019_gtFine_labelIds.png").mode == "L"
    raw = cv2.imread(str(out / "synthia" / "GT" / "LABELS" / "0000000.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.ndim == 3 and raw.shape[2] == 3
    known = set(labels.SYNTHIA_TO_TRAIN) | {0, 22}   # + void and lane marking
    assert set(np.unique(raw[:, :, 2]).tolist()) <= known


def _scenes(domain, n, size, gap=1.0):
    d = synthetic.make_domain(domain, gap)
    return [synthetic.render_scene(d, size, np.random.default_rng([5, i])) for i in range(n)]


def test_synthia_uses_only_its_16_classes():
    found = set()
    for _, codes, _ in _scenes("synthia", 12, (96, 57)):
        found |= set(np.unique(codes).tolist())
    assert found & set(range(19)) <= set(labels.SYNTHIA16)
    assert len(found & set(labels.SYNTHIA16)) >= 12


def test_all_19_classes_and_some_ignore_in_a_small_gta5_sample():
    found = set()
    for _, codes, _ in _scenes("gta5", 40, (160, 90)):
        found |= set(np.unique(codes).tolist())
    assert set(range(19)) <= found
    raw = synthetic.CODE_TO_LABELID[sorted(found)]
    assert any(r not in labels.CITYSCAPES_TO_TRAIN for r in raw.tolist())  # ignored ids exist


def _domain_stats(scenes):
    shares = np.zeros(19)
    sat, colours = [], {}
    for image, codes, _ in scenes:
        shares += np.bincount(codes[codes < 19].ravel(), minlength=19)
        img = image.astype(float) / 255
        sat.append((img.max(-1) - img.min(-1)).mean())
        for c in (labels.CLASS_NAMES.index("vegetation"), labels.CLASS_NAMES.index("sky")):
            if (codes == c).any():
                colours.setdefault(c, []).append(img[codes == c].mean(0))
    return shares / shares.sum(), float(np.mean(sat)), {c: np.mean(v, 0) for c, v in colours.items()}


def test_a_measurable_domain_gap():
    size = (96, 54)
    src_share, src_sat, src_col = _domain_stats(_scenes("gta5", 25, size))
    tgt_share, tgt_sat, tgt_col = _domain_stats(_scenes("cityscapes", 25, size))
    person, bicycle = labels.CLASS_NAMES.index("person"), labels.CLASS_NAMES.index("bicycle")
    # class frequencies: the target has more people and bicycles (fewer trucks per image too,
    # but its narrower lens draws each one larger, so their pixel share is not smaller)
    assert tgt_share[person] > 1.5 * src_share[person]
    assert tgt_share[bicycle] > 1.5 * src_share[bicycle]
    assert tgt_sat < 0.8 * src_sat                       # the target is greyer
    for c in src_col:
        assert np.abs(src_col[c] - tgt_col[c]).sum() > 0.1  # and its classes look different
    # gap=0 gives the target the sources' appearance: its colours move back towards them.
    _, zero_sat, zero_col = _domain_stats(_scenes("cityscapes", 25, size, gap=0.0))
    assert zero_sat > tgt_sat
    veg = labels.CLASS_NAMES.index("vegetation")
    assert np.abs(zero_col[veg] - src_col[veg]).sum() < np.abs(tgt_col[veg] - src_col[veg]).sum()


def test_rerun_replaces_previous_output(tmp_path):
    cfg = synthetic.SyntheticConfig(**dict(TINY, gta5_count=3))
    synthetic.generate(tmp_path, config=cfg, progress=False)
    cfg = synthetic.SyntheticConfig(**dict(TINY, gta5_count=1))
    synthetic.generate(tmp_path, config=cfg, progress=False)
    assert sorted(p.name for p in (tmp_path / "gta5" / "images").iterdir()) == ["00001.png"]


def test_refuses_to_overwrite_foreign_folders(tmp_path):
    (tmp_path / "gta5" / "images").mkdir(parents=True)
    (tmp_path / "gta5" / "images" / "mine.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="gta5"):
        synthetic.generate(tmp_path, config=synthetic.SyntheticConfig(**TINY), progress=False)
    assert (tmp_path / "gta5" / "images" / "mine.png").exists()


def test_ensure_generates_once(tmp_path):
    cfg = synthetic.SyntheticConfig(**TINY)
    synthetic.ensure(tmp_path, config=cfg, progress=False)
    first = (tmp_path / "gta5" / "images" / "00001.png").stat().st_mtime_ns
    synthetic.ensure(tmp_path, config=cfg, progress=False)
    assert (tmp_path / "gta5" / "images" / "00001.png").stat().st_mtime_ns == first
    synthetic.ensure(tmp_path, seed=1, config=cfg, progress=False)  # another seed: regenerated
    assert (tmp_path / "gta5" / "images" / "00001.png").stat().st_mtime_ns != first


def test_config_validation():
    with pytest.raises(ValueError, match="gta5_size"):
        synthetic.SyntheticConfig(gta5_size=(8, 8))
    with pytest.raises(ValueError, match="gap"):
        synthetic.SyntheticConfig(gap=2.0)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    args = [sys.executable, "-m", "cosuda.synthetic", "--out", str(out), "--seed", "3", "--gta5", "2",
            "--synthia", "1", "--cityscapes-train", "1", "--cityscapes-val", "1", "--gta5-size", "48x27",
            "--synthia-size", "48x28", "--cityscapes-size", "48x24", "--no-progress"]
    run = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "wrote 2 GTA5-like" in run.stdout
    assert (out / "gta5" / "labels" / "00002.png").is_file()
    assert (out / "synthia" / "GT" / "LABELS" / "0000000.png").is_file()
    assert len(list((out / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))) == 1
    bad = subprocess.run(args[:-1] + ["--gta5-size", "48"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "--gta5-size" in bad.stderr and "WxH" in bad.stderr
