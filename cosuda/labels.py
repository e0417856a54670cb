"""Label spaces of GTA5, SYNTHIA and Cityscapes, mapped onto the 19 Cityscapes train classes.

Everything here is plain NumPy so that readers, metrics and plots share one source of truth.
Ids and colours follow cityscapesScripts ``helpers/labels.py``; the SYNTHIA map follows the
RAND-CITYSCAPES release (16 classes: terrain, truck and train do not exist there).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

NUM_CLASSES = 19
IGNORE_INDEX = 255

CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)

PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)

# Cityscapes labelId -> trainId. GTA5 label PNGs store the same labelIds.
CITYSCAPES_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

# SYNTHIA RAND-CITYSCAPES raw class id (red channel of GT/LABELS) -> trainId.
SYNTHIA_TO_TRAIN = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11,
    17: 12, 8: 13, 19: 15, 12: 17, 11: 18,
}

# Every raw id a label file may hold: the mapped ones above and those read as ignore (unlabeled,
# ego vehicle, static, lane marking...). Cityscapes and GTA5: cityscapesScripts' labelIds 0..33;
# SYNTHIA: the 23 classes of its README, void 0 .. lanemarking 22. Any other value means a file
# in another format (colours, trainIds of another dataset); `python -m cosuda.data check` reports it.
CITYSCAPES_LABEL_IDS = range(34)
SYNTHIA_LABEL_IDS = range(23)

# Classes averaged for the SYNTHIA->Cityscapes protocol (paper Table 3).
SYNTHIA16 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
SYNTHIA13 = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)

# Inverse maps, used by the synthetic generator to write raw ids.
TRAIN_TO_CITYSCAPES = {t: l for l, t in CITYSCAPES_TO_TRAIN.items()}
TRAIN_TO_SYNTHIA = {t: s for s, t in SYNTHIA_TO_TRAIN.items()}


def _lookup_table(mapping: Mapping[int, int]) -> np.ndarray:
    """A table over every uint16 raw id (cheap: 64 KiB); unmapped ids -> IGNORE_INDEX."""
    lut = np.full(65536, IGNORE_INDEX, dtype=np.uint8)
    for raw, train in mapping.items():
        if 0 <= raw < 65536:
            lut[raw] = train
    return lut


def to_train_ids(raw, mapping: Mapping[int, int]) -> np.ndarray:
    """Map raw ids (any integer array, e.g. uint8 labelIds or uint16 SYNTHIA ids) to trainIds.

    Ids in ``mapping`` become their trainId; every other value, including negative values and
    values above 255, becomes ``IGNORE_INDEX``. Returns a uint8 array of the input's shape.
    """
    raw = np.asarray(raw)
    if raw.dtype.kind not in "iub":
        raise TypeError(f"to_train_ids expects integer ids, got dtype {raw.dtype}")
    raw = raw.astype(np.int64, copy=False)
    valid = (raw >= 0) & (raw < 65536)
    out = np.full(raw.shape, IGNORE_INDEX, dtype=np.uint8)
    out[valid] = _lookup_table(mapping)[raw[valid]]
    return out


def colorize(train_ids) -> np.ndarray:
    """trainIds (H, W) -> RGB uint8 (H, W, 3) in the official palette; 255 (and any id >= 19) -> black."""
    if hasattr(train_ids, "detach"):  # a torch tensor, possibly on a GPU
        train_ids = train_ids.detach().cpu().numpy()
    ids = np.asarray(train_ids).astype(np.int64, copy=False)
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:NUM_CLASSES] = PALETTE
    safe = np.where((ids >= 0) & (ids < 256), ids, IGNORE_INDEX)
    return table[safe]
