"""Small computations that the lesson notebooks (03-06) display. Nothing here draws: the figures
are in `cosuda.plots.method`; the method itself is in `cosuda.method` and `cosuda.pseudo`.

    setup                      the set-up lessons 04-06 share: seeds, threads, lesson model, datasets
    class_id                   a class given by name or trainId -> trainId
    predict                    the lesson model on a few items: features f, logits p, probabilities P
    confidence_histograms      per class, the confidence of the pixels predicted as it (suppl. A)
    exact_thresholds           tau^c from every confidence, sorted (to check ThresholdEstimator)
    pseudo_label_quality       how much of each class survives eq. 4, and how often it is right
    unmatched_classes          target classes with no source vector to match (the unmatching problem)
    dictionary_bytes           memory of a full dictionary D
    class_similarity_matrices  M^c of eq. 9, per class, for display
    Selection, select          which elements of M^c exceed T_cos, and both readings of eq. 10
    selected_fraction          share of selected elements as a function of T_cos
    paper_scale_loss           the two readings of eq. 10 extrapolated to the paper's sizes
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from .method import class_similarity, cosine_loss_from_matrices

__all__ = ["setup", "LessonSetup", "class_id", "predict", "confidence_histograms", "exact_thresholds", "pseudo_label_quality",
           "unmatched_classes", "dictionary_bytes", "class_similarity_matrices", "Selection", "select",
           "selected_fraction", "paper_scale_loss", "PAPER_SCALE"]

# DeepLabV2 at the paper's sizes: a 1024x512 Cityscapes image gives a 129x65 feature map (output
# stride 8) = 8385 target vectors; dict-size 2500 (Table 5); ResNet-101 layer4 has k = 2048.
PAPER_SCALE = {"target_rows": 129 * 65, "dict_size": 2500, "dim": 2048, "num_classes": NUM_CLASSES}


def _class_name(c: int) -> str:
    return CLASS_NAMES[c] if 0 <= c < len(CLASS_NAMES) else str(c)


def class_id(value) -> int:
    """A class given by its trainId (int) or its name ("car", "Traffic light") -> the trainId.

    Raises ValueError naming the valid names for anything else (exercise answers use this).
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < NUM_CLASSES:
        return int(value)
    if torch.is_tensor(value) and value.numel() == 1 and not value.is_floating_point():
        return class_id(int(value))
    if isinstance(value, str) and value.strip().lower() in CLASS_NAMES:
        return CLASS_NAMES.index(value.strip().lower())
    raise ValueError(f"{value!r} is not a class: give a trainId 0-{NUM_CLASSES - 1} or one of the names "
                     f"{', '.join(CLASS_NAMES)}")


class LessonSetup(NamedTuple):
    model: torch.nn.Module  # the shared source-only lesson model G = H o F, in eval mode
    cfg: Any  # its cosuda.config.RunConfig (sizes, T_cos, backbone, ...)
    source_set: Any  # the benchmark's GTA5-like training images at cfg.source_size
    target_set: Any  # the Cityscapes-like training images at cfg.target_size (labels for checking only)


def setup(source_run: str | Path, source_iterations: int = 150, seed: int = 0, threads: int = 2) -> LessonSetup:
    """What lessons 04-06 do before their first picture: seed torch with `seed`, use at most
    `threads` CPU threads, load the shared source-only lesson model from `source_run` (relative to
    COSUDA_HOME; trained there for `source_iterations` if it holds no finished run) and open the
    run's source and target training sets. Unpack it: `model, cfg, source_set, target_set = setup(...)`."""
    from .data import GTA5, Cityscapes
    from .paths import resolve_path
    from .runs import lesson_source_model
    from .train import resolve_paths

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(threads, torch.get_num_threads())))
    model, cfg = lesson_source_model(resolve_path(source_run), iterations=source_iterations)
    paths = resolve_paths(cfg)
    return LessonSetup(model, cfg, GTA5(paths.source, size=tuple(cfg.source_size)),
                       Cityscapes(paths.target, "train", size=tuple(cfg.target_size)))


# --------------------------------------------------------------------------------------------
# Running the lesson model
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model, dataset, indices: Sequence[int], batch_size: int = 8, with_probs: bool = False,
            device: str | torch.device = "cpu") -> dict:
    """The model on `dataset[i]` for i in `indices`, in eval mode, without gradients.

    Returns a dict of CPU tensors: "image" (N, 3, H, W), "features" f (N, k, h, w) (the first
    feature map), "logits" p (N, C, h, w), "label" (N, H, W) when the items have labels,
    "probs" P = softmax(I_bilinear(p)) (N, C, H, W) at the image size when `with_probs`
    (eq. 5, as the pseudo-labels use it), and "name" (list of N str).
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("predict: `indices` is empty; pass at least one dataset index")
    items = [dataset[i] for i in indices]
    out = {"image": torch.stack([it["image"] for it in items]), "name": [it["name"] for it in items]}
    if all("label" in it for it in items):
        out["label"] = torch.stack([it["label"] for it in items])
    was_training = model.training
    model.eval()
    features, logits, probs = [], [], []
    try:
        for start in range(0, len(items), batch_size):
            x = out["image"][start:start + batch_size].to(device)
            f, p = model(x)
            features.append(f[0].float().cpu())
            logits.append(p.float().cpu())
            if with_probs:
                probs.append(F.softmax(model.upsample(p.float(), x.shape[-2:]), dim=1).cpu())
    finally:
        model.train(was_training)
    out["features"], out["logits"] = torch.cat(features), torch.cat(logits)
    if with_probs:
        out["probs"] = torch.cat(probs)
    return out


# --------------------------------------------------------------------------------------------
# Pseudo-labels (eq. 4, supplementary A)
# --------------------------------------------------------------------------------------------
def confidence_histograms(probs: torch.Tensor, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Per class c, a histogram of P^t_max over the pixels whose argmax C^t_max is c (eq. 13).

    probs (B, C, H, W) softmax probabilities. Returns counts int64 (C, bins) and the bin edges
    float64 (bins + 1,) on [0, 1].
    """
    if probs.dim() != 4:
        raise ValueError(f"confidence_histograms: probs must be (B, C, H, W), got {tuple(probs.shape)}")
    confidence, predicted = probs.max(dim=1)
    num_classes = probs.shape[1]
    index = (confidence.float() * bins).long().clamp_(0, bins - 1)
    counts = torch.bincount((predicted * bins + index).flatten(), minlength=num_classes * bins)
    return counts.view(num_classes, bins).cpu().numpy(), np.linspace(0.0, 1.0, bins + 1)


def exact_thresholds(confidence: torch.Tensor, predicted: torch.Tensor, num_classes: int,
                     cap: float = 0.9) -> torch.Tensor:
    """tau^c by sorting (supplementary A): the median confidence of the pixels predicted as c,
    set to `cap` if higher, 0 for a class never predicted. float32 (num_classes,).

    confidence P^t_max and predicted C^t_max: tensors of the same shape (any). The median is the
    lower one of an even count (`torch.median`), like `cosuda.pseudo.ThresholdEstimator`.
    """
    if confidence.shape != predicted.shape:
        raise ValueError(f"exact_thresholds: confidence {tuple(confidence.shape)} and predicted "
                         f"{tuple(predicted.shape)} must have the same shape")
    confidence, predicted = confidence.flatten().float(), predicted.flatten()
    tau = torch.zeros(num_classes)
    for c in range(num_classes):
        values = confidence[predicted == c]
        if values.numel():
            tau[c] = min(float(values.median()), cap)  # "if higher than 0.9, we set tau^c as 0.9"
    return tau


def _as_long(a) -> torch.Tensor:
    """An integer map (tensor or array) as a flat int64 CPU tensor."""
    a = a.detach().cpu() if torch.is_tensor(a) else torch.from_numpy(np.ascontiguousarray(a))
    return a.long().flatten()


def pseudo_label_quality(predicted, pseudo, label, num_classes: int = NUM_CLASSES) -> dict:
    """How eq. 4 filters a prediction, measured against ground truth (which real UDA lacks).

    predicted C^t_max, pseudo y_hat^t (255 = ignored) and label y^t (255 = unlabelled): integer
    tensors or arrays of one shape. Returns numpy arrays (num_classes,) unless noted:
      "predicted": pixels predicted as c;  "kept": pixels the pseudo-label keeps as c;
      "kept_share": kept / predicted (NaN where c is never predicted);
      "precision_before" / "precision_after": share of the labelled pixels predicted as c (kept
      as c) whose ground truth is c (NaN where there are none);
      "kept_total" (float): share of all pixels with a pseudo-label;
      "accuracy_before" / "accuracy_after" (float): pixel accuracy of the prediction on all
      labelled pixels, and of the pseudo-label on the labelled pixels it keeps.
    """
    predicted, pseudo, label = (_as_long(a) for a in (predicted, pseudo, label))
    if not predicted.shape == pseudo.shape == label.shape:
        raise ValueError(f"pseudo_label_quality: predicted, pseudo and label must have the same number of "
                         f"pixels, got {predicted.numel()}, {pseudo.numel()}, {label.numel()}")
    labelled = label != IGNORE_INDEX
    kept = pseudo != IGNORE_INDEX

    def per_class(values):  # pixels per class among `values` (class ids, no 255)
        return torch.bincount(values, minlength=num_classes)[:num_classes].double().numpy()

    n_predicted = per_class(predicted)
    n_kept = per_class(pseudo[kept])
    right_before = per_class(predicted[labelled & (predicted == label)])
    right_after = per_class(pseudo[labelled & kept & (pseudo == label)])
    judged_before = per_class(predicted[labelled])
    judged_after = per_class(pseudo[labelled & kept])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = lambda a, b: np.where(b > 0, a / np.maximum(b, 1), np.nan)  # noqa: E731
        return {
            "predicted": n_predicted.astype(np.int64), "kept": n_kept.astype(np.int64),
            "kept_share": ratio(n_kept, n_predicted),
            "precision_before": ratio(right_before, judged_before),
            "precision_after": ratio(right_after, judged_after),
            "kept_total": float(kept.double().mean()),
            "accuracy_before": float(right_before.sum() / max(judged_before.sum(), 1)),
            "accuracy_after": float(right_after.sum() / max(judged_after.sum(), 1)),
        }


# --------------------------------------------------------------------------------------------
# Processes A/B and the dictionary (section 3.2)
# --------------------------------------------------------------------------------------------
def unmatched_classes(target_classes: torch.Tensor, source_classes: torch.Tensor | None = None,
                      num_classes: int = NUM_CLASSES, bank_counts: torch.Tensor | None = None) -> list[int]:
    """The classes of the target vectors (process B) that have nothing to be matched with.

    Without a dictionary the candidates are this iteration's source vectors: pass
    `source_classes` (process A's classes). With a dictionary pass `bank_counts`
    (`FeatureDictionary.counts`, vectors held per class). Returns sorted class ids.
    """
    if (source_classes is None) == (bank_counts is None):
        raise ValueError("unmatched_classes: pass exactly one of source_classes (no dictionary) or "
                         "bank_counts (FeatureDictionary.counts)")
    in_target = torch.bincount(target_classes.flatten().long(), minlength=num_classes)[:num_classes] > 0
    if bank_counts is None:
        available = torch.bincount(source_classes.flatten().long(), minlength=num_classes)[:num_classes] > 0
    else:
        available = torch.as_tensor(bank_counts).cpu()[:num_classes] > 0
    return [int(c) for c in torch.nonzero(in_target.cpu() & ~available.cpu()).flatten()]


def dictionary_bytes(num_classes: int, size: int, dim: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of the vectors of a full dictionary: num_classes x dict-size x k elements."""
    return num_classes * size * dim * torch.empty(0, dtype=dtype).element_size()


# --------------------------------------------------------------------------------------------
# The cosine similarity loss (eq. 9-10)
# --------------------------------------------------------------------------------------------
def class_similarity_matrices(feats: torch.Tensor, classes: torch.Tensor, bank, num_classes: int = NUM_CLASSES,
                              only: Sequence[int] | None = None) -> dict[int, torch.Tensor]:
    """M^c (eq. 9) for display: {c: (N_c, n_c) float32 cosine similarities} between the target
    vectors T^c (rows of feats (N, k) with classes (N,) == c) and the bank vectors D^c.

    bank: a `cosuda.method.FeatureDictionary` or a sequence of num_classes tensors (n_c, k).
    Only classes with at least one target row and one bank vector appear (restricted to
    `only` if given). Detached: this is for looking, `cosine_loss` is for training.
    """
    out = {}
    for c in (range(num_classes) if only is None else only):
        t = feats[classes == c].detach()
        d = bank.get(c) if hasattr(bank, "get") else bank[c]
        if t.shape[0] and d.shape[0]:
            out[int(c)] = class_similarity(t, d).float()  # eq. 9
    return out


@dataclass
class Selection:
    """The elements of each M^c above T_cos and the loss of eq. 10 in both readings."""
    t_cos: float
    num_classes: int
    classes: list[int] = field(default_factory=list)   # classes with a matrix
    rows: list[int] = field(default_factory=list)      # N_c, target vectors of the class
    cols: list[int] = field(default_factory=list)      # n_c, bank vectors of the class
    selected: list[int] = field(default_factory=list)  # elements of M^c > T_cos
    loss_sum: float = 0.0                              # (1/C) sum_c sum_selected (1 - M), eq. 10
    loss_mean: float = 0.0                             # mean over classes of mean_selected (1 - M)

    @property
    def total_selected(self) -> int:
        return int(sum(self.selected))

    @property
    def total_elements(self) -> int:
        return int(sum(r * c for r, c in zip(self.rows, self.cols)))

    def per_class(self) -> dict[str, int]:
        """{class name: selected elements}."""
        return {_class_name(c): n for c, n in zip(self.classes, self.selected)}

    def __repr__(self) -> str:
        share = 100.0 * self.total_selected / max(self.total_elements, 1)
        return (f"T_cos = {self.t_cos:.2f}: {self.total_selected} of {self.total_elements} similarity "
                f"elements selected ({share:.1f}%); L_cos = {self.loss_mean:.4f} (mean), "
                f"{self.loss_sum:.4g} (sum)")


def select(matrices: Mapping[int, torch.Tensor], t_cos: float, num_classes: int = NUM_CLASSES) -> Selection:
    """Eq. 10 from the matrices M^c: selected = M^c > T_cos; "sum" = (1/C) sum_c sum_selected (1 - M)
    (the equation read literally), "mean" = the mean over classes with a selected element of
    the mean of (1 - M) over them (0 when nothing is selected): `cosuda.method.cosine_loss_from_matrices`
    in float64, the same values as `cosuda.method.cosine_loss` with reduction "sum" / "mean"."""
    result = Selection(float(t_cos), num_classes)
    for c, m in sorted(matrices.items()):
        result.classes.append(int(c))
        result.rows.append(int(m.shape[0]))
        result.cols.append(int(m.shape[1]))
        result.selected.append(int((m > t_cos).sum()))
    exact = [m.detach().double() for _, m in sorted(matrices.items())]
    result.loss_sum = float(cosine_loss_from_matrices(exact, t_cos, num_classes, "sum"))  # eq. 10
    result.loss_mean = float(cosine_loss_from_matrices(exact, t_cos, num_classes, "mean"))
    return result


def selected_fraction(matrices: Mapping[int, torch.Tensor], thresholds: Sequence[float]) -> dict[int, np.ndarray]:
    """{c: (len(thresholds),) share of the elements of M^c above each T_cos}, plus key -1 for all
    classes together."""
    out, totals = {}, np.zeros(len(thresholds))
    n_all = sum(m.numel() for m in matrices.values())
    for c, m in sorted(matrices.items()):
        counts = np.array([float((m > t).sum()) for t in thresholds])
        out[int(c)] = counts / max(m.numel(), 1)
        totals += counts
    out[-1] = totals / max(n_all, 1)
    return out


def paper_scale_loss(selected_share: float, mean_distance: float, target_rows: int = PAPER_SCALE["target_rows"],
                     dict_size: int = PAPER_SCALE["dict_size"], num_classes: int = NUM_CLASSES) -> dict:
    """Both readings of eq. 10 for one target image at the paper's sizes, if a share
    `selected_share` of the similarity elements is selected, at a mean distance 1 - M of
    `mean_distance`, and every D^c is full.

    Each target row meets the dict-size vectors of its class: target_rows x dict_size elements,
    so "sum" ~ (1/C) x target_rows x dict_size x selected_share x mean_distance, while "mean"
    ~ mean_distance whatever the sizes. Returns {"elements", "selected", "sum", "mean"}.
    """
    elements = target_rows * dict_size
    selected = elements * selected_share
    return {"elements": elements, "selected": selected, "sum": selected * mean_distance / num_classes,
            "mean": mean_distance if selected > 0 else 0.0}
