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
# # 06 — The cosine similarity loss: which pairs are pulled together, and how hard?
#
# The paper's loss compares every target vector of class $c$ (the $T^c$ of process B) with every
# source vector of class $c$ in the dictionary ($D^c$, lesson 05), as a matrix of cosine
# similarities (eq. 9, Fig. 3):
#
# $$\mathcal M^c = \frac{T^{c\top} D^c}{\|T^c\|_2^\top \, \|D^c\|_2}, \qquad
# \hat{\mathcal M}^c = \mathbb 1_{[\mathcal M^c > \mathcal T_{cos}]} \odot \mathcal M^c, \qquad
# \mathcal L_{cos} = \frac 1 C \sum_{c=1}^{C} \big\| \hat{\mathcal M}^c - \mathbf 1 \big\|_1 .$$
#
# Only the elements above $\mathcal T_{cos}$ are pulled towards 1: a target vector moves towards the
# source vectors it already resembles, not towards all of its class. The dictionary is detached,
# so only the target features move. The questions of this lesson: **what do these matrices look
# like for real features, how much does $\mathcal T_{cos}$ select, and how big is the loss?** The
# last one decides how eq. 10 must be normalised, and why the engine's default is
# `reduction="mean"`.

# %% tags=["parameters"]
source_run: str = "runs/lessons/source-only"  # the shared source-only lesson model (trained there if missing)
source_iterations: int = 150  # its training iterations when it must be trained (`cosuda.workshop prepare` trains 1200)
run_dir: str = "runs/lessons/06_cosine_loss"  # this lesson's outputs (summary.json)
source_images: int = 24  # source images enqueued into the dictionary
dict_size: int = 200  # vectors per class (the synthetic preset's value; the paper uses 2500 for DeepLabV2)
t_cos: float = 0.6  # T_cos (the synthetic preset's and the paper's GTA5 -> Cityscapes DeepLabV2 value)
target_index: int = 0  # which target training image
batch_size: int = 16  # images per forward pass
seed: int = 0  # which source images, in which order

# %%
import cosuda  # first: it sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads once, when torch loads it
import json

import numpy as np
import torch
import torch.nn.functional as F

from cosuda import lessons, method
from cosuda.config import REPO_ROOT
from cosuda.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from cosuda.plots import method as mplots
from IPython.display import Markdown, display

if source_images < 1 or dict_size < 1 or not -1 <= t_cos <= 1:
    raise ValueError(f"need source_images >= 1, dict_size >= 1, -1 <= t_cos <= 1; got {source_images}, "
                     f"{dict_size}, {t_cos}")
model, cfg, source_set, target_set = lessons.setup(source_run, source_iterations, seed)

# The dictionary, filled by process A from a stream of source images (lesson 05).
order = torch.Generator().manual_seed(seed)
src = lessons.predict(model, source_set, torch.randperm(len(source_set), generator=order)[:source_images],
                      batch_size=batch_size)
k = src["features"].shape[1]
dictionary = method.FeatureDictionary(NUM_CLASSES, dict_size, k)
source_classes_per_image = []
for i in range(source_images):
    s_feats, s_classes = method.process_a(src["features"][i:i + 1], src["logits"][i:i + 1], src["label"][i:i + 1])
    dictionary.enqueue(s_feats, s_classes)
    source_classes_per_image.append(s_classes)

# The target vectors T^c of one image, by process B. Eq. 8 (the current argmax) needs no
# pseudo-labels; with the lesson model, eq. 7 would give almost the same split (lesson 04).
tgt = lessons.predict(model, target_set, [target_index])
t_feats, t_classes = method.process_b(tgt["features"], tgt["logits"])


def names(counts):
    """'road 37, building 55, ...' for the classes with a non-zero count."""
    return ", ".join(f"{CLASS_NAMES[c]} {int(n)}" for c, n in enumerate(counts) if n > 0)


print(f"dictionary: {names(dictionary.counts)}")
print(f"target image {target_index}: {t_feats.shape[0]} vectors of size {k}: "
      f"{names(torch.bincount(t_classes, minlength=NUM_CLASSES))}")

# %% [markdown]
# ## The similarity matrices
#
# One matrix per class, one row per target vector of the class, one column per dictionary vector of
# the class. Elements above $\mathcal T_{cos}$ (selected) are blue, bluer for more similar; the
# others are grey. Only these blue elements enter the loss.

# %%
M = lessons.class_similarity_matrices(t_feats, t_classes, dictionary)  # {c: M^c (N_c, n_c)}, eq. 9
largest = sorted(M, key=lambda c: -M[c].numel())[:6]
# Figure: Cosine similarity matrices M^c between the target vectors and the dictionary vectors of each class; blue = above T_cos.
fig = mplots.similarity_matrices(M, t_cos, classes=largest);

# %%
for c in largest:
    m = M[c]
    print(f"M^{CLASS_NAMES[c]:12s} {m.shape[0]:4d} x {m.shape[1]:3d}: similarities from {m.min():.2f} to "
          f"{m.max():.2f}, mean {m.mean():.2f}; {100 * (m > t_cos).double().mean():.0f}% above T_cos = {t_cos}")

# %% [markdown]
# Two observations. The matrices are striped, by rows and by columns: some target vectors resemble
# much of their class's dictionary and some dictionary vectors resemble many target vectors, others
# hardly any: the selection is per *pair*, which is the paper's point ("selectively maximize"). And
# the similarities are signed: the features here are EfficientNet-Lite0's last block, a linear
# projection with no ReLU after it, so two vectors can point in opposite directions and cosines
# span $[-1, 1]$. (The paper's ResNet-101 layer4 features come out of a ReLU: their cosines lie in
# $[0, 1]$.) How far apart are the vectors of one class here?

# %%
low, high = min(float(M[c].min()) for c in M), max(float(M[c].max()) for c in M)
means = [float(M[c].mean()) for c in largest]
alike = ("far from alike" if max(means) < 0.5 else "fairly alike" if min(means) > 0.7 else "neither alike nor opposed")
display(Markdown(f"With this model the cosines run from {low:.1f} to {high:.1f} "
                 f"({'some pairs point apart' if low < 0 else 'none negative'}), and the class means of the "
                 f"largest classes lie between {min(means):.1f} and {max(means):.1f}: the vectors of one class "
                 f"are {alike}."))

# %% [markdown]
#
# ## How much does $\mathcal T_{cos}$ select?

# %%
thresholds = np.round(np.linspace(-1.0, 1.0, 101), 3)
fractions = lessons.selected_fraction(M, thresholds)
# Figure: Share of the similarity elements above T_cos, per class and overall, as T_cos grows; dotted lines at the paper's values.
fig = mplots.selection_curves(fractions, thresholds, marks=(0.6, 0.4, 0.2));
share_at = {t: float(fractions[-1][np.flatnonzero(np.isclose(thresholds, t))[0]]) for t in (0.6, 0.4, 0.2, 0.0)}
print("all classes: " + ", ".join(f"{100 * f:.1f}% above {t:g}" for t, f in share_at.items()))

# %%
selected_by_class = {c: int((m > 0.6).sum()) for c, m in M.items()}
top = [CLASS_NAMES[c] for c in sorted(selected_by_class, key=lambda c: -selected_by_class[c]) if selected_by_class[c]][:2]
strictness = ("strict" if share_at[0.6] < 0.1 else "loose" if share_at[0.6] > 0.5 else "moderate")
display(Markdown(
    f"For this network the paper's $\\mathcal T_{{cos}} = 0.6$ is **{strictness}**: it selects "
    f"{100 * share_at[0.6]:.1f} % of the pairs" + (f" (mostly {' and '.join(top)} pairs)" if top else "")
    + f", 0.4 selects {100 * share_at[0.4]:.0f} % and 0.2 {100 * share_at[0.2]:.0f} %; from 0 down, "
    f"{100 * share_at[0.0]:.0f} %."))

# %% [markdown]
# How selective a given $\mathcal T_{cos}$ is depends on the network and on how far it has been
# trained: it is a hyper-parameter to tune per architecture (Table 5 uses 0.6 / 0.4 for DeepLabV2
# and 0.4 / 0.2 for FCN-8s; Table 6 shows mIoU against it). The synthetic preset keeps Table 5's
# 0.6: its loss pulls only the pairs that are already that close.
#
# ## Explore $\mathcal T_{cos}$
#
# `mplots.threshold_view` draws the matrices at one $\mathcal T_{cos}$ and returns the selection
# with the loss in both readings of eq. 10 (below). Called once directly:

# %%
# Figure: The similarity matrices at T_cos, with the selected count and the loss in the title.
selection = mplots.threshold_view(M, t_cos, classes=largest)
selection

# %% [markdown]
# and with a slider (in a live notebook; a static page shows the first view only):

# %%
mplots.threshold_slider(M, t_cos, classes=largest)

# %% [markdown]
# ## The loss value, two ways
#
# Eq. 10 read literally sums $1 - \mathcal M$ over the selected elements of each class and divides
# by $C$ ("sum"). `cosuda.method.cosine_loss` also offers "mean": per class the mean of
# $1 - \mathcal M$ over its selected elements, then the mean over the classes that selected any.
# `lessons.select` computes both the plain way from the matrices; the engine's fast implementation
# must agree:

# %%
loss_mean = method.cosine_loss(t_feats, t_classes, dictionary, t_cos, NUM_CLASSES, reduction="mean")
loss_sum = method.cosine_loss(t_feats, t_classes, dictionary, t_cos, NUM_CLASSES, reduction="sum")
print(f"reduction='mean': {loss_mean.item():.5f} (cosine_loss)  {selection.loss_mean:.5f} (from the matrices)")
print(f"reduction='sum':  {loss_sum.item():.3f} (cosine_loss)  {selection.loss_sum:.3f} (from the matrices)")
print(f"selected elements: {selection.total_selected} of {selection.total_elements}")

# %% [markdown]
# ## Which gradients flow?
#
# The dictionary is detached (section 3.2): the loss moves target features only. We give the loss a
# bank of plain tensors that *ask* for gradients, and target features that do:

# %%
target = t_feats.clone().requires_grad_(True)
bank = [dictionary.get(c).clone().requires_grad_(True) for c in range(NUM_CLASSES)]
loss = method.cosine_loss(target, t_classes, bank, t_cos, NUM_CLASSES, reduction="mean")
loss.backward()
selected_rows = torch.zeros(len(t_classes), dtype=torch.bool)
for c, m in M.items():
    selected_rows[torch.nonzero(t_classes == c).flatten()] = (m > t_cos).any(dim=1)
moved = target.grad.abs().sum(dim=1) > 0
print(f"target features: gradient norm {target.grad.norm():.2e}; rows with a gradient: {int(moved.sum())} "
      f"= rows with a selected element: {int(selected_rows.sum())} "
      f"(same rows: {bool(torch.equal(moved, selected_rows))})")
print(f"dictionary vectors: every .grad is None: {all(b.grad is None for b in bank)}")

# %% [markdown]
# A target vector with no element above $\mathcal T_{cos}$ gets no gradient at all: the loss leaves
# vectors alone that resemble nothing in the source dictionary of their class.

# %%
rows_moved = int(moved.sum())
display(Markdown(f"At $\\mathcal T_{{cos}}$ = {t_cos} that is {'most' if rows_moved < len(moved) / 2 else 'a minority'} "
                 f"of them: {rows_moved} of the {len(moved)} target vectors of this image get a gradient."))

# %% [markdown]
#
# ## Sum or mean? The scale of the loss decides
#
# The two readings differ by a factor that grows with the number of selected pairs. How big is it
# next to the segmentation loss, whose scale sets what $\lambda_{cos}$ means (eq. 12)? We measure
# the source segmentation loss (eq. 1, per-pixel mean, as every implementation computes it) and the
# gradient norms on the feature maps of one source and the target image:

# %%
def feature_gradient(loss_of_features, features):
    """(loss, gradient norm) of a loss computed from a leaf copy of a feature map."""
    f = features.clone().requires_grad_(True)
    value = loss_of_features(f)
    value.backward()
    return value.item(), f.grad.norm().item()


def source_ce(f):  # eq. 1 through the head: H(f), upsampled (eq. 5), cross-entropy on the label
    logits = model.upsample(model.classifier(f), src["label"].shape[-2:])
    return F.cross_entropy(logits, src["label"][:1], ignore_index=IGNORE_INDEX)


def cos_loss(reduction):
    return lambda f: method.cosine_loss(f.permute(0, 2, 3, 1).reshape(-1, k), t_classes, dictionary, t_cos,
                                        NUM_CLASSES, reduction=reduction)


seg, seg_grad = feature_gradient(source_ce, src["features"][:1])
mean_value, mean_grad = feature_gradient(cos_loss("mean"), tgt["features"])
sum_value, sum_grad = feature_gradient(cos_loss("sum"), tgt["features"])
print("                      value      gradient norm on the feature map")
print(f"L_seg^S (eq. 1)    {seg:9.4f}   {seg_grad:.2e}")
print(f"L_cos, mean        {mean_value:9.4f}   {mean_grad:.2e}")
print(f"L_cos, sum         {sum_value:9.1f}   {sum_grad:.2e}")
print(f"sum / mean: {sum_value / mean_value:.0f}x in value, {sum_grad / mean_grad:.0f}x in gradient")
for lam in (0.001, 0.01, 0.1):
    print(f"lambda_cos = {lam:5}: gradient of lambda x L_cos / gradient of L_seg^S = "
          f"{lam * mean_grad / seg_grad:.1e} (mean), {lam * sum_grad / seg_grad:.1e} (sum)")

# %%
display(Markdown(
    f"At this toy scale ({len(t_classes)} target vectors, at most {dict_size} dictionary vectors per class, "
    f"{100 * selection.total_selected / selection.total_elements:.1f} % of the pairs selected) the sum is "
    f"{sum_value / mean_value:.0f} times the mean, and at $\\lambda_{{cos}} = 0.01$ the cosine term's gradient "
    f"is {100 * 0.01 * mean_grad / seg_grad:.2g} % of the segmentation loss's (mean reading)."))

# %% [markdown]
# At the paper's scale the sum grows with the number of pairs: a 1024x512 target image gives 8385
# vectors at output stride 8, each compared with the 2500 dictionary vectors of its class, and
# k = 2048 does not change cosines. With the selected share and the mean distance
# $1 - \mathcal M$ measured here:

# %%
share = selection.total_selected / selection.total_elements
mean_distance = float(np.mean([(1 - m[m > t_cos]).double().mean() for m in M.values() if (m > t_cos).any()]))
paper = lessons.paper_scale_loss(share, mean_distance)
print(f"measured here: {100 * share:.0f}% of the elements selected, mean distance 1 - M = {mean_distance:.3f}")
print(f"paper scale ({lessons.PAPER_SCALE['target_rows']} target vectors x {lessons.PAPER_SCALE['dict_size']} "
      f"per class = {paper['elements']:.2e} elements): L_cos sum ~ {paper['sum']:.2e}, mean ~ {paper['mean']:.3f}")
for share_assumed in (0.01, 0.1):
    low = lessons.paper_scale_loss(share_assumed, mean_distance)
    print(f"  even if only {100 * share_assumed:.0f}% were selected: sum ~ {low['sum']:.1e}")
magnitudes = {"L_seg^S (source cross-entropy)": seg,
              "0.01 x L_cos mean (DeepLabV2 lambda)": 0.01 * mean_value,
              "0.001 x L_cos mean (FCN-8s lambda)": 0.001 * mean_value,
              "0.01 x L_cos sum, this scale": 0.01 * sum_value,
              "0.01 x L_cos sum, paper scale": 0.01 * paper["sum"]}
# Figure: Loss magnitudes on a log scale: the segmentation loss vs lambda_cos times L_cos in both readings, here and extrapolated to the paper's sizes.
fig = mplots.magnitude_bars(magnitudes, reference="L_seg^S (source cross-entropy)", xlabel="loss value (log scale)",
                            title="what lambda_cos multiplies");

# %% [markdown]
# **Why "mean".** The paper does not say how eq. 10 is normalised, but its $\lambda_{cos}$ values do.
# Read literally ("sum"), $\mathcal L_{cos}$ at the paper's sizes is of order $10^3$ to $10^5$
# (from 1 % of the pairs selected to all of them), so $\lambda_{cos} = 0.01$ would make the cosine term tens
# to thousands of times the segmentation loss (about 1), and its gradient would swamp the rest;
# it would also scale with dict-size and image size, so that Table 6's dict-size sweep would
# really be a $\lambda$ sweep. With "mean" the loss stays in $[0, 1 - \mathcal T_{cos}]$ whatever the
# sizes, like the per-pixel mean cross-entropy it is added to, and $\lambda_{cos} = 0.01$ (DeepLabV2)
# or 0.001 (FCN-8s) makes it a light regulariser next to $\mathcal L_{seg}$: consistent with the
# ~1 mIoU it adds over self-training alone in Table 4. So the engine uses `reduction="mean"` with the
# paper's $\lambda_{cos}$ for the real presets. The synthetic presets use $\lambda_{cos} = 0.1$, with
# the mean as well: the gradient ratios printed above show how light the term is at 0.01, and
# weight 1, tried first, made every feature alike and cost mIoU (docs/benchmark.md records that
# trial). `--set reduction=sum` is there to test the literal reading (with a correspondingly tiny
# $\lambda_{cos}$).

# %%
out_dir = REPO_ROOT / run_dir
out_dir.mkdir(parents=True, exist_ok=True)
summary = {"t_cos": t_cos, "dict_size": dict_size, "selected": selection.total_selected,
           "elements": selection.total_elements, "loss_mean": round(mean_value, 6), "loss_sum": round(sum_value, 4),
           "seg_loss": round(seg, 4), "grad_norm": {"seg": seg_grad, "mean": mean_grad, "sum": sum_grad},
           "paper_scale": {k_: float(v) for k_, v in paper.items()}}
(out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
print(f"summary written to {run_dir}/summary.json")

# %% [markdown]
# **Take away.** $\mathcal M^c$ pairs every target vector of a class with every dictionary vector of
# that class; $\mathcal T_{cos}$ picks the pairs that are already similar and the loss pulls only
# those closer, moving only target features. How much a threshold selects depends on the network.
# Normalised as a mean, the loss has the scale of the segmentation loss, which is what makes the
# paper's $\lambda_{cos}$ values sensible.
#
# ## Exercises
#
# **1.** Predict, then count: how many elements of the matrices $\mathcal M^c$ of this target image
# (all classes together, `t_feats`, `t_classes` against `dictionary`) does $\mathcal T_{cos} = 0.6$
# select? Compute it from the features, without `lessons`.

# %% tags=["solution"]
unit_targets = F.normalize(t_feats, dim=1)
selected_answer = sum(int((unit_targets[t_classes == c] @ F.normalize(dictionary.get(c), dim=1).T > 0.6).sum())
                      for c in range(NUM_CLASSES))

# %%
from cosuda.exercises import cosine_loss as ex

ex.check_selected_count(selected_answer, t_feats, t_classes, dictionary, t_cos=0.6)

# %% [markdown]
# **2.** Without a dictionary, the bank would be the current source image's process A vectors.
# For the pair below (source image `pair_source`, our target image), which class(es) of the target
# vectors would have nothing to be matched with?

# %%
pair_source = next((i for i, s in enumerate(source_classes_per_image)
                    if lessons.unmatched_classes(t_classes, source_classes=s)), 0)
pair_source_classes = source_classes_per_image[pair_source]
print(f"source image {pair_source}: process A classes {sorted(set(pair_source_classes.tolist()))}; "
      f"target: process B classes {sorted(set(t_classes.tolist()))}")

# %% tags=["solution"]
unmatched_answer = sorted(set(t_classes.tolist()) - set(pair_source_classes.tolist()))

# %%
ex.check_unmatched(unmatched_answer, t_classes, pair_source_classes)

# %% [markdown]
# **3.** Compute $\mathcal L_{cos}$ with `reduction="mean"` by hand from the matrices `M` at
# $\mathcal T_{cos}$ = `t_cos`.

# %% tags=["solution"]
loss_by_hand = float(np.mean([(1 - m[m > t_cos]).mean().item() for m in M.values() if (m > t_cos).any()]))

# %%
ex.check_mean_loss(loss_by_hand, M, t_cos)
