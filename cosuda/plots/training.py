"""Figures of training runs: mIoU curves (paper Fig. 4), per-class bars, qualitative rows (Fig. 5)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..labels import CLASS_NAMES, PALETTE, colorize

__all__ = ["miou_curves", "per_class_bars", "qualitative", "palette_legend"]


def miou_curves(runs: dict[str, list[dict]], metric: str = "miou19", ax=None):
    """mIoU on target val against iteration, one line per run name, seeds as a band (Fig. 4).

    `runs`: {name: [metrics.json dicts of each seed]} (`cosuda.runner.collect`).
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


def palette_legend(ax, classes: Sequence[int] | None = None, ncol: int = 1) -> None:
    """A legend of the official label colours next to a label image."""
    from matplotlib.patches import Patch

    classes = range(len(CLASS_NAMES)) if classes is None else classes
    handles = [Patch(color=PALETTE[c] / 255.0, label=CLASS_NAMES[c]) for c in classes]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, ncol=ncol, frameon=False)


def qualitative(images: Sequence[np.ndarray], columns: dict[str, Sequence[np.ndarray]], max_rows: int = 4):
    """Fig. 5: target image | ground truth | predictions of each method, one row per image.

    `images`: (H, W, 3) arrays in [0, 1] or uint8; `columns`: {title: [trainId maps (H, W)]}.
    """
    rows = min(len(images), max_rows)
    ncols = 1 + len(columns)
    fig, axes = plt.subplots(rows, ncols, figsize=(2.6 * ncols + 1.5, 1.5 * rows + 0.4), squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(images[r])
        for c, (title, maps) in enumerate(columns.items(), start=1):
            axes[r, c].imshow(colorize(maps[r]))
            if r == 0:
                axes[r, c].set_title(title, fontsize=9)
        if r == 0:
            axes[r, 0].set_title("target image", fontsize=9)
        for ax in axes[r]:
            ax.axis("off")
    palette_legend(axes[0, -1])
    fig.tight_layout()
    return fig
