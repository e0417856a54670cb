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
# # 13 — What the cosine loss does, in two dimensions
#
# Lessons 04–06 built the method on real feature maps: process A keeps the correctly classified
# source vectors $S^c$, the dictionary $D^c$ queues them per class, process B splits the target
# vectors into $T^c$, and $\mathcal L_{cos}$ pulls the pairs with $\mathcal M^c > \mathcal T_{cos}$
# towards cosine 1 (eq. 9–10). With 2048 dimensions nobody can watch what that pull does. This
# lesson (not in the paper) uses **the same functions** — `cosuda.method.cosine_loss` and
# `cosuda.method.FeatureDictionary` — on feature vectors with two components, so that every vector
# is a point we can draw, and asks three questions:
#
# 1. **Why the dictionary?** What goes wrong when a target class has no source vector in the
#    current source image (the paper's *unmatching problem*)?
# 2. **Why the class-wise split?** What if every target vector is compared with every source vector?
# 3. **What does $\mathcal T_{cos}$ select**, and what does it protect against?
#
# The rules of the toy. Four classes, named after Cityscapes classes and drawn in their colours.
# The source vectors of a class point around one direction; the target vectors of the class point
# around the same direction **rotated by a domain gap** (and are shorter, which does not matter to a
# cosine). Every step brings one source image that contains only *some* classes (road is drawn into
# every image, person with a chance of one in five: the counts below are what the draw gave), and
# one target image that contains all four. Gradient descent then
# moves the **target vectors** to lower $\mathcal L_{cos}$; the source side is a constant, as in the
# paper, where no gradient reaches the dictionary. In the real network the gradient changes the
# feature extractor's weights and, through them, the features; here the features themselves are the
# parameters: the simplest picture of where the loss pushes them. The step is plain gradient descent
# (no momentum), so **a vector without gradient does not move**.

# %% tags=["parameters"]
steps: int = 40  # gradient-descent steps, one source image each
t_cos: float = 0.6  # T_cos of the three settings (the paper's value for DeepLabV2, GTA5 -> Cityscapes)
lr: float = 2.0  # step size of plain gradient descent on the target vectors
gap: float = 40.0  # the domain gap: the rotation of the target cloud against the source, in degrees
dict_size: int = 16  # source vectors per class in the dictionary (dict-size)
mislabelled: float = 0.125  # share of target vectors with a wrong pseudo-label (the T_cos section)
seed: int = 0  # the clusters, the source images and the pseudo-label errors

# %%
import cosuda  # first: it sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads once, when torch loads it
import numpy as np
import torch

from cosuda import plots, toy2d

torch.set_num_threads(min(2, torch.get_num_threads()))
if steps < 1 or dict_size < 1 or not -1 <= t_cos <= 1 or lr <= 0 or not 0 <= mislabelled < 1:
    raise ValueError(f"need steps >= 1, dict_size >= 1, -1 <= t_cos <= 1, lr > 0, 0 <= mislabelled < 1; got "
                     f"{steps}, {dict_size}, {t_cos}, {lr}, {mislabelled}")
problem = toy2d.make_problem(steps=steps, seed=seed, gap=gap, dict_size=dict_size)
rare = int(np.argmin(problem.frequencies))
absent = problem.absent_steps()
for c, name in enumerate(problem.names):
    # one count gives both numbers, so they agree; the chance it was drawn with is the design, not the outcome
    present = steps - len(absent[c])
    print(f"{name:10s} in {present:2d} of the {steps} source images ({100 * present / steps:3.0f}%), absent from "
          f"{len(absent[c]):2d} (drawn with chance {100 * problem.frequencies[c]:.0f}%)")
print(f"{len(problem.target_init)} target vectors ({len(problem.target_init) // problem.num_classes} per class), "
      f"dictionary: {dict_size} per class, filled before step 0")

# %% [markdown]
# ## The picture: directions are all that counts

# %%
# Figure: The toy problem: source vectors (squares) and target vectors (dots) of four classes as they are, and as the loss sees them: directions, with the target rotated by the domain gap.
fig = plots.toy_problem(problem);

# %% [markdown]
# **Figure 1.** Left: the 2-D feature vectors, source (squares: the dictionary at step 0) and
# target (dots), one colour per class. Right: the same vectors as the loss sees them. The cosine of
# two vectors depends on the angle between them only (eq. 9 divides by both norms), so every vector
# is drawn at its direction: source on the outer ring, target on the inner one. The target cloud of
# every class is rotated by the domain gap (arrow), far enough that some target vectors already
# point nearer the next class than their own:

# %%
start = toy2d.nearest_class_share(problem, problem.target_init)
print("target vectors whose most similar source vector has their class, before any step: " +
      ", ".join(f"{n} {100 * v:.0f}%" for n, v in zip(problem.names, start.tolist())))

# %% [markdown]
# ## Three settings, step by step
#
# The three settings are the rows of the paper's ablation (Table 4), on the same source images:
#
# - **the method**: class-wise split + dictionary. Each source image is enqueued into $D$
#   (process A), then every $T^c$ is compared with $D^c$, which also holds vectors of earlier images.
# - **w/o dictionary**: class-wise split, but $T^c$ is compared with the current source image's
#   vectors of class $c$ only. A class absent from that image has an empty matrix $\mathcal M^c$.
# - **w/o class-wise split**: every target vector against every vector of the current source image,
#   as if there were one class (and no dictionary, as in Table 4).

# %%
runs = toy2d.experiment(problem, t_cos=t_cos, lr=lr)
shown = [s for s in (0, 5, 9) if s < steps] + [steps]
# Figure: Small multiples: the three settings (rows) at a few steps (columns); target vectors with their trails, the source vectors each loss compares with, hollow targets got no gradient.
fig = plots.toy_steps(problem, runs, shown);

# %% [markdown]
# **Figure 2.** One row per setting, one column per step (the last: after the final step). Inner
# ring: the target vectors, with their trail since step 0. Outer ring: the source vectors the loss
# compares them with at that step — the whole dictionary for the method, only the current source
# image otherwise (its classes are in the column title). A hollow target vector had no selected pair
# at that step, hence no gradient and no move.
#
# In the middle row the classes missing from the source image are hollow: with nothing of their class
# to be matched with, their $\mathcal M^c$ is empty and they stand still. In the method's row the
# dictionary still holds their vectors from earlier images, and they keep moving. In the bottom row
# the matrix pairs across classes: person vectors (red), rotated towards road, are pulled to the road
# vectors that are in every image, and some building and vegetation vectors drift to the next class
# too.
#
# The same runs as curves: the angle of every target vector to its own class's source direction.

# %%
# Figure: The angle of every target vector to its own class's source direction over the steps, per setting; below, which classes each step's source image contains.
fig = plots.toy_angles(problem, runs);

# %% [markdown]
# **Figure 3.** Top: one line per target vector, its angle to its class's source direction (0 =
# aligned; it starts near the gap, and the dotted line is the direction of the next class). Bottom:
# the classes in each step's source image (white = absent). Without the dictionary a class's lines
# are flat exactly where its strip is white: the unmatching problem. Without the split, person lines
# climb to the next class (road) instead of falling to 0.
#
# Flat means *exactly* flat: gradient descent without momentum does not move a vector whose gradient
# is zero, and the gradient of a class with an empty $\mathcal M^c$ is zero.

# %%
r = runs["no_dictionary"]
rows = problem.target_classes == rare
frozen = all(torch.equal(r.positions[t + 1][rows], r.positions[t][rows]) for t in absent[rare])
moved = [int(runs["method"].moved(t)[rows].sum()) for t in absent[rare]]
print(f"w/o dictionary: {problem.names[rare]} is absent from {len(absent[rare])} source images; at each of those "
      f"steps its vectors did not move at all: {frozen}")
print(f"the method, at the same steps: at least {min(moved)} of its {int(rows.sum())} vectors moved at every one")

# %%
# Figure: Alignment over the steps per setting: mean cosine to the own class's source vectors (dashed: the rarest class) and the share of target vectors nearest their own class.
fig = plots.toy_alignment(runs, problem.names, highlight=rare);

# %% [markdown]
# **Figure 4.** Left: the mean cosine of the target vectors to the source vectors of their own class
# (solid: mean over classes; dashed: the rarest class, person). Right: the share of target vectors
# whose most similar source vector has their class — what a classifier fitted on the source would get
# right.

# %%
print(f"{'':44s} own-class cosine       nearest own class    steps unmatched")
print(f"{'':44s} start  end   {problem.names[rare]:6s}  start  end           per class")
for name, r in runs.items():
    s = r.summary()
    print(f"{r.label:44s} {s['own_cos_start']:.3f}  {s['own_cos_end']:.3f} {s['own_cos_end_per_class'][rare]:.3f}   "
          f"{100 * s['nearest_start']:4.0f}%  {100 * s['nearest_end']:4.0f}%         {s['steps_unmatched_per_class']}")

# %% [markdown]
# **Why the dictionary solves the unmatching problem.** Without it, a target class meets source
# vectors only in the iterations whose source image happens to contain it: person here in one step
# of four, so it moves in one step of four and lags behind (the dashed orange line). And the few
# vectors of one image leave gaps: the person vector that starts farthest from its class is rarely
# selected and is still about 55° off after 40 steps, where the dictionary's sixteen vectors from
# many images pull it to within about 10° (the top red line in Figure 3). The dictionary
# keeps the newest dict-size source vectors of *every* class, whichever image they came from, so
# every target class has partners at every step — and more varied ones, from many images. Note also
# a side effect of the "mean" reduction: without the dictionary the classes that *are* matched share
# the loss among fewer classes, so road moves faster than in the method for a while.
#
# **Why the class-wise split matters.** Without it, $\mathcal M$ pairs every target vector with
# every source vector. A target vector is pulled towards whatever source vectors it already
# resembles ($\mathcal M > \mathcal T_{cos}$), of any class: the domain gap rotated person towards
# road, road is in every image, so person ends on road. The loss aligns the two domains *as a
# whole* but mixes the classes; the split makes it align each class with itself.
#
# ## What $\mathcal T_{cos}$ selects
#
# So far process B's split was perfect. Real pseudo-labels are not (lesson 03): we now give a share
# of the target vectors a wrong label, another class at random (drawn as an X in the colour of the
# label), and look at the pairs one loss evaluation selects.

# %%
noisy = toy2d.make_problem(steps=steps, seed=seed, gap=gap, dict_size=dict_size, mislabelled=mislabelled)
thresholds = (-1.0, t_cos, 0.9)
panels = []
for t in thresholds:
    r = toy2d.run(noisy, "method", t_cos=t, lr=lr)
    panels.append((f"the method, T_cos = {t:g}", r.positions[0], r.selections[0]))
r = toy2d.run(noisy, "no_split", t_cos=t_cos, lr=lr)
panels.append((f"w/o class-wise split, T_cos = {t_cos:g}", r.positions[0], r.selections[0]))
print(f"{int(noisy.mislabelled.sum())} of {len(noisy.target_init)} target vectors carry a wrong pseudo-label")
# Figure: The pairs the loss selects at step 0 (lines, M > T_cos) for three thresholds with the class-wise split and one without; X = a wrong pseudo-label, hollow = no pair selected.
fig = plots.toy_pairs(noisy, panels);

# %% [markdown]
# **Figure 5.** The selected pairs of one loss evaluation (step 0): a line joins a target vector to
# each dictionary vector it is pulled towards ($\mathcal M > \mathcal T_{cos}$), in the colour of the
# source vector's class. X: a target vector with a wrong pseudo-label, in the colour of that label.
# Hollow: nothing selected, no gradient. Under each panel: the pairs selected, the share of target
# vectors pulled, and the pairs that join a target vector with a source vector of *another class
# than its own*.
#
# A 2-D vector can point anywhere, so cosines run from −1 to 1 here and $\mathcal T_{cos} = -1$
# means "no threshold". The lessons' real features are signed too (EfficientNet-Lite0's last block
# is a linear projection with no ReLU after it: cosines in $[-1, 1]$, lesson 06); the paper's
# ResNet-101 layer4 features come out of a ReLU, their cosines lie in $[0, 1]$, and there
# $\mathcal T_{cos} = 0$ plays that role. Without a threshold every pair counts: the
# mislabelled vectors are pulled right across the circle, to the dictionary of their wrong label.
# At $\mathcal T_{cos} = 0.6$ a target vector is only paired with the source vectors it already
# resembles: the mislabelled ones resemble nothing of their label and are left alone (hollow X),
# unless the wrong label is the neighbouring class. At 0.9 only the nearest pairs survive, and many
# correctly labelled vectors are left alone too. Without the split, a threshold cannot stop the mixing:
# the pairs to other classes are as similar as the right ones.
#
# The whole range, with the runs to the end:

# %%
sweep_t = (-1.0, -0.5, 0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
sweep = toy2d.threshold_sweep(noisy, sweep_t, lr=lr)
# Figure: T_cos sweep on the problem with wrong pseudo-labels: what the threshold selects at step 0 and where the runs end, with and without the class-wise split.
fig = plots.toy_threshold_sweep(sweep, mark=t_cos);

# %% [markdown]
# **Figure 6.** Against $\mathcal T_{cos}$ (dotted: the value used above), with the split (black) and
# without (red). Left, at step 0: the share of target vectors with a selected pair (solid) and the
# share of selected pairs that join two classes (dashed). Right, after the last step: the share of
# target vectors nearest their own class (solid), and the share of mislabelled vectors that end
# nearest their wrong label, dragged into it (dashed; with the split only).

# %%
m = sweep["method"]
print("T_cos   targets pulled at step 0   never moved   nearest own class at the end   mislabelled dragged")
for i, t in enumerate(sweep_t):
    print(f"{t:5.1f}   {100 * m['points_selected'][i]:12.0f}%   {100 * m['never_pulled'][i]:15.0f}%   "
          f"{100 * m['nearest_end'][i]:18.0f}%   {100 * m['dragged'][i]:23.0f}%")

# %% [markdown]
# This is the trade-off of the paper's section 4.5 in miniature: set too low, $\mathcal T_{cos}$
# selects almost every pair and "possibly maximizes with even dissimilar source features" — here the
# wrongly labelled vectors are dragged into the wrong class; set too high, too few vectors are
# selected and the loss has little effect — here nearly a third of the target vectors never move.
# In between, each target vector is pulled only towards the source vectors it already resembles:
# from 0 to 0.7 the vectors that never move are exactly the seven mislabelled ones whose label is
# far from them, and only the one labelled as its neighbouring class is dragged.
#
# **Take away.** The loss only turns directions. The class-wise split decides *which class* a target
# vector is pulled to (without it: the nearest, most frequent source class, whatever its own); the
# dictionary decides *whether* it is pulled at every step (without it: only when the current source
# image contains its class); $\mathcal T_{cos}$ decides *towards which vectors* of that class (only
# those it already resembles), which is what keeps pseudo-label errors from being dragged along.
#
# ## Questions
#
# Predict first, then check with the code in the answer.
#
# **1.** If person were in every source image (`frequencies=(1, 1, 1, 1)`), how would the
# "w/o dictionary" curves of Figure 4 compare with the method's?
#
# <details><summary>Answer</summary>
#
# They would almost coincide: no class is ever unmatched, so every class is pulled at every step
# with or without the dictionary (here both end with every target vector nearest its own class).
# What is left is variety: six vectors of one image against sixteen from many images. Check:
# `toy2d.experiment(toy2d.make_problem(frequencies=(1, 1, 1, 1)), settings=("method", "no_dictionary"))`
# and compare the runs' `summary()`.
#
# </details>
#
# **2.** Without the split, why do the person vectors end on road and not on vegetation, their other
# neighbour?
#
# <details><summary>Answer</summary>
#
# The domain gap rotated them *towards* road, so their cosine with road vectors (about 50° away,
# cos ≈ 0.64) exceeds $\mathcal T_{cos} = 0.6$, while vegetation's lie about 130° away (cos < 0):
# never selected. And road is in every source image, person's own vectors in one of five.
#
# </details>
#
# **3.** At $\mathcal T_{cos} = 0.9$ some target vectors never move in 40 steps. Could more steps
# help them? What could?
#
# <details><summary>Answer</summary>
#
# More steps alone cannot: a vector with no selected pair gets no gradient and stays where it is, and
# the source side never moves. Only a new source vector close enough to it (cosine above 0.9) can
# select it — which a larger or more varied dictionary makes more likely — or a lower threshold.
# In the real network the features also move through the shared weights, pulled by the vectors
# that are selected (and by the segmentation loss), which this toy leaves out.
#
# </details>
