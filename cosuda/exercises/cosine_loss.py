"""Exercises of notebook 06 (the cosine similarity loss, eq. 9-10, and the unmatching problem).

Every checker computes the truth from the inputs it is given and returns a `Result`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..labels import CLASS_NAMES, NUM_CLASSES
from ..lessons import class_id, class_similarity_matrices, select, unmatched_classes
from . import Result, missing, right, wrong

__all__ = ["check_selected_count", "check_unmatched", "check_mean_loss"]


def _int(answer) -> int | None:
    try:
        value = float(answer.item() if hasattr(answer, "item") else answer)
    except (TypeError, ValueError, RuntimeError):
        return None
    return int(value) if not math.isnan(value) and value == int(value) else None


def check_selected_count(answer, feats, classes, bank, t_cos: float, num_classes: int = NUM_CLASSES) -> Result:
    """How many elements of the similarity matrices M^c (eq. 9, all classes) exceed T_cos?
    feats (N, k), classes (N,) from process B; bank: a FeatureDictionary or list of (n_c, k)."""
    verdict = missing(answer)
    if verdict is not None:
        return verdict
    value = _int(answer)
    if value is None:
        return wrong(f"give a whole number of matrix elements, got {answer!r}.")
    matrices = class_similarity_matrices(feats, classes, bank, num_classes)
    selection = select(matrices, t_cos, num_classes)
    truth, total = selection.total_selected, selection.total_elements
    if abs(value - truth) <= 0.001 * truth:  # an element exactly at T_cos may round either way
        return right(f"{truth} of {total} elements ({100 * truth / max(total, 1):.1f}%) are above T_cos = {t_cos}.")
    if value == total:
        return wrong("that is every element of the matrices: count only those with M > T_cos.")
    pooled = 0
    for c in range(num_classes):  # every target row against every bank vector, ignoring classes
        d = bank.get(c) if hasattr(bank, "get") else bank[c]
        if len(d):
            m = torch.nn.functional.normalize(feats.float(), dim=1) @ torch.nn.functional.normalize(d.float(), dim=1).T
            pooled += int((m > t_cos).sum())
    if value == pooled:
        return wrong("you compared every target vector with every dictionary vector; M^c pairs a target "
                     "vector only with the dictionary vectors of its own class.")
    return wrong("for each class c: M^c = normalize(T^c) @ normalize(D^c).T (eq. 9), count (M^c > T_cos), "
                 "and add the counts over the classes.")


def check_unmatched(answer, target_classes, source_classes, num_classes: int = NUM_CLASSES) -> Result:
    """Which classes of the target vectors (process B) have no source vector in this iteration
    (process A), so that without a dictionary they have nothing to be matched with?
    answer: a class (name or trainId) or a collection of them."""
    verdict = missing(answer)
    if verdict is not None:
        return verdict
    try:
        given = {class_id(answer)} if isinstance(answer, (str, int, np.integer)) else {class_id(a) for a in answer}
    except (TypeError, ValueError) as e:
        return wrong(str(e))
    truth = set(unmatched_classes(target_classes, source_classes, num_classes))
    if given == truth:
        return right("unmatched without a dictionary: " + (", ".join(CLASS_NAMES[c] for c in sorted(truth)) or "none")
                     + ". The dictionary still holds vectors of earlier source images for them.")
    in_source = set(torch.unique(source_classes).tolist())
    in_target = set(torch.unique(target_classes).tolist())
    wrong_ones = sorted(given & in_source)
    if wrong_ones:
        return wrong(f"{', '.join(CLASS_NAMES[c] for c in wrong_ones)}: the source image has correctly "
                     "classified vectors of it (process A's classes), so it can be matched.")
    absent = sorted(given - in_target)
    if absent:
        return wrong(f"{', '.join(CLASS_NAMES[c] for c in absent)} is not among the target vectors' classes "
                     "(process B), so there is nothing to match.")
    return wrong(f"{len(truth - given)} more class(es): every class in the target classes and not in the "
                 "source classes.")


def check_mean_loss(answer, matrices, t_cos: float, num_classes: int = NUM_CLASSES, rel: float = 1e-3) -> Result:
    """L_cos with reduction "mean" from the matrices {c: M^c}: per class the mean of (1 - M) over
    the elements above T_cos, then the mean over the classes that have any."""
    verdict = missing(answer)
    if verdict is not None:
        return verdict
    try:
        value = float(answer.item() if hasattr(answer, "item") else answer)
    except (TypeError, ValueError, RuntimeError):
        return wrong(f"give one number, got {type(answer).__name__}.")
    selection = select(matrices, t_cos, num_classes)
    truth = selection.loss_mean
    close = lambda a, b: abs(a - b) <= rel * max(abs(b), 1e-6)  # noqa: E731
    if close(value, truth):
        return right(f"L_cos (mean) = {truth:.4f}; the sum reading of eq. 10 gives {selection.loss_sum:.4g}.")
    if close(value, selection.loss_sum):
        return wrong("that is the sum reading (eq. 10 literally); average over the selected elements of each "
                     "class, then over the classes.")
    chosen = [m[m > t_cos] for m in matrices.values()]
    chosen = torch.cat([x.flatten() for x in chosen]) if chosen else torch.zeros(0)
    if chosen.numel() and close(value, float((1 - chosen.double()).mean())):
        return wrong("that pools all selected elements, so big classes weigh more: take the mean per class "
                     "first, then the mean of those means.")
    if chosen.numel() and close(value, 1 - truth):
        return wrong("that is the mean similarity; the loss is the distance 1 - M.")
    return wrong("for each class: d = 1 - M[M > T_cos]; take d.mean(); then average these over the classes "
                 "that selected anything.")
