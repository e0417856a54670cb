"""The paper's hypothesis, measured: are target features near source features of their own class?

The cosine loss (eq. 9-10) pulls each target vector towards the source vectors of its class in
the dictionary. If that works, after adaptation (1) a target pixel's nearest source vector, by
cosine, has the pixel's true class more often, and (2) target vectors are more similar to
source vectors of their own class than to those of other classes. No UDA code base logs this;
the engine does at every evaluation, for every variant, so that the variants can be compared:

    nn_accuracy   % of target val pixels whose nearest source vector (max cosine) has their true class
    cos_same      mean cosine between a target vector and the source vectors of its true class
    cos_other     mean cosine between a target vector and the source vectors of the other classes
    cos_gap       cos_same - cos_other

The source vectors are a *probe dictionary*: process A (eq. 6) on a fixed set of source images
with the current model, at most `per_class` vectors per class -- what the method's dictionary
would hold at that moment, built the same way for variants that have no dictionary (only SSL,
source-only), so that every variant is measured against the same kind of reference.
Target pixels are the val images' feature-map pixels with their true label (nearest-resized to
the feature map, as in eq. 6); ignore-labelled pixels are skipped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .method import process_a, resize_nearest

__all__ = ["probe_dictionary", "AlignmentMeter", "feature_sample", "pca_2d"]


@torch.inference_mode()
def probe_dictionary(model, images, labels, per_class: int = 100, seed: int = 0,
                     num_classes: int = 19) -> tuple[torch.Tensor, torch.Tensor]:
    """Process A on source images with the current model; at most `per_class` rows per class.

    images (B, 3, H, W), labels (B, H, W) on the model's device (a fixed probe set).
    Returns unit-norm feats (N, k) float32 and classes (N,) int64. Rows of a class with more
    than `per_class` vectors are subsampled with a fixed generator (same rows for a same model).
    """
    feats, classes = [], []
    for i in range(images.shape[0]):
        features, logits = model(images[i:i + 1])
        f, c = process_a(features[0].float(), logits.float(), labels[i:i + 1])
        feats.append(f)
        classes.append(c)
    feats, classes = torch.cat(feats), torch.cat(classes)
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(num_classes):
        rows = (classes == c).nonzero().squeeze(1).cpu()
        if rows.numel() > per_class:
            rows = rows[torch.randperm(rows.numel(), generator=g)[:per_class]]
        keep.append(rows)
    keep = torch.cat(keep).to(feats.device)
    return F.normalize(feats[keep], dim=1), classes[keep]


class AlignmentMeter:
    """Accumulates the alignment measures over target val batches (see the module docstring).

    `update(features (B, k, h, w), labels (B, H, W))`, then `compute()` -> dict of floats
    (NaN when nothing was measured). `bank` = (unit feats (N, k), classes (N,)) of
    `probe_dictionary`.
    """

    def __init__(self, bank: tuple[torch.Tensor, torch.Tensor], num_classes: int = 19):
        self.feats, self.classes = bank
        self.num_classes = num_classes
        onehot = F.one_hot(self.classes, num_classes).float()          # (N, C)
        self.counts = onehot.sum(0)                                     # (C,)
        self.mean_op = onehot / self.counts.clamp(min=1)                # sims @ mean_op: per-class mean
        self.pixels = 0
        self.nn_correct = 0
        self.same_sum = self.other_sum = 0.0
        self.same_n = self.other_n = 0

    @torch.inference_mode()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if self.feats.shape[0] == 0:
            return
        h, w = features.shape[-2:]
        y = resize_nearest(labels, (h, w)).reshape(-1)
        t = F.normalize(features.float().permute(0, 2, 3, 1).reshape(-1, features.shape[1]), dim=1)
        valid = y != 255
        t, y = t[valid], y[valid]
        if y.numel() == 0:
            return
        sims = t @ self.feats.to(t.device).T                            # (P, N) cosines
        self.nn_correct += int((self.classes.to(t.device)[sims.argmax(1)] == y).sum())
        self.pixels += y.numel()
        per_class = sims @ self.mean_op.to(t.device)                    # (P, C) mean cosine per class
        present = (self.counts > 0).to(t.device)
        own = present[y]                                                # the pixel's class is in the bank
        same = per_class.gather(1, y[:, None]).squeeze(1)
        self.same_sum += float(same[own].sum())
        self.same_n += int(own.sum())
        others = present[None, :].expand_as(per_class).clone()
        others[torch.arange(y.numel(), device=y.device), y] = False
        n_others = others.sum(1)
        has = n_others > 0
        other = (per_class * others).sum(1)[has] / n_others[has]
        self.other_sum += float(other.sum())
        self.other_n += int(has.sum())

    def compute(self) -> dict[str, float]:
        nan = float("nan")
        same = self.same_sum / self.same_n if self.same_n else nan
        other = self.other_sum / self.other_n if self.other_n else nan
        return {"nn_accuracy": 100.0 * self.nn_correct / self.pixels if self.pixels else nan,
                "cos_same": same, "cos_other": other, "cos_gap": same - other}


@torch.inference_mode()
def feature_sample(model, datasets: dict, classes, per_class: int = 150, items: int = 20, seed: int = 0,
                   device="cpu") -> dict:
    """Feature vectors of a few classes from each dataset, for a 2-D picture.

    datasets: {"source": dataset, "target": dataset} with `image` and `label`; the first `items`
    images of each are run through `model`, labels nearest-resized to the feature map, and at
    most `per_class` vectors per class and dataset are drawn with a fixed generator.
    Returns {"feats": float32 (N, k), "classes": int64 (N,), "domain": list of N names}.
    """
    g = torch.Generator().manual_seed(seed)
    feats, labels, domains = [], [], []
    model.eval()
    for name, dataset in datasets.items():
        f_all, y_all = [], []
        for i in range(min(items, len(dataset))):
            item = dataset[i]
            features, _ = model(item["image"][None].to(device))
            f = features[0].float()
            y = resize_nearest(item["label"][None].to(device), f.shape[-2:]).reshape(-1)
            f_all.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]))
            y_all.append(y)
        f_all, y_all = torch.cat(f_all), torch.cat(y_all)
        for c in classes:
            rows = (y_all == c).nonzero().squeeze(1).cpu()
            rows = rows[torch.randperm(rows.numel(), generator=g)[:per_class]]
            feats.append(f_all[rows.to(f_all.device)].cpu())
            labels.append(torch.full((rows.numel(),), c, dtype=torch.long))
            domains += [name] * rows.numel()
    return {"feats": torch.cat(feats), "classes": torch.cat(labels), "domain": domains}


def pca_2d(feats: torch.Tensor) -> torch.Tensor:
    """(N, k) -> (N, 2): the rows, L2-normalised (the cosine loss sees directions), projected on
    their first two principal components."""
    x = F.normalize(feats.double(), dim=1)
    x = x - x.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:2].T).float()
