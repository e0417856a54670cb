"""Exercises of notebook 04 (processes A and B, eq. 6-8): write them yourself.

The checkers call the student's function on random inputs and compare with
`cosuda.method.process_a` / `process_b`, which define the truth.
"""
from __future__ import annotations

import torch

from ..method import process_a, process_b
from . import Result, missing, right, wrong

__all__ = ["random_case", "check_process_a", "check_process_b"]


def random_case(seed: int, batch: int = 2, dim: int = 4, num_classes: int = 6, feature_hw=(5, 7),
                label_hw=(10, 14), full_res_logits: bool = False):
    """features (B, k, h, w), logits (B, C, h, w) (or (B, C, H, W) like FCN-8s), labels (B, H, W)
    with some 255: the labels agree with the argmax on about half of the pixels."""
    g = torch.Generator().manual_seed(seed)
    h, w = feature_hw
    features = torch.randn(batch, dim, h, w, generator=g)
    logit_hw = label_hw if full_res_logits else feature_hw
    logits = torch.randn(batch, num_classes, *logit_hw, generator=g)
    upsampled = torch.nn.functional.interpolate(logits.argmax(1, keepdim=True).float(), size=label_hw,
                                                mode="nearest")[:, 0].long()
    noise = torch.randint(0, num_classes, (batch, *label_hw), generator=g)
    labels = torch.where(torch.rand(batch, *label_hw, generator=g) < 0.5, upsampled, noise)
    labels[torch.rand(batch, *label_hw, generator=g) < 0.15] = 255
    return features, logits, labels


def _cases():
    return [random_case(0), random_case(1, batch=1, feature_hw=(3, 4), label_hw=(9, 12)),
            random_case(2, full_res_logits=True)]


def _call(fn, *args):
    try:
        out = fn(*args)
    except Exception as e:  # the student's code: report, do not raise
        return None, wrong(f"your function raised {type(e).__name__}: {e}")
    if out is None:
        return None, wrong("your function returns None: write its body in place of the `...` and end it with "
                           "`return feats, classes`.")
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(torch.is_tensor(t) for t in out)):
        return None, wrong("return a pair of tensors (feats (N, k), classes (N,)).")
    return out, None


def _compare(mine, truth, what: str, process: str) -> Result | None:
    """None when `mine` equals `truth`, else a hint; `what` names the case ("process B (eq. 7)"),
    `process` the reference ("process B")."""
    (f, c), (f_true, c_true) = mine, truth
    if f.shape != f_true.shape or c.shape != c_true.shape:
        return wrong(f"{what}: expected feats {tuple(f_true.shape)} and classes {tuple(c_true.shape)}, got "
                     f"{tuple(f.shape)} and {tuple(c.shape)}.")
    if torch.equal(f, f_true) and torch.equal(c.long(), c_true):
        return None
    if sorted(c.tolist()) == sorted(c_true.tolist()) and torch.equal(f.sort(0).values, f_true.sort(0).values):
        return wrong(f"{what}: the right vectors, in another order: flatten in (b, y, x) order, "
                     "features.permute(0, 2, 3, 1).reshape(-1, k).")
    return wrong(f"{what}: same shapes, but other classes or vectors than {process} keeps.")


def check_process_a(answer) -> Result:
    """answer: a function (features, logits, labels) -> (feats (N, k), classes (N,)) doing eq. 6."""
    verdict = missing(answer)
    if verdict is not None:
        return verdict
    if not callable(answer):
        return wrong("give the function itself (answer_a = process_a_mine), not its result.")
    for i, (features, logits, labels) in enumerate(_cases()):
        mine, error = _call(answer, features, logits, labels)
        if error is not None:
            return error
        truth = process_a(features, logits, labels)
        if mine[0].shape[0] != truth[0].shape[0]:
            h, w = features.shape[-2:]
            everything = features.shape[0] * h * w
            if mine[0].shape[0] == everything:
                return wrong("you return every vector: keep only those whose argmax equals the label "
                             "resized to (h, w) by nearest neighbour (eq. 6).")
            return wrong(f"case {i}: {mine[0].shape[0]} vectors instead of {truth[0].shape[0]}. Resize the "
                         "labels to (h, w) by nearest neighbour (cosuda.method.resize_nearest), take the argmax "
                         "of the logits (resized to (h, w) too when they are larger, as for FCN-8s), and keep "
                         "the pixels where they agree; 255 never agrees.")
        bad = _compare(mine, truth, "process A", "process A")
        if bad is not None:
            return bad
    return right("your process A matches cosuda.method.process_a on three random cases (one with "
                 "full-resolution logits, as for FCN-8s).")


def check_process_b(answer) -> Result:
    """answer: a function (features, logits, pseudo_labels or None) -> (feats, classes) doing
    eq. 7 (with pseudo-labels) and eq. 8 (None)."""
    verdict = missing(answer)
    if verdict is not None:
        return verdict
    if not callable(answer):
        return wrong("give the function itself (answer_b = process_b_mine), not its result.")
    for i, (features, logits, pseudo) in enumerate(_cases()):
        for labels, eq in ((pseudo, "eq. 7"), (None, "eq. 8")):
            mine, error = _call(answer, features, logits, labels)
            if error is not None:
                return error
            truth = process_b(features, logits, labels)
            if mine[0].shape[0] != truth[0].shape[0]:
                return wrong(f"process B returns every target vector (B*h*w = {truth[0].shape[0]}), got "
                             f"{mine[0].shape[0]} ({eq}).")
            if labels is not None and (mine[1] == 255).any():
                return wrong("255 is left in the classes: where the resized pseudo-label is 255, use the current "
                             "argmax instead (the augmentation of eq. 7).")
            bad = _compare(mine, truth, f"process B ({eq})", "process B")
            if bad is not None:
                return bad
    return right("your process B matches cosuda.method.process_b with pseudo-labels (eq. 7) and without (eq. 8).")
