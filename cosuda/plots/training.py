"""Figures of training runs: mIoU curves (paper Fig. 4), per-class bars, qualitative rows (Fig. 5).

Every variant is drawn in its own colour and marker (`cosuda.config.VARIANT_STYLES`), in every
figure. Figures are sized for a notebook's width (at most about 9 inches at the inline backend's
100 dpi, text of 8 points or more).
"""
from __future__ import annotations

import textwrap
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..config import PAPER_STYLE, variant_of, variant_style
from ..labels import CLASS_NAMES, PALETTE, colorize

__all__ = ["miou_curves", "per_class_bars", "qualitative", "beside_paper", "sweep_beside_paper",
           "loss_terms"]

_GREYS = ("#7F7F7F", "#3F3F3F", "#BFBFBF")  # names that are no variant, told apart by shade
_LINESTYLES = ("-", "--", ":", "-.")         # the same variant drawn twice (two runs of it)
_HATCHES = (None, "//", "..", "xx")


def _looks(names: Sequence[str], styles: dict[str, dict] | None = None) -> dict[str, dict]:
    """{name: {"color", "marker", "ls", "hatch"}}: `styles[name]` where given, else the style of
    the variant the name stands for (`config.variant_style`: "ours", "Ours (eq. 12)", "ours (seed
    0)"); names that are no variant get distinct greys. A colour met again gets the next line
    style and hatch, so two runs of one variant stay apart and keep the variant's colour."""
    out, count, greys = {}, {}, 0
    for name in names:
        look = dict(styles[name]) if styles and name in styles else variant_style(name)
        if not (styles and name in styles) and variant_of(name) is None:
            look["color"], greys = _GREYS[greys % len(_GREYS)], greys + 1
        k = count.get(look["color"], 0)
        count[look["color"]] = k + 1
        look.setdefault("ls", _LINESTYLES[k % len(_LINESTYLES)])
        look.setdefault("hatch", _HATCHES[k % len(_HATCHES)])
        out[name] = look
    return out


def _wrap(text: str, width: int = 45) -> str:
    """A title broken into lines of at most `width` characters (existing line breaks kept)."""
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def _legend(ax, fontsize: int = 8, inside: int = 3, **kw):
    """The axes' legend: inside where it has at most `inside` entries, else outside on the right,
    where it hides no curve."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    if len(handles) > inside:
        kw = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "frameon": False, **kw}
    return ax.legend(fontsize=fontsize, **kw)


def miou_curves(runs: dict[str, list[dict]], metric: str = "miou19", ax=None, styles: dict[str, dict] | None = None):
    """mIoU on target val against iteration, one line per run name, seeds as a band (Fig. 4).

    `runs`: {name: [metrics.json dicts of each seed]} (e.g. `cosuda.results.seed_list` of each variant).
    A name that stands for a variant ("ours", "Ours (eq. 12)", "ours (seed 0)") is drawn in that
    variant's colour and marker; `styles` ({name: {"color", "marker"}}) overrides it.
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.2, 3.6))
    look = _looks(list(runs), styles)
    for name, seeds in runs.items():
        curves = [[(h["iteration"], h[metric]) for h in m.get("history", []) if h.get(metric) is not None]
                  for m in seeds]
        curves = [c for c in curves if c]
        if not curves:
            continue
        its = sorted({i for c in curves for i, _ in c})
        table = np.full((len(curves), len(its)), np.nan)
        for r, c in enumerate(curves):
            for i, v in c:
                table[r, its.index(i)] = v
        mean = np.nanmean(table, axis=0)
        st = look[name]
        ax.plot(its, mean, marker=st["marker"], ms=4, color=st["color"], ls=st["ls"],
                label=f"{name} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(its, np.nanmin(table, axis=0), np.nanmax(table, axis=0), alpha=0.15, color=st["color"],
                            lw=0)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{metric} on target val (%)")
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def per_class_bars(rows: dict[str, Sequence[float]], classes: Sequence[int] | None = None, ax=None,
                   styles: dict[str, dict] | None = None):
    """Grouped bars of per-class IoU (%) for several runs, one group per class (Tables 2-3). A
    row named after a variant has its colour (`styles` overrides); the legend sits above."""
    classes = list(range(len(CLASS_NAMES))) if classes is None else list(classes)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(9, 3.6))
    look = _looks(list(rows), styles)
    width = 0.8 / max(len(rows), 1)
    for k, (name, iou) in enumerate(rows.items()):
        values = [np.nan if iou[c] is None else iou[c] for c in classes]
        ax.bar(np.arange(len(classes)) + k * width, values, width, label=name, color=look[name]["color"],
               hatch=look[name]["hatch"], edgecolor="white", lw=0.3)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2)
    ax.set_xticklabels([CLASS_NAMES[c] for c in classes], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=min(len(rows), 2), frameon=False)
    return fig


def qualitative(images: Sequence[np.ndarray], columns: dict[str, Sequence[np.ndarray]], max_rows: int = 4):
    """Fig. 5: target image | ground truth | predictions of each method, one row per image.

    `images`: (H, W, 3) arrays in [0, 1] or uint8; `columns`: {title: [trainId maps (H, W)]}.
    The legend below lists the colours of the classes that appear in the label maps shown.
    """
    from matplotlib.patches import Patch

    rows = min(len(images), max_rows)
    ncols = 1 + len(columns)
    h, w = np.asarray(images[0]).shape[:2]
    cell_w = min(2.8, 9.5 / ncols)  # the whole row fits a notebook's width
    present = sorted({int(c) for maps in columns.values() for m in list(maps)[:rows]
                      for c in np.unique(np.asarray(m)) if c < len(CLASS_NAMES)})
    legend_cols = 6
    legend_h = 0.19 * (-(-len(present) // legend_cols)) + 0.15
    fig_h = cell_w * h / w * rows + 0.3 * rows + legend_h
    fig, axes = plt.subplots(rows, ncols, figsize=(cell_w * ncols, fig_h), squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(images[r])
        for c, (title, maps) in enumerate(columns.items(), start=1):
            axes[r, c].imshow(colorize(maps[r]), interpolation="nearest")
            if r == 0:
                axes[r, c].set_title(_wrap(title, 24), fontsize=9)
        if r == 0:
            axes[r, 0].set_title("target image", fontsize=9)
        for ax in axes[r]:
            ax.axis("off")
    handles = [Patch(color=PALETTE[c] / 255.0, label=CLASS_NAMES[c]) for c in present]
    fig.legend(handles=handles, loc="lower center", ncol=min(legend_cols, max(len(present), 1)), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, legend_h / fig_h, 1, 1))
    return fig


def _span_limits(groups: Sequence[Sequence[float]], pad: float = 0.08) -> list[tuple[float, float] | None]:
    """Axis limits of one common width (points) for each group of values, each centred on its own
    data: a difference of one point is equally long on every panel, and no panel starts at 0
    beside one that starts at 46."""
    finite = [[float(v) for v in g if v is not None and np.isfinite(v)] for g in groups]
    span = max([max(g) - min(g) for g in finite if g] or [0.0])
    width = span * (1 + 2 * pad) + 1.0  # + 1 point: a panel of one value still has a scale
    return [((min(g) + max(g) - width) / 2, (min(g) + max(g) + width) / 2) if g else None for g in finite]


def beside_paper(synthetic: dict[str, Sequence[float]], paper: dict[str, dict[str, float | None]],
                 synthetic_label: str = "synthetic benchmark (this repository)", metric: str = "mIoU19",
                 paper_label: str = "paper, real data (DeepLabV2-ResNet101)", styles: dict[str, dict] | None = None):
    """Two dot panels, one row per name in its variant's colour: left, the synthetic benchmark
    (small dots: the seeds; large marker and whisker: mean ± sample std); right, the paper's
    numbers on real data (one mark per column, e.g. GTA5→CS and SYNTHIA→CS).

    `synthetic`: {row name: [final mIoU of each seed]}; `paper`: {column label: {row name: mIoU
    or None}}. The two x-axes span the same number of points, each centred on its own data: a
    gap between rows is drawn at the same scale on both sides, while the levels (different
    benchmarks) are not comparable. Dots, not bars, because neither axis starts at 0.
    """
    from matplotlib.lines import Line2D

    names = list(synthetic)
    look = _looks(names, styles)
    legend_h = 0.5
    fig_h = 0.36 * len(names) + 1.3 + legend_h
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, fig_h), sharey=True)
    y = np.arange(len(names))
    left_values = []
    for i, name in enumerate(names):
        values = np.asarray([v for v in synthetic[name] if v is not None], dtype=float)
        if values.size == 0:
            continue
        st = look[name]
        std = values.std(ddof=1) if values.size > 1 else 0.0
        left.plot(values, np.full(values.size, i), ".", color=st["color"], alpha=0.5, ms=6)
        left.errorbar(values.mean(), i, xerr=std or None, fmt=st["marker"], color=st["color"], ms=7, capsize=3)
        left_values += [*values, values.mean() - std, values.mean() + std]
    left.set_yticks(y)
    left.set_yticklabels([f"{n} (n={len(synthetic[n])})" for n in names], fontsize=8)
    left.invert_yaxis()
    left.set_xlabel(f"{metric} on target val (%)")
    left.set_title(_wrap(synthetic_label), fontsize=9)
    marks = ("x", "+", "1", "2")
    right_values = []
    for k, (column, rows) in enumerate(paper.items()):
        offset = (k - (len(paper) - 1) / 2) * 0.25
        for i, name in enumerate(names):
            if rows.get(name) is not None:
                right.plot(rows[name], i + offset, marks[k % len(marks)], color=look[name]["color"], ms=8, mew=2)
                right_values.append(rows[name])
    right.set_xlabel("mIoU (%), as published (same span in points)")
    right.set_title(_wrap(paper_label), fontsize=9)
    for ax, lim in zip((left, right), _span_limits([left_values, right_values])):
        if lim is not None:
            ax.set_xlim(*lim)
        ax.grid(axis="x", alpha=0.3)
    if not left_values:
        left.text(0.5, 0.5, "no run published yet", ha="center", va="center", transform=left.transAxes, fontsize=9)
    handles = [Line2D([], [], color="0.3", marker=".", ls="", alpha=0.6, label="one seed"),
               Line2D([], [], color="0.3", marker="o", ls="-", label="mean ± std over seeds")]
    handles += [Line2D([], [], color="0.3", marker=marks[k % len(marks)], ls="", mew=2, label=f"paper, {column}")
                for k, column in enumerate(paper)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_h / fig_h, 1, 1))
    return fig


def sweep_beside_paper(name: str, synthetic: dict[float, Sequence[float]], paper: dict[float, float],
                       paper_label: str = "paper, GTA5→CS DeepLabV2 (Table 6)", variant: str = "ours"):
    """One hyper-parameter sweep of `variant` (Ours): synthetic mIoU (mean line, small dots =
    seeds) | the paper's Table 6 row (crosses), both in the variant's colour.

    `synthetic`: {value: [final mIoU of each seed]}; `paper`: {value: mIoU}. Separate panels,
    because the synthetic values of a hyper-parameter may be scaled (dict-size) and the
    benchmarks differ; both y-axes span the same number of points, so a flat curve looks flat
    on both sides.
    """
    st = variant_style(variant)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    xs = sorted(synthetic)
    means = [np.mean([v for v in synthetic[x] if v is not None]) for x in xs]
    left.plot(xs, means, marker=st["marker"], color=st["color"])
    seeds = []
    for x in xs:
        values = [v for v in synthetic[x] if v is not None]
        left.plot([x] * len(values), values, ".", color=st["color"], alpha=0.5, ms=6)
        seeds += values
    # the key in the title: a legend inside would hide seeds, the points this figure is about
    left.set_title("synthetic benchmark (this repository)\nline: mean over seeds; dots: the seeds", fontsize=9)
    left.set_ylabel("mIoU19 on target val (%)")
    px = sorted(paper)
    right.plot(px, [paper[x] for x in px], marker=PAPER_STYLE["marker"], ms=8, mew=2, ls="--", color=st["color"])
    right.set_title(_wrap(paper_label), fontsize=9)
    right.set_ylabel("mIoU (%), as published")
    for ax, lim, ticks in zip((left, right), _span_limits([seeds + means, [paper[x] for x in px]]), (xs, px)):
        if lim is not None:
            ax.set_ylim(*lim)
        ax.set_xticks(ticks)  # the swept values themselves
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def loss_terms(losses: dict[str, float], weights: dict[str, float], ax=None):
    """The weighted loss terms of one step (e.g. metrics.json `train.last_losses`) as shares of the total.

    `weights`: the factor of each term in the total (1 for segmentation, lambda_cos, lambda_adv).
    Greys: the terms are no variants, and variant colours mean variants.
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 2.6))
    names = [n for n in losses if n in weights]
    weighted = np.array([weights[n] * losses[n] for n in names], dtype=float)
    total = losses.get("total", weighted.sum())
    ax.barh(names, 100 * weighted / total, color=[("0.25", "0.5", "0.7", "0.85")[k % 4] for k in range(len(names))],
            edgecolor="0.2", lw=0.5)
    for k, (n, w) in enumerate(zip(names, weighted)):
        ax.text(100 * w / total, k, f"  {w:.3g} (x{weights[n]:g})", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of the total loss (%)")
    ax.set_xlim(0, 115)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
