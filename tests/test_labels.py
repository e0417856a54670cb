"""Label spaces against the official tables (cityscapesScripts helpers/labels.py, SYNTHIA)."""
import numpy as np
import pytest

from cosuda import labels

# The official cityscapesScripts table: (name, labelId, trainId, colour). Copied as the
# reference on purpose: the library must agree with it row by row.
OFFICIAL = [
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
    ("license plate", -1, -1, (0, 0, 142)),
]

# SYNTHIA RAND-CITYSCAPES raw id -> (name, trainId) for the 16 shared classes.
SYNTHIA_OFFICIAL = {
    1: ("sky", 10), 2: ("building", 2), 3: ("road", 0), 4: ("sidewalk", 1), 5: ("fence", 4),
    6: ("vegetation", 8), 7: ("pole", 5), 8: ("car", 13), 9: ("traffic sign", 7),
    10: ("person", 11), 11: ("bicycle", 18), 12: ("motorcycle", 17), 15: ("traffic light", 6),
    17: ("rider", 12), 19: ("bus", 15), 21: ("wall", 3),
}


def test_constants():
    assert labels.NUM_CLASSES == 19 and labels.IGNORE_INDEX == 255
    assert len(labels.CLASS_NAMES) == 19 and isinstance(labels.CLASS_NAMES, tuple)
    assert labels.PALETTE.shape == (19, 3) and labels.PALETTE.dtype == np.uint8


@pytest.mark.parametrize("name,label_id,train_id,colour", OFFICIAL)
def test_cityscapes_row(name, label_id, train_id, colour):
    mapped = labels.to_train_ids(np.array([label_id]), labels.CITYSCAPES_TO_TRAIN)[0]
    if train_id in (255, -1):
        assert label_id not in labels.CITYSCAPES_TO_TRAIN
        assert mapped == 255
    else:
        assert labels.CITYSCAPES_TO_TRAIN[label_id] == train_id
        assert mapped == train_id
        assert labels.CLASS_NAMES[train_id] == name
        assert tuple(labels.PALETTE[train_id]) == colour


def test_cityscapes_map_has_exactly_the_19_official_classes():
    official = {lid: tid for _, lid, tid, _ in OFFICIAL if 0 <= tid < 19}
    assert labels.CITYSCAPES_TO_TRAIN == official


def test_synthia_map():
    assert labels.SYNTHIA_TO_TRAIN == {raw: tid for raw, (_, tid) in SYNTHIA_OFFICIAL.items()}
    for raw, (name, tid) in SYNTHIA_OFFICIAL.items():
        assert labels.CLASS_NAMES[tid] == name
    # Terrain, truck and train do not exist in SYNTHIA's 16-class protocol.
    assert {9, 14, 16}.isdisjoint(labels.SYNTHIA_TO_TRAIN.values())
    # Ids SYNTHIA has but the protocol ignores: void, parking-slot, road-work, terrain,
    # truck, train, lanemarking.
    raw = np.array([0, 13, 14, 16, 18, 20, 22], dtype=np.uint16)
    assert (labels.to_train_ids(raw, labels.SYNTHIA_TO_TRAIN) == 255).all()


def test_synthia_subsets():
    assert labels.SYNTHIA16 == (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
    assert labels.SYNTHIA13 == tuple(c for c in labels.SYNTHIA16 if c not in (3, 4, 5))
    assert set(labels.SYNTHIA16) == set(labels.SYNTHIA_TO_TRAIN.values())


def test_to_train_ids_edge_cases():
    raw = np.array([[-1, 7, 300], [33, 65535, 255]], dtype=np.int32)
    out = labels.to_train_ids(raw, labels.CITYSCAPES_TO_TRAIN)
    assert out.dtype == np.uint8 and out.shape == raw.shape
    assert out.tolist() == [[255, 0, 255], [18, 255, 255]]


def test_to_train_ids_uint16_above_255_never_aliases():
    # 256 + 7 must not wrap around to 7 (road) as a uint8 cast would.
    raw = np.array([7, 263, 256 + 3, 1000 * 256 + 21], dtype=np.int64)
    assert labels.to_train_ids(raw, labels.SYNTHIA_TO_TRAIN).tolist() == [5, 255, 255, 255]
    raw16 = np.array([3, 259, 65535], dtype=np.uint16)
    assert labels.to_train_ids(raw16, labels.SYNTHIA_TO_TRAIN).tolist() == [0, 255, 255]


def test_to_train_ids_unknown_and_int64_huge():
    raw = np.array([2**40, -(2**40), 7], dtype=np.int64)
    assert labels.to_train_ids(raw, labels.CITYSCAPES_TO_TRAIN).tolist() == [255, 255, 0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_to_train_ids_rejects_non_integers(dtype):
    with pytest.raises(TypeError, match="integer"):
        labels.to_train_ids(np.zeros((2, 2), dtype=dtype), labels.CITYSCAPES_TO_TRAIN)


def test_colorize():
    ids = np.array([[0, 10, 255], [18, 13, 200]], dtype=np.uint8)
    rgb = labels.colorize(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert tuple(rgb[0, 0]) == (128, 64, 128)
    assert tuple(rgb[0, 1]) == (70, 130, 180)
    assert tuple(rgb[0, 2]) == (0, 0, 0)      # ignore -> black
    assert tuple(rgb[1, 0]) == (119, 11, 32)
    assert tuple(rgb[1, 2]) == (0, 0, 0)      # not a train class -> black


def test_colorize_accepts_tensors():
    torch = pytest.importorskip("torch")
    ids = torch.tensor([[13, 255]], dtype=torch.int64)
    assert labels.colorize(ids).tolist() == [[[0, 0, 142], [0, 0, 0]]]
