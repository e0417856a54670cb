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
# # 07 — Adaptation: self-training plus the cosine similarity loss (eq. 12)
#
# **The question.** Lessons 03–06 built the pieces: pseudo-labels for the target, processes
# A and B that split feature maps by class, the source feature dictionary and the cosine
# similarity loss. What happens when they train together? The paper's full method minimises
#
# $$\mathcal{L}_{total}(x^s, x^t) = \mathcal{L}_{seg}(x^s, x^t) + \lambda_{cos}\,\mathcal{L}_{cos}(x^t) \qquad (12)$$
#
# where $\mathcal{L}_{seg}$ is the cross-entropy on source labels (eq. 1) plus on target
# pseudo-labels (eq. 2), and $\mathcal{L}_{cos}$ (eq. 10) pulls each target feature vector
# towards the stored source vectors of its class that are already similar (above
# $\mathcal{T}_{cos}$). Without pseudo-labels the target is split by the current prediction
# and the total is eq. 11: source segmentation plus $\lambda_{cos}\mathcal{L}_{cos}$.
#
# **The experiment.** Train one preset (by default `synthetic-ours`, i.e. eq. 12) and put
# its target mIoU curve and per-class IoU beside the source-only model that made its
# pseudo-labels. The same notebook runs every variant of the paper (`preset` parameter) and
# the real GTA5→Cityscapes / SYNTHIA→Cityscapes tasks (`data_root`).
#
# **Honest labelling.** The defaults are smoke-sized (a few iterations on the synthetic
# benchmark) so that the notebook runs in about a minute: the curves show how the run is
# reported, not whether the method works. For that, run the full preset with several seeds
# (notebook 08 or `python -m cosuda.runner reproduce`).

# %% tags=["parameters"]
preset: str = "synthetic-ours"  # e.g. synthetic-ours11, gta5-deeplabv2-ours, synthia-deeplabv2-ours, gta5-fcn8s-ours
iterations: int = 20  # training iterations (the synthetic preset's full run: 800)
eval_every: int = 0  # evaluate on target val every this many iterations (0: iterations // 4)
seed: int = 0  # seeds the initialisation and the order of the images
data_root: str = ""  # empty: the preset's data (the synthetic benchmark); real data: the folder with gta5/ synthia/ cityscapes/
pseudo_root: str = "runs/lessons/pseudo_labels"  # pseudo-labels of the target train set (made here if missing)
compare_with: str = "runs/lessons/source-only"  # the source-only run: made the pseudo-labels, drawn beside this run
weights: str = ""  # empty: the preset's initialisation (ImageNet); a run folder: start from that run's model (warm start)
source_iterations: int = 150  # if compare_with must be trained (synthetic only): its iterations
eval_max_items: int = 0  # evaluate on the first N target val images (0: the whole split)
show_fcn8s: bool = False  # build FCN-8s-VGG16 (134M parameters, ~8 s) to print its three feature maps
keep_checkpoints: int = 1  # checkpoints kept in run_dir (each ~140 MB for the synthetic preset)
run_dir: str = "runs/notebooks/07_adapt"  # where the run is written; a finished run is reused

# %%
import json
import time
from pathlib import Path

import numpy as np
import torch
from IPython.display import Markdown, display

from cosuda import plots
from cosuda.config import VARIANTS, make_config, resolve_path
from cosuda.method import layer_thresholds
from cosuda.metrics import PAPER_RESULTS, iou_markdown
from cosuda.paper_results import paper_miou
from cosuda.train import ensure_pseudo_labels, ensure_trained

torch.manual_seed(seed)



run_path, compare_path = resolve_path(run_dir), resolve_path(compare_with) if compare_with else None
eval_every = eval_every or max(1, iterations // 4)
overrides = {"iterations": iterations, "eval_every": eval_every, "seed": seed, "eval_max_items": eval_max_items,
             "checkpoint_every": min(iterations, make_config(preset).checkpoint_every),
             "keep_checkpoints": keep_checkpoints}
if data_root:
    overrides["data_root"] = str(resolve_path(data_root))
if weights:
    overrides["weights"] = str(resolve_path(weights))
cfg = make_config(preset, overrides)
flags = VARIANTS[cfg.variant]
if flags["target_seg"] == "pseudo":
    overrides["pseudo_root"] = str(resolve_path(pseudo_root))
cfg = make_config(preset, overrides)
print(f"preset {preset}: variant {cfg.variant!r}, {cfg.arch} on {cfg.backbone}, {cfg.source} -> cityscapes, "
      f"{cfg.iterations} iterations")
print(f"terms: source seg {flags['source_seg']}, target seg {flags['target_seg']!r}, cosine {flags['cos']!r} "
      f"(target split by {'pseudo-labels, eq. 7' if flags['split'] == 'pseudo' else 'prediction, eq. 8'}), "
      f"adversarial {flags['adversarial']}")
print(f"T_cos {cfg.t_cos}, dict-size {cfg.dict_size}, lambda_cos {cfg.lambda_cos}, reduction {cfg.reduction!r}")

# %% [markdown]
# ## Pseudo-labels
#
# Variants that train on pseudo-labels (eq. 12 and the SSL rows of Table 4) read them from
# `pseudo_root`. If they are not there yet (lesson 03 writes them), they are made now from
# the source-only run `compare_with` (supplementary A: class-wise thresholds = median
# confidence, capped at 0.9). On the synthetic benchmark that run is trained first if it is
# missing; for real data it must be a finished `…-source-only` run (notebook 02).

# %%
pseudo_path = Path(cfg.pseudo_root) if cfg.pseudo_root else None
if pseudo_path is not None:
    if compare_path is None and not (pseudo_path / "thresholds.json").is_file():
        raise ValueError(f"{pseudo_path} holds no pseudo-labels and compare_with is empty: "
                         "give the source-only run that should make them")
    ensure_pseudo_labels(pseudo_path, compare_path, source_iterations, synthetic=preset.startswith("synthetic-"))
    summary = json.loads((pseudo_path / "thresholds.json").read_text())
    print(f"pseudo-labels: {summary['images']} target train images in {pseudo_path}; thresholds tau^c of "
          "road/car/person: " + ", ".join(f"{summary['thresholds'][c]:.2f}" for c in ("road", "car", "person")))
else:
    print(f"variant {cfg.variant!r} uses no pseudo-labels")

# %% [markdown]
# ## Training
#
# One loop for every variant (`cosuda.train`); what a step computes is `cosuda.uda.UDAStep`,
# whose sections name their equations: source segmentation (eq. 1), target segmentation on
# pseudo-labels (eq. 2–4), process A → dictionary, process B (eq. 6–8), $\mathcal{L}_{cos}$
# (eq. 9–10), total (eq. 11/12).

# %%
start = time.perf_counter()
metrics = ensure_trained(preset, run_path, overrides, progress=True)
train_info = metrics["train"]
print(f"{metrics['iteration']} iterations ({time.perf_counter() - start:.0f} s in this session); "
      f"target val mIoU19 {metrics['miou19']:.1f}% (best {metrics['best']['miou19']:.1f}% at iteration "
      f"{metrics['best']['iteration']})")
if train_info["iterations_per_second"]:
    print(f"throughput {train_info['iterations_per_second']:.2f} it/s; share of step time in processes A/B, "
          f"the dictionary and L_cos: {100 * (train_info['method_share'] or 0):.1f}%")

# %% [markdown]
# ## Against the source-only model
#
# The curve of this run beside the source-only run (if `compare_with` holds one). With the
# smoke-sized defaults the two runs differ in length, so only the layout of the report, not
# the gap, means something; `python -m cosuda.runner main` trains both with the same budget.

# %%
# Figure: target val mIoU19 against iterations for this run and the source-only run (paper Fig. 4 style).
runs = {f"{cfg.variant} (seed {seed})": [metrics]}
compare = None
if compare_path is not None and (compare_path / "metrics.json").is_file():
    compare = json.loads((compare_path / "metrics.json").read_text())
    runs[f"{compare['variant']} (compare_with, seed {compare['seed']})"] = [compare]
fig = plots.miou_curves(runs);

# %%
as_array = lambda values: np.array([np.nan if v is None else v for v in values], dtype=float)
rows = {f"{cfg.variant} (this run, {metrics['iteration']} it.)": as_array(metrics["per_class_iou"])}
if compare is not None:
    rows[f"{compare['variant']} ({compare['iteration']} it.)"] = as_array(compare["per_class_iou"])
display(Markdown("**Synthetic benchmark** (this repository), target val, IoU %:\n\n" + iou_markdown(rows)))
paper = PAPER_RESULTS["table2"]["deeplabv2"]
display(Markdown("For reference only, **the paper on real data** (Table 2, 'Ours', DeepLabV2-ResNet101, "
                 "GTA5→Cityscapes):\n\n" + iou_markdown({"paper, Ours (R)": dict(paper["per_class_iou"],
                                                                                   mIoU=paper["mIoU"])})))

# %%
# Figure: per-class IoU of this run and of the source-only run on target val.
fig = plots.per_class_bars(rows);

# %% [markdown]
# ## The loss terms
#
# The engine logs each term of the last step (`metrics.json` → `train.last_losses`): `seg_s`
# (eq. 1), `seg_t` (eq. 2), `cos` ($\mathcal{L}_{cos}$, eq. 10, unweighted), `adv` / `disc`
# (supplementary C) and `total`. Weighted by their factors in eq. 11/12 they show how much
# each term pulls on the network; $\lambda_{cos}$ (Table 5: 0.01 for DeepLabV2) keeps the
# cosine term a small correction to the segmentation losses.

# %%
# Figure: share of each weighted loss term in the total loss of the last training step.
losses = train_info["last_losses"]
weights = {"seg_s": 1.0, "seg_t": 1.0, "cos": cfg.lambda_cos, "adv": cfg.lambda_adv}
print("last step: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
fig = plots.loss_terms(losses, weights);

# %% [markdown]
# ## FCN-8s: the cosine loss on three layers (supplementary D)
#
# FCN-8s fuses the outputs of three layers (fc7, pool4, pool3) and predicts at full
# resolution, so the method is applied to each of the three feature maps: the prediction's
# argmax and the labels are resized to each map by nearest neighbour (eq. 16–18), each layer
# has its own dictionary, and the threshold grows by 0.1 per layer as the layer gets
# shallower, because shallow features are less specific (eq. 19). The loss is the mean over
# layers (eq. 20). `cosuda.method.layer_thresholds` gives the thresholds; `UDAStep` uses them
# whenever the model returns more than one feature map.

# %%
for source in ("gta5", "synthia"):
    fcn = make_config(f"{source}-fcn8s-ours")
    print(f"{source}-fcn8s-ours: T_cos {fcn.t_cos} -> (fc7, pool4, pool3) thresholds "
          f"{layer_thresholds(fcn.t_cos, 3)}, dict-size {fcn.dict_size} per layer, lambda_cos {fcn.lambda_cos}, "
          f"{fcn.optimizer} lr {fcn.lr:g}; paper: {paper_miou(source, 'fcn8s', 'ours')}% (real data)")
if show_fcn8s:
    from cosuda.models import build_model

    fcn_model = build_model("fcn8s", backbone="vgg16", num_classes=19, weights="random")
    with torch.inference_mode():
        feats, logits = fcn_model(torch.rand(1, 3, cfg.target_size[1], cfg.target_size[0]))
    for name, f in zip(fcn_model.feature_names, feats):
        print(f"{name}: {tuple(f.shape)}")
    print(f"logits: {tuple(logits.shape)} (full resolution)")

# %% [markdown]
# ## What to take away
#
# - Eq. 12 adds one term to self-training; the term is cheap (see the share of step time)
#   and small in the total (λ_cos), and it acts on the features, not on the prediction.
# - One engine, one configuration row per variant: `VARIANTS` in `cosuda.config` says which
#   terms each of the paper's rows switches on.
# - Comparisons need equal budgets and several seeds: notebook 08 does that for Table 4.
#
# ### The real experiments (GPU)
#
# ```bash
# python -m cosuda.train --preset gta5-deeplabv2-source-only --out runs/gta5/source-only --set data_root=/data
# python -m cosuda.train --pseudo-labels-from runs/gta5/source-only --out runs/gta5/pseudo_labels
# python -m cosuda.train --preset gta5-deeplabv2-ours --out runs/gta5/ours --set data_root=/data \
#     --set pseudo_root=runs/gta5/pseudo_labels
# # or through this notebook:
# papermill notebooks/07_adapt.ipynb runs/gta5/07.ipynb -p preset gta5-deeplabv2-ours -p data_root /data \
#     -p iterations 120000 -p eval_every 2000 -p eval_max_items 0 -p pseudo_root runs/gta5/pseudo_labels \
#     -p compare_with runs/gta5/source-only -p run_dir runs/gta5/ours
# ```
#
# SYNTHIA→Cityscapes: the same with `synthia-deeplabv2-…` (T_cos 0.4, Table 5); FCN-8s:
# `gta5-fcn8s-ours` / `synthia-fcn8s-ours`.

# %% [markdown]
# ## Exercises
#
# **1.** Which loss terms does the variant `ssl-adv` (Table 4, "SSL with Adversarial") add to
# its total? Give a set of names from `{"seg_s", "seg_t", "cos", "adv"}` (hint:
# `cosuda.config.VARIANTS`).

# %% tags=["solution"]
# The terms of "ssl-adv"
answer_terms = {"seg_s", "seg_t", "adv"}

# %%
from cosuda.exercises import adapt as ex

ex.check_terms(answer_terms, "ssl-adv")

# %% [markdown]
# **2.** From the losses logged at the last step of this run (`losses` above) and
# `cfg.lambda_cos`, what fraction of the total loss is the weighted cosine term
# $\lambda_{cos}\mathcal{L}_{cos}$? (0 if the variant has no cosine term.)

# %% tags=["solution"]
# The share of lambda_cos * L_cos in the total, as a fraction
answer_share = cfg.lambda_cos * losses.get("cos", 0.0) / losses["total"]

# %%
ex.check_cos_share(answer_share, losses, cfg.lambda_cos)

# %% [markdown]
# **3.** FCN-8s on GTA5→Cityscapes uses $\mathcal{T}_{cos} = 0.4$ (Table 5). Which thresholds
# do the fc7, pool4 and pool3 layers use? Give them in that order.

# %% tags=["solution"]
# Thresholds for (fc7, pool4, pool3)
answer_thresholds = (0.4, 0.5, 0.6)

# %%
ex.check_fcn_thresholds(answer_thresholds, t_cos=0.4)
