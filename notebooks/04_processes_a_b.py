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
# # 04 — Processes A and B: which feature vectors get compared?
#
# The cosine similarity loss compares target feature vectors with source feature vectors **of the
# same class**. Feature maps have no labels, so the question of this lesson is: **which class does
# each feature vector belong to, on each side?**
#
# A segmentation network is $\mathcal G = \mathcal H \circ \mathcal F$: the feature extractor gives a
# map $f = \mathcal F(x)$ of $h \times w$ vectors of size $k$ (here $k = 320$, and $h \times w$ is the
# image at 1/16 of its width and height: output stride 16), the head gives class scores
# $p = \mathcal H(f)$ on the same grid (eq. 5). Every cell of the grid is one feature vector.
#
# * **Process A** (source, eq. 6): resize the label $y^s$ to $h \times w$ by nearest neighbour,
#   keep the vectors whose argmax $c^s_{max}$ equals it, and split them by class into $S^c$.
# * **Process B** (target, eq. 7): resize the pseudo-label $\hat y^t$ to $h \times w$, fill its
#   ignored cells with the current argmax $c^t_{max}$ ("augment"), and split *every* target vector
#   by that into $T^c$. Without pseudo-labels (eq. 8), split by $c^t_{max}$ alone.
#
# We draw both like the paper's Fig. B.1, for one source and one target image of the synthetic
# benchmark and the shared source-only lesson model.

# %% tags=["parameters"]
source_run: str = "runs/lessons/source-only"  # the shared source-only lesson model (trained there if missing)
source_iterations: int = 150  # its training iterations when it must be trained (`cosuda.workshop prepare` trains 1200)
run_dir: str = "runs/lessons/04_processes_a_b"  # this lesson's outputs (none besides the notebook)
source_index: int = 3  # which source (GTA5-like) training image
target_index: int = 0  # which target (Cityscapes-like) training image
max_images: int = 40  # target images for the thresholds of the pseudo-labels and the accuracy table
batch_size: int = 16  # images per forward pass
seed: int = 0  # seeds the untrained head of the last section

# %%
import cosuda  # first: it sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads once, when torch loads it
import json

import numpy as np
import torch
from IPython.display import Markdown, display

from cosuda import lessons, method, pseudo
from cosuda.config import resolve_path
from cosuda.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from cosuda.models import build_model
from cosuda.plots import method as mplots

model, cfg, source_set, target_set = lessons.setup(source_run, source_iterations, seed)
if not (0 <= source_index < len(source_set) and 0 <= target_index < len(target_set)):
    raise ValueError(f"source_index must be in [0, {len(source_set)}) and target_index in [0, {len(target_set)})")
model_iterations = json.loads((resolve_path(source_run) / "metrics.json").read_text())["iteration"]


def names(counts):
    """'road 37, building 55, ...' for the classes with a non-zero count."""
    return ", ".join(f"{CLASS_NAMES[c]} {int(n)}" for c, n in enumerate(counts) if n > 0)


# %% [markdown]
# ## Process A: the correctly classified source vectors (eq. 6)
#
# $$\tilde y^s = I_{nearest}(y^s), \quad c^s_{max} = \arg\max_c p^{s(c)}, \quad
# \hat c^s_{max} = \mathbb 1_{[c^s_{max} = \tilde y^s]} \odot c^s_{max}, \quad
# S^c = \mathbb 1_{[\hat c^s_{max} = c]} \otimes f^s$$

# %%
src = lessons.predict(model, source_set, [source_index])
f_s, p_s, y_s = src["features"], src["logits"], src["label"]
hw = tuple(f_s.shape[-2:])
c_max_s = method.predicted_classes(p_s, hw)[0]        # c^s_max (h, w)
y_tilde_s = method.resize_nearest(y_s, hw)[0]        # y~^s: the label at feature resolution
correct = c_max_s == y_tilde_s                       # 255 never equals a class
print(f"image {src['image'].shape[-1]}x{src['image'].shape[-2]} -> feature map f^s: k = {f_s.shape[1]}, "
      f"h x w = {hw[0]} x {hw[1]} = {hw[0] * hw[1]} vectors; correctly classified: {int(correct.sum())}")
# Figure: Process A on one source image: the label resized to the feature grid, the argmax, and the correct cells (grey = not kept).
fig = mplots.label_maps({"y^s (label)": y_s[0], "y~^s = I_nearest(y^s)": y_tilde_s, "c^s_max (argmax of p^s)": c_max_s,
                         "c_hat^s_max (eq. 6)": c_max_s}, image=src["image"][0],
                        shade={"c_hat^s_max (eq. 6)": ~correct},
                        grid=["y~^s = I_nearest(y^s)", "c^s_max (argmax of p^s)", "c_hat^s_max (eq. 6)"],
                        shade_label="incorrectly classified: not kept", ncols=5);

# %% [markdown]
# **Figure 1.** Process A on one source image: the image and its label $y^s$, then on the
# feature grid (one cell per feature vector) the label resized by nearest neighbour
# $\tilde y^s$, the network's argmax $c^s_{max}$, and $\hat c^s_{max}$ of eq. 6, where the
# incorrectly classified cells are greyed out: their vectors are not kept.

# %% [markdown]
# Each cell of the three grids is one feature vector. The label is downsampled by **nearest
# neighbour**, never blended, so a cell gets a real class (or 255), one of the labels under it.
# Process A keeps only the cells where the network is right: the grey cells' vectors are
# dropped, so a wrong prediction never enters the dictionary as an example of the class the label
# says. The kept vectors, split by class, are the $S^c$ that will be enqueued into the dictionary:

# %%
s_feats, s_classes = method.process_a(f_s, p_s, y_s)
c_hat_s = torch.where(correct, c_max_s, torch.full_like(c_max_s, IGNORE_INDEX))
print(f"process A: {s_feats.shape[0]} vectors of size {s_feats.shape[1]}: "
      f"{names(torch.bincount(s_classes, minlength=NUM_CLASSES))}")
# Figure: The correctly classified source vectors split by class: the S^c of eq. 6.
fig = mplots.class_split(c_hat_s, prefix="S", noun="vectors");

# %% [markdown]
# **Figure 2.** The kept source vectors split by class: one panel per class $c$ (the largest
# eight, largest first) showing on the feature grid the cells whose vectors form $S^c$ (eq. 6),
# with their number.

# %% [markdown]
# ## Process B: every target vector gets a class (eq. 7, eq. 8)
#
# The target has pseudo-labels instead of labels. Lesson 03 computed their thresholds on the
# whole target train set; here thresholds from `max_images` images are enough for the picture.
#
# $$\tilde y^t = I_{nearest}(\hat y^t), \quad c^t_{max} = \arg\max_c p^{t(c)}, \quad
# \dot y^t = \mathrm{augment}(\tilde y^t, c^t_{max}), \quad T^c = \mathbb 1_{[\dot y^t = c]} \otimes f^t$$

# %%
indices = sorted(set(np.linspace(0, len(target_set) - 1, max_images).round().astype(int).tolist()) | {target_index})
tgt = lessons.predict(model, target_set, indices, batch_size=batch_size, with_probs=True)
estimator = pseudo.ThresholdEstimator(NUM_CLASSES)
estimator.update(tgt["probs"])
pseudo_labels = pseudo.pseudo_label(tgt["probs"], estimator.compute())   # y_hat^t (N, H, W), eq. 4

j = indices.index(target_index)
f_t, p_t, y_hat_t = tgt["features"][j:j + 1], tgt["logits"][j:j + 1], pseudo_labels[j:j + 1]
hw_t = tuple(f_t.shape[-2:])
y_tilde_t = method.resize_nearest(y_hat_t, hw_t)[0]                            # y~^t
c_max_t = method.predicted_classes(p_t, hw_t)[0]                               # c^t_max
t_feats, t_classes = method.process_b(f_t, p_t, y_hat_t)                       # eq. 7
y_dot_t = t_classes.view(hw_t)                                                 # y_dot^t, back on the grid
_, t_classes_eq8 = method.process_b(f_t, p_t)                                  # eq. 8
gt_t = method.resize_nearest(tgt["label"][j:j + 1], hw_t)[0]
# Figure: Process B on one target image: the pseudo-label on the feature grid (black = ignored), the current argmax and the augmented pseudo-label of eq. 7.
fig = mplots.label_maps({"y_hat^t (pseudo-label)": y_hat_t[0], "y~^t = I_nearest(y_hat^t)": y_tilde_t,
                         "c^t_max (= eq. 8)": c_max_t, "y_dot^t (eq. 7)": y_dot_t,
                         "ground truth (unseen in UDA)": gt_t},
                        image=tgt["image"][j], shade={"y_dot^t (eq. 7)": y_tilde_t == IGNORE_INDEX},
                        grid=["y~^t = I_nearest(y_hat^t)", "c^t_max (= eq. 8)", "y_dot^t (eq. 7)",
                              "ground truth (unseen in UDA)"],
                        shade_label="filled in from c^t_max", ncols=3);

# %% [markdown]
# **Figure 3.** Process B on one target image: the image and its pseudo-label $\hat y^t$, then on
# the feature grid the resized pseudo-label $\tilde y^t$ (black = ignored), the current argmax
# $c^t_{max}$ (the split of eq. 8), the augmented pseudo-label $\dot y^t$ of eq. 7 (greyed cells:
# filled in from $c^t_{max}$), and the ground truth, which the method never sees.

# %% [markdown]
# The black cells of $\tilde y^t$ are pixels the pseudo-label ignores. Process B does not drop
# them: in $\dot y^t$ they take the class of the current argmax (greyed out above), so **every**
# target vector belongs to some $T^c$ — unlike process A, which drops source vectors. The
# confident cells keep the pseudo-label's class even where the current network disagrees.
#
# Counted per class:

# %%
ignored = int((y_tilde_t == IGNORE_INDEX).sum())
print(f"{t_feats.shape[0]} target vectors; the pseudo-label ignores {ignored} of them "
      f"({100 * ignored / y_tilde_t.numel():.0f}%), process B fills those in from c^t_max")
counts = {"y~^t (pseudo-label only)": torch.bincount(y_tilde_t[y_tilde_t != IGNORE_INDEX], minlength=NUM_CLASSES),
          "eq. 7 (augmented)": torch.bincount(t_classes, minlength=NUM_CLASSES),
          "eq. 8 (argmax only)": torch.bincount(t_classes_eq8, minlength=NUM_CLASSES)}
# Figure: Target vectors per class: from the pseudo-label alone, after the augmentation of eq. 7, and with the argmax alone (eq. 8).
fig = mplots.class_bars(counts, ylabel="target vectors", title="the sizes of T^c");

# %% [markdown]
# **Figure 4.** The number of target vectors per class $c$ (the sizes of $T^c$): from the
# pseudo-label alone (its ignored cells belong to no class), after the augmentation of eq. 7
# (every vector has a class), and from the argmax alone (eq. 8).

# %% [markdown]
# ## Which split is right more often?
#
# Against the ground truth on the feature grid (a privilege of the synthetic benchmark), over the
# `max_images` target images. Two networks play "the current network":
#
# * the lesson model itself, i.e. the very network that made the pseudo-labels: then $c^t_{max}$
#   and the kept pseudo-label agree wherever the pseudo-label keeps a cell, so eq. 7 and eq. 8
#   can differ only through the cells it ignores;
# * a network at **iteration 0**: the preset's initialisation, an ImageNet backbone under an
#   untrained head, as lesson 07's default run starts: its argmax knows nothing of our classes
#   yet, so whatever eq. 7 gains over eq. 8 comes from the confident cells of the pseudo-labels.
#
# The sentences under the table compare the two splits for each network.

# %%
# iteration 0 of a run: the preset's initialisation (ImageNet backbone, untrained head), same grid
shape = {"norm": cfg.norm, "output_stride": cfg.output_stride} if cfg.arch == "deeplabv2" else {}
fresh = build_model(cfg.arch, backbone=cfg.backbone, num_classes=cfg.num_classes,
                    weights="imagenet" if cfg.weights == "imagenet" else "random", **shape).eval()
fresh_out = lessons.predict(fresh, target_set, indices, batch_size=batch_size)
gt_grid = method.resize_nearest(tgt["label"], hw_t)
labelled = gt_grid != IGNORE_INDEX
print("current network       eq. 7 (augmented)   eq. 8 (argmax)    (accuracy of the split on labelled cells)")
split_accuracy = {}
for name, out in (("lesson model", tgt), ("iteration 0", fresh_out)):
    _, cls7 = method.process_b(out["features"], out["logits"], pseudo_labels)
    _, cls8 = method.process_b(out["features"], out["logits"])
    acc7 = (cls7.view_as(gt_grid) == gt_grid)[labelled].double().mean().item()
    acc8 = (cls8.view_as(gt_grid) == gt_grid)[labelled].double().mean().item()
    split_accuracy[name] = (100 * acc7, 100 * acc8)
    print(f"{name:20s} {100 * acc7:12.1f}%  {100 * acc8:15.1f}%")

# %%
# The table in words: for each network, which split is right more often (within half a point: as often).
def compare(acc7, acc8):
    if abs(acc7 - acc8) < 0.5:
        return f"eq. 7 and eq. 8 are right about as often ({acc7:.0f} vs {acc8:.0f} % of the cells)"
    better, worse = ("eq. 7", "eq. 8") if acc7 > acc8 else ("eq. 8", "eq. 7")
    return f"{better} is right more often than {worse} ({acc7:.0f} vs {acc8:.0f} % of the cells, eq. 7 first)"

display(Markdown(f"With the lesson model ({model_iterations} iterations) {compare(*split_accuracy['lesson model'])}; "
                 f"at iteration 0 {compare(*split_accuracy['iteration 0'])}."))

# %% [markdown]
# **Take away.** Process A keeps only source vectors the network gets right, so the dictionary
# holds trustworthy examples of each class. Process B labels every target vector: the confident
# pseudo-label where there is one, the network's current guess elsewhere (eq. 7); eq. 8 (no
# pseudo-labels) relies on the guess alone, and the comparison above shows what that costs
# with a poor guess (iteration 0). Lesson 05 stores the $S^c$ in the dictionary; lesson
# 06 compares them with the $T^c$.
#
# ## Exercises
#
# **1.** Write process A yourself: a function `(features (B, k, h, w), logits (B, C, h', w'),
# labels (B, H, W)) -> (feats (N, k), classes (N,))` that returns the correctly classified vectors
# in (b, y, x) order. The check compares it with `cosuda.method.process_a` on random inputs,
# including FCN-8s-like logits at full resolution (take the argmax first, then resize it by nearest
# neighbour). `method.resize_nearest(maps, (h, w))` resizes integer maps. Write it as
# `process_a_mine` in the answer cell, which assigns it to `answer_a` for the check.

# %% tags=["solution"]
def process_a_mine(features, logits, labels):
    hw = features.shape[-2:]
    c_max = method.resize_nearest(logits.argmax(dim=1), hw)       # c^s_max
    y_tilde = method.resize_nearest(labels, hw)                  # y~^s
    keep = (c_max == y_tilde).flatten()                          # 255 never equals a class
    rows = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    return rows[keep], c_max.flatten()[keep]


answer_a = process_a_mine

# %%
from cosuda.exercises import processes as ex

ex.check_process_a(answer_a)

# %% [markdown]
# **2.** Write process B yourself: `(features, logits, pseudo_labels or None) -> (feats, classes)`
# returning every target vector with its class: the resized pseudo-label augmented with the argmax
# (eq. 7), or the argmax alone when `pseudo_labels` is None (eq. 8). Write it as `process_b_mine`
# in the answer cell, which assigns it to `answer_b`.

# %% tags=["solution"]
def process_b_mine(features, logits, pseudo_labels=None):
    hw = features.shape[-2:]
    classes = method.resize_nearest(logits.argmax(dim=1), hw)                 # c^t_max (eq. 8)
    if pseudo_labels is not None:
        y_tilde = method.resize_nearest(pseudo_labels, hw)
        classes = torch.where(y_tilde == IGNORE_INDEX, classes, y_tilde)     # augment (eq. 7)
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]), classes.flatten()


answer_b = process_b_mine

# %%
ex.check_process_b(answer_b)
