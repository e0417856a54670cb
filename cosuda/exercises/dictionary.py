"""Exercises of notebook 05 (the source feature dictionary D as a queue).

Every checker computes the truth from the inputs it is given and returns a `Result`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..lessons import dictionary_bytes
from ..method import FeatureDictionary
from . import Result, missing, right, wrong

__all__ = ["queue_contents", "check_remaining", "check_memory"]


def queue_contents(batches: Sequence[tuple[Sequence[int], Sequence[int]]], size: int, c: int) -> list[int]:
    """The ids D^c holds, oldest first, after enqueuing `batches` = [(ids, classes), ...] into a
    FeatureDictionary of `size` (each vector is its id, one number)."""
    num_classes = 1 + max(max(classes) for _, classes in batches)
    d = FeatureDictionary(max(num_classes, c + 1), size, 1)
    for ids, classes in batches:
        d.enqueue(torch.tensor(ids, dtype=torch.float64)[:, None], torch.tensor(classes))
    return [int(v) for v in d.get(c)[:, 0].tolist()]


def check_remaining(answer, batches, size: int, c: int) -> Result:
    """Which ids does the queue of class c hold after enqueuing `batches` ([(ids, classes), ...])
    into a dictionary of dict-size `size`? answer: a list of ids (any order)."""
    verdict = missing(answer)
    if verdict is not None:
        return verdict
    try:
        if isinstance(answer, (str, bytes)):
            raise TypeError
        given = [int(a) for a in answer]
    except (TypeError, ValueError):
        return wrong("give a list of ids, e.g. [3, 7, 8].")
    truth = queue_contents(batches, size, c)
    if sorted(given) == sorted(truth):
        order = "" if given == truth else " (FeatureDictionary.get lists them oldest first: " + str(truth) + ")"
        return right(f"D^{c} holds {truth}{order}.")
    mine = [i for ids, classes in batches for i, k in zip(ids, classes) if k == c]
    others = [i for i in given if i not in mine]
    if others:
        return wrong(f"ids {others} are not of class {c}: every class has its own queue.")
    if len(given) > size:
        return wrong(f"a queue of dict-size {size} holds at most {size} vectors per class.")
    if sorted(given) == sorted(mine[:size]):
        return wrong("those are the oldest ones: a queue drops its oldest vectors first and keeps the newest.")
    return wrong(f"list the ids of class {c} in arrival order (batch by batch, left to right) and keep the "
                 f"last {size}.")


def check_memory(answer, num_classes: int, size: int, dim: int, dtype=torch.float16, rel: float = 0.01) -> Result:
    """Megabytes (10^6 bytes; MiB are accepted too) of the vectors of a full dictionary of
    num_classes x size x dim numbers of `dtype`."""
    verdict = missing(answer)
    if verdict is not None:
        return verdict
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return wrong("give one number, in megabytes.")
    if math.isnan(value):
        return wrong("give one number, in megabytes.")
    truth = dictionary_bytes(num_classes, size, dim, dtype)
    close = lambda a, b: abs(a - b) <= rel * abs(b)  # noqa: E731
    if close(value, truth / 1e6) or close(value, truth / 2 ** 20):
        return right(f"{truth / 1e6:.1f} MB ({truth / 2 ** 20:.1f} MiB): {num_classes} x {size} x {dim} "
                     f"numbers of {torch.empty(0, dtype=dtype).element_size()} bytes.")
    if close(value, truth):
        return wrong("that is in bytes: divide by 10^6 for megabytes.")
    element = torch.empty(0, dtype=dtype).element_size()
    for other in (1, 2, 4, 8):
        if other != element and close(value, truth / element * other / 1e6):
            return wrong(f"{dtype} takes {element} bytes per number, not {other}.")
    return wrong("multiply classes x dict-size x feature size x bytes per number, then divide by 10^6.")


# The answer each check expects, from the check's other arguments (see cosuda.exercises.adapt).
# (check_memory's answer is a constant the solution cell writes out: found there.)
ANSWERS = {"check_remaining": queue_contents}
