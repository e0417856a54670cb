"""Exercises of notebook 01 (the datasets): class shares across domains.

Every checker computes the truth from the inputs it is given and returns a `Result`.
"""
from __future__ import annotations

import numpy as np

from ..labels import CLASS_NAMES
from ..lessons import class_id
from . import Result, missing, right, wrong

__all__ = ["check_largest_share_difference", "check_absent_classes"]


def _shares(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return 100.0 * counts / max(counts.sum(), 1.0)


def _class_set(answer) -> set[int]:
    """A class or a collection of classes (names or trainIds) -> set of trainIds."""
    if isinstance(answer, (str, int, np.integer)):
        return {class_id(answer)}
    return {class_id(a) for a in answer}


def check_largest_share_difference(answer, counts_a, counts_b) -> Result:
    """Which class has the largest difference in pixel share (percentage points) between two
    domains? counts_a, counts_b: pixels per class (19,) (`cosuda.data.class_frequencies`).
    answer: a class name or trainId."""
    verdict = missing(answer)
    if verdict is not None:
        return verdict
    try:
        c = class_id(answer)
    except ValueError as e:
        return wrong(str(e))
    difference = np.abs(_shares(counts_a) - _shares(counts_b))
    truth = int(np.argmax(difference))
    if c == truth:
        return right(f"{CLASS_NAMES[truth]}: {difference[truth]:.1f} percentage points apart "
                     f"({_shares(counts_a)[truth]:.1f}% vs {_shares(counts_b)[truth]:.1f}%).")
    raw = int(np.argmax(np.abs(np.asarray(counts_a, float) - np.asarray(counts_b, float))))
    if c == raw:
        return wrong("that is the largest difference in pixel *counts*; the datasets have different numbers "
                     "of pixels, so compare shares: 100 * counts / counts.sum() for each domain first.")
    if c in (int(np.argmax(counts_a)), int(np.argmax(counts_b))):
        return wrong(f"{CLASS_NAMES[c]} is the most frequent class, not the one whose share differs most: "
                     "subtract the two share vectors and take the largest absolute value.")
    return wrong(f"{CLASS_NAMES[c]} differs by {difference[c]:.1f} points; another class differs more. "
                 "Compute np.abs(share_a - share_b) and its argmax.")


def check_absent_classes(answer, counts) -> Result:
    """Which classes never occur in a dataset? counts: pixels per class (19,). answer: a
    collection of class names or trainIds (an empty one if none)."""
    verdict = missing(answer)
    if verdict is not None:
        return verdict
    try:
        given = _class_set(answer)
    except (ValueError, TypeError) as e:
        return wrong(str(e))
    truth = {int(c) for c in np.flatnonzero(np.asarray(counts) == 0)}
    if given == truth:
        names = ", ".join(CLASS_NAMES[c] for c in sorted(truth)) or "none"
        return right(f"absent: {names}.")
    extra, lacking = sorted(given - truth), sorted(truth - given)
    if extra:
        return wrong(f"{', '.join(CLASS_NAMES[c] for c in extra)} do(es) occur (count > 0); list only the "
                     "classes whose count is 0.")
    return wrong(f"{len(lacking)} more class(es) have a count of 0: look at np.flatnonzero(counts == 0).")
