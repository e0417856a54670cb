"""What the cosine similarity loss does, in two dimensions (notebook 13; beyond the paper).

A toy version of section 3.2 small enough to draw: feature vectors are points in the plane, and
gradient descent moves the TARGET vectors (they stand for the free target features; the source
side is a constant, as in the paper, where no gradient reaches the dictionary) to minimise the
package's own L_cos (`cosuda.method.cosine_loss`, eq. 9-10), step by step.

    make_problem          source clusters per class, a rotated target cloud (the domain gap), and a
                          stream of "source images" that each hold only some of the classes
    run                   gradient descent on the targets in one setting (SETTINGS), with the
                          trajectories, the selected pairs at every step and the alignment numbers
    experiment            `run` for several settings on one problem
    select_pairs          which (target, source) pairs the loss compares and selects (M > T_cos)
    threshold_sweep       `run` over several T_cos: what each threshold selects, and where it ends
    own_class_cosine      per class, the mean cosine of its target vectors to its source vectors
    nearest_class_share   per class, the share of its target vectors whose most similar source
                          vector has their class (1-nearest-neighbour on the source)
    relative_angles       the angle of every target vector to its class's source direction

Process B's split is a pseudo-label: `make_problem(mislabelled=...)` gives a share of the target
vectors a wrong class, and T_cos decides whether the loss drags them into it (`threshold_sweep`).

Cosine similarity depends on directions only: a vector's norm never changes M (eq. 9), so every
measure here, and every picture in `cosuda.plots.toy2d`, is about angles.

The settings follow Table 4's ablations:

    "method"          class-wise split + dictionary: T^c against D^c, a FeatureDictionary filled by
                      every source image (process A's S^c are enqueued before the loss, Fig. 2)
    "no_dictionary"   class-wise split against the current source image's vectors only: a target
                      class absent from that image has nothing to match (the unmatching problem)
                      and gets no gradient at that step
    "no_split"        no class-wise split (and no dictionary): every target vector against every
                      vector of the current source image, as one class

Everything is float64 on the CPU and deterministic given the seed; a run of 40 steps takes
milliseconds. No plotting here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .method import FeatureDictionary, class_similarity, cosine_loss

__all__ = ["SETTINGS", "SETTING_LABELS", "Problem", "PairSelection", "Run", "make_problem", "select_pairs",
           "run", "experiment", "threshold_sweep", "own_class_cosine", "nearest_class_share",
           "relative_angles", "SWEEP_KEYS"]

SETTINGS = ("method", "no_dictionary", "no_split")
SETTING_LABELS = {"method": "class-wise split + dictionary (the method)",
                  "no_dictionary": "w/o dictionary",
                  "no_split": "w/o class-wise split"}
DTYPE = torch.float64


# --------------------------------------------------------------------------------------------
# The problem: source clusters, a shifted target cloud, a stream of source images
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One toy domain-adaptation problem in the plane (all tensors float64 / int64, CPU).

    centres (K,) the source direction of each class, in radians; names, train_ids (for the
    Cityscapes colours of `cosuda.labels.PALETTE`) and frequencies (the chance that a source
    image contains the class) per class. target_init (N, 2) and target_classes (N,): the target
    vectors before adaptation, with their true class; target_labels (N,): the classes process B
    splits them by (a pseudo-label: equal to target_classes unless `mislabelled` > 0). fill (F, 2)
    and fill_classes: the source vectors already in the dictionary at step 0 (dict_size per class,
    "earlier iterations"). images: per step, the process A vectors (n, 2) and classes (n,) of that
    step's source image. reference (R, 2) and reference_classes: a large fixed sample of every
    class's source distribution, used only to measure alignment, never by the loss.
    """
    centres: torch.Tensor
    names: tuple[str, ...]
    train_ids: tuple[int, ...]
    frequencies: tuple[float, ...]
    gap: float
    target_init: torch.Tensor
    target_classes: torch.Tensor
    target_labels: torch.Tensor
    fill: torch.Tensor
    fill_classes: torch.Tensor
    images: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    reference: torch.Tensor
    reference_classes: torch.Tensor
    dict_size: int
    seed: int

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def steps(self) -> int:
        return len(self.images)

    @property
    def mislabelled(self) -> torch.Tensor:
        """(N,) bool: the target vectors whose pseudo-label (target_labels) is not their class."""
        return self.target_labels != self.target_classes

    def image_classes(self, step: int) -> list[int]:
        """The classes present in the source image of `step`."""
        return sorted(set(self.images[step][1].tolist()))

    def absent_steps(self) -> dict[int, list[int]]:
        """{class: the steps whose source image does not contain it}."""
        return {c: [t for t in range(self.steps) if c not in self.image_classes(t)]
                for c in range(self.num_classes)}


def _vectors(gen: torch.Generator, angle: float, spread: float, norm: float, n: int) -> torch.Tensor:
    """n vectors at angle + N(0, spread) (radians) with norms norm * (1 + 0.15 N(0, 1)), clipped."""
    a = angle + spread * torch.randn(n, generator=gen, dtype=DTYPE)
    r = norm * (1 + 0.15 * torch.randn(n, generator=gen, dtype=DTYPE)).clamp(0.5, 1.5)
    return torch.stack([r * torch.cos(a), r * torch.sin(a)], dim=1)


def make_problem(steps: int = 40, seed: int = 0, angles: Sequence[float] = (30, 120, 210, 300),
                 names: Sequence[str] = ("road", "building", "vegetation", "person"),
                 train_ids: Sequence[int] = (0, 2, 8, 11), frequencies: Sequence[float] = (1.0, 0.7, 0.5, 0.2),
                 gap: float = 40.0, source_spread: float = 8.0, target_spread: float = 10.0,
                 target_points: int = 16, vectors_per_class: int = 6, dict_size: int = 16,
                 target_norm: float = 0.6, reference_per_class: int = 200, mislabelled: float = 0.0) -> Problem:
    """A toy problem: K classes of source vectors around `angles` (degrees), the target vectors of
    each class around its angle + `gap` (degrees: the domain gap, the same rotation for every
    class) with other norms (`target_norm`, the source's is 1: norms do not matter to cosines),
    and `steps` source images. Each source image holds class c with probability frequencies[c]
    (at least one class: the most frequent when the draw is empty), `vectors_per_class` vectors
    of each class it holds. Spreads are standard deviations of the angles, in degrees.
    mislabelled: the share of each class's target vectors (rounded) whose pseudo-label is wrong,
    each given another class drawn at random (an imperfect process B). Deterministic given `seed`.
    """
    k = len(angles)
    if k < 2:
        raise ValueError(f"make_problem: need at least 2 classes, got angles={tuple(angles)}")
    if not (len(names) == len(train_ids) == len(frequencies) == k):
        raise ValueError(f"make_problem: angles, names, train_ids and frequencies need one entry per class, got "
                         f"{len(angles)}, {len(names)}, {len(train_ids)}, {len(frequencies)}")
    if not all(0.0 <= f <= 1.0 for f in frequencies) or max(frequencies) <= 0:
        raise ValueError(f"make_problem: frequencies must lie in [0, 1], one above 0, got {tuple(frequencies)}")
    for name, value in (("steps", steps), ("target_points", target_points),
                        ("vectors_per_class", vectors_per_class), ("dict_size", dict_size),
                        ("reference_per_class", reference_per_class)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"make_problem: {name} must be a positive int, got {value!r}")
    if not 0.0 <= mislabelled < 1.0:
        raise ValueError(f"make_problem: mislabelled is a share in [0, 1), got {mislabelled}")
    if source_spread < 0 or target_spread < 0 or target_norm <= 0:
        raise ValueError(f"make_problem: spreads must be >= 0 and target_norm > 0, got {source_spread}, "
                         f"{target_spread}, {target_norm}")
    gen = torch.Generator().manual_seed(int(seed))
    rad = [math.radians(a) for a in angles]
    s_sd, t_sd, shift = math.radians(source_spread), math.radians(target_spread), math.radians(gap)

    def per_class(n, angle_of, spread, norm):
        feats = torch.cat([_vectors(gen, angle_of(c), spread, norm, n) for c in range(k)])
        return feats, torch.arange(k).repeat_interleave(n)

    target, target_classes = per_class(target_points, lambda c: rad[c] + shift, t_sd, target_norm)
    fill, fill_classes = per_class(dict_size, lambda c: rad[c], s_sd, 1.0)
    reference, reference_classes = per_class(reference_per_class, lambda c: rad[c], s_sd, 1.0)
    freq = torch.tensor(list(frequencies), dtype=DTYPE)
    images = []
    for _ in range(steps):
        present = (torch.rand(k, generator=gen, dtype=DTYPE) < freq).nonzero().flatten().tolist()
        present = present or [int(freq.argmax())]
        feats = torch.cat([_vectors(gen, rad[c], s_sd, 1.0, vectors_per_class) for c in present])
        images.append((feats, torch.tensor(present).repeat_interleave(vectors_per_class)))
    labels = target_classes.clone()  # drawn last: the same seed gives the same problem whatever `mislabelled`
    n_wrong = int(round(mislabelled * target_points))
    for c in range(k):
        rows = (target_classes == c).nonzero().flatten()[torch.randperm(target_points, generator=gen)[:n_wrong]]
        shift_by = torch.randint(1, k, (n_wrong,), generator=gen)        # another class, at random
        labels[rows] = (c + shift_by) % k
    return Problem(centres=torch.tensor(rad, dtype=DTYPE), names=tuple(names), train_ids=tuple(int(i) for i in train_ids),
                   frequencies=tuple(float(f) for f in frequencies), gap=float(gap), target_init=target,
                   target_classes=target_classes, target_labels=labels, fill=fill, fill_classes=fill_classes, images=tuple(images),
                   reference=reference, reference_classes=reference_classes, dict_size=int(dict_size), seed=int(seed))


# --------------------------------------------------------------------------------------------
# Which pairs the loss compares, and which it selects
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairSelection:
    """The pairs of one loss evaluation. target_classes (N,) the targets' true classes; bank (n_b, 2)
    the source vectors the loss compares with and bank_classes (n_b,) their true class (the
    "no_split" loss ignores it); similarity (N, n_b) the cosine of every target vector with every
    bank vector (eq. 9 over all pairs); compared (N, n_b) the pairs that the loss's matrices M
    contain (same pseudo-label and class when split, all pairs when not); selected = compared & (similarity >
    threshold): the elements of M-hat (eq. 10)."""
    step: int
    threshold: float
    target_classes: torch.Tensor
    bank: torch.Tensor
    bank_classes: torch.Tensor
    similarity: torch.Tensor
    compared: torch.Tensor
    selected: torch.Tensor

    @property
    def cross_class(self) -> torch.Tensor:
        """(N, n_b) bool: the selected pairs whose source vector has another class than the target
        vector really has: the loss pulls it towards another class."""
        return self.selected & (self.target_classes[:, None] != self.bank_classes[None, :])


def select_pairs(feats: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor, bank_classes: torch.Tensor,
                 threshold: float, split: bool = True, step: int = -1,
                 true_classes: torch.Tensor | None = None) -> PairSelection:
    """Which (target, bank) pairs the loss compares and which it selects at `threshold`.

    feats (N, 2) target vectors split by labels (N,) (process B); bank (n_b, 2) with
    bank_classes (n_b,). split: the class-wise split (a target vector is compared with the bank
    vectors of its label only; without it, with all). true_classes (N,): the targets' real
    classes, for `cross_class` (default: the labels).
    """
    if feats.dim() != 2 or labels.shape != feats.shape[:1] or bank.dim() != 2 or \
            bank_classes.shape != bank.shape[:1]:
        raise ValueError(f"select_pairs: need feats (N, k), labels (N,), bank (n, k), bank_classes (n,), got "
                         f"{tuple(feats.shape)}, {tuple(labels.shape)}, {tuple(bank.shape)}, "
                         f"{tuple(bank_classes.shape)}")
    if not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"select_pairs: T_cos must lie in [-1, 1], got {threshold}")
    similarity = class_similarity(feats.detach(), bank)                         # eq. 9, every pair
    compared = labels[:, None] == bank_classes[None, :] if split else \
        torch.ones(similarity.shape, dtype=torch.bool)
    selected = compared & (similarity > float(threshold))                        # M > T_cos, eq. 10
    true_classes = labels if true_classes is None else true_classes
    return PairSelection(step, float(threshold), true_classes.clone(), bank, bank_classes, similarity, compared,
                         selected)


# --------------------------------------------------------------------------------------------
# Gradient descent on the target vectors
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One setting's trajectory on one problem.

    positions (steps + 1, N, 2): the target vectors before each step and after the last; loss
    (steps,); pulled (steps, N) bool: the vector got a non-zero gradient at that step; matched
    (steps, K) bool: the bank of that step held a source vector of the class; selections: the
    PairSelection of every step; nearest_class (steps + 1, N): the class of each target vector's
    most similar reference source vector (what a classifier fitted on the source would say);
    own_cos and nearest (steps + 1, K): own_class_cosine and nearest_class_share of every
    position; accuracy (steps + 1,): the share of all target vectors with nearest_class = their
    class. classes, labels (N,): the problem's target_classes and target_labels.
    """
    setting: str
    t_cos: float
    lr: float
    reduction: str
    positions: torch.Tensor
    loss: torch.Tensor
    pulled: torch.Tensor
    matched: torch.Tensor
    selections: tuple[PairSelection, ...]
    nearest_class: torch.Tensor
    own_cos: torch.Tensor
    nearest: torch.Tensor
    accuracy: torch.Tensor
    classes: torch.Tensor
    labels: torch.Tensor

    @property
    def label(self) -> str:
        return SETTING_LABELS[self.setting]

    @property
    def steps(self) -> int:
        return self.loss.shape[0]

    def moved(self, step: int) -> torch.Tensor:
        """(N,) bool: which target vectors the update of `step` changed at all."""
        return (self.positions[step + 1] != self.positions[step]).any(dim=1)

    @property
    def dragged(self) -> float | None:
        """The share of the mislabelled target vectors (label != class) whose nearest source vector
        has their wrong label after the last step: the loss dragged them into the wrong class.
        None when no target vector is mislabelled."""
        wrong = self.labels != self.classes
        if not wrong.any():
            return None
        return (self.nearest_class[-1][wrong] == self.labels[wrong]).double().mean().item()

    def summary(self, digits: int = 3) -> dict:
        """The numbers a reader compares between settings (start = step 0, end = after the last step)."""
        cross = [s.cross_class.sum().item() / max(s.selected.sum().item(), 1) for s in self.selections]
        dragged = self.dragged
        return {
            "setting": self.setting, "t_cos": self.t_cos,
            "own_cos_start": round(self.own_cos[0].mean().item(), digits),
            "own_cos_end": round(self.own_cos[-1].mean().item(), digits),
            "own_cos_end_per_class": [round(v, digits) for v in self.own_cos[-1].tolist()],
            "nearest_start": round(self.accuracy[0].item(), digits),
            "nearest_end": round(self.accuracy[-1].item(), digits),
            "nearest_end_per_class": [round(v, digits) for v in self.nearest[-1].tolist()],
            "steps_unmatched_per_class": (~self.matched).sum(dim=0).tolist(),
            "cross_class_pairs": round(float(np.mean(cross)), digits),
            "never_pulled": round(1 - self.pulled.any(dim=0).double().mean().item(), digits),
            "mislabelled_dragged": None if dragged is None else round(dragged, digits),
        }


def _bank(problem: Problem, setting: str, dictionary: FeatureDictionary | None, step: int):
    """(what cosine_loss receives as bank, the bank as (vectors, true classes) for PairSelection)."""
    feats, classes = problem.images[step]
    k = problem.num_classes
    if setting == "method":
        dictionary.enqueue(feats, classes)                 # process A's S^c into D, before the loss (Fig. 2)
        held = [dictionary.get(c) for c in range(k)]
        flat = torch.cat(held), torch.arange(k).repeat_interleave(torch.tensor([len(h) for h in held]))
        return dictionary, flat
    if setting == "no_dictionary":
        return [feats[classes == c] for c in range(k)], (feats, classes)  # empty for an absent class
    return [feats], (feats, classes)                       # no_split: one bank, one class


def run(problem: Problem, setting: str = "method", t_cos: float = 0.6, lr: float = 2.0, reduction: str = "mean",
        impl: str = "auto") -> Run:
    """Plain gradient descent (no momentum: no gradient, no move) on the target vectors of
    `problem`, minimising cosuda.method.cosine_loss at threshold t_cos for problem.steps steps.

    At step t the source image t is processed as the setting says (SETTINGS; "method" enqueues
    it into a FeatureDictionary already holding problem.fill), the loss is evaluated on the
    current target vectors, and targets -= lr * gradient. The source side never moves.
    """
    if setting not in SETTINGS:
        raise ValueError(f"run: setting must be one of {SETTINGS}, got {setting!r}")
    if not -1.0 <= float(t_cos) <= 1.0:
        raise ValueError(f"run: T_cos must lie in [-1, 1], got {t_cos}")
    if not float(lr) > 0:
        raise ValueError(f"run: lr must be > 0, got {lr}")
    k, split = problem.num_classes, setting != "no_split"
    dictionary = None
    if setting == "method":
        dictionary = FeatureDictionary(k, problem.dict_size, 2, dtype=DTYPE)
        dictionary.enqueue(problem.fill, problem.fill_classes)       # "earlier iterations"
    labels = problem.target_labels
    loss_classes = labels if split else torch.zeros_like(labels)
    x = problem.target_init.clone()
    positions, losses, pulled, matched, selections = [x.clone()], [], [], [], []
    for t in range(problem.steps):
        bank, (bank_feats, bank_classes) = _bank(problem, setting, dictionary, t)
        selections.append(select_pairs(x, labels, bank_feats, bank_classes, t_cos, split, step=t,
                                       true_classes=problem.target_classes))
        matched.append(torch.bincount(bank_classes, minlength=k)[:k] > 0)
        leaf = x.clone().requires_grad_(True)
        loss = cosine_loss(leaf, loss_classes, bank, t_cos, k if split else 1, reduction, impl=impl)
        (grad,) = torch.autograd.grad(loss, leaf)
        x = x - lr * grad
        positions.append(x.clone())
        losses.append(loss.detach())
        pulled.append((grad != 0).any(dim=1))
    positions = torch.stack(positions)
    nearest_class = torch.stack([_nearest_source_class(problem, p) for p in positions])
    right = (nearest_class == problem.target_classes).to(DTYPE)
    nearest = torch.stack([right[:, problem.target_classes == c].mean(dim=1) for c in range(k)], dim=1)
    own = torch.stack([own_class_cosine(problem, p) for p in positions])
    return Run(setting, float(t_cos), float(lr), reduction, positions, torch.stack(losses), torch.stack(pulled),
               torch.stack(matched), tuple(selections), nearest_class, own, nearest, right.mean(dim=1),
               problem.target_classes.clone(), labels.clone())


def experiment(problem: Problem, settings: Sequence[str] = SETTINGS, **kwargs) -> dict[str, Run]:
    """{setting: run(problem, setting, **kwargs)}, the same problem (and source stream) for all."""
    return {s: run(problem, s, **kwargs) for s in settings}


SWEEP_KEYS = ("points_selected", "pairs_selected", "cross_class", "never_pulled", "own_cos_end", "nearest_end",
              "dragged")


def threshold_sweep(problem: Problem, thresholds: Sequence[float], settings: Sequence[str] = ("method", "no_split"),
                    **kwargs) -> dict[str, dict[str, np.ndarray]]:
    """For each setting and T_cos: what the threshold selects at step 0 and where the run ends.

    Returns {setting: {"thresholds": ..., key: one value per threshold}} with the keys
      points_selected  share of the target vectors with a selected pair at step 0
      pairs_selected   share of the compared pairs selected at step 0
      cross_class      share of the selected pairs at step 0 that join a target vector with a source
                       vector of another class than its own (its true class)
      never_pulled     share of the target vectors that no step moved (nothing ever selected)
      own_cos_end      mean over classes of own_class_cosine after the last step
      nearest_end      share of the target vectors whose nearest source vector has their class, at the end
      dragged          Run.dragged (NaN when no target vector is mislabelled)
    kwargs go to `run` (lr, reduction, impl).
    """
    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise ValueError("threshold_sweep: give at least one threshold")
    out = {}
    for setting in settings:
        rows = []
        for t in thresholds:
            r = run(problem, setting, t_cos=t, **kwargs)
            s0 = r.selections[0]
            n_sel = s0.selected.sum().item()
            summary = r.summary(digits=12)
            rows.append((s0.selected.any(dim=1).double().mean().item(), n_sel / max(s0.compared.sum().item(), 1),
                         s0.cross_class.sum().item() / max(n_sel, 1), summary["never_pulled"],
                         r.own_cos[-1].mean().item(), r.accuracy[-1].item(),
                         float("nan") if r.dragged is None else r.dragged))
        cols = np.array(rows, dtype=float).T
        out[setting] = {"thresholds": np.asarray(thresholds), **dict(zip(SWEEP_KEYS, cols))}
    return out


# --------------------------------------------------------------------------------------------
# Alignment measures (directions only, true classes)
# --------------------------------------------------------------------------------------------
def own_class_cosine(problem: Problem, feats: torch.Tensor) -> torch.Tensor:
    """(K,): for each class c, the mean cosine (eq. 9) of its target vectors (true class c) with the reference
    source vectors of class c. 1 would mean every target vector points like every source vector."""
    return torch.stack([class_similarity(feats[problem.target_classes == c],
                                         problem.reference[problem.reference_classes == c]).mean()
                        for c in range(problem.num_classes)])


def _nearest_source_class(problem: Problem, feats: torch.Tensor) -> torch.Tensor:
    """(N,): the class of each vector's most similar reference source vector (1-NN by cosine)."""
    return problem.reference_classes[class_similarity(feats, problem.reference).argmax(dim=1)]


def nearest_class_share(problem: Problem, feats: torch.Tensor) -> torch.Tensor:
    """(K,): for each class c, the share of its target vectors (true class c) whose most similar
    reference source vector (highest cosine, any class) has class c."""
    right = (_nearest_source_class(problem, feats) == problem.target_classes).to(DTYPE)
    return torch.stack([right[problem.target_classes == c].mean() for c in range(problem.num_classes)])


def relative_angles(problem: Problem, positions: torch.Tensor) -> torch.Tensor:
    """The angle (degrees, in (-180, 180]) of each target vector to its class's source direction:
    (..., N, 2) -> (..., N). 0 = aligned; the domain gap starts every class near `problem.gap`;
    a neighbouring class's direction lies at the difference of the class angles."""
    angle = torch.atan2(positions[..., 1], positions[..., 0]) - problem.centres[problem.target_classes]
    return torch.rad2deg(torch.remainder(angle + math.pi, 2 * math.pi) - math.pi)
