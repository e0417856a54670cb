"""The paper's published numbers (Chung, Kim, Kwak, WACV 2022), transcribed as data so that
results can be printed beside them. All values are percentages on Cityscapes val.

Keys follow the presets: source "gta5" / "synthia", architecture "deeplabv2" (the paper's
"R", DeepLabV2-ResNet101) / "fcn8s" ("V", FCN-8s-VGG16), variants as in `cosuda.config`.
For SYNTHIA->Cityscapes the paper reports mIoU13 for DeepLabV2 and mIoU16 for FCN-8s
(Table 3 caption); the single SYNTHIA numbers of Tables 1 and 4 follow the same protocol.
"""
from __future__ import annotations

import math

NAN = math.nan

# Column order of Table 2 (trainId order) and of Table 3 (the 16 SYNTHIA classes).
TABLE2_COLUMNS = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                  "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                  "truck", "bus", "train", "motorcycle", "bicycle")
TABLE3_COLUMNS = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                  "traffic sign", "vegetation", "sky", "person", "rider", "car", "bus",
                  "motorcycle", "bicycle")

# Table 5: the method's hyper-parameters per task and network, as the real presets use them.
TABLE5 = {
    ("gta5", "deeplabv2"): {"t_cos": 0.6, "dict_size": 2500, "lambda_cos": 0.01},
    ("gta5", "fcn8s"): {"t_cos": 0.4, "dict_size": 2000, "lambda_cos": 0.001},
    ("synthia", "deeplabv2"): {"t_cos": 0.4, "dict_size": 2500, "lambda_cos": 0.01},
    ("synthia", "fcn8s"): {"t_cos": 0.2, "dict_size": 2000, "lambda_cos": 0.001},
}

PAPER_RESULTS = {
    # Table 2, row "Ours": GTA5 -> Cityscapes, per-class IoU and mIoU (19 classes).
    "table2": {
        "deeplabv2": {"per_class_iou": dict(zip(TABLE2_COLUMNS, (
            92.6, 54.0, 85.4, 35.0, 26.0, 32.4, 41.2, 29.7, 85.1, 40.9,
            85.4, 62.6, 34.7, 85.7, 35.6, 50.8, 2.4, 31.0, 34.0))), "mIoU": 49.7},
        "fcn8s": {"per_class_iou": dict(zip(TABLE2_COLUMNS, (
            90.3, 42.6, 82.2, 29.7, 22.2, 18.5, 32.8, 26.8, 84.3, 37.1,
            80.2, 55.2, 26.4, 83.0, 30.3, 35.1, 7.0, 29.6, 28.9))), "mIoU": 44.3},
    },
    # Table 3, row "Ours": SYNTHIA -> Cityscapes. DeepLabV2 leaves wall, fence, pole out ("—");
    # the mean the paper does not report for an architecture is NaN.
    "table3": {
        "deeplabv2": {"per_class_iou": dict(zip(TABLE3_COLUMNS, (
            88.3, 47.3, 80.1, NAN, NAN, NAN, 21.6, 20.2, 79.6, 82.1,
            59.0, 28.2, 82.0, 39.2, 17.3, 46.7))), "mIoU13": 53.2, "mIoU16": NAN},
        "fcn8s": {"per_class_iou": dict(zip(TABLE3_COLUMNS, (
            73.6, 30.6, 77.5, 0.8, 0.4, 26.7, 14.1, 29.3, 80.9, 80.6,
            57.9, 24.7, 76.5, 27.2, 10.8, 47.8))), "mIoU16": 41.2, "mIoU13": NAN},
    },
    # Table 1: training without pseudo-labels (eq. 11) vs the output-space adversarial baseline.
    "table1": {
        "deeplabv2": {"adversarial": {"gta5": 45.1, "synthia": 48.5},
                      "ours11": {"gta5": 46.6, "synthia": 48.6}},
        "fcn8s": {"adversarial": {"gta5": 40.7, "synthia": 36.2},
                  "ours11": {"gta5": 41.8, "synthia": 36.5}},
    },
    # Table 4: ablations ("41,2" in the paper read as 41.2).
    "table4": {
        "deeplabv2": {
            "ours": {"gta5": 49.7, "synthia": 53.2},
            "wo-dict": {"gta5": 49.33, "synthia": 52.64},
            "wo-split": {"gta5": 48.93, "synthia": 52.67},
            "with-adv": {"gta5": 48.71, "synthia": 52.75},
            "only-ssl": {"gta5": 48.65, "synthia": 52.48},
            "ssl-adv": {"gta5": 48.41, "synthia": 52.56},
        },
        "fcn8s": {
            "ours": {"gta5": 44.3, "synthia": 41.2},
            "only-ssl": {"gta5": 43.52, "synthia": 40.81},
        },
    },
    # Table 5: hyper-parameters of the method (TABLE5 above; the presets of cosuda.config use it).
    "table5": TABLE5,
    # Table 6: GTA5 -> Cityscapes, DeepLabV2, mIoU against T_cos (dict-size 2500) and
    # against dict-size (T_cos 0.6).
    "table6": {
        "t_cos": {0.5: 48.92, 0.55: 49.15, 0.6: 49.7, 0.65: 49.06, 0.7: 49.47},
        "dict_size": {1000: 49.07, 1500: 49.51, 2000: 49.26, 2500: 49.7, 3000: 49.13},
    },
}


def paper_miou(source: str, arch: str, variant: str) -> float | None:
    """The paper's mIoU for a preset (mIoU19 for GTA5; mIoU13 / mIoU16 for SYNTHIA with
    DeepLabV2 / FCN-8s), or None when the paper has no such row."""
    for table in ("table4", "table1"):
        value = PAPER_RESULTS[table].get(arch, {}).get(variant, {}).get(source)
        if value is not None:
            return value
    return None


def paper_metric(source: str, arch: str = "deeplabv2") -> str:
    """The mean the paper reports for a task: "miou19" for GTA5 -> Cityscapes; for SYNTHIA ->
    Cityscapes "miou13" with DeepLabV2 and "miou16" with FCN-8s (Table 3's caption)."""
    if source == "gta5":
        return "miou19"
    if source == "synthia":
        return "miou13" if arch == "deeplabv2" else "miou16"
    raise ValueError(f"unknown source {source!r}: gta5 or synthia")
