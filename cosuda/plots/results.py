"""Figures of runs and results (lessons 02 and 07-11, the README): they draw what
`cosuda.results` loads and computes, never train and never compute a statistic themselves.

Every function takes a `runs` dict ({variant: {seed: metrics}}, `cosuda.results.load`) or parts
of it, and copes with missing variants, seeds or files: a figure then says what is missing
instead of failing, so that the lessons run before the grid has landed. Figures are returned,
never shown. Synthetic numbers are labelled as such; the paper's real-data numbers appear only
beside them.
"""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..config import variant_label
from ..labels import CLASS_NAMES, PALETTE
from ..results import centroid_accuracy, cos_share, seed_list, setting
from .training import miou_curves

__all__ = ["grid_curves", "paired_figure", "loss_share_figure", "alignment_figure", "features_figure"]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


# --- curves over training, seeds as bands ------------------------------------------------------
def grid_curves(runs: dict[str, dict[int, dict]], variants: Sequence[str], metric: str = "miou19", ax=None,
                title: str | None = None):
    """mIoU over the iterations of the second stage, one line per variant: the mean over seeds,
    with the min-max band over seeds (Fig. 4 layout). Missing variants are left out (and named)."""
    present = {variant_label(v): seed_list(runs, v) for v in variants if runs.get(v)}
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
    ax.set_yticklabels([f"{variant_label(r['a'])} − {variant_label(r['b'])}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{name} difference (points), paired by seed")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


# --- the loss terms over training --------------------------------------------------------------
def loss_share_figure(runs: dict[str, dict[int, dict]], variants: Sequence[str], detail: str = "ours"):
    """Left: the share of lambda_cos * L_cos in the total loss over training, per variant (mean
    over seeds, min-max band). Right: the weighted terms of `detail` (seg_s, seg_t, lambda_cos *
    cos, total), mean over seeds. Each run's lambda_cos is read from its config.json."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    drawn = False
    for v in variants:
        seeds = seed_list(runs, v)
        if seeds:
            shares = [{"history": [{"iteration": i, "_v": x} for i, x in zip(*cos_share(m))]} for m in seeds]
            drawn |= _band(left, shares, lambda h: h["_v"], variant_label(v)) is not None
    if drawn:
        left.set_xlabel("iteration after the stage-1 model")
        left.set_ylabel("λ_cos·L_cos / total loss (%)")
        left.set_title("share of the cosine term in the total loss", fontsize=9)
        left.grid(alpha=0.3)
        left.legend(fontsize=7)
    else:
        _empty(left, "no loss history published yet")
    seeds = seed_list(runs, detail)
    lam_of = [setting(m, "lambda_cos") for m in seeds]
    lam_text = "/".join(f"{x:g}" for x in sorted(set(lam_of))) or "?"
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
        right.set_title(f"the weighted terms of {variant_label(detail)}", fontsize=9)
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
        drawn |= _band(axes[0], seeds, get("nn_accuracy"), variant_label(v), color=color) is not None
        _band(axes[1], seeds, get("cos_same"), variant_label(v), color=color)
        _band(axes[1], seeds, get("cos_other"), "_other", color=color, ls="--")  # "_": not in the legend
        _band(axes[2], seeds, get("cos_gap"), variant_label(v), color=color)
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
