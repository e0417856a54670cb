"""Exercises of notebook 03 (pseudo-labels, eq. 4 and supplementary A).

Every checker computes the truth from the inputs it is given and returns a `Result`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..labels import IGNORE_INDEX
from ..lessons import class_id
from . import Result, missing, right, wrong

__all__ = ["check_threshold", "check_precision"]


def _flat(x) -> torch.Tensor:
    return (x.detach().cpu() if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))).flatten()


def _number(answer) -> float | None:
    try:
        value = float(answer.item() if hasattr(answer, "item") else answer)
    except (TypeError, ValueError, RuntimeError):
        return None
    return None if math.isnan(value) else value


def check_threshold(answer, confidence, predicted, c, cap: float = 0.9, tol: float = 2e-3) -> Result:
    """tau^c of supplementary A: the median of the confidences of the pixels predicted as c,
    set to `cap` if higher. confidence P_max and predicted C_max: maps of the same shape."""
    verdict = missing(answer)
    if verdict is not None:
        return verdict
    value = _number(answer)
    if value is None:
        return wrong(f"give one number (a float), got {type(answer).__name__}.")
    c = class_id(c)
    confidence, predicted = _flat(confidence).double(), _flat(predicted).long()
    mine = confidence[predicted == c]
    if mine.numel() == 0:
        truth, median = 0.0, 0.0
    else:
        median = float(mine.median())  # the lower median; numpy's mean of the two middle ones is as good
        truth = min(median, cap)
    if abs(value - truth) <= tol:
        capped = f" (the median {median:.4f} was capped at {cap})" if median > cap else "."
        return right(f"tau = {truth:.4f}{capped}")
    if median > cap and abs(value - median) <= tol:
        return wrong(f"the median is right, but it is above {cap}: supplementary A sets tau to {cap} then.")
    if mine.numel() and abs(value - float(mine.mean())) <= tol:
        return wrong("that is the mean; the threshold is the median confidence of the class.")
    if abs(value - min(float(confidence.median()), cap)) <= tol:
        return wrong("that is the median over all pixels; take only the pixels whose prediction is class c "
                     "(confidence[predicted == c]).")
    return wrong("take confidence[predicted == c], its median, and cap it: min(median, 0.9).")


def check_precision(answer, pseudo, label, c, tol: float = 1e-3) -> Result:
    """The precision of the pseudo-label for class c: of the pixels it keeps as c that have a
    ground-truth label (not 255), the share whose ground truth is c. A fraction in [0, 1]."""
    verdict = missing(answer)
    if verdict is not None:
        return verdict
    value = _number(answer)
    if value is None:
        return wrong(f"give one number (a fraction in [0, 1]), got {type(answer).__name__}.")
    c = class_id(c)
    pseudo, label = _flat(pseudo).long(), _flat(label).long()
    labelled = label != IGNORE_INDEX
    kept_c = pseudo == c
    judged = int((kept_c & labelled).sum())
    if judged == 0:
        return wrong("no labelled pixel is kept as this class: choose another class.")
    truth = int((kept_c & (label == c)).sum()) / judged
    if abs(value - truth) <= tol:
        return right(f"precision {truth:.3f}: {100 * truth:.1f}% of the kept pixels are right.")
    if abs(value - 100 * truth) <= 100 * tol:
        return wrong("right value, but as a percentage: give the fraction (divide by 100).")
    if kept_c.any() and abs(value - int((kept_c & (label == c)).sum()) / int(kept_c.sum())) <= tol:
        return wrong("leave out the pixels whose ground truth is 255 (unlabelled) from the denominator.")
    gt_c = int((label == c).sum())
    if gt_c and abs(value - int((kept_c & (label == c)).sum()) / gt_c) <= tol:
        return wrong("that is the recall (divided by the pixels labelled c); precision divides by the pixels "
                     "kept as c.")
    return wrong("count pixels with pseudo == c and label == c, divided by pixels with pseudo == c and "
                 "label != 255.")
