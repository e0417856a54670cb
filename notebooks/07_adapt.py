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
# **The experiment.** Two parts. First a short live run of one preset (by default
# `synthetic-ours`, i.e. eq. 12) with its target mIoU curve and per-class IoU beside the
# source-only model that made its pseudo-labels; the same notebook runs every variant of the
# paper (`preset`) and the real GTA5→Cityscapes / SYNTHIA→Cityscapes tasks (`data_root`), and
# the main job (`python -m cosuda.runner main`) runs it at full length. Then the answer to the
# question, from the committed grid: Ours beside only SSL and source-only over several seeds,
# the differences paired by seed, how much of the loss the cosine term is, and whether target
# features actually moved towards the source features of their class.
#
# **Honest labelling.** The live defaults are smoke-sized (20 iterations from ImageNet
# weights, a minute or two on one core): their curves show how a run is reported, not
# whether the method works. The grid section reads fully trained runs of the synthetic benchmark (DeepLabV2 on an
# ImageNet EfficientNet-Lite0, 320x180 → 320x160); its numbers are synthetic, not the
# paper's, which appear only beside them.

# %% tags=["parameters"]
preset: str = "synthetic-ours"  # e.g. synthetic-ours11, gta5-deeplabv2-ours, synthia-deeplabv2-ours, gta5-fcn8s-ours
iterations: int = 20  # training iterations (the main job: 600 from its stage-1 model)
eval_every: int = 0  # evaluate on target val every this many iterations (0: iterations // 4)
seed: int = 0  # seeds the initialisation and the order of the images
data_root: str = ""  # empty: the preset's data (the synthetic benchmark); real data: the folder with gta5/ synthia/ cityscapes/
pseudo_root: str = "runs/lessons/pseudo_labels"  # pseudo-labels of the target train set (made here if missing)
compare_with: str = "runs/lessons/source-only"  # the source-only run: made the pseudo-labels, drawn beside this run
weights: str = ""  # empty: the preset's initialisation (ImageNet); a run folder: start from that run's model (warm start)
source_iterations: int = 150  # if compare_with must be trained (synthetic only): its iterations
eval_max_items: int = 0  # evaluate on the first N target val images (0: the whole split)
show_fcn8s: bool = False  # build FCN-8s-VGG16 (134M parameters, ~8 s) to print its three feature maps
keep_checkpoints: int = 1  # checkpoints kept in run_dir (each ~38 MB for the synthetic preset)
run_dir: str = "runs/notebooks/07_adapt"  # where the run is written; a finished run is reused
grid_root: str = "docs/results/synthetic"  # the committed grid (cosuda.results.publish); empty: skip that section
task: str = "gta5"  # the grid's task: gta5 or synthia

# %%
import cosuda  # first: it sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads once, when torch loads it
import json
import time
from pathlib import Path

import numpy as np
import torch
from IPython.display import Markdown, display

from cosuda import plots, results
from cosuda.config import make_config, resolve_path, run_overrides
from cosuda.method import layer_thresholds
from cosuda.metrics import iou_markdown
from cosuda.paper_results import PAPER_RESULTS, paper_metric, paper_miou
from cosuda.provenance import cpu_model
from cosuda.runs import ensure_pseudo_labels, ensure_trained

torch.manual_seed(seed)

run_path, compare_path = resolve_path(run_dir), resolve_path(compare_with) if compare_with else None
overrides = run_overrides(preset, iterations, eval_every, seed, data_root, eval_max_items, keep_checkpoints,
                          weights=str(resolve_path(weights)) if weights else "")
variant = make_config(preset, overrides).flags  # a cosuda.config.Variant: which terms are on
if variant.uses_pseudo_labels:
    overrides["pseudo_root"] = str(resolve_path(pseudo_root))
cfg = make_config(preset, overrides)
print(f"preset {preset}: variant {cfg.variant!r}, {cfg.arch} on {cfg.backbone}, {cfg.source} -> cityscapes, "
      f"{cfg.iterations} iterations")
print(f"terms: source seg {variant.source_seg}, target seg {variant.target_seg!r}, cosine {variant.cos!r} "
      f"(target split by {'pseudo-labels, eq. 7' if variant.split == 'pseudo' else 'prediction, eq. 8'}), "
      f"adversarial {variant.adversarial}")
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
live_s = time.perf_counter() - start  # measured here, with evaluation and set-up
print(f"live run: {live_s:.0f} s on {cpu_model()}, {torch.get_num_threads()} threads, "
      + (f"{cfg.iterations / live_s:.2f} it/s for its {cfg.iterations} iterations with evaluation and set-up"
         if live_s > 1 else "a finished run in run_dir reused"))

# %% [markdown]
# ## Against the source-only model
#
# The curve of this run beside the source-only run (if `compare_with` holds one). With the
# smoke-sized defaults the two runs differ in length and start (the sentence under the figure
# reads both from their runs), so only the layout of the report means something, not the gap.
# `-p weights runs/lessons/source-only` starts this run from that model instead, as the main
# job and the grid do; the next section has the measured answer.

# %%
# Figure: target val mIoU19 against iterations for this run and the source-only run (paper Fig. 4 style).
runs = {f"{cfg.variant} (seed {seed})": [metrics]}
compare = None
if compare_path is not None and (compare_path / "metrics.json").is_file():
    compare = json.loads((compare_path / "metrics.json").read_text())
    runs[f"{compare['variant']} (compare_with, seed {compare['seed']})"] = [compare]
fig = plots.miou_curves(runs);

# %% [markdown]
# **Figure 1.** Target val mIoU19 of this notebook's live run at each evaluation, beside the
# source-only run `compare_with` (its own length).

# %%
# The lengths, starts and the gap are read from the two runs (their metrics.json), never typed:
# the source-only model is whatever notebook 02 or `workshop prepare` left in compare_with.
start_from = f"the model in `{weights}`" if weights else "ImageNet weights"
if compare is not None:
    gap = metrics["miou19"] - compare["miou19"]
    side = "above" if gap > 0 else "below"
    display(Markdown(f"This run: {metrics['iteration']} iterations from {start_from}, target val mIoU19 "
                     f"{metrics['miou19']:.1f}%; the source-only model in `{compare_with}`: "
                     f"{compare['iteration']} iterations, {compare['miou19']:.1f}%. The live run ends "
                     f"{abs(gap):.1f} points {side} it (one seed, different lengths: not an effect)."))

# %%
as_array = lambda values: np.array([np.nan if v is None else v for v in values], dtype=float)
rows = {f"{cfg.variant} (this run, {metrics['iteration']} it.)": as_array(metrics["per_class_iou"])}
if compare is not None:
    rows[f"{compare['variant']} ({compare['iteration']} it.)"] = as_array(compare["per_class_iou"])


def in_two(table: str) -> str:
    """A Markdown table of 19 classes and mIoU as two tables (the row names repeated): the first ten
    classes, then the other nine and mIoU, so that every column fits JupyterLab's output width."""
    cells = [line.strip().strip("|").split("|") for line in table.splitlines()]
    half = 1 + (len(cells[0]) - 1) // 2
    return "\n\n".join("\n".join("|" + "|".join(row[:1] + row[a:b]) + "|" for row in cells)
                       for a, b in ((1, half), (half, len(cells[0]))))


display(Markdown("**Synthetic benchmark** (this repository), target val, IoU %:\n\n" + in_two(iou_markdown(rows))))
paper = PAPER_RESULTS["table2"]["deeplabv2"]
display(Markdown("For reference only, **the paper on real data** (Table 2, 'Ours', DeepLabV2-ResNet101, "
                 "GTA5→Cityscapes):\n\n" + in_two(iou_markdown({"paper, Ours (R)": dict(paper["per_class_iou"],
                                                                                          mIoU=paper["mIoU"])}))))

# %%
# Figure: per-class IoU of this run and of the source-only run on target val.
fig = plots.per_class_bars(rows);

# %% [markdown]
# **Figure 2.** Per-class IoU on target val of the live run and of the source-only run it is
# compared with (synthetic benchmark).

# %% [markdown]
# ## The loss terms
#
# The engine logs each term of the last step (`metrics.json` → `train.last_losses`): `seg_s`
# (eq. 1), `seg_t` (eq. 2), `cos` ($\mathcal{L}_{cos}$, eq. 10, unweighted), `adv` / `disc`
# (supplementary C) and `total`. Weighted by their factors in eq. 11/12 they show how much
# each term pulls on the network. The paper's $\lambda_{cos}$ (Table 5: 0.01 for DeepLabV2)
# keeps the cosine term a small correction. The synthetic presets use 0.1: with the mean
# reduction $\mathcal{L}_{cos}$ lies in $[0, 1 - \mathcal{T}_{cos}]$, and a weight of 1 (tried
# first, to put it on the cross-entropy's scale) made all features alike and lowered the
# score (`cosuda/config.py`, `docs/benchmark.md`). The grid section below follows the share
# over a whole run.

# %%
# Figure: share of each weighted loss term in the total loss of the last training step.
losses = train_info["last_losses"]
term_weights = {"seg_s": 1.0, "seg_t": 1.0, "cos": cfg.lambda_cos, "adv": cfg.lambda_adv}
print("last step: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
fig = plots.loss_terms(losses, term_weights);

# %% [markdown]
# **Figure 3.** The weighted loss terms of the live run's last step as shares of its total (eq. 12
# for Ours: source and target cross-entropy and $\lambda_{cos}\mathcal{L}_{cos}$). One step is
# noisy; Figure 6 follows the share over whole grid runs.

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
asked_t_cos = 0.4  # exercise 3 asks for the thresholds of this T_cos: its line shows fc7's only
for source in ("gta5", "synthia"):
    fcn = make_config(f"{source}-fcn8s-ours")
    thresholds = (f"T_cos {fcn.t_cos} for fc7 (pool4 and pool3: exercise 3)" if fcn.t_cos == asked_t_cos else
                  f"T_cos {fcn.t_cos} -> (fc7, pool4, pool3) thresholds {layer_thresholds(fcn.t_cos, 3)}")
    print(f"{source}-fcn8s-ours: {thresholds}, dict-size {fcn.dict_size} per layer, lambda_cos {fcn.lambda_cos}, "
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
# ## What the grid shows: does the cosine loss help, and why (not)?
#
# The committed grid (`docs/results/synthetic/<task>/`, written by `python -m cosuda.runner
# grid ... --publish`) trains every variant for each seed from that seed's stage-1
# source-only model (1,200 iterations) for 600 more iterations, with the same pseudo-labels
# (made by the stage-1 model); its "source-only" row is the stage-1 model trained 600 more
# iterations on the source alone, the equal-budget baseline. So within a seed the rows
# differ only in their loss terms, and differences between rows are *paired by seed*.
# Curves: mean over the published seeds, band = min–max over seeds. The seeds land one after
# the other; every table and figure lists the seeds it uses.

# %%
grid_runs = results.load(resolve_path(grid_root), task) if grid_root else {}
grid_metric = paper_metric(task)
shown = ["source-only", "only-ssl", "ours", "ours11"]
note = results.missing_note([v for v in shown if v not in grid_runs], f"{grid_root}/{task}")
if note:
    display(Markdown(note))
for v in shown:
    if v in grid_runs:
        finals = [grid_runs[v][s][grid_metric] for s in sorted(grid_runs[v])]
        print(f"{v:12s} seeds {sorted(grid_runs[v])}: final {grid_metric} " + ", ".join(f"{x:.2f}" for x in finals))

# %%
# Figure: target val mIoU over the 600 grid iterations for source-only, only SSL and Ours (mean over seeds, band = min-max).
fig = plots.grid_curves(grid_runs, ["source-only", "only-ssl", "ours"], metric=grid_metric);

# %% [markdown]
# **Figure 4.** The grid's target val mIoU over the 600 iterations after the stage-1 model,
# for source-only (equal budget), only SSL (eq. 2 added) and Ours (eq. 12: eq. 2 and
# $\lambda_{cos}\mathcal{L}_{cos}$ added). Line: mean over the published seeds; band: min–max
# over them (none with one seed). The gap between the curves is the effect of the terms.
#
# The paired differences: for each seed, row a minus row b (same start, same pseudo-labels),
# then the mean and a 95 % t-interval over seeds. An interval that contains 0 is not an
# effect at this number of seeds.

# %%
wanted = {("ours", "only-ssl"), ("ours", "source-only"), ("only-ssl", "source-only"), ("ours11", "source-only")}
pair_rows = results.paired_rows(grid_runs, [p for p in results.PAIRS if p[:2] in wanted], grid_metric, task)
display(Markdown(results.paired_markdown(pair_rows, grid_metric)))
for r in pair_rows:
    print(results.effect_sentence(r, grid_metric))

# %%
# Figure: paired differences between grid rows, per seed (dots), mean with 95 % interval, and the paper's real-data difference.
fig = plots.paired_figure(pair_rows, grid_metric);

# %% [markdown]
# **Figure 5.** Paired differences of the grid (synthetic benchmark): grey dots one seed
# each, black diamond the mean with its 95 % interval (shown from two seeds on), red cross
# the paper's difference between the same rows on real data (Table 4: Ours − only SSL =
# +1.05 mIoU19). The vertical line is "no effect". Top: Ours − only SSL, the cosine term on
# top of self-training; bottom: the differences to source-only, on their own
# axis so that they do not squash the top row. Each axis is centred on 0.
#
# ### How big is the cosine term?
#
# Each evaluation of a grid run records the mean of every loss term since the previous one
# (`history[i]["losses"]`: `seg_s`, `seg_t`, `cos` unweighted, `total`). The share of
# $\lambda_{cos}\mathcal{L}_{cos}$ in the total says how hard the cosine term pulls compared
# with the segmentation losses. Each run's $\lambda_{cos}$ is read from the `config.json`
# published beside its `metrics.json` (`results.setting`).

# %%
# Figure: share of lambda_cos * L_cos in the total loss over the grid's training (left) and Ours' weighted terms (right).
fig = plots.loss_share_figure(grid_runs, ["only-ssl", "ours", "ours11"], detail="ours");
print(f"the preset's lambda_cos now: {make_config('synthetic-ours').lambda_cos:g}")
for v in ("ours", "ours11"):
    seeds_v = results.seed_list(grid_runs, v)
    shares = [s for s in (results.cos_share(m)[1] for m in seeds_v) if s]
    if shares:
        lams = sorted({results.setting(m, "lambda_cos") for m in seeds_v})
        print(f"{v}: trained with lambda_cos {'/'.join(f'{x:g}' for x in lams)} (its config.json); "
              f"lambda_cos * L_cos is {np.mean([s[0] for s in shares]):.1f}% of the total loss over the first "
              f"evaluation interval and {np.mean([s[-1] for s in shares]):.1f}% over the last (mean over "
              f"{len(shares)} seed(s))")

# %% [markdown]
# **Figure 6.** Left: the share of $\lambda_{cos}\mathcal{L}_{cos}$ in the total loss of the
# grid runs over training (only SSL has no cosine term: 0). Right: Ours' weighted terms
# (means since the previous evaluation) — source and target cross-entropy, the cosine term
# and their sum (eq. 12), all in Ours' colour, one line style each.
#
# ### Did the target features move towards their class? (the paper's hypothesis)
#
# At every evaluation the engine measures, on the target val pixels, how many have a
# nearest source vector (by cosine, in a probe dictionary built by process A on fixed source
# images with the current model) of their own class, and the mean cosine to source vectors
# of the same class and of the other classes (`cosuda/alignment.py`). If the cosine loss does
# what the paper says, Ours should beat only SSL on these measures, not only on mIoU.

# %%
# Figure: alignment measures over the grid's training for source-only, only SSL, Ours and Ours-(11).
fig = plots.alignment_figure(grid_runs, shown);
display(Markdown(results.alignment_markdown(grid_runs, shown)))

# %% [markdown]
# **Figure 7.** Left: the share of target val pixels whose nearest source vector has their
# true class. Middle: the mean cosine of a target vector to source vectors of its own class
# (solid) and of the other classes (dashed). Right: the gap between the two. Each variant in
# its colour and marker, the same in every figure of the course (legend below the panels);
# line = mean over seeds, band = min–max.

# %%
final = {v: np.mean([(m.get("alignment") or {}).get("nn_accuracy", np.nan) for m in results.seed_list(grid_runs, v)])
         for v in shown if v in grid_runs}
row = next((r for r in pair_rows if (r["a"], r["b"]) == ("ours", "only-ssl")), None)
if row is None:
    print("Ours and only SSL are not both published yet: the verdict waits for them.")
else:
    print("mIoU: " + results.effect_sentence(row, grid_metric))
    if "only-ssl" in final and "ours" in final:
        d = final["ours"] - final["only-ssl"]
        print(f"alignment: {final['ours']:.1f}% of target pixels nearest a source vector of their class with Ours, "
              f"{final['only-ssl']:.1f}% with only SSL ({d:+.1f} points): the cosine loss "
              + ("did pull target features towards their class beyond what self-training does." if d > 1 else
                 "moved the features no further than self-training alone." if d > -1 else
                 "left the features *less* aligned than self-training alone."))
    if "ours11" in final and "source-only" in final:
        print(f"without pseudo-labels: Ours-(11) {final['ours11']:.1f}% vs source-only {final['source-only']:.1f}%")

# %% [markdown]
# How to read the verdict above: a positive, measurable Ours − only SSL difference with a
# higher nearest-neighbour share says the cosine loss works here as the paper argues. If
# the difference is not measurable (or negative), the alignment curves say why: either the
# features of Ours are no better aligned than those of only SSL (the cosine term does not
# move them, e.g. because it is a small part of the loss, Figure 6, or the threshold selects
# pairs that are already aligned), or they are better aligned but the segmentation does not
# profit. Whatever the grid shows is reported as found.

# %% [markdown]
# ## What to take away
#
# - Eq. 12 adds one term to self-training; the term is cheap (see the share of step time),
#   and it acts on the features, not on the prediction. How much it pulls depends on
#   $\lambda_{cos}$ and on how many pairs pass $\mathcal{T}_{cos}$: Figure 6 measures it.
# - One engine, one configuration row per variant: `VARIANTS` in `cosuda.config` says which
#   terms each of the paper's rows switches on.
# - Whether the method helps is a paired, multi-seed measurement (Figures 4, 5 and the
#   verdict above), and *why* is a question about features (Figure 7), not about mIoU alone.
#   Lesson 08 does the same for every row of Table 4.
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
