"""Figures of training runs: mIoU curves (paper Fig. 4), per-class bars, qualitative rows (Fig. 5)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..labels import CLASS_NAMES, PALETTE, colorize

__all__ = ["miou_curves", "per_class_bars", "qualitative", "beside_paper", "sweep_beside_paper",
           "loss_terms"]


def miou_curves(runs: dict[str, list[dict]], metric: str = "miou19", ax=None):
    """mIoU on target val against iteration, one line per run name, seeds as a band (Fig. 4).

    `runs`: {name: [metrics.json dicts of each seed]} (e.g. `cosuda.results.seed_list` of each variant).
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 4))
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
        (line,) = ax.plot(its, mean, marker="o", ms=3, label=f"{name} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(its, np.nanmin(table, axis=0), np.nanmax(table, axis=0), alpha=0.15,
                            color=line.get_color())
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{metric} on target val (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def per_class_bars(rows: dict[str, Sequence[float]], classes: Sequence[int] | None = None, ax=None):
    """Grouped bars of per-class IoU (%) for several runs, one group per class (Tables 2-3)."""
    classes = list(range(len(CLASS_NAMES))) if classes is None else list(classes)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(12, 3.5))
    width = 0.8 / max(len(rows), 1)
    for k, (name, iou) in enumerate(rows.items()):
        values = [np.nan if iou[c] is None else iou[c] for c in classes]
        ax.bar(np.arange(len(classes)) + k * width, values, width, label=name)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2)
    ax.set_xticklabels([CLASS_NAMES[c] for c in classes], rotation=60, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.legend(fontsize=8)
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
    cell_w = 2.8
    present = sorted({int(c) for maps in columns.values() for m in list(maps)[:rows]
                      for c in np.unique(np.asarray(m)) if c < len(CLASS_NAMES)})
    legend_cols = 6
    legend_h = 0.17 * (-(-len(present) // legend_cols)) + 0.15
    fig_h = cell_w * h / w * rows + 0.3 * rows + legend_h
    fig, axes = plt.subplots(rows, ncols, figsize=(cell_w * ncols, fig_h), squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(images[r])
        for c, (title, maps) in enumerate(columns.items(), start=1):
            axes[r, c].imshow(colorize(maps[r]), interpolation="nearest")
            if r == 0:
                axes[r, c].set_title(title, fontsize=9)
        if r == 0:
            axes[r, 0].set_title("target image", fontsize=9)
        for ax in axes[r]:
            ax.axis("off")
    handles = [Patch(color=PALETTE[c] / 255.0, label=CLASS_NAMES[c]) for c in present]
    fig.legend(handles=handles, loc="lower center", ncol=min(legend_cols, max(len(present), 1)), fontsize=7,
               frameon=False)
    fig.tight_layout(rect=(0, legend_h / fig_h, 1, 1))
    return fig


def beside_paper(synthetic: dict[str, Sequence[float]], paper: dict[str, dict[str, float | None]],
                 synthetic_label: str = "synthetic benchmark (this repository)", metric: str = "mIoU19",
                 paper_label: str = "paper, real data (DeepLabV2-ResNet101)"):
    """Two panels: synthetic mean ± std over seeds (dots = seeds) | the paper's numbers on real data.

    `synthetic`: {row name: [final mIoU of each seed]}; `paper`: {column label (e.g.
    "GTA5→CS"): {row name: mIoU or None}}. The panels have separate axes on purpose: the two
    benchmarks are different, only the ordering of the rows can be compared.
    """
    names = list(synthetic)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.6), sharey=True)
    y = np.arange(len(names))
    for i, name in enumerate(names):
        values = np.asarray([v for v in synthetic[name] if v is not None], dtype=float)
        if values.size == 0:
            continue
        left.barh(i, values.mean(), xerr=values.std(ddof=1) if values.size > 1 else None, color="C0",
                  alpha=0.7, capsize=3)
        left.plot(values, np.full(values.size, i), "k.", ms=4)
    left.set_yticks(y)
    left.set_yticklabels([f"{n} (n={len(synthetic[n])})" for n in names])
    left.invert_yaxis()
    left.set_xlabel(f"{metric} on target val (%)")
    left.set_title(synthetic_label, fontsize=10)
    width = 0.8 / max(len(paper), 1)
    for k, (column, rows) in enumerate(paper.items()):
        values = [np.nan if rows.get(n) is None else rows[n] for n in names]
        right.barh(y + (k - (len(paper) - 1) / 2) * width, values, width, label=column, color=f"C{k + 1}")
    finite = [v for rows in paper.values() for v in rows.values() if v is not None]
    if finite:
        right.set_xlim(min(finite) - 2, max(finite) + 1)  # the paper's rows differ by tenths
    right.set_xlabel("mIoU (%), as published")
    right.set_title(paper_label, fontsize=10)
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def sweep_beside_paper(name: str, synthetic: dict[float, Sequence[float]], paper: dict[float, float],
                       paper_label: str = "paper, GTA5→CS DeepLabV2 (Table 6)"):
    """One hyper-parameter sweep: synthetic mIoU (mean line, dots = seeds) | the paper's Table 6 row.

    `synthetic`: {value: [final mIoU of each seed]}; `paper`: {value: mIoU}. Separate panels,
    because the synthetic values of a hyper-parameter may be scaled (dict-size) and the
    benchmarks differ.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    xs = sorted(synthetic)
    means = [np.mean([v for v in synthetic[x] if v is not None]) for x in xs]
    left.plot(xs, means, "o-", color="C0", label="mean over seeds")
    for x in xs:
        values = [v for v in synthetic[x] if v is not None]
        left.plot([x] * len(values), values, "k.", ms=4)
    left.set_title("synthetic benchmark (this repository)", fontsize=10)
    left.set_ylabel("mIoU19 on target val (%)")
    left.legend(fontsize=8)
    px = sorted(paper)
    right.plot(px, [paper[x] for x in px], "s-", color="C3")
    right.set_title(paper_label, fontsize=10)
    right.set_ylabel("mIoU (%), as published")
    for ax in (left, right):
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def loss_terms(losses: dict[str, float], weights: dict[str, float], ax=None):
    """The weighted loss terms of one step (e.g. metrics.json `train.last_losses`) as shares of the total.

    `weights`: the factor of each term in the total (1 for segmentation, lambda_cos, lambda_adv).
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 2.6))
    names = [n for n in losses if n in weights]
    weighted = np.array([weights[n] * losses[n] for n in names], dtype=float)
    total = losses.get("total", weighted.sum())
    ax.barh(names, 100 * weighted / total, color=[f"C{k}" for k in range(len(names))])
    for k, (n, w) in enumerate(zip(names, weighted)):
        ax.text(100 * w / total, k, f"  {w:.3g} (x{weights[n]:g})", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of the total loss (%)")
    ax.set_xlim(0, 115)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
