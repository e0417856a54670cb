"""Figures of the 2-D cosine-loss experiment (notebook 13): `cosuda.toy2d` computes, these draw.

The loss only sees directions, so most panels draw every vector at its direction on a ring:
source vectors on the outer ring (radius 1), target vectors on an inner ring (radius 0.72).
Class colours are the Cityscapes colours (`cosuda.labels.PALETTE`) of the classes the toy
classes are named after. Every function returns a matplotlib Figure and never shows it.

    toy_problem          the vectors as they are, and as the loss sees them (directions)
    toy_steps            small multiples: settings x steps, with trails and the bank of each step
    toy_angles           each target vector's angle to its class's source direction, step by step
    toy_alignment        the alignment measures over the steps, one line per setting
    toy_pairs            the pairs a loss evaluation selects (M > T_cos), one panel per case
    toy_threshold_sweep  what T_cos selects and where the runs end, as T_cos grows
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D

from ..labels import PALETTE
from ..toy2d import SETTING_LABELS, PairSelection, Problem, Run, relative_angles

__all__ = ["toy_problem", "toy_steps", "toy_angles", "toy_alignment", "toy_pairs", "toy_threshold_sweep"]

R_SOURCE, R_TARGET = 1.0, 0.72
SETTING_COLOURS = {"method": "black", "no_dictionary": "tab:orange", "no_split": "tab:red"}
LIGHT = "0.85"


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _colours(problem: Problem) -> np.ndarray:
    """(K, 3) in [0, 1]: the PALETTE colour of each toy class."""
    return PALETTE[list(problem.train_ids)] / 255.0


def _on_ring(x, radius: float) -> np.ndarray:
    """(..., 2) vectors -> their directions scaled to `radius`."""
    x = _np(x)
    return radius * x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _ring_axes(ax, problem: Problem, rays: bool = True) -> None:
    """Equal axes without ticks, the two rings, and a faint ray along each class's source direction."""
    t = np.linspace(0, 2 * np.pi, 200)
    for r in (R_SOURCE, R_TARGET):
        ax.plot(r * np.cos(t), r * np.sin(t), color=LIGHT, lw=0.8, zorder=0)
    if rays:
        for c, a in enumerate(_np(problem.centres)):
            ax.plot([0, 1.12 * np.cos(a)], [0, 1.12 * np.sin(a)], color=_colours(problem)[c], lw=0.6, alpha=0.35,
                    zorder=0)
    ax.plot([0], [0], "+", color="0.5", ms=5)
    ax.set_xlim(-1.22, 1.22)
    ax.set_ylim(-1.22, 1.22)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _targets(ax, problem: Problem, x, filled=None, size: float = 16) -> None:
    """Target vectors on the inner ring, coloured by their true class. A mislabelled vector (its
    pseudo-label is another class) is an X in its label's colour. filled (N,) bool: hollow where False."""
    xy, col = _on_ring(x, R_TARGET), _colours(problem)
    filled = np.ones(len(xy), bool) if filled is None else _np(filled).astype(bool)
    wrong = _np(problem.mislabelled)
    cls, lab = _np(problem.target_classes), _np(problem.target_labels)
    for mask, marker, colour_of in ((~wrong, "o", cls), (wrong, "X", lab)):
        for fill in (True, False):
            m = mask & (filled == fill)
            if m.any():
                c = col[colour_of[m]]
                ax.scatter(xy[m, 0], xy[m, 1], s=size * (2.2 if marker == "X" else 1), marker=marker,
                           c=c if fill else "white", edgecolors=c if (fill and marker == "o") else
                           ("black" if marker == "X" else c), linewidths=0.5 if marker == "X" else 0.9, zorder=3)


def _sources(ax, problem: Problem, feats, classes, size: float = 12, alpha: float = 0.9) -> None:
    xy, col = _on_ring(feats, R_SOURCE), _colours(problem)
    ax.scatter(xy[:, 0], xy[:, 1], s=size, c=col[_np(classes)], marker="s", edgecolors="none", alpha=alpha, zorder=2)


def _class_legend(fig, problem: Problem, extra: Sequence = (), ncol: int | None = None, y: float = 0.0) -> None:
    handles = [Line2D([], [], ls="", marker="o", color=c, label=f"{n} (in {100 * f:.0f}% of source images)")
               for n, c, f in zip(problem.names, _colours(problem), problem.frequencies)] + list(extra)
    fig.legend(handles=handles, loc="lower center", ncol=ncol or min(len(handles), 4), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, y))


def toy_problem(problem: Problem):
    """Two panels: the source vectors in the dictionary at step 0 (squares) and the target vectors
    (dots) as they are, with their different norms; then as the loss sees them, as directions on
    two rings, with the domain gap marked for one class."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 4.8))
    col = _colours(problem)
    fill, fcls = _np(problem.fill), _np(problem.fill_classes)
    tgt, tcls = _np(problem.target_init), _np(problem.target_classes)
    left.scatter(fill[:, 0], fill[:, 1], s=12, marker="s", c=col[fcls], edgecolors="none", alpha=0.9)
    left.scatter(tgt[:, 0], tgt[:, 1], s=16, c=col[tcls], edgecolors="none")
    lim = 1.1 * max(np.abs(fill).max(), np.abs(tgt).max())
    left.axhline(0, color=LIGHT, lw=0.8, zorder=0)
    left.axvline(0, color=LIGHT, lw=0.8, zorder=0)
    left.set_xlim(-lim, lim)
    left.set_ylim(-lim, lim)
    left.set_aspect("equal")
    left.tick_params(labelsize=7)
    left.set_title("the feature vectors: source (squares), target (dots)", fontsize=9)
    _ring_axes(right, problem)
    _sources(right, problem, problem.fill, problem.fill_classes)
    _targets(right, problem, problem.target_init)
    c0 = int(np.argmax(problem.frequencies))
    a0, gap = float(problem.centres[c0]), np.deg2rad(problem.gap)
    arc = np.linspace(a0, a0 + gap, 30)
    right.plot(1.12 * np.cos(arc), 1.12 * np.sin(arc), color="black", lw=1.0)
    right.annotate("", xy=(1.12 * np.cos(a0 + gap), 1.12 * np.sin(a0 + gap)),
                   xytext=(1.12 * np.cos(arc[-3]), 1.12 * np.sin(arc[-3])),
                   arrowprops=dict(arrowstyle="->", color="black", lw=1.0))
    mid = a0 + gap / 2
    right.text(1.2 * np.cos(mid), 1.2 * np.sin(mid), f"gap {problem.gap:.0f}°", fontsize=8, ha="left", va="bottom")
    right.set_title("what the loss sees: directions (source outer, target inner ring)", fontsize=9)
    _class_legend(fig, problem)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def toy_steps(problem: Problem, runs: Mapping[str, Run], steps: Sequence[int]):
    """One row per setting, one column per step s in `steps` (s = run.steps: after the last step).

    Each panel: the target vectors at step s on the inner ring with their trail since step 0; the
    bank the loss compares them with at step s on the outer ring (the dictionary for the method,
    the current source image otherwise); a hollow target got no gradient at step s.
    """
    runs = dict(runs)
    if not runs or not steps:
        raise ValueError("toy_steps: need at least one run and one step")
    n_steps = next(iter(runs.values())).steps
    if any(not 0 <= s <= n_steps for s in steps):
        raise ValueError(f"toy_steps: steps must lie in [0, {n_steps}], got {list(steps)}")
    fig, axes = plt.subplots(len(runs), len(steps), figsize=(2.45 * len(steps), 2.55 * len(runs) + 0.6),
                             squeeze=False)
    col = _colours(problem)
    cls = _np(problem.target_classes)
    for row, (name, r) in enumerate(runs.items()):
        trail_all = _on_ring(r.positions, R_TARGET)              # (steps + 1, N, 2)
        for j, s in enumerate(steps):
            ax = axes[row, j]
            _ring_axes(ax, problem)
            if s > 0:  # one polyline per target vector, from step 0 to step s
                ax.add_collection(LineCollection(trail_all[:s + 1].transpose(1, 0, 2), colors=col[cls], lw=0.7,
                                                 alpha=0.6, zorder=1))
            if s < n_steps:
                sel = r.selections[s]
                _sources(ax, problem, sel.bank, sel.bank_classes, size=8)
                _targets(ax, problem, r.positions[s], filled=r.pulled[s], size=12)
                present = ", ".join(problem.names[c] for c in problem.image_classes(s))
                ax.set_title(f"step {s}\nsource image: {present}", fontsize=7)
            else:
                _targets(ax, problem, r.positions[s], size=12)
                ax.set_title(f"after {s} steps\n(the final positions)", fontsize=7)
            if j == 0:
                ax.set_ylabel(r.label, fontsize=8)
                ax.yaxis.set_visible(True)
                ax.set_yticks([])
    extra = [Line2D([], [], ls="", marker="s", color="0.4", label="source vectors the loss compares with"),
             Line2D([], [], ls="", marker="o", mfc="white", mec="0.4", label="hollow: no selected pair, no gradient")]
    _class_legend(fig, problem, extra=extra, ncol=3)
    fig.tight_layout(rect=(0, 0.075 if len(runs) > 2 else 0.12, 1, 1))
    return fig


def toy_angles(problem: Problem, runs: Mapping[str, Run]):
    """One panel per setting: the angle of every target vector to its class's source direction,
    step by step (0 = aligned; the domain gap at the start), coloured by class; below, which
    classes each step's source image contains. A flat stretch is a vector that got no gradient."""
    runs = dict(runs)
    k, n_steps = problem.num_classes, next(iter(runs.values())).steps
    fig, axes = plt.subplots(2, len(runs), figsize=(3.6 * len(runs), 4.4), squeeze=False, sharex=True,
                             gridspec_kw={"height_ratios": [4, 1]})
    col, cls = _colours(problem), _np(problem.target_classes)
    present = np.zeros((k, n_steps), bool)
    for t in range(n_steps):
        present[problem.image_classes(t), t] = True
    spacing = np.rad2deg(np.min(np.diff(np.sort(_np(problem.centres)))))
    for j, (name, r) in enumerate(runs.items()):
        ax = axes[0, j]
        angles = _np(relative_angles(problem, r.positions))     # (steps + 1, N)
        for i in range(angles.shape[1]):
            ax.plot(np.arange(n_steps + 1), angles[:, i], color=col[cls[i]], lw=0.8, alpha=0.75)
        ax.axhline(0, color="black", lw=0.8)
        ax.axhline(spacing, color="0.5", lw=0.6, ls=":")
        ax.text(n_steps, spacing, f" next class\n (+{spacing:.0f}°)", fontsize=6, va="center", color="0.4")
        ax.set_title(r.label, fontsize=8)
        low = min(-0.2 * spacing, float(angles.min()) - 5)
        ax.set_ylim(low, max(spacing * 1.12, float(angles.max()) + 5))
        ax.tick_params(labelsize=7)
        if j == 0:
            ax.set_ylabel("angle to own class's source direction (°)", fontsize=7)
        strip = axes[1, j]
        rgba = np.ones((k, n_steps, 3))
        rgba[present] = np.repeat(col[:, None, :], n_steps, axis=1)[present]
        strip.imshow(rgba, aspect="auto", interpolation="nearest", extent=(-0.5, n_steps - 0.5, k - 0.5, -0.5))
        strip.set_yticks(range(k))
        strip.set_yticklabels(problem.names, fontsize=6)
        strip.set_xlabel("step", fontsize=7)
        strip.tick_params(labelsize=7)
        if j == 0:
            strip.set_title("in the source image of the step (white: absent)", fontsize=7, loc="left")
    fig.tight_layout()
    return fig


def toy_alignment(runs: Mapping[str, Run], class_names: Sequence[str] | None = None, highlight: int | None = None):
    """Two panels over the steps, one line per setting: the own-class cosine (mean over classes;
    dashed: class `highlight` alone) and the share of target vectors whose nearest source vector
    has their class."""
    runs = dict(runs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.9 if highlight is not None else 3.6))
    for name, r in runs.items():
        colour = SETTING_COLOURS.get(name, None)
        steps = np.arange(r.steps + 1)
        left.plot(steps, _np(r.own_cos.mean(dim=1)), color=colour, lw=1.6, label=r.label)
        if highlight is not None:
            what = class_names[highlight] if class_names else f"class {highlight}"
            left.plot(steps, _np(r.own_cos[:, highlight]), color=colour, lw=1.0, ls="--", label=f"{r.label}: {what}")
        right.plot(steps, 100 * _np(r.accuracy), color=colour, lw=1.6, label=r.label)
    left.set_ylabel("cosine to own class's source vectors", fontsize=8)
    left.set_title("alignment: mean over classes (solid)" + (", one class (dashed)" if highlight is not None else ""),
                   fontsize=9)
    right.set_ylabel("target vectors nearest their own class (%)", fontsize=8)
    right.set_title("what a source classifier (1-NN) would get right", fontsize=9)
    right.set_ylim(0, 105)
    for ax in (left, right):
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(runs), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.16 if highlight is not None else 0.09, 1, 1))
    return fig


def toy_pairs(problem: Problem, panels: Sequence[tuple[str, object, PairSelection]]):
    """One panel per (title, target positions (N, 2), PairSelection): a line from each target
    vector to each bank vector of a selected pair (M > T_cos), in the bank vector's class colour;
    hollow targets have no selected pair (no gradient). The title counts the pairs and those that
    join a target vector with a source vector of another class than its own."""
    if not panels:
        raise ValueError("toy_pairs: give at least one panel")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 4.1), squeeze=False)
    col = _colours(problem)
    for ax, (title, x, sel) in zip(axes[0], panels):
        _ring_axes(ax, problem, rays=False)
        t_xy, b_xy = _on_ring(x, R_TARGET), _on_ring(sel.bank, R_SOURCE)
        ti, bj = np.nonzero(_np(sel.selected))
        segments = np.stack([t_xy[ti], b_xy[bj]], axis=1)          # (pairs, 2 ends, 2)
        ax.add_collection(LineCollection(segments, colors=col[_np(sel.bank_classes)[bj]], lw=0.35, alpha=0.35,
                                         zorder=1))
        _sources(ax, problem, sel.bank, sel.bank_classes, size=9)
        _targets(ax, problem, x, filled=_np(sel.selected).any(axis=1), size=14)
        n_sel, n_cross = int(sel.selected.sum()), int(sel.cross_class.sum())
        pulled = 100 * _np(sel.selected).any(axis=1).mean()
        ax.set_title(title, fontsize=8)
        ax.text(0, -1.3, f"{n_sel} pairs selected, {pulled:.0f}% of targets pulled\n"
                f"{n_cross} pairs to another class", fontsize=7, ha="center", va="top")
        ax.set_ylim(-1.55, 1.22)
    extra = [Line2D([], [], ls="", marker="X", mfc="white", mec="black", ms=7,
                    label="X: wrong pseudo-label (coloured by the label)"),
             Line2D([], [], ls="", marker="o", mfc="white", mec="0.4", label="hollow: no pair selected")]
    _class_legend(fig, problem, extra=extra if problem.mislabelled.any() else extra[1:], ncol=3)
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    return fig


def toy_threshold_sweep(sweep: Mapping[str, Mapping[str, np.ndarray]], mark: float | None = None):
    """Two panels against T_cos, one colour per setting (`toy2d.threshold_sweep`): what the
    threshold selects at step 0 (target vectors with a selected pair, solid; selected pairs that
    join two classes, dashed), and where the runs end (target vectors nearest their own class,
    solid; mislabelled vectors dragged into their wrong label, dashed)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.9))
    for name, d in sweep.items():
        colour, label = SETTING_COLOURS.get(name, None), SETTING_LABELS.get(name, name)
        t = d["thresholds"]
        left.plot(t, 100 * d["points_selected"], "-o", ms=3, color=colour, label=label)
        left.plot(t, 100 * d["cross_class"], "--o", ms=3, color=colour)
        right.plot(t, 100 * d["nearest_end"], "-o", ms=3, color=colour)
        if name != "no_split" and np.isfinite(d["dragged"]).any():  # labels mean nothing without the split
            right.plot(t, 100 * d["dragged"], "--o", ms=3, color=colour)
    left.set_title("what T_cos selects at step 0:\ntargets with a selected pair (solid), "
                   "selected pairs across classes (dashed)", fontsize=8)
    right.set_title("where the runs end: targets nearest their own class (solid),\n"
                    "mislabelled targets dragged into their wrong label (dashed)", fontsize=8)
    for ax in (left, right):
        if mark is not None:
            ax.axvline(mark, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel("T_cos", fontsize=8)
        ax.set_ylabel("%", fontsize=8)
        ax.set_ylim(-3, 103)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
