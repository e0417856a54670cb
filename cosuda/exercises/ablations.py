"""Exercises of notebook 08 (the ablations of Table 4): what each row changes, a paired interval,
which claims hold.

Each checker computes the truth from its inputs (the variant table `cosuda.config.VARIANTS`, the
paired t-interval `cosuda.results.t_interval`) and returns a `Result`. `ANSWERS` gives, for each
check, the function that computes the answer it expects from the check's other arguments (the
student-version check looks for those answers in the outputs students see).
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Mapping, Sequence

from . import Result, missing, right, wrong
from ..config import VARIANTS, Variant, variant_label
from ..results import t_interval

FIELDS = tuple(f.name for f in fields(Variant))


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


TABLE4_ABLATIONS = ("wo-dict", "wo-split", "with-adv")  # Ours with one building block changed


def changed_fields(base: str, ablations: Sequence[str]) -> dict[str, set[str]]:
    """{ablation: the fields of Variant in which its row differs from `base`}."""
    b = _variant(base)
    return {a: {f for f in FIELDS if getattr(_variant(a), f) != getattr(b, f)} for a in ablations}


def expected_fields(base: str = "ours", ablations: Sequence[str] = TABLE4_ABLATIONS) -> dict[str, str | set[str]]:
    """The answer `check_changed_fields` expects: {ablation: its one changed field (a set where several)}."""
    return {a: next(iter(f)) if len(f) == 1 else f for a, f in changed_fields(base, ablations).items()}


def check_changed_fields(answer: Mapping[str, object] | None, base: str = "ours",
                         ablations: Sequence[str] = TABLE4_ABLATIONS) -> Result:
    """`answer`: {ablation: the name of the Variant field it changes from `base`} (a set of names
    where a row changes several)."""
    if (m := missing(answer)) is not None:
        return m
    if not isinstance(answer, Mapping):
        return wrong("give a dict {variant: field}, e.g. {'wo-dict': 'source_seg', ...}.")
    truth = changed_fields(base, ablations)
    lacking = [a for a in ablations if a not in answer]
    if lacking:
        verb = "is" if len(lacking) == 1 else "are"
        return wrong(f"give a field for every row: {', '.join(lacking)} {verb} missing.")
    for a in ablations:
        given = answer[a]
        given = {given} if isinstance(given, str) else set(given) if given is not None else set()
        given = {str(g).strip() for g in given}
        unknown = given - set(FIELDS)
        if unknown:
            return wrong(f"{', '.join(sorted(unknown))} is not a field of Variant; "
                         f"the fields are {', '.join(FIELDS)}.")
        if given == truth[a]:
            continue
        if not given:
            return wrong(f"name the field that {a!r} changes.")
        same = sorted(given - truth[a])
        if same:
            f = same[0]
            hint = (f"{variant_label(a)} ({a!r}) keeps {f} = {getattr(VARIANTS[base], f)!r} like {base!r}: "
                    "compare the two rows of VARIANTS field by field.")
            if f == "split" and a == "wo-split":
                hint += (" The class-wise split of the paper is not the `split` field (that is how process B "
                         "labels the target vectors, eq. 7 or 8): it is which source vectors the cosine term "
                         "compares each target vector with.")
            return wrong(hint)
        return wrong(f"{variant_label(a)} ({a!r}) changes more than that from {base!r}: compare the rows again.")
    changes = "; ".join(f"{a}: " + ", ".join(f"{f} {getattr(VARIANTS[base], f)!r} -> {getattr(VARIANTS[a], f)!r}"
                                            for f in sorted(truth[a])) for a in ablations)
    return right(f"each ablation is Ours with one field changed ({changes}), so a paired difference "
                 "measures that field alone.")


def _numbers(values, what: str) -> list[float]:
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"{what}: an interval needs at least two seeds")
    return values


def paired_interval(first: Sequence[float], second: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the per-seed differences first - second, their mean and 95 % t-interval
    (`cosuda.results.t_interval`)."""
    diffs = [a - b for a, b in zip(_numbers(first, "first"), _numbers(second, "second"), strict=True)]
    t = t_interval(diffs)
    return t["mean"], t["low"], t["high"]


def check_paired_interval(answer, first: Sequence[float], second: Sequence[float], tol: float = 0.01) -> Result:
    """`answer`: (mean, low, high) of the paired difference first - second, in mIoU points (a dict
    with keys mean, low, high is accepted too)."""
    if (m := missing(answer)) is not None:
        return m
    if isinstance(answer, Mapping):
        answer = [answer.get(k) for k in ("mean", "low", "high")]
    try:
        mean, low, high = (float(v) for v in answer)
    except (TypeError, ValueError):
        return wrong("give three numbers: (mean, low, high) of the difference, in mIoU points.")
    truth = paired_interval(first, second)
    close = lambda given, want: all(math.isclose(g, w, abs_tol=tol) for g, w in zip(given, want))  # noqa: E731
    if close((mean, low, high), truth):
        return right(f"{truth[0]:+.2f} [{truth[1]:+.2f}, {truth[2]:+.2f}]: "
                     + ("the interval excludes 0." if truth[1] > 0 or truth[2] < 0 else
                        "the interval includes 0, although the mean is not 0."))
    if close((-mean, -high, -low), truth):
        return wrong("that is the second row minus the first: subtract the second row's value from the "
                     "first's, seed by seed.")
    if not math.isclose(mean, truth[0], abs_tol=tol):
        return wrong("the mean is off: subtract seed by seed (the rows of one seed are paired), then average "
                     "the differences.")
    diffs = [a - b for a, b in zip(map(float, first), map(float, second))]
    n, sd = len(diffs), math.sqrt(sum((d - truth[0]) ** 2 for d in diffs) / (len(diffs) - 1))
    t = (truth[2] - truth[0]) * math.sqrt(n) / sd if sd else math.nan  # the quantile t_interval used
    half = (high - low) / 2
    if math.isclose(half, 1.96 * sd / math.sqrt(n), abs_tol=tol) and not math.isclose(t, 1.96, abs_tol=1e-3):
        return wrong(f"with {n} seeds the quantile is Student's t with {n - 1} degrees of freedom "
                     f"({t:.3f}), not the normal's 1.96.")
    if math.isclose(half, t * sd * math.sqrt((n - 1) / n) / math.sqrt(n), abs_tol=tol):
        return wrong("the sample standard deviation divides the squared deviations by n - 1, not by n.")
    if math.isclose(half, t * sd, abs_tol=tol):
        return wrong("the interval is for the mean: divide the standard deviation by the square root of the "
                     "number of seeds.")
    return wrong(f"mean ± t * sd / sqrt(n), with sd the sample standard deviation of the per-seed differences "
                 f"and t = {t:.3f} for {n} seeds (not the spread of each row on its own: the seeds are paired).")


def holding_claims(differences: Mapping[tuple[str, str], Sequence[float]]) -> set[tuple[str, str]]:
    """The pairs (a, b) whose per-seed differences a - b have a 95 % interval wholly above 0."""
    return {pair for pair, diffs in differences.items() if t_interval(list(map(float, diffs)))["low"] > 0}


def _pairs(answer) -> set[tuple[str, str]] | None:
    """The answer as a set of (a, b) pairs of names, or None when it is not a collection of them."""
    if isinstance(answer, (str, Mapping)):
        return None
    try:
        pairs = [p if isinstance(p, str) else tuple(p) for p in answer]
    except TypeError:
        return None
    if not all(isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs):
        return None
    return set(pairs)


def check_claims(answer, differences: Mapping[tuple[str, str], Sequence[float]]) -> Result:
    """`answer`: the set of pairs (a, b) of `differences` for which "a is better than b" holds,
    i.e. the 95 % interval of the per-seed differences a - b excludes 0 from above."""
    if (m := missing(answer)) is not None:
        return m
    given = _pairs(answer)
    if given is None:
        return wrong("give a set of pairs as written in `differences`, e.g. {('ours', 'only-ssl')}: "
                     "one pair is {(a, b)}, none is set().")
    truth = holding_claims(differences)
    if given == truth:
        return right(f"{len(truth)} of {len(differences)} claims hold: "
                     + (", ".join(f"{variant_label(a)} > {variant_label(b)}" for a, b in sorted(truth)) or "none")
                     + ". A positive mean is not enough: the interval has to exclude 0.")
    for pair in sorted(given - truth):
        if pair not in differences:
            if pair[::-1] in differences:
                return wrong(f"write the pair as `differences` does: {pair[::-1]}, the first row minus the second.")
            return wrong(f"{pair} is not one of the pairs in `differences`.")
        t = t_interval(list(map(float, differences[pair])))
        if t["mean"] > 0:
            return wrong(f"{pair}: the mean is {t['mean']:+.2f}, but its 95 % interval "
                         f"[{t['low']:+.2f}, {t['high']:+.2f}] includes 0, so the seeds do not separate the two rows.")
        return wrong(f"{pair}: the mean difference {t['mean']:+.2f} is not even positive.")
    more = len(truth - given)
    return wrong(f"a claim that holds is missing: {more} more pair{'s have' if more > 1 else ' has'} an interval "
                 "wholly above 0 (results.t_interval(diffs)['low'] > 0).")


# The answer each check expects, from the check's other arguments (see the module docstring).
ANSWERS = {"check_changed_fields": expected_fields,
           "check_paired_interval": lambda first, second, tol=0.01: paired_interval(first, second),
           "check_claims": holding_claims}
