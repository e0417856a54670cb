"""Evaluation: confusion matrix, IoU, mIoU19 / mIoU16 / mIoU13, and tables like the paper's.

Protocol of the field (and of the paper's Tables 2-3): predict at the dataset's image size,
upsample the logits bilinearly to the label's resolution, argmax, accumulate one confusion
matrix over the whole split (ignore pixels dropped), then per class
IoU = TP / (TP + FP + FN) = diag / (row + column - diag), and mIoU = the mean over classes,
NaN-safe (a class absent from both prediction and ground truth does not count).
"""
from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np
import torch

from .labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, SYNTHIA13, SYNTHIA16

__all__ = ["confusion_matrix", "per_class_iou", "mean_iou", "ConfusionMeter", "evaluate",
           "iou_table", "iou_markdown"]


# --------------------------------------------------------------------------------------------
# Confusion matrix and IoU
# --------------------------------------------------------------------------------------------
def _as_tensor(x, what: str) -> torch.Tensor:
    t = x if torch.is_tensor(x) else torch.from_numpy(np.ascontiguousarray(x))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"confusion_matrix: {what} must hold integer class ids, got dtype {t.dtype}")
    return t


def _confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """(C, C) int64 on pred's device, rows = ground truth, columns = prediction."""
    if pred.shape != target.shape:
        raise ValueError(f"confusion_matrix: pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                         f"must have the same shape (upsample the prediction to the label's size)")
    target = target.to(pred.device).reshape(-1).long()
    pred = pred.reshape(-1).long()
    valid = target != ignore_index
    bad_target = valid & ((target < 0) | (target >= num_classes))
    if bad_target.any():
        raise ValueError(f"confusion_matrix: target holds {target[bad_target][0].item()}, outside "
                         f"[0, {num_classes}) and not ignore_index={ignore_index}")
    bad_pred = (pred < 0) | (pred >= num_classes)
    if bad_pred.any():
        raise ValueError(f"confusion_matrix: pred holds {pred[bad_pred][0].item()}, outside [0, {num_classes})")
    index = target[valid] * num_classes + pred[valid]
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def confusion_matrix(pred, target, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX
                     ) -> np.ndarray:
    """int64 (C, C): entry [i, j] counts pixels of ground truth i predicted as j.

    pred and target: integer arrays or tensors of the same shape. Target pixels equal to
    ignore_index are skipped; any other value outside [0, C), in target or pred, is an error.
    """
    conf = _confusion(_as_tensor(pred, "pred"), _as_tensor(target, "target"), num_classes, ignore_index)
    return conf.cpu().numpy()


def per_class_iou(conf) -> np.ndarray:
    """float64 (C,): diag / (row + column - diag), NaN for a class in neither pred nor target."""
    conf = np.asarray(conf.cpu() if torch.is_tensor(conf) else conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"per_class_iou: expected a square confusion matrix, got shape {conf.shape}")
    tp = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(conf, classes: Sequence[int] | None = None) -> float:
    """NaN-ignoring mean of per_class_iou over `classes` (all when None); NaN if all are NaN."""
    iou = per_class_iou(conf)
    if classes is not None:
        iou = iou[list(classes)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice" -> NaN is the answer
        return float(np.nanmean(iou)) if iou.size else math.nan


class ConfusionMeter:
    """A confusion matrix accumulated on the device of the predictions (no host copy per batch).

    `update(pred, target)`, `compute()` -> int64 numpy (C, C), `merge(other)`, `reset()`;
    `matrix` is the (C, C) int64 tensor (to all-reduce across processes).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.reset()

    def reset(self) -> None:
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred, target) -> None:
        conf = _confusion(_as_tensor(pred, "pred"), _as_tensor(target, "target"),
                          self.num_classes, self.ignore_index)
        if self.matrix.device != conf.device:
            self.matrix = self.matrix.to(conf.device)
        self.matrix += conf

    def merge(self, other: "ConfusionMeter") -> "ConfusionMeter":
        if other.num_classes != self.num_classes:
            raise ValueError(f"ConfusionMeter.merge: {other.num_classes} vs {self.num_classes} classes")
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def compute(self) -> np.ndarray:
        return self.matrix.cpu().numpy().copy()


# --------------------------------------------------------------------------------------------
# Evaluation over a dataset
# --------------------------------------------------------------------------------------------
def evaluate(model, dataset, device="cpu", batch_size: int = 1, num_workers: int = 0,
             progress: bool = True, max_items: int | None = None, on_batch=None) -> dict:
    """mIoU of `model` on `dataset` with the field's protocol.

    model: `features, logits = model(x)`, `model.upsample(logits, (H, W))`, already on
    `device`; run in eval mode under inference_mode (its training mode is restored).
    dataset: items with `image` (3, H, W) and `label` (H', W') (labels may be larger than the
    images, e.g. 2048x1024 labels for 1024x512 predictions). max_items: the first items only.
    Returns {"confusion": int64 (C, C), "per_class_iou": (C,) in percent (NaN for classes
    absent from both), "miou19" (all C classes), "miou16", "miou13": floats in percent}
    (miou16 / miou13 are NaN unless C = 19). `on_batch(index, features, labels)`, if given, is
    called for every batch with the model's feature maps (a list) and the labels, under
    inference mode (the engine's alignment measures use it: cosuda/alignment.py).
    """
    from .progress import tqdm

    if max_items is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(int(max_items), len(dataset))))
    if len(dataset) == 0:
        raise ValueError("evaluate: the dataset is empty; check its root, split and list file")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, pin_memory=torch.device(device).type == "cuda")
    was_training = model.training
    model.eval()
    meter = None
    try:
        for index, batch in enumerate(tqdm(loader, desc="evaluate", disable=not progress, leave=False)):
            x, y = batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)
            with torch.inference_mode():
                features, logits = model(x)
                pred = model.upsample(logits.float(), tuple(y.shape[-2:])).argmax(dim=1)
                if on_batch is not None:
                    on_batch(index, features, y)
            if meter is None:
                meter = ConfusionMeter(logits.shape[1])
            meter.update(pred, y)
    finally:
        model.train(was_training)
    conf = meter.compute()
    cityscapes = conf.shape[0] == NUM_CLASSES  # the SYNTHIA subsets are trainIds of the 19 classes
    return {
        "confusion": conf,
        "per_class_iou": per_class_iou(conf) * 100,
        "miou19": mean_iou(conf) * 100,
        "miou16": mean_iou(conf, SYNTHIA16) * 100 if cityscapes else math.nan,
        "miou13": mean_iou(conf, SYNTHIA13) * 100 if cityscapes else math.nan,
    }


# --------------------------------------------------------------------------------------------
# Tables laid out like the paper's Tables 2-3
# --------------------------------------------------------------------------------------------
_SHORT = {"traffic light": "light", "traffic sign": "sign", "motorcycle": "motorbike"}  # the paper's headers


def _table(rows: Mapping[str, object], classes: Sequence[int] | None, label: str):
    """Header and formatted cells shared by iou_table and iou_markdown."""
    classes = list(range(NUM_CLASSES)) if classes is None else list(classes)
    if sorted(classes) == sorted(SYNTHIA16):  # SYNTHIA protocol: its 16 columns, mIoU16 and mIoU13
        means = {"mIoU16": SYNTHIA16, "mIoU13": SYNTHIA13}
    else:
        means = {label: classes}
    header = [_SHORT.get(CLASS_NAMES[c], CLASS_NAMES[c]) for c in classes] + list(means)
    body = []
    for name, values in rows.items():
        if isinstance(values, Mapping):  # {class name: IoU}, may carry published means
            iou = np.array([values.get(n, math.nan) for n in CLASS_NAMES], dtype=np.float64)
            given = values
        else:
            iou = np.asarray(values, dtype=np.float64).reshape(-1)
            if iou.shape[0] != NUM_CLASSES:
                raise ValueError(f"iou_table: row {name!r} has {iou.shape[0]} values, expected "
                                 f"{NUM_CLASSES} (one per class in trainId order)")
            given = {}
        cells = [iou[c] for c in classes]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            cells += [given.get(m, np.nanmean(iou[list(ids)])) for m, ids in means.items()]
        body.append((name, ["-" if math.isnan(v) else f"{v:.1f}" for v in cells]))
    return header, body


def iou_table(rows: Mapping[str, object], classes: Sequence[int] | None = None, label: str = "mIoU") -> str:
    """Plain-text table of per-class IoU (percent) with one row per entry of `rows`.

    rows: name -> per-class IoU (19 values in trainId order, NaN allowed) or a dict
    {class name: IoU} which may also give published means (e.g. "mIoU", "mIoU13").
    classes: the columns (default all 19, followed by `label` = their mean); with the 16
    SYNTHIA classes (labels.SYNTHIA16) the table ends with mIoU16 and mIoU13 like Table 3.
    """
    header, body = _table(rows, classes, label)
    first = max([len(n) for n, _ in body] + [6])
    widths = [max(len(h), 5) for h in header]
    lines = [" " * first + "  " + " ".join(h.rjust(w) for h, w in zip(header, widths))]
    for name, cells in body:
        lines.append(name.ljust(first) + "  " + " ".join(c.rjust(w) for c, w in zip(cells, widths)))
    return "\n".join(lines)


def iou_markdown(rows: Mapping[str, object], classes: Sequence[int] | None = None, label: str = "mIoU") -> str:
    """The same table as iou_table, as Markdown (for the README and notebooks)."""
    header, body = _table(rows, classes, label)
    lines = ["| | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    lines += ["| " + name + " | " + " | ".join(cells) + " |" for name, cells in body]
    return "\n".join(lines)
