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
# # 11 — Qualitative comparison: what adaptation changes in the maps and in the features (Fig. 5)
#
# **The question.** Tables compress a model into one number per class. The paper's Fig. 5
# shows what the numbers hide: with the adversarial loss added ("with Adversarial", Table 4),
# predictions are noisier, roads get other classes, distant people are missed; "Ours"
# (eq. 12) gives smoother maps. What does adaptation change in the maps of the synthetic
# benchmark, and what does it do to the features the cosine loss acts on?
#
# **The experiment.** The grid's seed-0 models of source-only, only SSL and Ours have their
# predictions on all 100 target val images published
# (`docs/results/synthetic/gta5/<variant>/seed0/predictions/`). The page shows the images
# where Ours and source-only differ most (the most pixels that became correct, minus those
# that became wrong), next to the ground truth, with per-image mIoU and *boundary density*
# (the share of neighbouring pixel pairs with different labels: a speckled map has many more
# boundaries than its ground truth). Then a 2-D picture of the features before (source-only)
# and after (Ours) adaptation (`features2d.json`: a PCA of road, car, person and vegetation
# vectors from source and target images). The synthetic grid has no "with Adversarial" row,
# so the comparison is with the model before adaptation and with self-training alone.
#
# **Honest labelling.** Synthetic images and models, not the paper's. Picking the images
# where Ours gains most shows what changed, not how often: the totals over all 100 images
# are printed beside them. If the predictions are not published yet, the notebook trains
# tiny runs instead (a note says so), whose maps are still blobs.

# %% tags=["parameters"]
grid_root: str = "docs/results/synthetic"  # published predictions and features2d.json: <task>/<variant>/seed<N>/
task: str = "gta5"  # the grid's task
seed: int = 0  # the grid seed whose predictions are published
n_images: int = 3  # target val images shown: those where Ours gains most over source-only
data_root: str = ""  # the benchmark the predictions were made on (empty: the default synthetic benchmark)
source_run: str = "runs/lessons/source-only"  # fallback: the source-only model (trained there if missing)
source_iterations: int = 150  # fallback: its iterations if it must be trained
ssl_run: str = ""  # fallback: a trained 'only SSL' run; empty: a tiny one into run_dir/only-ssl
ours_run: str = ""  # fallback: a trained 'Ours' run; empty: a tiny one into run_dir/ours
iterations: int = 6  # fallback: iterations of the tiny runs (from the source-only model)
fallback_images: int = 20  # fallback: target val images predicted and ranked
pseudo_root: str = "runs/lessons/pseudo_labels"  # fallback: pseudo-labels for the tiny runs (made if missing)
run_dir: str = "runs/notebooks/11_qualitative"  # fallback: where the tiny runs go

# %%
import cosuda  # first: it sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads once, when torch loads it
import json

import numpy as np
import torch
from IPython.display import Markdown, display
from PIL import Image

from cosuda import plots, results
from cosuda.config import make_config, resolve_path, run_overrides, variant_label
from cosuda.data import Cityscapes
from cosuda.metrics import confusion_matrix, mean_iou
from cosuda.synthetic import ensure as ensure_benchmark
from cosuda.runs import ensure_pseudo_labels, ensure_trained, lesson_source_model
from cosuda.train import load_run_model, resolve_paths

torch.manual_seed(0)

columns = {v: variant_label(v) for v in ("source-only", "only-ssl", "ours")}
root = resolve_path(grid_root)
published = results.published_predictions(root, task, list(columns), seed)
cfg = make_config("synthetic-ours", {"data_root": str(resolve_path(data_root))} if data_root else None)
if not data_root:
    ensure_benchmark(cfg.data_root, progress=False)  # the default benchmark (seed 0), generated if missing
val = Cityscapes(resolve_paths(cfg).target, "val", size=tuple(cfg.eval_size))
use_published = len(published) == len(columns)
print(f"{len(val)} target val images in {resolve_paths(cfg).target}; published predictions: "
      + (", ".join(published) or "none"))

# %% [markdown]
# ## The predictions
#
# Published predictions are read from their PNGs (trainIds at 320x160). Otherwise (a note
# says so) the fallback makes tiny runs: only SSL and Ours trained `iterations` iterations
# from the lessons' source-only model, which is itself the source-only column, and predicts
# the first `fallback_images` val images with the three models.

# %%
truths, images, predictions = [], [], {v: [] for v in columns}
if use_published:
    for i in range(len(val)):
        item = val[i]
        truths.append(item["label"].numpy())
        for v in columns:
            predictions[v].append(np.array(Image.open(results.prediction_path(published[v], item["name"]))))
    print(f"read {len(truths)} x {len(columns)} published predictions (grid seed {seed})")
else:
    display(Markdown(results.extras_note("predictions") + " Until then this page shows **tiny live runs** "
                     f"({iterations} iterations from the lessons' source-only model), not the grid's models."))
    models = {"source-only": lesson_source_model(resolve_path(source_run), iterations=source_iterations)[0]}
    pseudo_path = ensure_pseudo_labels(resolve_path(pseudo_root), resolve_path(source_run), source_iterations)
    for v, given in (("only-ssl", ssl_run), ("ours", ours_run)):
        path = resolve_path(given) if given else resolve_path(run_dir) / v
        if not given:
            ensure_trained(f"synthetic-{v}", path, run_overrides(
                f"synthetic-{v}", iterations, iterations, eval_max_items=10, weights=str(resolve_path(source_run)),
                pseudo_root=str(pseudo_path), align_items=0), progress=False)
        models[v] = load_run_model(path)[0]
    with torch.inference_mode():
        for i in range(min(fallback_images, len(val))):
            item = val[i]
            truths.append(item["label"].numpy())
            for v, model in models.items():
                _, logits = model(item["image"][None])
                predictions[v].append(model.upsample(logits, tuple(item["label"].shape)).argmax(1)[0].numpy())
    print(f"predicted {len(truths)} target val images with the tiny runs")

ranked = results.rank_by_gain(predictions["source-only"], predictions["ours"], truths)
shown = [i for i, _, _ in ranked[:n_images]]
for a, b in (("source-only", "ours"), ("only-ssl", "ours"), ("source-only", "only-ssl")):
    became_right = sum(results.changed_to_correct(p, q, t) for p, q, t in zip(predictions[a], predictions[b], truths))
    became_wrong = sum(results.changed_to_correct(q, p, t) for p, q, t in zip(predictions[a], predictions[b], truths))
    print(f"{columns[a]:>13s} -> {columns[b]:13s}: {became_right:7d} pixels became correct, {became_wrong:7d} became "
          f"wrong over the {len(truths)} images (net {became_right - became_wrong:+d})")
print("images where Ours gains most over source-only (index: became correct / became wrong): "
      + ", ".join(f"{i}: {r} / {w}" for i, r, w in ranked[:n_images]))

# %% [markdown]
# ## Target image, ground truth, source-only, only SSL, Ours

# %%
# Figure: target val images where Ours gains most over source-only: image, ground truth, source-only, only SSL and Ours (paper Fig. 5 layout).
images = [val[i]["image"].permute(1, 2, 0).numpy() for i in shown]
fig = plots.qualitative(images, {"ground truth": [truths[i] for i in shown],
                                 **{columns[v]: [predictions[v][i] for i in shown] for v in columns}},
                        max_rows=n_images);

# %% [markdown]
# **Figure 1.** Fig. 5's layout on the synthetic benchmark: target val images (left), their
# ground truth, and the predictions of source-only, only SSL and Ours, for the images where
# Ours turned the most pixels from wrong to right compared with source-only (the printout
# above gives the counts and the totals over all images). Colours: the Cityscapes palette,
# black = ignored.
#
# ## Measuring "noisy"
#
# Boundary density: the share of horizontally or vertically adjacent pixel pairs with
# different labels (ignored pixels left out). Per-image mIoU uses the classes present in
# the image's ground truth or prediction (`cosuda.metrics.mean_iou` ignores the others).

# %%
header = f"{'image':>6s} {'GT boundaries':>14s}" + "".join(f" {columns[v] + ' mIoU':>20s} {'boundaries':>11s}"
                                                         for v in columns)
print(header)
for i in shown:
    valid = truths[i] != 255
    line = f"{i:6d} {100 * results.boundary_density(truths[i], valid):13.1f}%"
    for v in columns:
        pred = predictions[v][i]
        line += (f" {100 * mean_iou(confusion_matrix(pred, truths[i])):19.1f}%"
                 f" {100 * results.boundary_density(pred, valid):10.1f}%")
    print(line)
density = {v: np.mean([results.boundary_density(p, t != 255) for p, t in zip(predictions[v], truths)]) for v in columns}
print(f"mean over all {len(truths)} images: ground truth "
      f"{100 * np.mean([results.boundary_density(t, t != 255) for t in truths]):.1f}%, "
      + ", ".join(f"{columns[v]} {100 * d:.1f}%" for v, d in density.items()))

# %% [markdown]
# ## The features before and after adaptation
#
# The cosine loss acts on feature vectors, not on maps. `features2d.json` holds, for each
# published model, a 2-D PCA of its feature vectors of four classes (road, car, person,
# vegetation) from source images (dots) and target images (crosses). If adaptation works as
# the paper argues, the target crosses of a class sit closer to the source dots of their
# own class after adaptation than before. Each model has its own projection, so compare
# the arrangement, not the coordinates; the panel titles give the share of target points
# nearer their class's source centre than any other class's.

# %%
# Figure: 2-D PCA of source (dots) and target (crosses) feature vectors of four classes, before (source-only) and after (Ours) adaptation.
pictures = {}
for v, title in (("source-only", "before: source-only"), ("only-ssl", "only SSL"), ("ours", "after: Ours")):
    path = root / task / v / f"seed{seed}" / "features2d.json"
    pictures[title] = json.loads(path.read_text()) if path.is_file() else None
if not any(pictures.values()):
    display(Markdown(results.extras_note("2-D feature picture (`features2d.json`)")))
fig = plots.features_figure(pictures);

# %% [markdown]
# **Figure 2.** Feature vectors of road, car, person and vegetation from source (dots) and
# target (crosses) images in each model's own 2-D PCA projection, coloured by class
# (Cityscapes palette). Lesson 07's alignment curves measure the same thing in all dimensions.
# Which step moves the target crosses, and which way, is read from the panel titles below:
# self-training is only SSL − source-only, the cosine loss is Ours − only SSL.

# %%
# The caption's claim, from the three pictures: a share that moves by at most 1 point "did not change".
if all(pictures.values()):
    display(Markdown("Share of target points nearest their own class's source centre "
                     "(source-only → only SSL → Ours):\n\n" + results.feature_steps_markdown(*pictures.values())))

# %% [markdown]
# ## What to take away
#
# - The paper's qualitative claims can be checked with numbers per image (pixels that
#   became correct, per-image mIoU, boundary density), not only by eye; the models must
#   share the seed and the training length for the comparison to mean anything.
# - Choosing the images where a model gains most is a way to *see* what changed; how often
#   it changes is in the totals over all images and in the grid's tables (lessons 07-08).
# - More images: `-p n_images 6`.
