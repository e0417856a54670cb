"""Readers on tiny fixtures written in each real on-disk format, including every bad input."""
import re

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from cosuda import data, labels

W, H = 12, 8


def _rgb(seed, w=W, h=H):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _label_ids(seed, ids, w=W, h=H):
    return np.random.default_rng(seed).choice(np.array(ids, dtype=np.uint8), size=(h, w))


def _save_palette_png(path, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(ids.astype(np.uint8))
    # A palette whose colours are unrelated to the ids: readers must return the indices.
    img.putpalette((np.arange(768) * 7 % 256).astype(np.uint8).tobytes())
    img.save(path)
    assert Image.open(path).mode == "P"


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# Raw ids used in the fixtures: mapped ones and ignored ones (0 unlabeled, 1 ego, 4 static).
CS_IDS = [7, 8, 11, 21, 23, 24, 26, 33, 0, 1, 4]
SYN_IDS = [1, 2, 3, 4, 6, 8, 10, 11, 0, 13, 22]


@pytest.fixture
def gta5_root(tmp_path):
    root = tmp_path / "gta5"
    for i in (2, 1, 3):  # written out of order: the scan must sort
        _save(root / "images" / f"{i:05d}.png", _rgb(i))
        _save_palette_png(root / "labels" / f"{i:05d}.png", _label_ids(i, CS_IDS))
    return root


def _save_synthia_label(path, ids, single_channel=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = ids.astype(np.uint16)
    if single_channel:
        cv2.imwrite(str(path), ids)
        return
    rng = np.random.default_rng(0)
    bgr = np.stack([rng.integers(0, 65535, ids.shape), rng.integers(0, 65535, ids.shape), ids],
                   axis=-1).astype(np.uint16)  # garbage in B and G (instance ids, ...)
    cv2.imwrite(str(path), bgr)


@pytest.fixture
def synthia_root(tmp_path):
    root = tmp_path / "synthia"
    for i in range(3):
        _save(root / "RGB" / f"{i:07d}.png", _rgb(10 + i))
        _save_synthia_label(root / "GT" / "LABELS" / f"{i:07d}.png", _label_ids(10 + i, SYN_IDS))
    return root


CS_TRAIN = ["aachen/aachen_000000_000019", "aachen/aachen_000001_000019", "bochum/bochum_000000_000019"]


@pytest.fixture
def cs_root(tmp_path):
    root = tmp_path / "cityscapes"
    for k, stem in enumerate(CS_TRAIN):
        _save(root / "leftImg8bit" / "train" / f"{stem}_leftImg8bit.png", _rgb(20 + k))
        _save(root / "gtFine" / "train" / f"{stem}_gtFine_labelIds.png", _label_ids(20 + k, CS_IDS))
    stem = "frankfurt/frankfurt_000000_000294"
    _save(root / "leftImg8bit" / "val" / f"{stem}_leftImg8bit.png", _rgb(30))
    _save(root / "gtFine" / "val" / f"{stem}_gtFine_labelIds.png", _label_ids(30, CS_IDS))
    return root


# ---------------------------------------------------------------------------------------------
# Items
# ---------------------------------------------------------------------------------------------

def _check_item(item, w, h):
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, h, w)
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["label"].dtype == torch.int64 and item["label"].shape == (h, w)


def test_gta5_items(gta5_root):
    ds = data.GTA5(gta5_root)
    assert len(ds) == 3 and ds.names == ["00001.png", "00002.png", "00003.png"]
    item = ds[1]
    _check_item(item, W, H)
    assert item["name"] == "00002.png"
    expected = labels.to_train_ids(_label_ids(2, CS_IDS), labels.CITYSCAPES_TO_TRAIN)
    assert item["label"].numpy().tolist() == expected.tolist()
    assert (item["label"] == 255).any()  # ids 0, 1, 4 are ignored
    # RGB order and the [0, 1] scale, exactly.
    assert torch.allclose(item["image"], torch.from_numpy(_rgb(2)).permute(2, 0, 1).float() / 255)


def test_synthia_reads_red_channel_of_16bit_label(synthia_root):
    ds = data.SYNTHIA(synthia_root)
    assert ds.names == ["0000000.png", "0000001.png", "0000002.png"]
    item = ds[2]
    _check_item(item, W, H)
    expected = labels.to_train_ids(_label_ids(12, SYN_IDS), labels.SYNTHIA_TO_TRAIN)
    assert item["label"].numpy().tolist() == expected.tolist()


def test_synthia_single_channel_and_ids_above_255(synthia_root):
    ids = _label_ids(10, SYN_IDS).astype(np.uint16)
    ids[0, :3] = [256 + 3, 1000, 3]  # must not wrap around to road
    _save_synthia_label(synthia_root / "GT" / "LABELS" / "0000000.png", ids, single_channel=True)
    label = data.SYNTHIA(synthia_root)[0]["label"].numpy()
    assert label[0, :3].tolist() == [255, 255, 0]
    assert label.tolist() == labels.to_train_ids(ids, labels.SYNTHIA_TO_TRAIN).tolist()


def test_cityscapes_scan_two_cities(cs_root):
    ds = data.Cityscapes(cs_root, "train")
    assert ds.names == [f"{s}_leftImg8bit.png" for s in CS_TRAIN]
    item = ds[2]
    _check_item(item, W, H)
    assert item["name"] == "bochum/bochum_000000_000019_leftImg8bit.png"
    expected = labels.to_train_ids(_label_ids(22, CS_IDS), labels.CITYSCAPES_TO_TRAIN)
    assert item["label"].numpy().tolist() == expected.tolist()
    val = data.Cityscapes(cs_root, "val")
    assert val.names == ["frankfurt/frankfurt_000000_000294_leftImg8bit.png"]


def test_items_collate_in_a_dataloader(cs_root):
    batch = next(iter(torch.utils.data.DataLoader(data.Cityscapes(cs_root), batch_size=2)))
    assert batch["image"].shape == (2, 3, H, W) and batch["label"].shape == (2, H, W)
    assert batch["name"] == [f"{s}_leftImg8bit.png" for s in CS_TRAIN[:2]]


# ---------------------------------------------------------------------------------------------
# List files, resizing, overrides
# ---------------------------------------------------------------------------------------------

def test_list_files(gta5_root, cs_root, tmp_path):
    lst = tmp_path / "gta.txt"
    lst.write_text("  00003.png  \n\nimages/00001.png\n")
    assert data.GTA5(gta5_root, list_file=lst).names == ["00003.png", "00001.png"]
    lst = tmp_path / "cs.txt"
    lst.write_text("bochum/bochum_000000_000019_leftImg8bit.png\n"
                   "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png\n\n")
    ds = data.Cityscapes(cs_root, "train", list_file=lst)
    assert ds.names == ["bochum/bochum_000000_000019_leftImg8bit.png",
                        "aachen/aachen_000000_000019_leftImg8bit.png"]
    assert ds[1]["name"] == "aachen/aachen_000000_000019_leftImg8bit.png"


def test_list_file_errors(gta5_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nolist.txt"):
        data.GTA5(gta5_root, list_file=tmp_path / "nolist.txt")
    lst = tmp_path / "bad.txt"
    lst.write_text("00001.png\n00009.png\n")
    with pytest.raises(data.MissingFileError, match="00009.png"):
        data.GTA5(gta5_root, list_file=lst)
    lst.write_text("\n  \n")
    with pytest.raises(data.DatasetError, match="bad.txt"):
        data.GTA5(gta5_root, list_file=lst)


def test_resize_image_bicubic_label_nearest(cs_root):
    ds = data.Cityscapes(cs_root, size=(7, 5))
    item = ds[0]
    _check_item(item, 7, 5)
    src = Image.open(cs_root / "leftImg8bit" / "train" / f"{CS_TRAIN[0]}_leftImg8bit.png")
    expected = np.asarray(src.resize((7, 5), Image.BICUBIC), dtype=np.float32) / 255
    assert np.allclose(item["image"].permute(1, 2, 0).numpy(), expected)
    full = data.Cityscapes(cs_root)[0]["label"]
    # Nearest neighbour never invents ids: every value existed in the full-size label.
    assert set(item["label"].unique().tolist()) <= set(full.unique().tolist())
    assert set(item["label"].unique().tolist()) <= set(range(19)) | {255}


def test_label_size(cs_root):
    ds = data.Cityscapes(cs_root, size=(6, 4), label_size=(24, 16))
    item = ds[0]
    assert item["image"].shape == (3, 4, 6) and item["label"].shape == (16, 24)
    full = data.Cityscapes(cs_root)[0]["label"]
    assert torch.equal(item["label"][::2, ::2], full)  # 2x nearest upsampling of the original
    assert data.Cityscapes(cs_root, label_size=(6, 4))[0]["image"].shape == (3, H, W)
    assert ds.read_label(0).shape == (16, 24)


def test_bad_size_argument(cs_root):
    with pytest.raises(ValueError, match="size"):
        data.Cityscapes(cs_root, size=(0, 4))


def test_image_dir_override(gta5_root, tmp_path):
    translated = tmp_path / "gta5_cyclegan"
    for i in (1, 2, 3):
        _save(translated / f"{i:05d}.png", 255 - _rgb(i))
    ds = data.GTA5(gta5_root, image_dir=translated)
    assert ds.names == ["00001.png", "00002.png", "00003.png"]
    item = ds[0]
    assert torch.allclose(item["image"], torch.from_numpy(255 - _rgb(1)).permute(2, 0, 1).float() / 255)
    assert torch.equal(item["label"], data.GTA5(gta5_root)[0]["label"])  # labels still from root


def test_gta5_image_label_size_mismatch_is_resolved(gta5_root):
    _save(gta5_root / "images" / "00001.png", _rgb(1, w=2 * W, h=2 * H))
    item = data.GTA5(gta5_root)[0]  # no size: the image is brought to the label's size
    _check_item(item, W, H)
    item = data.GTA5(gta5_root, size=(6, 4))[0]
    _check_item(item, 6, 4)


def test_pseudo_root(cs_root, tmp_path):
    pseudo = tmp_path / "pseudo"
    train_ids = _label_ids(5, [0, 2, 10, 13, 18, 255, 40])  # 40 is no trainId -> ignore
    for stem in CS_TRAIN:
        _save(pseudo / f"{stem}_leftImg8bit.png", train_ids)
    ds = data.Cityscapes(cs_root, "train", pseudo_root=pseudo)
    label = ds[0]["label"].numpy()
    expected = np.where(train_ids == 40, 255, train_ids)
    assert label.tolist() == expected.tolist()
    # Pseudo-labels saved at a lower resolution (same aspect ratio) follow the image size.
    _save(pseudo / f"{CS_TRAIN[0]}_leftImg8bit.png", train_ids[::2, ::2])
    assert ds[0]["label"].shape == (H, W)
    assert ds.read_label(0).shape == (H // 2, W // 2)  # no size given: the file's resolution
    # ... but a pseudo-label of another shape belongs to another image.
    bad = pseudo / f"{CS_TRAIN[1]}_leftImg8bit.png"
    _save(bad, train_ids[:, ::2])
    with pytest.raises(data.DatasetError, match=re.escape(str(bad))):
        ds[1]


def test_missing_pseudo_label_says_how_to_make_them(cs_root, tmp_path):
    pseudo = tmp_path / "pseudo"
    _save(pseudo / f"{CS_TRAIN[0]}_leftImg8bit.png", _label_ids(5, [0, 1]))
    with pytest.raises(FileNotFoundError) as err:
        data.Cityscapes(cs_root, "train", pseudo_root=pseudo)
    message = str(err.value)
    assert str(pseudo / f"{CS_TRAIN[1]}_leftImg8bit.png") in message
    assert "generate_pseudo_labels" in message
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.Cityscapes(cs_root, "train", pseudo_root=tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# Bad input: every error names the offending path
# ---------------------------------------------------------------------------------------------

def test_missing_root(tmp_path):
    for cls in (data.GTA5, data.SYNTHIA, data.Cityscapes):
        with pytest.raises(FileNotFoundError, match="not_there"):
            cls(tmp_path / "not_there")
        with pytest.raises(data.DatasetError):
            cls(tmp_path / "not_there")


def test_missing_label_folder_or_split(gta5_root, cs_root):
    import shutil
    shutil.rmtree(gta5_root / "labels")
    with pytest.raises(FileNotFoundError, match="labels"):
        data.GTA5(gta5_root)
    with pytest.raises(FileNotFoundError, match="test"):
        data.Cityscapes(cs_root, "test")


@pytest.mark.parametrize("which", ["gta5", "synthia", "cityscapes"])
def test_image_without_label(which, gta5_root, synthia_root, cs_root):
    if which == "gta5":
        (gta5_root / "labels" / "00002.png").unlink()
        make, missing = (lambda: data.GTA5(gta5_root)), gta5_root / "labels" / "00002.png"
    elif which == "synthia":
        (synthia_root / "GT" / "LABELS" / "0000001.png").unlink()
        make, missing = (lambda: data.SYNTHIA(synthia_root)), synthia_root / "GT" / "LABELS" / "0000001.png"
    else:
        missing = cs_root / "gtFine" / "train" / f"{CS_TRAIN[2]}_gtFine_labelIds.png"
        missing.unlink()
        make = lambda: data.Cityscapes(cs_root)  # noqa: E731
    with pytest.raises(FileNotFoundError) as err:
        make()
    assert str(missing) in str(err.value)


def test_empty_dataset(tmp_path):
    (tmp_path / "gta5" / "images").mkdir(parents=True)
    (tmp_path / "gta5" / "labels").mkdir()
    with pytest.raises(data.DatasetError, match="no image found"):
        data.GTA5(tmp_path / "gta5")
    (tmp_path / "cs" / "leftImg8bit" / "train").mkdir(parents=True)
    (tmp_path / "cs" / "gtFine" / "train").mkdir(parents=True)
    with pytest.raises(data.DatasetError, match=re.escape(str(tmp_path / "cs"))):
        data.Cityscapes(tmp_path / "cs")


def test_unreadable_image(gta5_root):
    bad = gta5_root / "images" / "00002.png"
    bad.write_bytes(b"this is not a png" * 10)
    ds = data.GTA5(gta5_root)  # existence is checked at construction, content at load
    ds[0]
    with pytest.raises(data.DatasetError, match=re.escape(str(bad))):
        ds[1]


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def test_truncated_files_are_errors_not_padding(gta5_root, synthia_root, cs_root):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for path, ds, index in [(gta5_root / "images" / "00001.png", lambda: data.GTA5(gta5_root), 0),
                            (gta5_root / "labels" / "00002.png", lambda: data.GTA5(gta5_root), 1),
                            (synthia_root / "GT" / "LABELS" / "0000000.png", lambda: data.SYNTHIA(synthia_root), 0),
                            (cs_root / "gtFine" / "train" / f"{CS_TRAIN[0]}_gtFine_labelIds.png",
                             lambda: data.Cityscapes(cs_root), 0)]:
        _truncate(path)
        with pytest.raises(data.DatasetError, match=re.escape(str(path))):
            ds()[index]


def test_truncation_guard_when_pil_is_told_to_pad(gta5_root, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(data.DatasetError, match="LOAD_TRUNCATED_IMAGES"):
        data.GTA5(gta5_root)[0]


@pytest.mark.parametrize("which", ["synthia", "cityscapes"])
def test_label_of_wrong_size(which, synthia_root, cs_root):
    if which == "synthia":
        path = synthia_root / "GT" / "LABELS" / "0000001.png"
        _save_synthia_label(path, _label_ids(1, SYN_IDS, w=W + 1))
        ds = data.SYNTHIA(synthia_root, size=(6, 4))  # resizing does not excuse a mismatch
    else:
        path = cs_root / "gtFine" / "train" / f"{CS_TRAIN[1]}_gtFine_labelIds.png"
        _save(path, _label_ids(1, CS_IDS, h=H - 2))
        ds = data.Cityscapes(cs_root)
    with pytest.raises(data.DatasetError, match=re.escape(str(path))):
        ds[1]


def test_colour_label_is_rejected(cs_root):
    path = cs_root / "gtFine" / "train" / f"{CS_TRAIN[0]}_gtFine_labelIds.png"
    _save(path, _rgb(0))
    with pytest.raises(data.DatasetError, match="labelIds|ids"):
        data.Cityscapes(cs_root)[0]


def test_cityscapes_list_with_wrong_names(cs_root, tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_text("aachen/aachen_000000_000019.png\n")
    with pytest.raises(data.DatasetError, match="_leftImg8bit.png"):
        data.Cityscapes(cs_root, list_file=lst)


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------

def test_class_frequencies(cs_root):
    ds = data.Cityscapes(cs_root)
    counts = data.class_frequencies(ds)
    expected = sum(np.bincount(ds[i]["label"].numpy().ravel(), minlength=256)[:19] for i in range(3))
    assert counts.dtype == np.int64 and counts.tolist() == expected.tolist()
    assert counts.sum() < 3 * W * H  # ignore pixels are not counted
    first_and_last = data.class_frequencies(ds, max_items=2)
    expected = sum(np.bincount(ds[i]["label"].numpy().ravel(), minlength=256)[:19] for i in (0, 2))
    assert first_and_last.tolist() == expected.tolist()


def test_domain_statistics(cs_root):
    ds = data.Cityscapes(cs_root)
    stats = data.domain_statistics(ds, bins=8)
    assert stats["class_mean_rgb"].shape == (19, 3) and stats["channel_hist"].shape == (3, 8)
    assert np.allclose(stats["channel_hist"].sum(axis=1), 1.0)
    item = ds[0]
    images = [ds[i]["image"].numpy() for i in range(3)]
    ids = [ds[i]["label"].numpy() for i in range(3)]
    road = np.concatenate([im[:, lb == 0] for im, lb in zip(images, ids)], axis=1)
    assert np.allclose(stats["class_mean_rgb"][0], road.mean(axis=1))
    assert np.isnan(stats["class_mean_rgb"][16]).all()  # no train in the fixture
    with pytest.raises(ValueError, match="label_size"):
        data.domain_statistics(data.Cityscapes(cs_root, label_size=(6, 4)))
    del item
