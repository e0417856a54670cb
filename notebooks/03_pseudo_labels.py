# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 — Pseudo-labels: which target pixels can we trust?
#
# The target domain has no labels. Self-training (the paper's eq. 2) makes its own: a network
# trained on the source predicts every target image, and the pixels it is *confident* about
# become labels for training on the target. The question of this lesson: **how confident is
# confident enough?**
#
# The paper follows BDL (supplementary A, eq. 4 / eq. 13): for each class $c$, the threshold
# $\tau^c$ is the **median** confidence of the pixels predicted as $c$, **capped at 0.9**. A pixel
# keeps its predicted class $C^t_{max}$ when its confidence $P^t_{max}$ is above $\tau^{C^t_{max}}$, and is
# ignored (255) otherwise:
#
# $$\hat y^t = \mathbb 1_{[P^t_{max} > \tau^{C^t_{max}}]} \odot C^t_{max}.$$
#
# We look at the confidence histograms with the thresholds drawn on them, at the maps before
# and after filtering, and measure how much of each image survives and how often what survives
# is right. Then we write the pseudo-labels of the whole target train set for the next lessons.

# %% tags=["parameters"]
source_run: str = "runs/lessons/source-only"  # the shared source-only lesson model (trained there if missing)
source_iterations: int = 150  # its training iterations when it must be trained (`cosuda.workshop prepare` trains 1200)
pseudo_root: str = "runs/lessons/pseudo_labels"  # where the pseudo-labels of the whole target train set go
run_dir: str = "runs/lessons/03_pseudo_labels"  # this lesson's outputs (summary.json)
max_images: int = 40  # target train images for the histograms and quality measures (spread evenly)
n_examples: int = 3  # rows of before/after maps
cap: float = 0.9  # the cap on tau^c (supplementary A)
batch_size: int = 16  # images per forward pass
seed: int = 0  # torch seed (the lesson itself is deterministic)

# %%
import cosuda  # first: it sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads once, when torch loads it
import json

import numpy as np
import torch
from IPython.display import Markdown, display

from cosuda import lessons, pseudo
from cosuda.config import REPO_ROOT
from cosuda.data import Cityscapes
from cosuda.labels import CLASS_NAMES, NUM_CLASSES
from cosuda.plots import method as mplots
from cosuda.runs import lesson_source_model
from cosuda.train import resolve_paths

torch.manual_seed(seed)
torch.set_num_threads(min(2, torch.get_num_threads()))
if max_images < 2 or n_examples < 1 or not 0 < cap <= 1:
    raise ValueError(f"need max_images >= 2, n_examples >= 1 and 0 < cap <= 1; got {max_images}, {n_examples}, {cap}")

model, cfg = lesson_source_model(REPO_ROOT / source_run, iterations=source_iterations)
target_root = resolve_paths(cfg).target
train_set = Cityscapes(target_root, "train", size=tuple(cfg.target_size))
source_metrics = json.loads((REPO_ROOT / source_run / "metrics.json").read_text())
print(f"lesson model: {cfg.arch}-{cfg.backbone} trained on {cfg.source} for {source_metrics['iteration']} "
      f"iterations, target val mIoU19 {source_metrics['miou19']:.1f}%")
print(f"target train set: {len(train_set)} images at {cfg.target_size[0]}x{cfg.target_size[1]}")

# %% [markdown]
# Which lesson model you have decides the numbers below. Without `python -m cosuda.workshop
# prepare`, the first lesson to need it trains one for `source_iterations` = 150 iterations;
# `prepare` trains the synthetic pipeline's full stage 1 (1,200 iterations). The line above
# names the model this run uses; every sentence below that quotes a number is printed from it.
#
# ## How confident is the model, class by class?
#
# We predict `max_images` target images and keep, for every pixel, the softmax probabilities
# $P^t = \mathrm{softmax}(I_{bilinear}(p^t))$ at the image's size (eq. 5). Each panel below is one
# class: the histogram of $P^t_{max}$ over the pixels whose argmax is that class. The solid line is
# $\tau^c$ from `cosuda.pseudo.ThresholdEstimator` (histograms in constant memory, supplementary A);
# everything left of it (hatched) will be ignored; what stays (solid, in the class colour) becomes
# the pseudo-label.

# %%
indices = np.linspace(0, len(train_set) - 1, min(max_images, len(train_set))).round().astype(int)
out = lessons.predict(model, train_set, indices, batch_size=batch_size, with_probs=True)
probs, gt = out["probs"], out["label"]
confidence, predicted = probs.max(dim=1)  # P^t_max, C^t_max (eq. 13)

estimator = pseudo.ThresholdEstimator(NUM_CLASSES, cap=cap)
estimator.update(probs)
tau = estimator.compute()  # tau^c: median, capped (supplementary A)
medians = lessons.exact_thresholds(confidence, predicted, NUM_CLASSES, cap=1.0)  # uncapped, by sorting
hist, edges = lessons.confidence_histograms(probs)
# Figure: Confidence of the pixels predicted as each class, with the class-wise threshold tau^c.
fig = mplots.confidence_histograms(hist, edges, tau, cap=cap, medians=medians);

# %%
# How the medians differ between classes, read from this model's histograms.
present = [c for c in range(NUM_CLASSES) if estimator.counts[c] > 0]
by_median = sorted(present, key=lambda c: float(medians[c]))
above_cap = [CLASS_NAMES[c] for c in by_median[::-1] if medians[c] > cap]
lowest = by_median[:3]
display(Markdown(
    f"Medians of the confidence per predicted class range from {float(medians[by_median[0]]):.2f} "
    f"({CLASS_NAMES[by_median[0]]}) to {float(medians[by_median[-1]]):.2f} ({CLASS_NAMES[by_median[-1]]}); "
    "the lowest: " + ", ".join(f"{CLASS_NAMES[c]} {float(medians[c]):.2f}" for c in lowest) + ". "
    + (f"Above the cap {cap:g}: {', '.join(above_cap)}, where the cap lets more than half through."
       if above_cap else f"No class has its median above the cap {cap:g}: here the cap changes nothing.")))

# %% [markdown]
# When confidence differs between classes, a single global threshold keeps the confident
# classes and little of the others. And the median is a *rank*: whatever the scale, it keeps
# the more confident half of each predicted class; the cap only matters for classes whose
# median is above it, where it lets more than half through.
#
# The estimator's medians come from 4096-bin histograms; sorting every confidence gives the same
# numbers within a bin:

# %%
exact = lessons.exact_thresholds(confidence, predicted, NUM_CLASSES, cap=cap)
share = 100 * estimator.counts.double() / estimator.counts.sum()
print("class            pixels(%)  median  tau (histogram)  tau (sorted)")
for c in range(NUM_CLASSES):
    if estimator.counts[c] > 0:
        print(f"{CLASS_NAMES[c]:16s} {share[c]:8.1f}  {medians[c]:6.3f}  {tau[c]:15.3f}  {exact[c]:12.3f}")
print(f"largest difference histogram vs sorting: {(tau - exact).abs().max():.1e}")

# %% [markdown]
# ## Why one threshold per class?
#
# Compare what survives with the class-wise median against one threshold of 0.9 for every class
# (the cap alone):

# %%
class_wise = pseudo.pseudo_label(probs, tau)
global_09 = pseudo.pseudo_label(probs, torch.full((NUM_CLASSES,), cap))
kept = {"class-wise tau^c (eq. 4)": lessons.pseudo_label_quality(predicted, class_wise, gt)["kept_share"] * 100,
        f"one threshold {cap:g}": lessons.pseudo_label_quality(predicted, global_09, gt)["kept_share"] * 100}
# Figure: Share of each class's predicted pixels kept by class-wise thresholds vs one global threshold.
fig = mplots.class_bars(kept, ylabel="predicted pixels kept (%)",
                        title="class-wise thresholds keep every class; a global one keeps mostly the easy ones");

# %%
# What the global threshold keeps, class by class, from the bars above.
g_kept = lessons.pseudo_label_quality(predicted, global_09, gt)["kept"]
g_mix = 100 * g_kept / max(g_kept.sum(), 1)  # each class's share of the pixels the global threshold keeps
top_g = [c for c in np.argsort(g_mix)[::-1] if g_mix[c] > 0][:3]
none_g = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if estimator.counts[c] > 0 and g_kept[c] == 0]
display(Markdown(
    f"With one threshold {cap:g}, the kept pixels are "
    + ", ".join(f"{CLASS_NAMES[c]} {g_mix[c]:.0f} %" for c in top_g)
    + (f"; {len(none_g)} predicted classes keep no pixel at all ({', '.join(none_g)})." if none_g
       else "; every predicted class keeps some pixels.")))

# %% [markdown]
# Self-training on the global version would see mostly the classes that lead this list, and
# learn to predict them even more often. The class-wise median is a simple form of class
# balancing.
#
# ## Before and after
#
# Prediction and pseudo-label side by side with the ground truth (black = ignored). The filter
# removes mostly boundaries and the confusable regions.

# %%
rows = np.linspace(0, len(indices) - 1, min(n_examples, len(indices))).round().astype(int)
# Figure: Target images, their ground truth, the source-only prediction and the pseudo-label (black = ignored).
fig = mplots.label_rows([out["image"][i] for i in rows],
                        {"ground truth (unseen in UDA)": [gt[i] for i in rows],
                         "prediction C^t_max": [predicted[i] for i in rows],
                         "pseudo-label (eq. 4)": [class_wise[i] for i in rows]});

# %% [markdown]
# ## How much survives, and how often is it right?
#
# The synthetic target has labels, so we can score the pseudo-labels. **Real UDA would not have
# them**: this measurement is a privilege of the synthetic benchmark (in the paper, the quality
# of the pseudo-labels shows only indirectly, through the final mIoU).

# %%
quality = lessons.pseudo_label_quality(predicted, class_wise, gt)
# Figure: Share of predicted pixels kept per class, and precision against ground truth before and after filtering.
fig = mplots.pseudo_label_quality(quality);

# %%
print(f"pixels with a pseudo-label: {100 * quality['kept_total']:.1f}%")
print(f"pixel accuracy of the prediction: {100 * quality['accuracy_before']:.1f}%, "
      f"of the kept pseudo-labels: {100 * quality['accuracy_after']:.1f}%")

# %%
# The measurement in words: how much survives, whether filtering raised the accuracy, and the
# predicted class that is wrong most often (the largest share of all pixels predicted wrongly).
before, after = 100 * quality["accuracy_before"], 100 * quality["accuracy_after"]
direction = ("more accurate than" if after > before + 1 else "less accurate than" if after < before - 1
             else "about as accurate as")
n_pred = quality["predicted"].astype(float)
wrong = n_pred * (1 - np.nan_to_num(quality["precision_before"], nan=1.0))
worst = int(np.argmax(wrong))
display(Markdown(
    f"{100 * quality['kept_total']:.0f} % of the pixels get a pseudo-label (the median keeps half of each class; "
    "classes above the cap keep more), and the kept pseudo-labels are "
    f"{direction} the raw prediction: pixel accuracy {before:.0f} → {after:.0f} %. "
    f"The class wrong most often is *{CLASS_NAMES[worst]}*: {100 * n_pred[worst] / n_pred.sum():.0f} % of the pixels "
    f"are predicted as it, {100 * float(quality['precision_before'][worst]):.0f} % of those rightly, and "
    f"{100 * float(quality['kept_share'][worst]):.0f} % of them survive the filter."))

# %% [markdown]
# A class the model confuses systematically (every pixel of one object predicted as the wrong
# class with some confidence) stays wrong after filtering. That noise is what the target
# segmentation loss trains on, and part of what the cosine similarity loss of the next lessons
# works against.
#
# ## The pseudo-labels of the whole target train set
#
# `cosuda.pseudo.generate_pseudo_labels` makes two passes over the dataset: the first collects the
# thresholds over *all* images, the second writes one 8-bit PNG of trainIds per image (255 =
# ignore) under `pseudo_root`, plus `thresholds.json`. The second pass reuses the first pass's
# low-resolution logits while they fit in `cache_bytes` (1 GiB by default) and otherwise
# predicts again, so memory stays bounded whatever the size of the dataset (the reference code
# keeps every confidence in memory: ~12 GB for Cityscapes).

# %%
# What the cache needs here: one float32 low-resolution logit map per target train image.
with torch.inference_mode():
    _, low_res = model(train_set[0]["image"][None])
print(f"the cache of this benchmark: {len(train_set)} images x {tuple(low_res.shape[1:])} logits x 4 bytes = "
      f"{len(train_set) * low_res[0].numel() * 4 / 1e6:.1f} MB")

# %%
pseudo_dir = REPO_ROOT / pseudo_root
tau_all = pseudo.generate_pseudo_labels(model, train_set, pseudo_dir, batch_size=batch_size, cap=cap,
                                        progress=False)
written = sorted(pseudo_dir.rglob("*_leftImg8bit.png"))
print(f"wrote {len(written)} pseudo-labels under {pseudo_root}/ (e.g. {written[0].relative_to(pseudo_dir)})")
print("tau^c over the whole set vs over the first", len(indices), "images:")
for c in range(NUM_CLASSES):
    if estimator.counts[c] > 0:
        print(f"  {CLASS_NAMES[c]:14s} {tau_all[c]:.3f}  vs {tau[c]:.3f}")

# %% [markdown]
# The files are read back by the same Cityscapes reader, with `pseudo_root` instead of the
# ground truth. Our in-memory pseudo-label of an image, with the thresholds of the whole set,
# should be what the file holds:

# %%
with_pseudo = Cityscapes(target_root, "train", size=tuple(cfg.target_size), pseudo_root=pseudo_dir)
agree = []
for row, i in enumerate(indices[:5]):
    item = with_pseudo[int(i)]
    assert item["name"] == out["name"][row]
    in_memory = pseudo.pseudo_label(probs[row:row + 1], tau_all)[0]
    agree.append((item["label"] == in_memory).double().mean().item())
print(f"{len(with_pseudo)} items read with pseudo-labels; file vs in-memory: "
      f"{100 * min(agree):.2f}% of pixels identical (worst of {len(agree)} images)")

# %%
(REPO_ROOT / run_dir).mkdir(parents=True, exist_ok=True)
summary = {"images_measured": len(indices), "kept_total": round(quality["kept_total"], 4),
           "accuracy_before": round(quality["accuracy_before"], 4),
           "accuracy_after": round(quality["accuracy_after"], 4),
           "thresholds_all": {CLASS_NAMES[c]: round(float(t), 4) for c, t in enumerate(tau_all)},
           "pseudo_root": str(pseudo_root)}
(REPO_ROOT / run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
print(f"summary written to {run_dir}/summary.json")

# %% [markdown]
# **Take away.** Pseudo-labels are the source model's own predictions, filtered per class at
# the median confidence (capped at 0.9): they cover about half of each image by construction
# (the measurement above says how much they gain in accuracy over the raw prediction), and
# keep every predicted class represented. They are still noisy,
# and the ignored half carries no label at all; lesson 04 shows how process B fills it in.
#
# ## Exercises
#
# **1.** Compute the threshold $\tau^c$ of **car** yourself from `confidence` and `predicted` (the
# maps above, over the `max_images` images): the median confidence of the pixels predicted as car,
# capped at `cap`.

# %% tags=["solution"]
car = CLASS_NAMES.index("car")
threshold_car = min(confidence[predicted == car].median().item(), cap)

# %%
from cosuda.exercises import pseudo_labels as ex

ex.check_threshold(threshold_car, confidence, predicted, "car", cap=cap)

# %% [markdown]
# **2.** What is the **precision** of the pseudo-label for **road** (`class_wise` against the
# ground truth `gt`): of the pixels kept as road whose ground truth is known (not 255), which
# fraction is really road?

# %% tags=["solution"]
road = CLASS_NAMES.index("road")
kept_road = (class_wise == road) & (gt != 255)
precision_road = ((gt == road) & kept_road).sum().item() / kept_road.sum().item()

# %%
ex.check_precision(precision_road, class_wise, gt, "road")
