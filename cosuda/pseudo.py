"""Pseudo-labels for the target domain (paper eq. 4, supplementary A eq. 13).

A separately trained model predicts every target training image. For each class c the
threshold tau^c is the median confidence (maximum softmax probability) of the pixels
predicted as c, capped at 0.9. A pixel keeps its predicted class when its confidence is
above its class's threshold and becomes 255 (ignored) otherwise.

The reference code (BDL) keeps every pixel's confidence in memory to sort it: ~12 GB for
the 2,975 Cityscapes train images at 1024x512. Here each class has a fixed histogram of
confidences on [0, 1]; the median is read off it with linear interpolation inside the bin,
within one bin width (1/4096) of the exact median, in constant memory. Histograms of
several estimators (e.g. one per GPU) add up: `merge`.

    ThresholdEstimator      tau^c from histograms (supplementary A)
    pseudo_label            eq. 4 / eq. 13
    generate_pseudo_labels  the two passes over a dataset, written as 8-bit trainId PNGs
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .labels import CLASS_NAMES, IGNORE_INDEX

__all__ = ["ThresholdEstimator", "pseudo_label", "generate_pseudo_labels"]


class ThresholdEstimator:
    """Streaming class-wise thresholds tau^c (supplementary A) in bounded memory.

    `update(probs)` with softmax probabilities (B, C, H, W) any number of times, on any
    device; `compute()` -> float32 (C,) on the CPU: per class the median of the confidence of
    the pixels predicted as that class, capped at `cap`, 0 for a class never predicted.
    The state is a (C, bins) int64 histogram whatever the number of pixels seen.
    """

    def __init__(self, num_classes: int, cap: float = 0.9, bins: int = 4096):
        if num_classes < 1 or bins < 2:
            raise ValueError(f"ThresholdEstimator: need num_classes >= 1 and bins >= 2, got "
                             f"{num_classes}, {bins}")
        self.num_classes, self.cap, self.bins = num_classes, float(cap), bins
        self.hist = torch.zeros(num_classes, bins, dtype=torch.int64)

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        """Count the confidences of a batch of softmax probabilities (B, C, H, W)."""
        if probs.dim() != 4 or probs.shape[1] != self.num_classes:
            raise ValueError(f"ThresholdEstimator.update: probs must be (B, {self.num_classes}, H, W) "
                             f"softmax probabilities, got shape {tuple(probs.shape)}")
        if self.hist.device != probs.device:
            self.hist = self.hist.to(probs.device)
        confidence, predicted = probs.max(dim=1)               # P^t_max, C^t_max (eq. 13)
        bin_index = (confidence.float() * self.bins).long().clamp_(0, self.bins - 1)
        flat = (predicted * self.bins + bin_index).flatten()   # one histogram per predicted class
        self.hist += torch.bincount(flat, minlength=self.num_classes * self.bins).view_as(self.hist)

    @property
    def counts(self) -> torch.Tensor:
        """(C,) int64: pixels predicted as each class so far."""
        return self.hist.sum(dim=1).cpu()

    def compute(self) -> torch.Tensor:
        """tau^c: float32 (C,) on the CPU (median confidence per class, capped, 0 if never predicted)."""
        hist = self.hist.cpu().double()
        n = hist.sum(dim=1)
        rank = torch.ceil(n / 2).clamp_min(1)                  # the lower median, 1-based rank
        cumulative = hist.cumsum(dim=1)
        b = torch.searchsorted(cumulative, rank[:, None]).squeeze(1).clamp_(max=self.bins - 1)
        before = torch.where(b > 0, cumulative.gather(1, (b - 1).clamp_min(0)[:, None]).squeeze(1), 0.0)
        in_bin = hist.gather(1, b[:, None]).squeeze(1).clamp_min(1)
        # the values inside a bin are taken as evenly spread: the r-th of m sits at (r - 0.5) / m
        median = (b + (rank - before - 0.5) / in_bin) / self.bins
        tau = torch.where(n > 0, median.clamp(max=self.cap), 0.0)  # "if higher than 0.9, set 0.9"
        return tau.float()

    def merge(self, other: "ThresholdEstimator") -> "ThresholdEstimator":
        """Add another estimator's counts (e.g. another shard of the dataset); returns self."""
        if (other.num_classes, other.bins) != (self.num_classes, self.bins):
            raise ValueError(f"ThresholdEstimator.merge: histograms differ ({other.num_classes} classes x "
                             f"{other.bins} bins vs {self.num_classes} x {self.bins})")
        self.hist += other.hist.to(self.hist.device)
        return self

    def state_dict(self) -> dict:
        return {"num_classes": self.num_classes, "cap": self.cap, "bins": self.bins,
                "hist": self.hist.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        if (state["num_classes"], state["bins"]) != (self.num_classes, self.bins):
            raise ValueError(f"ThresholdEstimator.load_state_dict: saved {state['num_classes']} classes x "
                             f"{state['bins']} bins, this estimator has {self.num_classes} x {self.bins}")
        self.cap = float(state["cap"])
        self.hist = state["hist"].to(self.hist.device, torch.int64).clone()


def pseudo_label(probs: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Eq. 4 / 13: probs (B, C, H, W) -> int64 (B, H, W), the argmax class where its probability
    is strictly above that class's threshold, else 255."""
    if probs.dim() != 4:
        raise ValueError(f"pseudo_label: probs must be (B, C, H, W), got shape {tuple(probs.shape)}")
    thresholds = torch.as_tensor(thresholds, dtype=torch.float32, device=probs.device)
    if thresholds.shape != (probs.shape[1],):
        raise ValueError(f"pseudo_label: need one threshold per class ({probs.shape[1]}), got shape "
                         f"{tuple(thresholds.shape)}")
    confidence, predicted = probs.max(dim=1)                   # P^t_max, C^t_max
    keep = confidence.float() > thresholds[predicted]          # 1[P^t_max > tau^{C^t_max}]
    return torch.where(keep, predicted, torch.full_like(predicted, IGNORE_INDEX))


def _class_name(c: int, num_classes: int) -> str:
    return CLASS_NAMES[c] if num_classes == len(CLASS_NAMES) else str(c)


def _png_name(name: str) -> str:
    """The pseudo-label file of an image: the same relative path, as a PNG."""
    path = Path(name)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"generate_pseudo_labels: item name {name!r} must be a relative path inside the dataset")
    return str(path.with_suffix(".png"))


def generate_pseudo_labels(model, dataset, out_dir, device="cpu", size=None, batch_size: int = 1,
                           num_workers: int = 0, progress: bool = True, cap: float = 0.9,
                           reduce_histograms=None, write_summary: bool = True,
                           cache_bytes: int = 1 << 30) -> torch.Tensor:
    """Write pseudo-labels (supplementary A) for every item of `dataset` under `out_dir`.

    Pass 1 collects the class-wise thresholds from the softmax of the model's prediction,
    pass 2 thresholds it (eq. 4) and writes `out_dir/<item name>` (the image's relative path, e.g.
    `aachen/aachen_000000_000019_leftImg8bit.png`) as an 8-bit PNG of trainIds (255 = ignore),
    which `cosuda.data.Cityscapes(root, "train", pseudo_root=out_dir)` reads. Also writes
    `out_dir/thresholds.json` and returns the thresholds, float32 (C,).

    cache_bytes: pass 2 reuses pass 1's logits, (B, C, H/os, W/os) at the network's output
    stride, while all of them fit in this many bytes (the benchmark's 360 images at stride 16:
    5.5 MB), and otherwise predicts again, which keeps memory constant whatever the dataset's size (Cityscapes'
    2,975 at 1024x512 would need 1.9 GB). The written labels are the same either way; 0 always
    predicts twice.

    model: `features, logits = model(x)` with x (B, 3, H, W) RGB in [0, 1], and
    `model.upsample(logits, (H, W))`; it must already be on `device`. It runs in eval mode
    under inference_mode (its training mode is restored afterwards).
    dataset: items are dicts with `image` (3, H, W) and `name`.
    size: (W, H) at which labels are written; default the image's size (the prediction is
    upsampled bilinearly to it, as for evaluation).
    reduce_histograms: called with the (C, bins) int64 histogram after pass 1, to sum it in place
    over the ranks of a distributed run when each rank was given a shard of the target set:
    the thresholds are then those of the whole set. write_summary: False on all ranks but one.
    """
    out_dir = Path(out_dir)
    if len(dataset) == 0:
        raise ValueError("generate_pseudo_labels: the dataset is empty; check its root and split")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, pin_memory=torch.device(device).type == "cuda")
    was_training = model.training
    model.eval()

    def logits(desc: str):
        """(names, logits at the output stride, (H, W) to upsample to) per batch."""
        from .progress import tqdm
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            x = batch["image"].to(device, non_blocking=True)
            hw = tuple(x.shape[-2:]) if size is None else (int(size[1]), int(size[0]))
            with torch.inference_mode():
                yield batch["name"], model(x)[1].float(), hw

    def probabilities(low, hw):
        with torch.inference_mode():
            return F.softmax(model.upsample(low, hw), dim=1)  # P^t = G(x^t)

    try:
        estimator, cache, cached = None, [], 0
        for names, low, hw in logits("pseudo-labels 1/2: thresholds"):
            cached += low.numel() * low.element_size()
            if cache is not None and cached <= cache_bytes:
                cache.append((names, low, hw))
            else:
                cache = None  # over the budget: pass 2 predicts again
            probs = probabilities(low, hw)
            if estimator is None:
                estimator = ThresholdEstimator(probs.shape[1], cap=cap)
            estimator.update(probs)
        if reduce_histograms is not None:
            reduce_histograms(estimator.hist)
        thresholds = estimator.compute()
        num_classes = thresholds.shape[0]
        second = cache if cache is not None else logits("pseudo-labels 2/2: writing")
        for names, low, hw in second:
            labels = pseudo_label(probabilities(low, hw), thresholds).to(torch.uint8).cpu().numpy()
            for name, label in zip(names, labels):
                path = out_dir / _png_name(name)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(label)).save(path)  # 8-bit grey
    finally:
        model.train(was_training)

    counts = estimator.counts.tolist()
    summary = {
        "thresholds": {_class_name(c, num_classes): round(float(t), 6) for c, t in enumerate(thresholds)},
        "predicted_pixels": {_class_name(c, num_classes): int(n) for c, n in enumerate(counts)},
        "cap": cap, "bins": estimator.bins, "images": len(dataset),
    }
    if write_summary:
        (out_dir / "thresholds.json").write_text(json.dumps(summary, indent=2))
    return thresholds


def score_pseudo_labels(pseudo_root, dataset, num_classes: int = 19) -> dict:
    """How good written pseudo-labels are, against the target's ground truth (which the method
    never sees; the synthetic benchmark, like Cityscapes train, has it).

    dataset: target train items with `label` (H, W) at the pseudo-labels' size and `name`.
    Returns {"coverage": % of labelled pixels that carry a pseudo-label, "accuracy": % of
    those whose pseudo-label is right, "miou19": mIoU of the pseudo-labels over the pixels they
    cover, "per_class_precision": [C], "images": n}.
    """
    from .metrics import ConfusionMeter, mean_iou

    pseudo_root = Path(pseudo_root)
    meter = ConfusionMeter(num_classes)
    labelled = covered = 0
    for i in range(len(dataset)):
        item = dataset[i]
        label = item["label"]
        path = pseudo_root / _png_name(item["name"])
        if not path.is_file():
            raise FileNotFoundError(f"no pseudo-label {path} for {item['name']}: make them again")
        pseudo = torch.from_numpy(np.array(Image.open(path))).long()
        if pseudo.shape != label.shape:
            raise ValueError(f"{path}: pseudo-label {tuple(pseudo.shape)} vs label {tuple(label.shape)}")
        both = (label != 255) & (pseudo != 255)
        labelled += int((label != 255).sum())
        covered += int(both.sum())
        meter.update(pseudo[both], label[both])
    conf = meter.compute()
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.diag(conf) / conf.sum(axis=0)
    return {"coverage": 100.0 * covered / max(labelled, 1),
            "accuracy": 100.0 * float(np.trace(conf)) / max(covered, 1),
            "miou19": 100.0 * mean_iou(conf),
            "per_class_precision": [None if np.isnan(p) else round(100.0 * float(p), 2) for p in precision],
            "images": len(dataset)}
