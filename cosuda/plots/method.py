"""Figures of the method lessons (notebooks 03-06): pseudo-labels, processes A and B, the feature
dictionary and the cosine similarity loss.

Every function takes numbers (arrays, tensors, dicts) computed by `cosuda.method`,
`cosuda.pseudo` or `cosuda.lessons` and returns a matplotlib Figure, except the two T_cos
explorer functions: `threshold_view` draws and returns the `lessons.Selection` it shows (so a
widget can display both), `threshold_slider` returns the ipywidgets object. This module
imports `cosuda.lessons`, never the reverse: the computations do not depend on their figures.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from ..labels import CLASS_NAMES, IGNORE_INDEX, PALETTE, colorize
from .. import lessons

__all__ = ["confidence_histograms", "label_maps", "label_rows", "class_split", "class_bars", "pseudo_label_quality",
           "fill_levels", "vector_ages", "similarity_matrices", "selection_curves", "magnitude_bars",
           "threshold_view", "threshold_slider"]

GREY = np.array([0.55, 0.55, 0.55])  # the grey of Fig. B.1: incorrectly classified / ignored
# Pixels a threshold ignores, in a histogram: hatched on white, a look no class colour has (the
# palette's pole and building are greys, so grey bars would read as kept ones).
IGNORED_BARS = {"facecolor": "white", "edgecolor": "0.35", "hatch": "////", "linewidth": 0.0}


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _name(c: int) -> str:
    return CLASS_NAMES[c] if 0 <= c < len(CLASS_NAMES) else str(c)


def _colour(c: int) -> np.ndarray:
    return PALETTE[c] / 255.0 if 0 <= c < len(PALETTE) else GREY


def _class_legend(fig, classes: Sequence[int], ignore: bool = False, extra: Sequence[Patch] = (),
                  ncol: int = 10) -> None:
    """A legend of class colours (+ black 'ignore (255)' and extra patches) under the panels."""
    handles = [Patch(facecolor=_colour(c), edgecolor="none", label=_name(c)) for c in classes]
    if ignore:
        handles.append(Patch(facecolor="black", edgecolor="none", label="ignore (255)"))
    handles += list(extra)
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(ncol, len(handles)), fontsize=7, frameon=False)


def _present(*maps) -> list[int]:
    found = set()
    for m in maps:
        values = np.unique(_np(m))
        found.update(int(v) for v in values if 0 <= v < len(CLASS_NAMES))
    return sorted(found)


def _tick_colours(ax, classes: Sequence[int]) -> None:
    for tick, c in zip(ax.get_xticklabels(), classes):
        tick.set_color(np.clip(_colour(c) * 0.8, 0, 1))


# --------------------------------------------------------------------------------------------
# Notebook 03: pseudo-labels
# --------------------------------------------------------------------------------------------
def confidence_histograms(hist, edges, thresholds, classes: Sequence[int] | None = None, cap: float = 0.9,
                          medians=None, ncols: int = 3):
    """One panel per class: the histogram of P^t_max over the pixels predicted as that class
    (`lessons.confidence_histograms`), with tau^c (solid) and the cap (dashed).

    hist (C, bins) counts, edges (bins + 1,), thresholds (C,) tau^c; medians (C,) optional
    uncapped medians, drawn dotted where the cap cut them. classes: default every predicted one.
    Pixels left of tau^c become 255 in the pseudo-label (eq. 4): drawn hatched on white, while the
    kept pixels are solid in the class colour (a hatch, not a grey: pole and building are grey).
    """
    hist, edges, thresholds = _np(hist), _np(edges), _np(thresholds)
    classes = [c for c in range(hist.shape[0]) if hist[c].sum() > 0] if classes is None else list(classes)
    if not classes:
        raise ValueError("confidence_histograms: no class was predicted (all histograms are empty)")
    rows = -(-len(classes) // ncols)
    fig, axes = plt.subplots(rows, ncols, figsize=(3.0 * ncols, 1.9 * rows + 0.6), squeeze=False)
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    for ax, c in zip(axes.flat, classes):
        tau = float(thresholds[c])
        share = 100.0 * hist[c].sum() / max(hist.sum(), 1)
        kept = centres >= tau
        ax.bar(centres[kept], hist[c][kept], width=width, color=_colour(c), edgecolor="none")
        ax.bar(centres[~kept], hist[c][~kept], width=width, **IGNORED_BARS)
        ax.stairs(np.where(kept, 0, hist[c]), edges, color="0.35", lw=0.6)  # the outline of the ignored part
        ax.axvline(tau, color="black", lw=1.2)
        ax.axvline(cap, color="black", lw=0.8, ls="--")
        if medians is not None and float(_np(medians)[c]) > tau + 1e-6:
            ax.axvline(float(_np(medians)[c]), color="black", lw=0.8, ls=":")
        ax.set_title(f"{_name(c)}: {share:.1f}% of pixels, tau = {tau:.2f}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=8)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(classes):]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("confidence P_max", fontsize=8)
    extra = [Patch(facecolor=_colour(classes[0]), label="kept (the class colour)"),
             Patch(**IGNORED_BARS, label="below tau: ignored (255)"),
             plt.Line2D([], [], color="black", lw=1.2, label="tau^c = min(median, cap)"),
             plt.Line2D([], [], color="black", lw=0.8, ls="--", label=f"cap {cap:g}")]
    if medians is not None:
        extra.append(plt.Line2D([], [], color="black", lw=0.8, ls=":", label="median above the cap"))
    ncol = min(len(extra), 3)
    legend_h = 0.22 * -(-len(extra) // ncol) + 0.1
    fig.legend(handles=extra, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_h / (1.9 * rows + 0.6), 1, 1))
    return fig


def pseudo_label_quality(quality: Mapping[str, np.ndarray], classes: Sequence[int] | None = None):
    """Two panels from `lessons.pseudo_label_quality`: the share of each class's predicted pixels
    that keeps its label, and the precision against ground truth before and after eq. 4."""
    classes = [c for c in range(len(quality["predicted"])) if quality["predicted"][c] > 0] \
        if classes is None else list(classes)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    x = np.arange(len(classes))
    left.bar(x, 100 * np.nan_to_num(quality["kept_share"][classes]), color=[_colour(c) for c in classes])
    left.set_ylabel("pixels kept (%)")
    left.set_title(f"what survives eq. 4: {100 * quality['kept_total']:.0f}% of all pixels", fontsize=9)
    for k, (key, label) in enumerate((("precision_before", "prediction (all pixels)"),
                                      ("precision_after", "pseudo-label (kept pixels)"))):
        right.bar(x + (k - 0.5) * 0.4, 100 * np.nan_to_num(quality[key][classes]), 0.4, label=label,
                  color=("0.7", "0.25")[k])  # greys: blue is Ours' colour in the lessons' figures
    right.set_ylabel("precision vs ground truth (%)")
    right.set_title(f"how often it is right: {100 * quality['accuracy_before']:.0f}% -> "
                    f"{100 * quality['accuracy_after']:.0f}% pixel accuracy", fontsize=9)
    right.legend(fontsize=8, loc="lower right")
    for ax in (left, right):
        ax.set_xticks(x)
        ax.set_xticklabels([_name(c) for c in classes], rotation=45, ha="right", fontsize=8)
        _tick_colours(ax, classes)
        ax.set_ylim(0, 105)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Notebook 04: label maps at feature resolution (Fig. B.1)
# --------------------------------------------------------------------------------------------
def _cell_grid(ax, h: int, w: int) -> None:
    """White lines between the cells of an (h, w) map: one cell = one feature vector."""
    ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
    ax.grid(which="minor", color="white", lw=0.4)
    ax.tick_params(which="both", length=0)


def _draw_map(ax, label, shade=None, grid: bool = False) -> None:
    rgb = colorize(_np(label)).astype(np.float64) / 255.0
    if shade is not None:
        mask = _np(shade).astype(bool)
        rgb[mask] = 0.45 * rgb[mask] + 0.55 * GREY  # "grey shaded parts" of Fig. B.1
    ax.imshow(rgb, interpolation="nearest")
    h, w = rgb.shape[:2]
    if grid and max(h, w) <= 80:
        _cell_grid(ax, h, w)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def label_maps(panels: Mapping[str, object], image=None, shade: Mapping[str, object] | None = None,
               grid: bool | Sequence[str] = False, ncols: int | None = None, title: str | None = None,
               shade_label: str = "shaded: not used"):
    """Label maps side by side, coloured with the Cityscapes palette (255 = black), with a legend
    of the classes they contain.

    panels: {title: trainId map (h, w)}; image: optional (3, H, W) or (H, W, 3) image drawn first;
    shade: {title: bool mask (h, w)} cells drawn greyed out (Fig. B.1: incorrectly classified /
    ignored); grid: True or a list of titles whose cells are outlined (feature-resolution maps,
    one cell = one feature vector).
    """
    shade = dict(shade or {})
    entries = ([("image", image)] if image is not None else []) + list(panels.items())
    ncols = ncols or len(entries)
    rows = -(-len(entries) // ncols)
    fig, axes = plt.subplots(rows, ncols, figsize=(2.7 * ncols, 1.7 * rows + 0.9 + (0.3 if title else 0)),
                             squeeze=False)
    for ax, (name, value) in zip(axes.flat, entries):
        if name == "image" and value is image:
            img = _np(value)
            ax.imshow(img.transpose(1, 2, 0) if img.shape[0] == 3 else img)
            ax.set_axis_off()
        else:
            outlined = grid is True or (not isinstance(grid, bool) and name in grid)
            _draw_map(ax, value, shade.get(name), outlined)
        ax.set_title(name, fontsize=8)
    for ax in list(axes.flat)[len(entries):]:
        ax.set_axis_off()
    maps = list(panels.values())
    ignore = any((_np(m) == IGNORE_INDEX).any() for m in maps)
    extra = [Patch(facecolor=GREY, label=shade_label)] if shade else []
    _class_legend(fig, _present(*maps), ignore=ignore, extra=extra)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.28 / rows if rows < 3 else 0.08, 1, 1))
    return fig


def label_rows(images: Sequence[object], columns: Mapping[str, Sequence[object]]):
    """One row per image: the image, then one label map per column ({title: [maps (H, W)]}),
    coloured with the palette (255 = black), with a legend of the classes present."""
    n = len(images)
    if n == 0 or any(len(maps) != n for maps in columns.values()):
        raise ValueError(f"label_rows: need as many maps in every column as images ({n}), got "
                         f"{ {k: len(v) for k, v in columns.items()} }")
    ncols = 1 + len(columns)
    first = _np(images[0])
    h, w = (first.shape[1:] if first.shape[0] == 3 else first.shape[:2])
    panel_w = 2.8
    height = n * (panel_w * h / w + 0.15) + 0.75
    fig, axes = plt.subplots(n, ncols, figsize=(panel_w * ncols, height), squeeze=False)
    for r in range(n):
        img = _np(images[r])
        axes[r, 0].imshow(img.transpose(1, 2, 0) if img.shape[0] == 3 else img)
        axes[r, 0].set_axis_off()
        for k, (title, maps) in enumerate(columns.items(), start=1):
            _draw_map(axes[r, k], maps[r])
            if r == 0:
                axes[r, k].set_title(title, fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    maps = [m for column in columns.values() for m in column]
    _class_legend(fig, _present(*maps), ignore=any((_np(m) == IGNORE_INDEX).any() for m in maps))
    fig.tight_layout(rect=(0, 0.6 / height, 1, 1))
    return fig


def class_split(class_map, prefix: str = "S", noun: str = "vectors", max_panels: int = 8, ncols: int = 4):
    """Process A / B as pictures: for each class in `class_map` (h, w) (255 = not used), a panel
    with only that class's cells coloured, titled "<prefix>^<class>: n vectors" (eq. 6 / 7).
    Classes are ordered by count; at most `max_panels`."""
    m = _np(class_map)
    classes = [c for c in _present(m)]
    counts = {c: int((m == c).sum()) for c in classes}
    classes = sorted(classes, key=lambda c: -counts[c])[:max_panels]
    if not classes:
        raise ValueError("class_split: the map holds no class (every cell is 255)")
    ncols = min(ncols, len(classes))
    rows = -(-len(classes) // ncols)
    fig, axes = plt.subplots(rows, ncols, figsize=(2.7 * ncols, 1.6 * rows + 0.2), squeeze=False)
    for ax, c in zip(axes.flat, classes):
        only = np.where(m == c, c, IGNORE_INDEX)
        rgb_map = colorize(only).astype(np.float64) / 255.0
        rgb_map[only == IGNORE_INDEX] = 0.93  # the other cells: light, not black (they are not ignored)
        ax.imshow(rgb_map, interpolation="nearest")
        _cell_grid(ax, *m.shape)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{prefix}^{_name(c)}: {counts[c]} {noun}", fontsize=8)
    for ax in list(axes.flat)[len(classes):]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def class_bars(values: Mapping[str, object], classes: Sequence[int] | None = None, ylabel: str = "",
               title: str = "", log: bool = False):
    """Grouped bars: one group per class (tick labels in the class colours), one bar per entry of
    `values` ({legend: (C,) numbers}). classes: default those where any entry is non-zero."""
    arrays = {k: np.asarray(_np(v), dtype=np.float64) for k, v in values.items()}
    if classes is None:
        classes = [c for c in range(len(next(iter(arrays.values()))))
                   if any(np.nan_to_num(a[c]) != 0 for a in arrays.values())]
    classes = list(classes)
    fig, ax = plt.subplots(figsize=(min(12.0, max(6.0, 0.5 * len(classes) * max(1, len(arrays)) + 2)), 3.4))
    x = np.arange(len(classes))
    width = 0.8 / max(len(arrays), 1)
    for k, (name, a) in enumerate(arrays.items()):
        ax.bar(x + (k - (len(arrays) - 1) / 2) * width, a[classes] if classes else [], width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels([_name(c) for c in classes], rotation=45, ha="right", fontsize=8)
    _tick_colours(ax, classes)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if len(arrays) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Notebook 05: the dictionary as a queue
# --------------------------------------------------------------------------------------------
def fill_levels(fill, dict_size: int, classes: Sequence[int] | None = None):
    """Vectors held per class (FeatureDictionary.counts) after each iteration: fill (T, C)."""
    fill = _np(fill)
    classes = [c for c in range(fill.shape[1]) if fill[-1, c] > 0] if classes is None else list(classes)
    fig, ax = plt.subplots(figsize=(9, 3.4))
    steps = np.arange(1, fill.shape[0] + 1)
    for c in classes:
        ax.plot(steps, fill[:, c], color=_colour(c), lw=1.6, label=_name(c))
    ax.axhline(dict_size, color="black", ls="--", lw=0.8)
    ax.text(steps[0], dict_size, f" dict-size = {dict_size}", va="bottom", fontsize=8)
    ax.set_xlabel("iteration (source images enqueued)")
    ax.set_ylabel("vectors held in D^c")
    ax.set_ylim(0, dict_size * 1.12)
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def vector_ages(ages: Mapping[int, object], iteration: int, dict_size: int):
    """Where the stored vectors come from: for each class c, the iteration of origin of every
    vector in D^c after `iteration` iterations (one dot per vector, jittered vertically)."""
    classes = [c for c in sorted(ages) if len(_np(ages[c]))]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(classes) + 1.3))
    rng = np.random.default_rng(0)
    for row, c in enumerate(classes):
        a = _np(ages[c]).reshape(-1)
        ax.scatter(a + 1, row + rng.uniform(-0.3, 0.3, len(a)), s=7, color=_colour(c), alpha=0.5,
                   edgecolors="none")
        full = "full" if len(a) >= dict_size else f"{len(a)}/{dict_size}"
        ax.text(iteration + 0.6, row, f"{full}, oldest from it. {int(a.min()) + 1}", va="center", fontsize=7)
    ax.set_yticks(range(len(classes)))
    ax.set_yticklabels([_name(c) for c in classes], fontsize=8)
    for tick, c in zip(ax.get_yticklabels(), classes):
        tick.set_color(np.clip(_colour(c) * 0.8, 0, 1))
    ax.set_xlim(0.5, iteration * 1.35 + 1)
    ax.set_xlabel("iteration the stored vector was enqueued at")
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Notebook 06: similarity matrices and T_cos
# --------------------------------------------------------------------------------------------
_SELECTED = plt.get_cmap("Blues")
_UNSELECTED = ListedColormap(plt.get_cmap("Greys")(np.linspace(0.3, 0.7, 64)))  # Fig. 3: dark grey


def similarity_matrices(matrices: Mapping[int, torch.Tensor], t_cos: float, classes: Sequence[int] | None = None,
                        max_rows: int = 60, max_cols: int = 250, ncols: int = 3):
    """M^c (eq. 9) for each class side by side, like Fig. 1 / Fig. 3: one row per target vector,
    one column per dictionary vector; elements above T_cos in blue (bluer = more similar), the
    others grey. At most max_rows x max_cols of each matrix are drawn (the counts in the titles
    are for the whole matrix)."""
    classes = sorted(matrices) if classes is None else [c for c in classes if c in matrices]
    if not classes:
        raise ValueError("similarity_matrices: no class has both target vectors and dictionary vectors")
    ncols = min(ncols, len(classes))
    rows = -(-len(classes) // ncols)
    fig, axes = plt.subplots(rows, ncols, figsize=(4.2 * ncols, 2.3 * rows + 0.6), squeeze=False)
    image = None
    low = min(float(_np(matrices[c]).min()) for c in classes)
    for ax, c in zip(axes.flat, classes):
        m = _np(matrices[c])
        shown = m[:max_rows, :max_cols]
        selected = shown > t_cos
        # unselected in greys up to T_cos, selected in blues from T_cos to 1 (Fig. 3: bluer = more similar)
        ax.imshow(np.ma.masked_where(selected, shown), cmap=_UNSELECTED, vmin=min(low, t_cos - 0.1), vmax=t_cos,
                  aspect="auto", interpolation="nearest")
        image = ax.imshow(np.ma.masked_where(~selected, shown), cmap=_SELECTED, vmin=min(t_cos, 0.99), vmax=1,
                          aspect="auto", interpolation="nearest")
        n_sel = int((m > t_cos).sum())
        ax.set_title(f"M^{_name(c)}: {m.shape[0]}x{m.shape[1]}, {n_sel} > T_cos "
                     f"({100.0 * n_sel / max(m.size, 1):.0f}%)", fontsize=8)
        cut = " (first rows/columns)" if shown.shape != m.shape else ""
        ax.set_xlabel("dictionary vectors D^c" + cut, fontsize=7)
        ax.set_ylabel("target vectors T^c", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(classes):]:
        ax.set_axis_off()
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    cax = fig.add_axes((0.945, 0.15, 0.012, 0.7))
    fig.colorbar(image, cax=cax).set_label(f"cosine similarity of the selected elements (> {t_cos:.2f}); "
                                          "grey: not selected", fontsize=7)
    return fig


def selection_curves(fractions: Mapping[int, np.ndarray], thresholds: Sequence[float],
                     marks: Sequence[float] = (0.6, 0.4, 0.2)):
    """Share of the similarity elements above T_cos as T_cos grows (`lessons.selected_fraction`):
    one line per class, black for all classes together, the paper's T_cos values (Table 5) marked."""
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for c, share in sorted(fractions.items()):
        if c < 0:
            continue
        ax.plot(thresholds, 100 * np.asarray(share), color=_colour(c), lw=1.2, label=_name(c))
    if -1 in fractions:
        ax.plot(thresholds, 100 * np.asarray(fractions[-1]), color="black", lw=2.2, label="all classes")
    for t in marks:
        ax.axvline(t, color="0.5", ls=":", lw=0.8)
    ax.set_xlabel("T_cos (dotted: the paper's values, Table 5)")
    ax.set_ylabel("elements selected (%)")
    ax.set_ylim(0, 102)
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def magnitude_bars(values: Mapping[str, float], title: str = "", xlabel: str = "value",
                   reference: str | None = None):
    """Horizontal bars on a log scale, one per entry ({label: positive number}); the bar named
    `reference` is drawn dark and marked with a line (e.g. the segmentation loss)."""
    names = list(values)
    numbers = np.array([float(values[n]) for n in names])
    if (numbers <= 0).any():
        raise ValueError(f"magnitude_bars: values must be positive for a log scale, got {dict(values)}")
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(names) + 1.2))
    colours = ["0.25" if n == reference else "tab:blue" for n in names]
    ax.barh(np.arange(len(names)), numbers, color=colours)
    for i, v in enumerate(numbers):
        ax.text(v, i, f" {v:.3g}", va="center", fontsize=8)
    if reference is not None:
        ax.axvline(float(values[reference]), color="0.25", ls="--", lw=0.8)
    ax.set_yticks(np.arange(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(numbers.min() / 3, numbers.max() * 30)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def threshold_view(matrices: Mapping[int, torch.Tensor], t_cos: float = 0.6, num_classes: int = 19,
                   **kw) -> "lessons.Selection":
    """The T_cos explorer: draws `similarity_matrices` at `t_cos` with the selection and loss in
    the title, and returns the `lessons.Selection` (selected counts, both loss readings)."""
    selection = lessons.select(matrices, t_cos, num_classes)
    fig = similarity_matrices(matrices, t_cos, **kw)
    fig.suptitle(repr(selection), fontsize=9, y=1.0)
    return selection


def threshold_slider(matrices: Mapping[int, torch.Tensor], t_cos: float = 0.6, num_classes: int = 19,
                     step: float = 0.05, **kw):
    """Lesson 06's T_cos slider over `threshold_view` (extra keywords go to it): an ipywidgets
    VBox of the slider and the figure, whose `.result` is the current `lessons.Selection`;
    `.children[0]` is the slider (set its `.value` to move it from code).

    The figure is placed into the Output widget with `append_display_data`, not captured while
    the view draws it (as `ipywidgets.interactive` would): headless executors (papermill,
    nbclient, hence the runner) mirror captured output back to the kernel over the channel they
    are waiting on for the cell's reply, and then sometimes wait forever (jupyter/nbclient#312:
    two of three papermill runs of lesson 06 hung here).
    """
    import ipywidgets

    slider = ipywidgets.FloatSlider(value=t_cos, min=-1.0, max=1.0, step=step, description="T_cos",
                                    continuous_update=False, readout_format=".2f")
    out = ipywidgets.Output()
    box = ipywidgets.VBox([slider, out])

    def update(change=None):
        with plt.ioff():
            box.result = threshold_view(matrices, slider.value, num_classes, **kw)
            fig = plt.gcf()
        out.outputs = ()
        out.append_display_data(fig)
        plt.close(fig)

    slider.observe(update, names="value")
    update()
    return box
