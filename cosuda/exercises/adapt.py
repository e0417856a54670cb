"""Exercises of notebook 07 (adaptation with eq. 12): loss terms, loss shares, FCN-8s thresholds.

Each checker computes the truth from its inputs (the variant table, the logged losses, the
threshold rule of supplementary D) and returns a `Result`.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

from . import Result, missing, right, wrong
from ..config import LOSS_TERMS, VARIANTS
from ..method import layer_thresholds

# The names under which the engine logs each term of the total loss (metrics.json last_losses).
TERM_NAMES = LOSS_TERMS


def variant_terms(variant: str) -> set[str]:
    """The loss terms a variant adds to its total (eq. 11 / 12, Table 4, supplementary C)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return set(VARIANTS[variant].terms)


def check_terms(answer: Iterable[str] | None, variant: str) -> Result:
    """`answer`: the names (from TERM_NAMES) of the terms `variant` switches on."""
    if (m := missing(answer)) is not None:
        return m
    if isinstance(answer, str):
        return wrong("give a set of names, e.g. {'seg_s', 'cos'}, not a single string.")
    given = {str(a).strip().lower() for a in answer}
    unknown = given - set(TERM_NAMES)
    if unknown:
        return wrong(f"{', '.join(sorted(unknown))} is not a term name; use {', '.join(TERM_NAMES)}.")
    truth = variant_terms(variant)
    if given == truth:
        return right(f"{variant!r} trains on {' + '.join(t for t in TERM_NAMES if t in truth)}.")
    extra, lacking = given - truth, truth - given
    hints = []
    if extra:
        hints.append(f"{', '.join(sorted(extra))} is switched off for {variant!r}")
    if lacking:
        hints.append(f"something is missing: look at the row VARIANTS[{variant!r}]")
    return wrong("; ".join(hints) + " (source_seg -> seg_s, target_seg -> seg_t, cos -> cos, adversarial -> adv).")


def cos_share(losses: Mapping[str, float], lambda_cos: float) -> float:
    """lambda_cos * L_cos / L_total from a step's logged losses (0 when there is no cosine term)."""
    return lambda_cos * losses.get("cos", 0.0) / losses["total"]


def check_cos_share(answer: float | None, losses: Mapping[str, float], lambda_cos: float) -> Result:
    """`answer`: the share (a fraction in [0, 1]) of lambda_cos * L_cos in the logged total."""
    if (m := missing(answer)) is not None:
        return m
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return wrong(f"the answer should be one number, got {answer!r}.")
    truth = cos_share(losses, lambda_cos)
    close = lambda a, b: math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6)
    if close(value, truth):
        return right(f"lambda_cos * L_cos is {100 * truth:.2f}% of the total loss.")
    if close(value, 100 * truth):
        return wrong("that is a percentage: give the share as a fraction (e.g. 0.05 for 5%).")
    if losses.get("cos") and close(value, losses["cos"] / losses["total"]):
        return wrong("the total holds the cosine loss weighted by lambda_cos (eq. 12), not L_cos itself.")
    return wrong("divide the weighted cosine term lambda_cos * losses['cos'] by losses['total'].")


def check_fcn_thresholds(answer, t_cos: float) -> Result:
    """`answer`: T_cos for fc7, pool4 and pool3 (in that order) given the baseline `t_cos`."""
    if (m := missing(answer)) is not None:
        return m
    try:
        values = [float(v) for v in answer]
    except (TypeError, ValueError):
        return wrong("give three numbers, one per layer: (fc7, pool4, pool3).")
    truth = layer_thresholds(t_cos, 3)
    if len(values) != 3:
        return wrong(f"FCN-8s uses three layers (fc7, pool4, pool3); you gave {len(values)} values.")
    if all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(values, truth)):
        return right(f"thresholds {truth}: the shallower the layer, the higher the threshold.")
    if all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(values, reversed(truth))):
        return wrong("right values, wrong order: fc7 is the deepest layer and keeps the baseline threshold.")
    return wrong("supplementary D adds 0.1 per layer as the layer gets shallower, starting at T_cos for fc7.")


# The answer each check expects, from the check's other arguments: the student-version check
# (cosuda.exercises.student.expected_answers) looks for these in what students see.
ANSWERS = {"check_terms": variant_terms,
           "check_cos_share": cos_share,
           "check_fcn_thresholds": lambda t_cos: layer_thresholds(t_cos, 3)}
