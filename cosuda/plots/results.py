"""Figures of runs and results (lessons 02 and 07-11, the README): they draw what
`cosuda.results` loads and computes, never train and never compute a statistic themselves.

Every function takes a `runs` dict ({variant: {seed: metrics}}, `cosuda.results.load`) or parts
of it, and copes with missing variants, seeds or files: a figure then says what is missing
instead of failing, so that the lessons run before the grid has landed. Figures are returned,
never shown. Synthetic numbers are labelled as such; the paper's real-data numbers appear only
beside them. Each variant keeps its colour and marker (`cosuda.config.VARIANT_STYLES`) in every
figure; differences get their own axis centred on 0.
"""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..config import PAPER_STYLE, variant_label, variant_style
from ..labels import CLASS_NAMES, PALETTE
from ..results import centroid_accuracy, cos_share, paired_curves, seed_list, setting
from .training import _legend, _wrap, miou_curves

__all__ = ["grid_curves", "curves_and_differences", "paired_figure", "loss_share_figure", "alignment_figure",
           "features_figure"]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _zero_centred(ax, values, axis: str = "x") -> None:
    """Limits symmetric about 0 that hold every finite value: a difference reads as its sign and
    size, never inflated by an axis cut to the data nor squashed by another panel's rows."""
    finite = [abs(float(v)) for v in values if v is not None and np.isfinite(v)]
    m = 1.12 * max(finite) if finite and max(finite) > 0 else 1.0
    (ax.set_xlim if axis == "x" else ax.set_ylim)(-m, m)


# --- curves over training, seeds as bands ------------------------------------------------------
def grid_curves(runs: dict[str, dict[int, dict]], variants: Sequence[str], metric: str = "miou19", ax=None,
                title: str | None = None, reference: str | None = None):
    """mIoU over the iterations of the second stage, one line per variant in its colour and
    marker: the mean over seeds, with the min-max band over seeds (Fig. 4 layout). Missing
    variants are left out (and named).

    With `reference` (e.g. "only-ssl"): each variant minus the reference, paired by seed at every
    evaluation (`results.paired_curves`), on an axis centred on 0 and drawn as a line at 0 in the
    reference's colour: curves that overlap within a point are told apart."""
    name = metric.replace("miou", "mIoU")
    shown = [v for v in variants if v != reference]
    if reference is None:
        present = {variant_label(v): seed_list(runs, v) for v in shown if runs.get(v)}
    else:
        present = {variant_label(v): paired_curves(runs, v, reference, metric) for v in shown
                   if runs.get(v) and runs.get(reference)}
        present = {k: c for k, c in present.items() if c}
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.2, 3.6))
    missing = [v for v in dict.fromkeys([*variants, *([reference] if reference else [])]) if not runs.get(v)]
    if not present:
        _empty(ax, "no run of " + ", ".join(missing or variants) + " published yet")
        return fig
    miou_curves(present, metric=metric, ax=ax,
                styles={variant_label(v): variant_style(v) for v in shown})
    if reference is None:
        ax.set_ylabel(f"{name} on target val (%)")
    else:
        ax.axhline(0, color=variant_style(reference)["color"], lw=1.5,
                   label=f"{variant_label(reference)} (reference, 0)")
        _zero_centred(ax, [y for line in ax.get_lines() for y in line.get_ydata()]
                      + [y for band in ax.collections for path in band.get_paths() for y in path.vertices[:, 1]],
                      axis="y")
        ax.set_ylabel(_wrap(f"{name} − {variant_label(reference)} (points), paired by seed", 30))
    ax.set_title(_wrap(title or ("synthetic grid (this repository)" + (f"; not yet: {', '.join(missing)}"
                                                                       if missing else ""))), fontsize=9)
    ax.set_xlabel("iteration after the stage-1 source-only model")
    _legend(ax)
    return fig


def curves_and_differences(runs: dict[str, dict[int, dict]], variants: Sequence[str], reference: str,
                           differences: Sequence[str], metric: str = "miou19", title: str | None = None):
    """Two panels over training, one above the other. Top: every variant's mIoU (`grid_curves`:
    mean over seeds, min-max band). Bottom: each of `differences` minus `reference`, paired by
    seed, on an axis centred on 0 (`grid_curves(..., reference=...)`): rows that overlap within a
    point in the top panel are told apart in the bottom one."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.2, 6.8))  # not sharex: an empty panel clears its ticks
    grid_curves(runs, variants, metric, ax=top, title=title)
    top.set_xlabel("")
    grid_curves(runs, [v for v in differences if v != reference], metric, ax=bottom, reference=reference,
                title=f"each row minus {variant_label(reference)}, paired by seed")
    fig.tight_layout()
    return fig


def _band(ax, seeds: list[dict], getter, label: str, color, marker: str = "o", ls: str = "-"):
    """The mean over seeds of getter(history entry) against iteration, with its min-max band."""
    its, table = _history_table(seeds, getter)
    if not its:
        return None
    mean = np.nanmean(table, axis=0)
    (line,) = ax.plot(its, mean, marker=marker, ms=4, color=color, ls=ls, label=f"{label} (n={table.shape[0]})")
    if table.shape[0] > 1:
        ax.fill_between(its, np.nanmin(table, axis=0), np.nanmax(table, axis=0), alpha=0.15, color=color, lw=0)
    return line


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


# --- paired differences ------------------------------------------------------------------------
def _paired_panel(ax, rows: list[dict]) -> None:
    for i, r in enumerate(rows):
        ax.plot(r["diffs"], [i] * len(r["diffs"]), ".", color="0.45", ms=7)
        if not math.isnan(r["low"]):
            ax.errorbar(r["mean"], i, xerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]], fmt="D", color="black",
                        capsize=4, ms=6)
        elif not math.isnan(r["mean"]):
            ax.plot(r["mean"], i, "D", color="black", ms=6)
        if r["paper"] is not None:
            ax.plot(r["paper"], i, PAPER_STYLE["marker"], color=PAPER_STYLE["color"], ms=8, mew=2)
    ax.axvline(0, color="0.4", lw=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_wrap(f"{variant_label(r['a'])} − {variant_label(r['b'])}", 40) for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    _zero_centred(ax, [v for r in rows for v in (*r["diffs"], r["low"], r["high"], r["mean"], r["paper"])])
    ax.grid(axis="x", alpha=0.3)


def paired_figure(rows: list[dict], metric: str = "miou19", ax=None):
    """Paired differences a - b (`results.paired_rows`): a grey dot per seed, the mean with its
    95 % interval (black diamond), and the paper's real-data difference (red cross); 0 = no effect.

    Two panels, each on its own axis centred on 0: differences between two adapted rows (Table
    4's comparisons, tenths to a few points) above, gains over source-only (what adaptation adds,
    5 to 10 points) below, so that the large gains do not squash the small comparisons. With
    `ax` given, or rows of one kind only: one panel."""
    from matplotlib.lines import Line2D

    name = metric.replace("miou", "mIoU")
    groups = [[r for r in rows if r["b"] != "source-only"], [r for r in rows if r["b"] == "source-only"]]
    groups = [g for g in groups if g] if ax is None else [rows]
    titles = {0: "between two adapted rows", 1: "over source-only: the gain of adaptation"}
    if ax is not None:
        fig, axes = ax.figure, [ax]
    else:
        heights = [len(g) for g in groups] or [1]
        fig, axes = plt.subplots(len(heights), 1, figsize=(7.0, 0.42 * sum(heights) + 1.2 * len(heights) + 0.3),
                                 squeeze=False, gridspec_kw={"height_ratios": heights})
        axes = list(axes[:, 0])
    if not rows:
        _empty(axes[0], "no pair of variants published yet")
        return fig
    for panel, group in zip(axes, groups):
        _paired_panel(panel, group)
        panel.set_xlabel(f"{name} difference (points), paired by seed", fontsize=8)
        if len(groups) > 1:
            kind = 1 if group[0]["b"] == "source-only" else 0
            panel.set_title(_wrap(titles[kind] + " (own axis, centred on 0)"), fontsize=9)
    one_seed = all(math.isnan(r["low"]) for r in rows)  # no interval anywhere yet
    handles = [Line2D([], [], color="0.45", marker=".", ms=7, ls="", label="one seed"),
               Line2D([], [], color="black", marker="D", ms=6, ls="" if one_seed else "-",
                      label="mean" if one_seed else "mean, 95 % interval")]
    if any(r["paper"] is not None for r in rows):
        handles.append(Line2D([], [], color=PAPER_STYLE["color"], marker=PAPER_STYLE["marker"], ms=8, mew=2, ls="",
                              label="paper (real data)"))
    axes[0].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


# --- the loss terms over training --------------------------------------------------------------
def loss_share_figure(runs: dict[str, dict[int, dict]], variants: Sequence[str], detail: str = "ours"):
    """Left: the share of lambda_cos * L_cos in the total loss over training, per variant in its
    colour (mean over seeds, min-max band). Right: the weighted terms of `detail` (seg_s, seg_t,
    lambda_cos * cos, total), mean over seeds, all in that variant's colour, told apart by line
    style and marker. Each run's lambda_cos is read from its config.json."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    drawn = False
    for v in variants:
        seeds = seed_list(runs, v)
        if seeds:
            shares = [{"history": [{"iteration": i, "_v": x} for i, x in zip(*cos_share(m))]} for m in seeds]
            drawn |= _band(left, shares, lambda h: h["_v"], variant_label(v), **variant_style(v)) is not None
    if drawn:
        left.set_xlabel("iteration after the stage-1 model")
        left.set_ylabel("λ_cos·L_cos / total loss (%)")
        left.set_title("share of the cosine term in the total loss", fontsize=9)
        left.grid(alpha=0.3)
        left.legend(fontsize=8)
    else:
        _empty(left, "no loss history published yet")
    seeds = seed_list(runs, detail)
    lam_of = [setting(m, "lambda_cos") for m in seeds]
    lam_text = "/".join(f"{x:g}" for x in sorted(set(lam_of))) or "?"
    terms = [t for t in ("seg_s", "seg_t", "cos", "total") if any(t in (h.get("losses") or {})
                                                                 for m in seeds for h in m.get("history", []))]
    look = {"seg_s": ("-", "o"), "seg_t": ("-.", "s"), "cos": (":", "^"), "total": ("--", "D")}
    for t in terms:
        weighted = [{"history": [dict(h, _w=(lam if t == "cos" else 1.0) * h["losses"][t]) for h in m.get("history", [])
                                 if t in (h.get("losses") or {})]} for m, lam in zip(seeds, lam_of)]
        _band(right, weighted, lambda h: h["_w"],
              {"cos": f"λ_cos·L_cos (λ_cos = {lam_text})", "seg_s": "L_seg source (eq. 1)",
               "seg_t": "L_seg target, pseudo-labels (eq. 2)", "total": "total (eq. 12)"}[t],
              color=variant_style(detail)["color"], ls=look[t][0], marker=look[t][1])
    if terms:
        right.set_xlabel("iteration after the stage-1 model")
        right.set_ylabel("mean loss since the previous evaluation")
        right.set_title(f"the weighted terms of {variant_label(detail)}", fontsize=9)
        right.grid(alpha=0.3)
        right.legend(fontsize=8)
    else:
        _empty(right, f"no loss history of {detail} published yet")
    fig.tight_layout()
    return fig


# --- the paper's hypothesis over training (cosuda/alignment.py) ---------------------------------
def alignment_figure(runs: dict[str, dict[int, dict]], variants: Sequence[str]):
    """Three panels over training, one line per variant in its colour and marker (mean over
    seeds, min-max band): the share of target val pixels whose nearest probe-dictionary source
    vector has their class (nn_accuracy); the mean cosine to source vectors of the same class
    (solid) and of other classes (dashed); their gap. One legend below the panels."""
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    drawn = False
    for v in variants:
        seeds = seed_list(runs, v)
        if not seeds:
            continue
        st = variant_style(v)
        get = lambda key: (lambda h: (h.get("alignment") or {}).get(key))
        drawn |= _band(axes[0], seeds, get("nn_accuracy"), variant_label(v), **st) is not None
        _band(axes[1], seeds, get("cos_same"), variant_label(v), **st)
        _band(axes[1], seeds, get("cos_other"), "_other", **st, ls="--")  # "_": not in the legend
        _band(axes[2], seeds, get("cos_gap"), variant_label(v), **st)
    if not drawn:
        for ax in axes:
            _empty(ax, "no alignment measures published yet")
        return fig
    titles = ("target pixels nearest a source vector of their class (%)",
              "mean cosine to source vectors: same class (solid), other (dashed)",
              "gap: cos_same − cos_other")
    for ax, title in zip(axes, titles):
        ax.set_title(_wrap(title, 34), fontsize=9)
        ax.set_xlabel("iteration after the stage-1 model", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [Line2D([], [], color="0.3", ls="-", label="same class (middle)"),
                Line2D([], [], color="0.3", ls="--", label="other classes (middle)")]
    ncol = min(len(handles), 4)
    rows = -(-len(handles) // ncol)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, (0.2 * rows + 0.05) / 3.3, 1, 1))
    return fig


def features_figure(pictures: dict[str, dict | None]):
    """One panel per model (title -> features2d.json content, None when not published), up to
    three a row: the 2-D PCA of source (dots) and target (crosses) feature vectors, coloured by
    class with the Cityscapes palette. Each panel has its own projection: compare the layout,
    not coordinates."""
    from matplotlib.lines import Line2D

    ncols = min(len(pictures), 3)
    nrows = -(-len(pictures) // ncols)
    cell = 9.0 / ncols
    fig_h = nrows * (cell * 0.82 + 1.0) + 0.5
    fig, axes = plt.subplots(nrows, ncols, figsize=(9.0, fig_h), squeeze=False)
    for ax in axes.flat[len(pictures):]:
        fig.delaxes(ax)
    seen: list[str] = []
    for ax, (title, pic) in zip(axes.flat, pictures.items()):
        if not pic:
            _empty(ax, f"{title}:\nfeatures2d.json not published yet")
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
        # a class and its share stay on one line (a no-break space: textwrap breaks at spaces only)
        shares = ", ".join(f"{c}\u00a0{v:.0f}%" for c, v in acc.items())
        heading = title + (f"\nnearest own source centre:\n{shares}" if acc else "")
        ax.set_title(_wrap(heading, 34 if ncols == 3 else 45), fontsize=8)
        ax.set_xlabel("PC 1", fontsize=8)
        ax.set_ylabel("PC 2", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.2)
    handles = [Line2D([], [], color=PALETTE[CLASS_NAMES.index(c)] / 255.0 if c in CLASS_NAMES else "0.5",
                      marker="s", ls="", label=c) for c in seen]
    handles += [Line2D([], [], color="k", marker="o", ls="", alpha=0.5, label="source (GTA5-like)"),
                Line2D([], [], color="k", marker="x", ls="", label="target (Cityscapes-like)")]
    ncol = min(len(handles), 4)
    legend_h = 0.2 * -(-len(handles) // ncol) + 0.05
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_h / fig_h, 1, 1))
    return fig
