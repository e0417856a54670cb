"""Figures of the dataset notebook: samples with colourised labels, class frequencies, colours.

Every function takes data (datasets or arrays) and returns a matplotlib Figure; the numbers
themselves come from ``cosuda.data`` (``class_frequencies``, ``domain_statistics``).
"""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from cosuda.labels import CLASS_NAMES, NUM_CLASSES, PALETTE, colorize

__all__ = ["legend_handles", "show_samples", "plot_class_frequencies", "plot_per_class",
           "plot_class_colours", "plot_channel_histograms"]

_DOMAIN_COLOURS = ("tab:orange", "tab:purple", "tab:blue", "tab:green", "tab:red", "tab:gray")


def legend_handles(include_ignore: bool = True) -> list:
    """Legend patches in the official Cityscapes palette, trainId order (+ black 'ignore')."""
    handles = [Patch(facecolor=PALETTE[c] / 255.0, edgecolor="none", label=CLASS_NAMES[c])
               for c in range(NUM_CLASSES)]
    if include_ignore:
        handles.append(Patch(facecolor="black", edgecolor="none", label="ignore (255)"))
    return handles


def show_samples(datasets: Mapping[str, object], n: int = 4, seed: int = 0, legend: bool = True):
    """A grid: one row per sample, an (image, colourised label) column pair per dataset.

    ``datasets`` maps a title to a dataset whose items are dicts with ``image`` (3, H, W) in
    [0, 1] and ``label`` (H, W) trainIds. Samples are drawn with ``numpy.random.default_rng(seed)``.
    """
    names = list(datasets)
    fig, axes = plt.subplots(n, 2 * len(names), figsize=(3.0 * 2 * len(names), 1.75 * n + (0.9 if legend else 0)),
                             squeeze=False)
    rng = np.random.default_rng(seed)
    for col, name in enumerate(names):
        ds = datasets[name]
        picks = rng.choice(len(ds), size=min(n, len(ds)), replace=False)
        for row in range(n):
            ax_img, ax_lbl = axes[row, 2 * col], axes[row, 2 * col + 1]
            for ax in (ax_img, ax_lbl):
                ax.set_axis_off()
            if row >= len(picks):
                continue
            item = ds[int(picks[row])]
            ax_img.imshow(np.asarray(item["image"]).transpose(1, 2, 0))
            ax_lbl.imshow(colorize(item["label"]), interpolation="nearest")
            if row == 0:
                ax_img.set_title(f"{name}: image", fontsize=9)
                ax_lbl.set_title(f"{name}: label", fontsize=9)
    if legend:
        fig.legend(handles=legend_handles(), loc="lower center", ncol=10, fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.12 if n <= 2 else 0.07, 1, 1))
    else:
        fig.tight_layout()
    return fig


def _grouped_bars(values: Mapping[str, np.ndarray], ylabel: str, log: bool, title: str):
    names = list(values)
    fig, ax = plt.subplots(figsize=(12, 3.6))
    x = np.arange(NUM_CLASSES)
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        ax.bar(x + (k - (len(names) - 1) / 2) * width, np.asarray(values[name], dtype=float), width,
               label=name, color=_DOMAIN_COLOURS[k % len(_DOMAIN_COLOURS)])
    ax.set_xticks(x)
    ax.set_xticklabels(CLASS_NAMES, rotation=45, ha="right", fontsize=8)
    for tick, colour in zip(ax.get_xticklabels(), PALETTE):
        tick.set_color(np.clip(colour / 255.0 * 0.8, 0, 1))
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_class_frequencies(counts: Mapping[str, np.ndarray], log: bool = True):
    """Pixel share per class (percent of labelled pixels), grouped bars, one colour per dataset.

    ``counts`` maps a dataset name to its pixel counts (19,), e.g. from ``data.class_frequencies``.
    Absent classes have no bar (log scale).
    """
    shares = {}
    for name, c in counts.items():
        c = np.asarray(c, dtype=float)
        share = 100.0 * c / max(c.sum(), 1.0)
        shares[name] = np.where(share > 0, share, np.nan)
    return _grouped_bars(shares, "pixel share (%)", log, "Class frequencies")


def plot_per_class(values: Mapping[str, np.ndarray], ylabel: str = "IoU (%)", title: str = ""):
    """Any per-class score (19,) for several models or datasets, as grouped bars (linear scale)."""
    return _grouped_bars(values, ylabel, False, title)


def plot_class_colours(means: Mapping[str, np.ndarray]):
    """Mean colour of every class in every dataset, as swatches: rows = datasets, columns = classes.

    ``means`` maps a name to a (19, 3) array of RGB in [0, 1] (NaN for an absent class, drawn
    as an empty cell), e.g. ``data.domain_statistics(ds)["class_mean_rgb"]``.
    """
    names = list(means)
    grid = np.ones((len(names), NUM_CLASSES, 3))
    missing = np.zeros((len(names), NUM_CLASSES), dtype=bool)
    for r, name in enumerate(names):
        m = np.asarray(means[name], dtype=float)
        missing[r] = np.isnan(m).any(axis=1)
        grid[r] = np.where(missing[r][:, None], 1.0, np.clip(m, 0, 1))
    fig, ax = plt.subplots(figsize=(12, 0.7 * len(names) + 1.6))
    ax.imshow(grid, aspect="auto", interpolation="nearest")
    for r, c in zip(*np.nonzero(missing)):
        ax.text(c, r, "absent", ha="center", va="center", fontsize=6, color="0.5")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.set_xticks(range(NUM_CLASSES))
    ax.set_xticklabels(CLASS_NAMES, rotation=45, ha="right", fontsize=8)
    ax.set_title("Mean colour of each class")
    fig.tight_layout()
    return fig


def plot_channel_histograms(hists: Mapping[str, np.ndarray]):
    """Per-channel intensity histograms (3, bins), one line per dataset, one panel per channel."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.0), sharey=True)
    for k, (name, h) in enumerate(hists.items()):
        h = np.asarray(h, dtype=float)
        centres = (np.arange(h.shape[1]) + 0.5) / h.shape[1]
        for c, ax in enumerate(axes):
            ax.plot(centres, h[c], label=name, color=_DOMAIN_COLOURS[k % len(_DOMAIN_COLOURS)])
    for ax, channel in zip(axes, ("red", "green", "blue")):
        ax.set_title(f"{channel} channel")
        ax.set_xlabel("intensity")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of pixels")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
