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
# # 02 — Source-only training: how far does a model get without adaptation?
#
# **The question.** A segmentation network trained only on the labelled source (GTA5-like
# renders) is the starting point of every method in the paper, and it is the "separately
# trained model" of supplementary A whose confident predictions become the target's
# pseudo-labels. How good is it on the unlabelled target (Cityscapes-like photographs), and
# which classes does the domain gap hurt most?
#
# **The experiment.** Train DeepLabV2 with the source segmentation loss only (eq. 1,
# $\mathcal{L}^S_{seg}$: pixel-wise cross-entropy of the upsampled prediction, eq. 5), evaluate
# on target val every few iterations (a curve like the paper's Fig. 4), and compare the same
# model on source images with target images: the difference is the domain gap that the
# following lessons try to close.
#
# **Honest labelling.** By default this runs the `synthetic-source-only` preset on the
# synthetic benchmark: DeepLabV2 (ASPP-v2 head) on an ImageNet EfficientNet-Lite0 with frozen
# BatchNorm at output stride 16, trained on 320x180 GTA5-like renders and evaluated on 320x160
# Cityscapes-like photographs (`cosuda/config.py`, `docs/benchmark.md`). The defaults train only
# 20 iterations so that the notebook runs in a minute or two: the live numbers are *synthetic*,
# short-trained (a 20-iteration model is still far from converged; the same seed gives the
# same numbers on the same machine). The section "What the committed grid shows" reads the
# grid's fully trained models instead, and the last section shows how to run the real
# experiment. None of these numbers are the paper's.

# %% tags=["parameters"]
preset: str = "synthetic-source-only"  # any preset of `python -m cosuda.train --list-presets`
iterations: int = 20  # training iterations (the main job's stage 1: 1200)
eval_every: int = 0  # evaluate on target val every this many iterations (0: iterations // 4)
seed: int = 0  # seeds the initialisation and the order of the images
data_root: str = ""  # empty: the preset's data (the synthetic benchmark, generated if missing)
eval_max_items: int = 0  # evaluate on the first N target val images (0: the whole split)
source_eval_items: int = 40  # source images for the source-vs-target comparison
oracle_run: str = ""  # a finished oracle run (e.g. runs/grid/gta5/oracle/seed0) to compare with
n_examples: int = 3  # target val images shown with their predictions
keep_checkpoints: int = 1  # checkpoints kept in run_dir (each ~38 MB for the synthetic preset)
grid_root: str = "docs/results/synthetic"  # the committed grid (cosuda.results.publish); empty: skip that section
task: str = "gta5"  # the grid's task: gta5 or synthia
run_dir: str = "runs/notebooks/02_source_only"  # where the run is written; a finished run is reused

# %%
import cosuda  # first: it sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads once, when torch loads it
import json
import time

import numpy as np
import torch
from IPython.display import Markdown, display

from cosuda import plots, results
from cosuda.config import REPO_ROOT, make_config, resolve_path, run_overrides
from cosuda.data import GTA5, SYNTHIA, Cityscapes
from cosuda.labels import CLASS_NAMES
from cosuda.metrics import evaluate, iou_markdown
from cosuda.runs import ensure_trained
from cosuda.train import load_run_model, resolve_paths

torch.manual_seed(seed)

run_path = resolve_path(run_dir)
overrides = run_overrides(preset, iterations, eval_every, seed, data_root, eval_max_items, keep_checkpoints)
cfg = make_config(preset, overrides)
print(f"preset {preset}: variant {cfg.variant}, {cfg.arch} on {cfg.backbone} ({cfg.weights} weights), "
      f"{cfg.optimizer} lr {cfg.lr:g}, source {cfg.source} at {cfg.source_size[0]}x{cfg.source_size[1]}, "
      f"target at {cfg.target_size[0]}x{cfg.target_size[1]}, {cfg.iterations} iterations")

# %% [markdown]
# ## Training
#
# `cosuda.train.ensure_trained` trains the preset into `run_dir`, or reuses that run if it
# already finished with the same settings (an unfinished one is resumed from its newest
# checkpoint; a different configuration in the same folder is refused rather than
# overwritten). The run writes `metrics.json` (mIoU history, per-class IoU of the last
# evaluation) and checkpoints that hold everything needed to resume.

# %%
start = time.perf_counter()
metrics = ensure_trained(preset, run_path, overrides, progress=True)
print(f"{metrics['iteration']} iterations in {run_path.relative_to(REPO_ROOT) if run_path.is_relative_to(REPO_ROOT) else run_path} "
      f"({time.perf_counter() - start:.0f} s in this session; "
      f"{metrics['train']['iterations_per_second'] or float('nan'):.2f} it/s when it trained)")
print(f"target val mIoU19 {metrics['miou19']:.1f}% (best snapshot {metrics['best']['miou19']:.1f}% at "
      f"iteration {metrics['best']['iteration']}), mIoU16 {metrics['miou16']:.1f}%, mIoU13 {metrics['miou13']:.1f}%")

# %% [markdown]
# ## The mIoU curve on target val
#
# Evaluation follows the field's protocol (`cosuda.metrics.evaluate`): predict at the
# evaluation size, upsample the logits bilinearly to the label's resolution, accumulate one
# confusion matrix over the split, IoU per class, mean over the 19 classes.

# %%
# Figure: mIoU19 of the source-only model on target val against training iterations.
fig = plots.miou_curves({f"{cfg.variant} (seed {seed})": [metrics]});

# %% [markdown]
# **Figure 1.** mIoU19 of this notebook's live source-only run on the 100 target val images (or
# `eval_max_items`), at each evaluation; the line below reads the curve's range.

# %%
# The curve in words, from its own points: its range and whether it rose at every evaluation.
curve = [h["miou19"] for h in metrics["history"]]
steps = np.diff(curve)
shape = ("rises at every evaluation" if len(steps) and (steps > 0).all() else
         "falls at every evaluation" if len(steps) and (steps < 0).all() else
         "goes up and down between evaluations" if len(steps) else "has a single point")
display(Markdown(f"After {metrics['iteration']} iterations the curve spans {min(curve):.1f}–{max(curve):.1f} mIoU19 "
                 f"over {len(curve)} evaluations and {shape}."))

# %% [markdown]
# ## Where does the gap hurt? Source images against target images
#
# The same model evaluated on source images (which it was trained on: an optimistic,
# in-domain number) and on target val. The difference is the domain gap plus some
# overfitting; per class it shows which classes transfer and which do not.

# %%
model, run_cfg = load_run_model(run_path, "cpu")
paths = resolve_paths(run_cfg)
source_cls = GTA5 if run_cfg.source == "gta5" else SYNTHIA
source_set = source_cls(paths.source, size=tuple(run_cfg.source_size), image_dir=run_cfg.source_image_dir or None)
on_source = evaluate(model, source_set, max_items=source_eval_items, progress=False)
print(f"mIoU19 on {min(source_eval_items, len(source_set))} source training images: {on_source['miou19']:.1f}%   "
      f"on target val: {metrics['miou19']:.1f}%")
rows = {f"on source ({run_cfg.source}, seen in training)": on_source["per_class_iou"],
        "on target val": np.array([np.nan if v is None else v for v in metrics["per_class_iou"]])}
if oracle_run:
    oracle = json.loads((resolve_path(oracle_run) / "metrics.json").read_text())
    rows[f"oracle on target val ({oracle['iteration']} it., seed {oracle['seed']})"] = np.array(
        [np.nan if v is None else v for v in oracle["per_class_iou"]])
display(Markdown(iou_markdown(rows)))

# %%
# Figure: per-class IoU of the source-only model on source images and on target val (and the oracle's if given).
fig = plots.per_class_bars(rows);

# %% [markdown]
# **Figure 2.** Per-class IoU of the live model on source images it was trained on (left bar of
# each group) and on target val (right; the oracle's, if `oracle_run` is given). Where the right
# bar is much lower, the domain gap (or a class the short run has not learned at all) is to blame.

# %%
gap = rows[list(rows)[0]] - rows["on target val"]
order = [c for c in np.argsort(np.nan_to_num(gap, nan=-np.inf))[::-1] if not np.isnan(gap[c])]
print("largest drops from source to target (IoU points): "
      + ", ".join(f"{CLASS_NAMES[c]} {gap[c]:.1f}" for c in order[:4]))

# %% [markdown]
# ## Predictions on target images
#
# Target image, ground truth and the source-only prediction, coloured with the Cityscapes
# palette (black = ignore).

# %%
# Figure: target val images, their ground truth and the source-only model's prediction.
val = Cityscapes(paths.target, "val", size=tuple(run_cfg.eval_size))
images, truths, preds = [], [], []
with torch.inference_mode():
    for i in range(min(n_examples, len(val))):
        item = val[i]
        _, logits = model(item["image"][None])
        preds.append(model.upsample(logits, tuple(item["label"].shape)).argmax(1)[0].numpy())
        truths.append(item["label"].numpy())
        images.append(item["image"].permute(1, 2, 0).numpy())
fig = plots.qualitative(images, {"ground truth": truths, f"{run_cfg.variant} prediction": preds});

# %% [markdown]
# **Figure 3.** Target val images (left), their ground truth and the live source-only model's
# prediction, in the Cityscapes palette (black: ignored). The line below counts what these
# predictions contain; lesson 11 shows the grid's models on the same images.

# %%
# What the shown predictions hold: the classes covering most pixels, and the ground truth's classes never predicted.
pred_px = np.bincount(np.concatenate([p.ravel() for p in preds]), minlength=len(CLASS_NAMES))[:len(CLASS_NAMES)]
truth_all = np.concatenate([t.ravel() for t in truths])
truth_px = np.bincount(truth_all[truth_all < len(CLASS_NAMES)], minlength=len(CLASS_NAMES))
top = np.argsort(pred_px)[::-1][:3]
never = [CLASS_NAMES[c] for c in np.argsort(truth_px)[::-1] if truth_px[c] > 0 and pred_px[c] == 0]
display(Markdown(f"In these {len(preds)} predictions ({metrics['iteration']} iterations), "
                 + ", ".join(f"{CLASS_NAMES[c]} covers {100 * pred_px[c] / pred_px.sum():.0f} %" for c in top)
                 + " of the pixels; " + (f"{len(never)} classes of the ground truth are never predicted: {', '.join(never)}."
                                          if never else "every class of the ground truth is predicted somewhere.")))

# %% [markdown]
# ## What the committed grid shows: what transfers and what does not
#
# The 20-iteration model above is a smoke run. The repository commits the metrics of fully
# trained runs (`docs/results/synthetic/<task>/<variant>/seed<N>/metrics.json`, written by
# `python -m cosuda.runner grid ... --publish`). Each seed's grid starts from one stage-1
# source-only model (1,200 iterations, what the main job trains); its "source-only" row is that
# model trained 600 more iterations on the source, and its "oracle" is the same model trained
# 600 iterations on the *target's* labels instead: an upper bound that no UDA method can use.
# Per class, the share of the oracle's IoU that the source-only model keeps says which classes
# the domain gap hurts (mean over the seeds published so far; the seeds are listed).

# %%
grid_runs = results.load(resolve_path(grid_root), task) if grid_root else {}
missing = [v for v in ("source-only", "oracle") if v not in grid_runs]
if missing:
    display(Markdown(results.missing_note(missing, f"{grid_root}/{task}")))
else:
    display(Markdown(f"**Synthetic grid, {task.upper()}-like → Cityscapes-like** (this repository, final snapshot, "
                     "IoU % on the 100 target val images; not the paper's numbers):\n\n"
                     + results.transfer_markdown(grid_runs, "source-only", "oracle")))
    so, orc = results.per_class_mean(grid_runs, "source-only"), results.per_class_mean(grid_runs, "oracle")
    kept = 100 * so / np.where(orc > 0, orc, np.nan)
    print(f"source-only {np.nanmean(so):.1f} vs oracle {np.nanmean(orc):.1f} mIoU19 (seeds "
          f"{sorted(grid_runs['source-only'])}): the source model keeps {100 * np.nanmean(so) / np.nanmean(orc):.0f}% "
          "of the oracle's mean")
    print("keeps least: " + ", ".join(f"{CLASS_NAMES[c]} {kept[c]:.0f}%" for c in np.argsort(np.nan_to_num(kept, nan=1e9))[:5]))
    print("keeps most:  " + ", ".join(f"{CLASS_NAMES[c]} {kept[c]:.0f}%" for c in np.argsort(np.nan_to_num(kept, nan=-1))[::-1][:5]))

# %%
# Figure: per-class IoU of the grid's source-only model and of the oracle on target val (mean over the published seeds).
fig = plots.per_class_bars({f"{name} (grid, seeds {','.join(map(str, sorted(grid_runs.get(v, {})))) or 'none'})":
                            results.per_class_mean(grid_runs, v) for name, v in (("source-only", "source-only"),
                                                                               ("oracle", "oracle"))});

# %% [markdown]
# **Figure 4.** Per-class IoU on target val of the committed grid's source-only model and its
# oracle (the same stage-1 model trained on the target's labels), mean over the published seeds.
# The gap between the two bars of a class is what adaptation can at most recover for it.

# %% [markdown]
# ## What to take away
#
# - The share of the oracle's mIoU19 that the source-only model keeps (below, from the
#   committed grid) is the gap the paper's methods try to close, starting from this model's
#   pseudo-labels (lesson 03). The target draws people, bicycles and trucks differently
#   (`docs/benchmark.md`), and walls and trains are rare: see where those classes land.
# - A smoke run shows how a run is reported, not what the model can do. Compare variants only
#   on full-length runs and several seeds (the committed grid; lessons 07-10 read it).

# %%
# The take-aways' numbers, from the committed grid and this notebook's live run.
if not missing:
    def kept_share(a, b):  # the share of b's mean that a keeps, in %
        return 100 * np.nanmean(a) / np.nanmean(b)
    lines = [f"On the committed grid the source-only model keeps {kept_share(so, orc):.0f} % of the oracle's "
             f"mIoU19 (mean over seeds {sorted(grid_runs['source-only'])})"]
    shared = sorted(set(grid_runs["source-only"]) & set(grid_runs["oracle"]))
    if shared:
        s0 = shared[0]
        so0 = np.array([np.nan if v is None else v for v in grid_runs["source-only"][s0]["per_class_iou"]])
        orc0 = np.array([np.nan if v is None else v for v in grid_runs["oracle"][s0]["per_class_iou"]])
        lines[0] += f", {kept_share(so0, orc0):.0f} % on seed {s0}"
    high = [CLASS_NAMES[c] for c in np.argsort(np.nan_to_num(kept, nan=-1))[::-1] if kept[c] > 80]
    low = [CLASS_NAMES[c] for c in np.argsort(np.nan_to_num(kept, nan=1e9)) if kept[c] <= 100 / 3]
    lines.append("classes that keep more than 80 %: " + (", ".join(high) or "none"))
    lines.append("classes that keep a third or less: " + (", ".join(low) or "none"))
    live, full = metrics["miou19"], np.nanmean(so)
    word = "below" if live < full else "above"
    lines.append(f"the live {metrics['iteration']}-iteration run reaches {live:.1f} mIoU19, {abs(full - live):.1f} points "
                 f"{word} the grid's source-only model ({full:.1f})")
    display(Markdown("; ".join(lines) + "."))
#
# ## Running the real experiment (GPU)
#
# The paper's settings are presets (section 4.1, Table 5): DeepLabV2-ResNet101 from ImageNet
# weights, SGD at 2.5e-4 with the poly schedule, batch 1, GTA5 at 1280x720 (SYNTHIA at
# 1280x760) and Cityscapes at 1024x512. With the three datasets under one folder
# (`/data/gta5`, `/data/synthia`, `/data/cityscapes`, layouts in `data/README.md`):
#
# ```bash
# python -m cosuda.train --preset gta5-deeplabv2-source-only --out runs/gta5/source-only --set data_root=/data
# python -m cosuda.train --preset synthia-deeplabv2-source-only --out runs/synthia/source-only --set data_root=/data
# # FCN-8s-VGG16 (Adam 1e-5, step schedule):
# python -m cosuda.train --preset gta5-fcn8s-source-only --out runs/gta5/fcn8s-source-only --set data_root=/data
# ```
#
# The paper trains on the CycleGAN-translated GTA5 images of BDL (add
# `--set source_image_dir=/data/gta5_cyclegan`, same file names). ImageNet weights come from
# torchvision's cache (`$TORCH_HOME/hub/checkpoints`). A run can be interrupted at any time
# and continued with `--resume`; `--set eval_every=2000` gives the paper's Fig. 4 spacing.
# This notebook runs the same preset through papermill:
#
# ```bash
# papermill notebooks/02_source_only.ipynb runs/gta5/02.ipynb -p preset gta5-deeplabv2-source-only \
#     -p data_root /data -p iterations 120000 -p eval_every 2000 -p eval_max_items 0 \
#     -p run_dir runs/gta5/source-only
# ```
#
# Its checkpoint then makes the pseudo-labels for the self-training variants:
# `python -m cosuda.train --pseudo-labels-from runs/gta5/source-only --out runs/gta5/pseudo_labels`.
