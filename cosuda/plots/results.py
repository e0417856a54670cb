"""Figures and tables of the committed synthetic grid (lessons 02 and 07-11).

The grid lives in docs/results/synthetic/<task>/<variant>/seed<N>/ (`cosuda.grid.publish`); read
it with `cosuda.grid.load(task)` -> `runs` = {variant: {seed: metrics.json}}. Every function here
takes such a `runs` dict (or parts of it), never trains, and copes with missing variants, seeds or
files: a figure then says what is missing instead of failing, so that the lessons run before the
grid has landed. Figures are returned, never shown. Synthetic numbers are labelled as such; the
paper's real-data numbers appear only beside them.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..labels import CLASS_NAMES, PALETTE
from .training import miou_curves

__all__ = ["VARIANT_LABELS", "seed_list", "missing_note", "grid_command", "extras_note", "grid_curves", "paired_rows",
           "paired_markdown", "effect_sentence", "paired_figure", "lambda_from_losses", "cos_share",
           "loss_share_figure", "alignment_figure", "alignment_markdown", "table_beside_paper", "per_class_mean", "transfer_markdown", "parse_sweep_name",
           "sweep_points", "sweep_markdown", "prediction_path", "published_predictions", "changed_to_correct",
           "rank_by_gain", "boundary_density", "features_figure", "centroid_accuracy"]

VARIANT_LABELS = {"source-only": "source-only", "oracle": "oracle (target labels)", "only-ssl": "only SSL",
                  "ssl-adv": "SSL with Adversarial", "adversarial": "Adversarial", "ours11": "Ours-(11)",
                  "ours": "Ours (eq. 12)", "wo-dict": "w/o Dictionary", "wo-split": "w/o Class-wise Split",
                  "with-adv": "with Adversarial"}
def grid_command(task: str = "gta5") -> str:
    """The command that trains and publishes a task's committed grid."""
    return f"python -m cosuda.runner grid --task {task} --seeds 0 1 2 --publish docs/results/synthetic"


GRID_COMMAND = grid_command("gta5")
EXTRAS_COMMAND = "python -c \"from cosuda import grid; grid.publish_extras('runs/grid/gta5', seed=0)\""


def _label(variant: str) -> str:
    return VARIANT_LABELS.get(variant, variant)


def seed_list(runs: dict[str, dict[int, dict]], variant: str) -> list[dict]:
    """The metrics of `variant`, one per seed, in seed order ([] when it is not there)."""
    return [runs[variant][s] for s in sorted(runs.get(variant, {}))]


def _seeds_text(runs, variant) -> str:
    seeds = sorted(runs.get(variant, {}))
    return ",".join(map(str, seeds)) if seeds else "none"


def missing_note(missing: Iterable[str], what: str = "the committed grid", command: str = GRID_COMMAND) -> str:
    """Markdown: which variants are not published yet and the command that makes them ('' if none)."""
    missing = list(missing)
    if not missing:
        return ""
    return (f"**Not published yet** in {what}: {', '.join(missing)}. Run `{command}` "
            "(the cells below show what is there and will fill in when the runs land).")


def extras_note(what: str = "predictions") -> str:
    return (f"**Not published yet:** the {what} of the grid's seed-0 models. Run `{GRID_COMMAND}`, then "
            f"`{EXTRAS_COMMAND}`.")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _fmt(mean: float, std: float = math.nan, signed: bool = False, digits: int = 2) -> str:
    """'12.34 ± 0.56'; the mean alone for one seed (no '± 0.00'), '—' for none."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text if std is None or math.isnan(std) else f"{text} ± {std:.{digits}f}"


def _mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = float(np.mean(values))
    return mean, (float(np.std(values, ddof=1)) if len(values) > 1 else math.nan)


# --- curves over training, seeds as bands ------------------------------------------------------
def grid_curves(runs: dict[str, dict[int, dict]], variants: Sequence[str], metric: str = "miou19", ax=None,
                title: str | None = None):
    """mIoU over the iterations of the second stage, one line per variant: the mean over seeds,
    with the min-max band over seeds (Fig. 4 layout). Missing variants are left out (and named)."""
    present = {_label(v): seed_list(runs, v) for v in variants if runs.get(v)}
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 4))
    if not present:
        _empty(ax, "no run of " + ", ".join(variants) + " published yet")
        return fig
    miou_curves(present, metric=metric, ax=ax)
    ax.set_ylabel(f"{metric.replace('miou', 'mIoU')} on target val (%)")
    missing = [v for v in variants if not runs.get(v)]
    ax.set_title(title or ("synthetic grid (this repository)" + (f"; not yet: {', '.join(missing)}" if missing
                                                                  else "")), fontsize=9)
    ax.set_xlabel("iteration after the stage-1 source-only model")
    return fig


def _history_table(seeds: list[dict], getter):
    """(iterations, table seeds x iterations) of getter(history entry) -> float or None."""
    curves = []
    for m in seeds:
        points = [(h["iteration"], getter(h)) for h in m.get("history", [])]
        points = [(i, v) for i, v in points if v is not None]
        if points:
            curves.append(points)
    its = sorted({i for c in curves for i, _ in c})
    table = np.full((len(curves), len(its)), np.nan)
    for r, c in enumerate(curves):
        for i, v in c:
            table[r, its.index(i)] = v
    return its, table


def _band(ax, seeds: list[dict], getter, label: str, **style):
    its, table = _history_table(seeds, getter)
    if not its:
        return None
    mean = np.nanmean(table, axis=0)
    (line,) = ax.plot(its, mean, marker="o", ms=3, label=f"{label} (n={table.shape[0]})", **style)
    if table.shape[0] > 1:
        ax.fill_between(its, np.nanmin(table, axis=0), np.nanmax(table, axis=0), alpha=0.15, color=line.get_color())
    return line


# --- paired differences ------------------------------------------------------------------------
def paired_rows(runs: dict[str, dict[int, dict]], pairs: Sequence[tuple], metric: str = "miou19",
                task: str = "gta5", arch: str = "deeplabv2") -> list[dict]:
    """For each (a, b[, why]) whose variants are both published: the per-seed differences a - b
    (`cosuda.grid.paired`: seeds, diffs, mean, low, high of the 95 % t-interval) plus `paper`,
    the paper's real-data difference (network `arch`) where it reports both rows, else None."""
    from ..grid import paired
    from ..paper_results import paper_miou

    rows = []
    for pair in pairs:
        a, b, why = (tuple(pair) + ("",))[:3]
        if not (runs.get(a) and runs.get(b)):
            continue
        p = paired(runs, a, b, metric)
        pa, pb = paper_miou(task, arch, a), paper_miou(task, arch, b)
        rows.append({"a": a, "b": b, "why": why, **p, "paper": None if pa is None or pb is None else pa - pb})
    return rows


def paired_markdown(rows: list[dict], metric: str = "miou19") -> str:
    """A markdown table of `paired_rows`: per seed, mean, 95 % interval, the paper's difference."""
    name = metric.replace("miou", "mIoU")
    if not rows:
        return "*(no pair of variants published yet)*"
    lines = [f"| difference ({name} points) | what it measures | seeds | per seed | mean [95 % interval] | "
             "paper, real data |", "|---|---|---|---|---|---|"]
    for r in rows:
        per_seed = ", ".join(f"{d:+.2f}" for d in r["diffs"]) or "—"
        interval = "one seed: no interval" if math.isnan(r["low"]) else f"[{r['low']:+.2f}, {r['high']:+.2f}]"
        paper = "—" if r["paper"] is None else f"{r['paper']:+.2f}"
        lines.append(f"| {_label(r['a'])} − {_label(r['b'])} | {r['why']} | {','.join(map(str, r['seeds']))} | "
                     f"{per_seed} | {_fmt(r['mean'], signed=True)} {interval} | {paper} |")
    return "\n".join(lines)


def effect_sentence(row: dict, metric: str = "miou19") -> str:
    """One plain sentence on a `paired_rows` row: the mean difference, its interval and whether
    the interval excludes 0 (a measurable effect) or not."""
    name = metric.replace("miou", "mIoU")
    what = f"{_label(row['a'])} − {_label(row['b'])}: {row['mean']:+.2f} {name} points"
    seeds = ",".join(map(str, row["seeds"]))
    if not row["diffs"]:
        return f"{_label(row['a'])} − {_label(row['b'])}: no seed has both runs yet."
    if math.isnan(row["low"]):
        return f"{what} on seed {seeds} only: no interval yet, so no verdict (more seeds will land)."
    interval = f"95 % interval [{row['low']:+.2f}, {row['high']:+.2f}] over seeds {seeds}"
    if row["low"] > 0:
        verdict = f"{_label(row['a'])} is measurably better"
    elif row["high"] < 0:
        verdict = f"{_label(row['a'])} is measurably worse"
    else:
        verdict = "the interval includes 0: no measurable difference at this number of seeds"
    return f"{what}, {interval}: {verdict}."


def paired_figure(rows: list[dict], metric: str = "miou19", ax=None):
    """Paired differences a - b: a dot per seed, the mean with its 95 % interval (bar), and the
    paper's real-data difference (red cross) on the same points scale; 0 = no effect."""
    name = metric.replace("miou", "mIoU")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7.5, 0.55 * max(len(rows), 1) + 1.3))
    if not rows:
        _empty(ax, "no pair of variants published yet")
        return fig
    for i, r in enumerate(rows):
        ax.plot(r["diffs"], [i] * len(r["diffs"]), "k.", ms=6, label="one seed" if i == 0 else None)
        if not math.isnan(r["low"]):
            ax.errorbar(r["mean"], i, xerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]], fmt="D", color="C0",
                        capsize=4, ms=6, label="mean, 95 % interval" if i == 0 else None)
        elif not math.isnan(r["mean"]):
            ax.plot(r["mean"], i, "D", color="C0", ms=6, label="mean" if i == 0 else None)
        if r["paper"] is not None:
            ax.plot(r["paper"], i, "x", color="C3", ms=8, mew=2,
                    label="paper (real data)" if not any(q["paper"] is not None for q in rows[:i]) else None)
    ax.axvline(0, color="0.4", lw=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{_label(r['a'])} − {_label(r['b'])}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{name} difference (points), paired by seed")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


# --- the loss terms over training --------------------------------------------------------------
def lambda_from_losses(metrics: dict) -> float | None:
    """The lambda_cos a run was trained with, recovered from its logged losses (metrics.json keeps
    no config): the total is seg_s + seg_t + lambda_cos * cos, and means are linear, so lambda_cos
    = (total - seg_s - seg_t) / cos for every evaluation window (median over them). None for a
    run without L_cos, or with an adversarial term (its weight is not logged either)."""
    values = []
    for h in metrics.get("history", []):
        losses = h.get("losses") or {}
        if losses.get("cos") and losses.get("total") is not None and "adv" not in losses:
            values.append((losses["total"] - losses.get("seg_s", 0.0) - losses.get("seg_t", 0.0)) / losses["cos"])
    return float(np.median(values)) if values else None


def cos_share(metrics: dict, lambda_cos: float | None = None) -> tuple[list[int], list[float]]:
    """(iterations, % of the total loss that lambda_cos * L_cos takes) from a run's history
    `losses` (the mean of each term since the previous evaluation); 0 for a run without L_cos.
    lambda_cos None: the run's own, `lambda_from_losses`."""
    lam = lambda_from_losses(metrics) if lambda_cos is None else lambda_cos
    its, shares = [], []
    for h in metrics.get("history", []):
        losses = h.get("losses") or {}
        if not losses.get("total"):
            continue
        its.append(h["iteration"])
        shares.append(100.0 * (lam or 0.0) * losses.get("cos", 0.0) / losses["total"])
    return its, shares


def loss_share_figure(runs: dict[str, dict[int, dict]], variants: Sequence[str], lambda_cos: float | None = None,
                      detail: str = "ours"):
    """Left: the share of lambda_cos * L_cos in the total loss over training, per variant (mean
    over seeds, min-max band). Right: the weighted terms of `detail` (seg_s, seg_t, lambda_cos *
    cos, total), mean over seeds. lambda_cos None: each run's own (`lambda_from_losses`)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    drawn = False
    for v in variants:
        seeds = seed_list(runs, v)
        if seeds:
            shares = [{"history": [{"iteration": i, "_v": x} for i, x in zip(*cos_share(m, lambda_cos))]}
                      for m in seeds]
            drawn |= _band(left, shares, lambda h: h["_v"], _label(v)) is not None
    lams = sorted({round(lam, 3) for m in seed_list(runs, detail) for lam in [lambda_cos if lambda_cos is not None
                                                                               else lambda_from_losses(m)]
                   if lam is not None})
    lam_text = "/".join(f"{x:g}" for x in lams) or "?"
    if drawn:
        left.set_xlabel("iteration after the stage-1 model")
        left.set_ylabel("λ_cos·L_cos / total loss (%)")
        left.set_title("share of the cosine term in the total loss", fontsize=9)
        left.grid(alpha=0.3)
        left.legend(fontsize=7)
    else:
        _empty(left, "no loss history published yet")
    seeds = seed_list(runs, detail)
    lam_of = [lambda_cos if lambda_cos is not None else (lambda_from_losses(m) or 0.0) for m in seeds]
    terms = [t for t in ("seg_s", "seg_t", "cos", "total") if any(t in (h.get("losses") or {})
                                                                 for m in seeds for h in m.get("history", []))]
    for k, t in enumerate(terms):
        weighted = [{"history": [dict(h, _w=(lam if t == "cos" else 1.0) * h["losses"][t]) for h in m.get("history", [])
                                 if t in (h.get("losses") or {})]} for m, lam in zip(seeds, lam_of)]
        _band(right, weighted, lambda h: h["_w"],
              {"cos": f"λ_cos·L_cos (λ_cos = {lam_text})", "seg_s": "L_seg source (eq. 1)",
               "seg_t": "L_seg target, pseudo-labels (eq. 2)", "total": "total (eq. 12)"}[t],
              color=f"C{k}", ls="--" if t == "total" else "-")
    if terms:
        right.set_xlabel("iteration after the stage-1 model")
        right.set_ylabel("mean loss since the previous evaluation")
        right.set_title(f"the weighted terms of {_label(detail)}", fontsize=9)
        right.grid(alpha=0.3)
        right.legend(fontsize=7)
    else:
        _empty(right, f"no loss history of {detail} published yet")
    fig.tight_layout()
    return fig


# --- the paper's hypothesis over training (cosuda/alignment.py) ---------------------------------
def alignment_figure(runs: dict[str, dict[int, dict]], variants: Sequence[str]):
    """Three panels over training, one line per variant (mean over seeds, min-max band): the share
    of target val pixels whose nearest probe-dictionary source vector has their class
    (nn_accuracy); the mean cosine to source vectors of the same class (solid) and of other
    classes (dashed); their gap."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    drawn = False
    for k, v in enumerate(variants):
        seeds = seed_list(runs, v)
        if not seeds:
            continue
        color = f"C{k}"
        get = lambda key: (lambda h: (h.get("alignment") or {}).get(key))
        drawn |= _band(axes[0], seeds, get("nn_accuracy"), _label(v), color=color) is not None
        _band(axes[1], seeds, get("cos_same"), _label(v), color=color)
        _band(axes[1], seeds, get("cos_other"), "_other", color=color, ls="--")  # "_": not in the legend
        _band(axes[2], seeds, get("cos_gap"), _label(v), color=color)
    if not drawn:
        for ax in axes:
            _empty(ax, "no alignment measures published yet")
        return fig
    titles = ("target pixels nearest a source vector of their class (%)",
              "mean cosine to source vectors: same class (solid), other classes (dashed)",
              "cos_same − cos_other")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration after the stage-1 model")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def alignment_markdown(runs: dict[str, dict[int, dict]], variants: Sequence[str]) -> str:
    """The final alignment measures per variant, mean ± std over seeds (markdown)."""
    keys = ("nn_accuracy", "cos_same", "cos_other", "cos_gap")
    lines = ["| variant | seeds | nearest source vector of the own class (%) | cos same class | cos other classes "
             "| gap |", "|---|---|---|---|---|---|"]
    for v in variants:
        seeds = seed_list(runs, v)
        if not seeds:
            continue
        finals = [(m.get("alignment") or (m.get("history") or [{}])[-1].get("alignment") or {}) for m in seeds]
        cells = [_fmt(*_mean_std([f.get(k) for f in finals]), digits=1 if k == "nn_accuracy" else 3) for k in keys]
        lines.append(f"| {_label(v)} | {_seeds_text(runs, v)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else "*(no alignment measures published yet)*"


# --- tables beside the paper (Tables 1 and 4) ---------------------------------------------------
def table_beside_paper(runs: dict[str, dict[int, dict]], variants: Sequence[str], task: str = "gta5",
                       reference: str | None = "only-ssl", metric: str | None = None,
                       names: dict[str, str] | None = None, arch: str = "deeplabv2",
                       missing_text: dict[str, str] | None = None) -> str:
    """Markdown: per variant the synthetic final mean ± std over seeds, the paired difference to
    `reference` (per-seed mean and 95 % interval), and the paper's real-data number and difference
    (network `arch`, `paper_results`; the paper's metric for the task unless `metric` is given).
    A variant without runs says "not published yet", or its entry in `missing_text`."""
    from ..grid import paired
    from ..paper_results import paper_metric, paper_miou

    metric = metric or paper_metric(task, arch)
    name = metric.replace("miou", "mIoU")
    names = names or {}
    ref = f" vs {_label(reference)}" if reference else ""
    lines = [f"| row | seeds | synthetic {name}, final (mean ± std) | synthetic Δ{ref} (paired, 95 % interval) | "
             f"paper {name} (real data) | paper Δ{ref} |", "|---|---|---|---|---|---|"]
    paper_ref = paper_miou(task, arch, reference) if reference else None
    for v in variants:
        paper = paper_miou(task, arch, v)
        if not runs.get(v):
            lines.append(f"| {names.get(v, _label(v))} | {(missing_text or {}).get(v, 'not published yet')} | — | — | "
                         f"{_fmt(paper)} | "
                         f"{_fmt(paper - paper_ref, signed=True) if paper is not None and paper_ref is not None and v != reference else '—'} |")
            continue
        finals = [m.get(metric) for m in seed_list(runs, v)]
        diff = "—"
        if reference and v != reference and runs.get(reference):
            p = paired(runs, v, reference, metric)
            if p["diffs"]:
                diff = _fmt(p["mean"], signed=True) + ("" if math.isnan(p["low"])
                                                        else f" [{p['low']:+.2f}, {p['high']:+.2f}]")
        paper_diff = (_fmt(paper - paper_ref, signed=True) if paper is not None and paper_ref is not None
                      and v != reference else "—")
        lines.append(f"| {names.get(v, _label(v))} | {_seeds_text(runs, v)} | {_fmt(*_mean_std(finals))} | {diff} | "
                     f"{_fmt(paper) if paper is not None else '—'} | {paper_diff} |")
    return "\n".join(lines)


# --- per class: what transfers (lesson 02) ------------------------------------------------------
def per_class_mean(runs: dict[str, dict[int, dict]], variant: str) -> np.ndarray:
    """Per-class IoU (19,) of a variant's final snapshot, mean over seeds (NaN where missing)."""
    rows = [[np.nan if v is None else v for v in m.get("per_class_iou", [None] * len(CLASS_NAMES))]
            for m in seed_list(runs, variant)]
    if not rows:
        return np.full(len(CLASS_NAMES), np.nan)
    table = np.asarray(rows, dtype=float)
    with np.errstate(all="ignore"):
        out = np.full(table.shape[1], np.nan)
        ok = ~np.all(np.isnan(table), axis=0)
        out[ok] = np.nanmean(table[:, ok], axis=0)
    return out


def transfer_markdown(runs: dict[str, dict[int, dict]], a: str = "source-only", b: str = "oracle",
                      transfers: float = 75.0, fails: float = 40.0) -> str:
    """Markdown, one row per class sorted by how much of `b`'s IoU `a` keeps: the source-only
    model's IoU, the oracle's, a / b in %, and a verdict (transfers >= `transfers` %, does not
    < `fails` %, partly in between)."""
    if not (runs.get(a) and runs.get(b)):
        return missing_note([v for v in (a, b) if not runs.get(v)])
    ia, ib = per_class_mean(runs, a), per_class_mean(runs, b)
    with np.errstate(all="ignore"):
        ratio = np.where(ib > 0, 100.0 * ia / np.where(ib > 0, ib, 1.0), np.nan)
    order = sorted(range(len(CLASS_NAMES)), key=lambda c: -np.nan_to_num(ratio[c], nan=-1.0))
    lines = [f"| class | {_label(a)} IoU (seeds {_seeds_text(runs, a)}) | {_label(b)} IoU (seeds "
             f"{_seeds_text(runs, b)}) | kept (%) | verdict |", "|---|---|---|---|---|"]
    for c in order:
        verdict = ("—" if np.isnan(ratio[c]) else "transfers" if ratio[c] >= transfers
                   else "does not transfer" if ratio[c] < fails else "partly")
        lines.append(f"| {CLASS_NAMES[c]} | {_fmt(ia[c])} | {_fmt(ib[c])} | "
                     f"{'—' if np.isnan(ratio[c]) else f'{ratio[c]:.0f}'} | {verdict} |")
    ma, mb = np.nanmean(ia), np.nanmean(ib)
    lines.append(f"| **mIoU19** | **{ma:.2f}** | **{mb:.2f}** | **{100 * ma / mb:.0f}** | |")
    return "\n".join(lines)


# --- Table 6 sweeps ----------------------------------------------------------------------------
_SWEEP = re.compile(r"^(?:tcos(?P<t>-?[0-9.]+))?-?(?:dict(?P<d>[0-9]+))?$")


def parse_sweep_name(name: str, defaults: dict | None = None) -> tuple[str, float] | None:
    """'tcos0.5' -> ('t_cos', 0.5); 'dict100' -> ('dict_size', 100); 'tcos0.6-dict300' -> the knob
    that differs from `defaults` ({'t_cos': 0.6, 'dict_size': 200}); None for other names."""
    defaults = defaults or {"t_cos": 0.6, "dict_size": 200}
    m = _SWEEP.match(name)
    if not m or (m["t"] is None and m["d"] is None):
        return None
    t = float(m["t"]) if m["t"] is not None else None
    d = int(m["d"]) if m["d"] is not None else None
    if t is not None and d is not None:
        if d == defaults["dict_size"]:
            return "t_cos", t
        if math.isclose(t, defaults["t_cos"]):
            return "dict_size", d
        return None  # both knobs moved: not a one-knob sweep
    return ("t_cos", t) if t is not None else ("dict_size", d)


def sweep_points(sweep: dict[str, dict[int, dict]], default_runs: dict[int, dict] | None = None,
                 metric: str = "miou19", defaults: dict | None = None) -> dict[str, dict[float, dict[int, float]]]:
    """{'t_cos': {value: {seed: final metric}}, 'dict_size': {...}} from a loaded sweep
    ({run name: {seed: metrics}}, names as `parse_sweep_name`), with the default point (the grid's
    `ours`, `default_runs` = {seed: metrics}) added to both knobs."""
    defaults = defaults or {"t_cos": 0.6, "dict_size": 200}
    points: dict[str, dict[float, dict[int, float]]] = {"t_cos": {}, "dict_size": {}}
    for name, seeds in sweep.items():
        parsed = parse_sweep_name(name, defaults)
        if parsed is None:
            continue
        knob, value = parsed
        points[knob].setdefault(value, {}).update({s: m.get(metric) for s, m in seeds.items()})
    if default_runs:
        for knob in points:
            points[knob].setdefault(defaults[knob], {}).update({s: m.get(metric) for s, m in default_runs.items()})
    return points


def _paired_cell(values: dict[int, float], base: dict[int, float], shared: list[int]) -> str:
    """Mean paired difference, its 95 % t-interval from two seeds on, and the seeds."""
    from ..grid import t_interval

    if not shared:
        return "—"
    p = t_interval([values[s] - base[s] for s in shared])
    interval = "" if math.isnan(p["low"]) else f" [{_fmt(p['low'], signed=True)}, {_fmt(p['high'], signed=True)}]"
    return f"{_fmt(p['mean'], signed=True)}{interval} (seeds {','.join(map(str, shared))})"


def sweep_markdown(points: dict[str, dict[float, dict[int, float]]], paper: dict[str, dict[float, float]],
                   defaults: dict | None = None, metric: str = "miou19") -> str:
    """Markdown per knob: synthetic value, seeds, mean ± std, paired difference to the default
    point; the paper's Table 6 row beside (its own values: dict-size is scaled here)."""
    defaults = defaults or {"t_cos": 0.6, "dict_size": 200}
    name = metric.replace("miou", "mIoU")
    out = []
    for knob, title in (("t_cos", "T_cos"), ("dict_size", "dict-size")):
        values = points.get(knob, {})
        lines = [f"**{title}** ({'dict-size' if knob == 't_cos' else 'T_cos'} fixed at "
                 f"{defaults['dict_size' if knob == 't_cos' else 't_cos']:g}):", "",
                 f"| {title} | seeds | synthetic {name} (mean ± std) | Δ vs default (paired, mean [95 % interval]) |", "|---|---|---|---|"]
        base = values.get(defaults[knob], {})
        for value in sorted(values):
            seeds = values[value]
            shared = sorted(s for s in seeds if s in base and seeds[s] is not None and base[s] is not None)
            diff = "default" if math.isclose(value, defaults[knob]) else _paired_cell(seeds, base, shared)
            lines.append(f"| {value:g} | {','.join(map(str, sorted(seeds)))} | "
                         f"{_fmt(*_mean_std(list(seeds.values())))} | {diff} |")
        if len(lines) == 4:
            lines.append("| — | none published | — | — |")
        p = paper.get(knob, {})
        lines += ["", f"paper, Table 6 (real data, mIoU19): " + ", ".join(f"{title} {k:g}: {p[k]:.2f}" for k in sorted(p))]
        out.append("\n".join(lines))
    return "\n\n".join(out)


# --- Fig. 5: published predictions --------------------------------------------------------------
def prediction_path(pred_root: str | Path, name: str) -> Path:
    """The published trainId PNG of a Cityscapes item name ('city/x_leftImg8bit.png')."""
    return Path(pred_root) / (str(Path(name).with_suffix("")) + "_trainIds.png")


def published_predictions(root: str | Path, task: str, variants: Sequence[str], seed: int = 0) -> dict[str, Path]:
    """{variant: its predictions folder} for the variants whose seed-`seed` predictions exist."""
    found = {}
    for v in variants:
        folder = Path(root) / task / v / f"seed{seed}" / "predictions"
        if folder.is_dir() and any(folder.rglob("*_trainIds.png")):
            found[v] = folder
    return found


def changed_to_correct(before: np.ndarray, after: np.ndarray, truth: np.ndarray, ignore_index: int = 255) -> int:
    """Pixels (ground truth not ignored) that `before` got wrong and `after` gets right."""
    before, after, truth = np.asarray(before), np.asarray(after), np.asarray(truth)
    valid = truth != ignore_index
    return int(np.count_nonzero(valid & (before != truth) & (after == truth)))


def rank_by_gain(before: Sequence[np.ndarray], after: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                 ignore_index: int = 255) -> list[tuple[int, int, int]]:
    """(index, pixels that became correct, pixels that became wrong) per image, the largest net
    gain (became correct - became wrong) first."""
    rows = [(i, changed_to_correct(b, a, t, ignore_index), changed_to_correct(a, b, t, ignore_index))
            for i, (b, a, t) in enumerate(zip(before, after, truths))]
    return sorted(rows, key=lambda r: (-(r[1] - r[2]), r[0]))


def boundary_density(label_map: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Share of horizontally or vertically adjacent pixel pairs (both `valid`) whose labels
    differ: a speckled prediction has many more boundaries than its ground truth."""
    label_map = np.asarray(label_map)
    valid = np.ones(label_map.shape, bool) if valid is None else np.asarray(valid, bool)
    right = (label_map[:, 1:] != label_map[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    down = (label_map[1:] != label_map[:-1]) & valid[1:] & valid[:-1]
    pairs = (valid[:, 1:] & valid[:, :-1]).sum() + (valid[1:] & valid[:-1]).sum()
    return float((right.sum() + down.sum()) / max(int(pairs), 1))


# --- the 2-D feature picture (features2d.json) --------------------------------------------------
def centroid_accuracy(picture: dict) -> dict[str, float]:
    """Per class of a features2d picture: % of its target points nearer (in the 2-D projection) to
    the centroid of the source points of their class than to any other class's source centroid."""
    classes = np.asarray(picture["classes"])
    domain = np.asarray(picture["domain"])
    xy = np.asarray(picture["xy"], dtype=float).reshape(-1, 2)
    names = [c for c in dict.fromkeys(picture["classes"]) if np.any((classes == c) & (domain == "source"))]
    if not names:
        return {}
    centroids = np.stack([xy[(classes == c) & (domain == "source")].mean(0) for c in names])
    out = {}
    for k, c in enumerate(names):
        pts = xy[(classes == c) & (domain == "target")]
        if len(pts):
            nearest = np.argmin(((pts[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
            out[c] = 100.0 * float(np.mean(nearest == k))
    return out


def features_figure(pictures: dict[str, dict | None]):
    """One panel per model (title -> features2d.json content, None when not published): the 2-D
    PCA of source (dots) and target (crosses) feature vectors, coloured by class with the
    Cityscapes palette. Each panel has its own projection: compare the layout, not coordinates."""
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, len(pictures), figsize=(5.2 * len(pictures), 4.6), squeeze=False)
    seen: list[str] = []
    for ax, (title, pic) in zip(axes[0], pictures.items()):
        if not pic:
            _empty(ax, f"{title}: features2d.json not published yet")
            continue
        classes, domain = np.asarray(pic["classes"]), np.asarray(pic["domain"])
        xy = np.asarray(pic["xy"], dtype=float).reshape(-1, 2)
        for c in dict.fromkeys(pic["classes"]):
            colour = PALETTE[CLASS_NAMES.index(c)] / 255.0 if c in CLASS_NAMES else (0.5, 0.5, 0.5)
            src, tgt = (classes == c) & (domain == "source"), (classes == c) & (domain == "target")
            ax.scatter(xy[src, 0], xy[src, 1], s=9, color=colour, marker="o", alpha=0.45, edgecolors="none")
            ax.scatter(xy[tgt, 0], xy[tgt, 1], s=14, color=colour, marker="x", alpha=0.8, linewidths=0.9)
            if c not in seen:
                seen.append(c)
        acc = centroid_accuracy(pic)
        ax.set_title(title + ("\nnearest own source centre: " + ", ".join(f"{c} {v:.0f}%" for c, v in acc.items())
                              if acc else ""), fontsize=8)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.grid(alpha=0.2)
    handles = [Line2D([], [], color=PALETTE[CLASS_NAMES.index(c)] / 255.0 if c in CLASS_NAMES else "0.5",
                      marker="s", ls="", label=c) for c in seen]
    handles += [Line2D([], [], color="k", marker="o", ls="", alpha=0.5, label="source (GTA5-like)"),
                Line2D([], [], color="k", marker="x", ls="", label="target (Cityscapes-like)")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
