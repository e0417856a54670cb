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
# # 09 — Hyper-parameters: T_cos and dict-size (Table 6)
#
# **The question.** Two knobs decide what the cosine similarity loss does (section 4.5).
# $\mathcal{T}_{cos}$ selects which elements of the similarity matrix $\mathcal{M}^c$ (eq. 9)
# are pulled to 1 (eq. 10): too low and a target vector is pulled towards dissimilar source
# vectors, too high and almost nothing is selected. *dict-size* is how many of the newest
# correctly classified source vectors each class keeps: larger means older features and more
# variety. The paper sweeps both on GTA5→Cityscapes with DeepLabV2 (Table 6): $\mathcal{T}_{cos}$
# from 0.5 to 0.7 at dict-size 2500, dict-size from 1000 to 3000 at $\mathcal{T}_{cos}$ 0.6,
# and finds mIoU within about 0.8 points over the whole range. How sensitive is the
# synthetic benchmark?
#
# **The experiment.** By default the notebook reads the committed sweep runs
# (`docs/results/synthetic-sweeps/gta5/<name>/seed<N>/metrics.json`, names `tcos<T>` and
# `dict<D>`): `synthetic-ours` (eq. 12) trained like the grid's Ours row (600 iterations
# from the seed's stage-1 model, the same pseudo-labels) with one knob moved. The default
# point ($\mathcal{T}_{cos}$ 0.6, dict-size 200) is the grid's `ours` row itself, so every
# sweep point is also a paired difference to it. Each run's settings are read from the
# `config.json` beside its `metrics.json`, never from its folder name. `-p live True` trains
# the sweep here instead, through the same planner as the grid (smoke-sized defaults).
#
# **Honest labelling.** Synthetic numbers, not the paper's; the dict-size values are scaled
# to the synthetic feature maps (next section), so only the *shape* of the curves can be
# compared with Table 6. With the live defaults (a few iterations) differences are noise.

# %% tags=["parameters"]
live: bool = False  # train the sweep here (smoke-sized defaults) instead of reading the committed sweep
grid_root: str = "docs/results/synthetic"  # a runs root: gta5/ours/seed<N>/, the sweep in <grid_root>-sweeps/gta5/
t_cos_values: list = [0.5, 0.7]  # live: T_cos values to train (Table 6: [0.5, 0.55, 0.6, 0.65, 0.7])
dict_sizes: list = [100, 500]  # live: dict-size values, scaled to the synthetic maps (full: [100, 200, 300, 400, 500])
seeds: list = [0]  # live: one run per value and seed
source_iterations: int = 4  # live: the stage-1 source-only model of each seed (the committed sweep: 1200)
iterations: int = 4  # live: training iterations per run from it (the committed sweep: 600)
evaluations: int = 1  # live: evaluations on target val per run (the committed sweep: 4)
eval_max_items: int = 10  # live: evaluate on the first N target val images (0: the whole split)
data_root: str = ""  # live: empty: the synthetic benchmark
run_dir: str = "runs/notebooks/09_hyperparameters"  # live: the runs root (gta5/ours/seed<N>/, and <run_dir>-sweeps/)

# %%
import cosuda  # first: it sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads once, when torch loads it
import math

import torch
from IPython.display import Markdown, display

from cosuda import executors, jobs, plots, results
from cosuda.config import make_config, resolve_path
from cosuda.paper_results import PAPER_RESULTS

torch.manual_seed(0)

preset = "synthetic-ours"  # the method, eq. 12
base = make_config(preset)
paper6 = PAPER_RESULTS["table6"]
print(f"{preset}: T_cos {base.t_cos}, dict-size {base.dict_size}, lambda_cos {base.lambda_cos}; "
      f"source images {base.source_size[0]}x{base.source_size[1]}, output stride {base.output_stride}")
print(f"paper (Table 6, real data): T_cos {sorted(paper6['t_cos'])} at dict-size 2500, "
      f"dict-size {sorted(paper6['dict_size'])} at T_cos 0.6")

# %% [markdown]
# ## Scaling dict-size to the synthetic benchmark
#
# The paper's DeepLabV2 feature map (ResNet-101 layer4, output stride 8) of a 1280x720 GTA5
# image has 160x90 = 14,400 vectors; the synthetic preset's (EfficientNet-Lite0, output
# stride 16) of a 320x180 image has 20x12 = 240, sixty times fewer. A dictionary of 2500
# vectors per class holds a fraction of one real image's vectors of a frequent class, while
# 200 synthetic vectors hold almost one whole synthetic image's worth. The paper's
# 1000…3000 would be 17…50 on the synthetic maps if the memory in images were to stay the
# same; that leaves rare classes with almost no history, so the synthetic preset uses 200
# and the sweep 100…500, which keeps the order of magnitude of "about one image of memory".

# %%
def vectors_per_image(size_wh, stride):
    return math.ceil(size_wh[0] / stride) * math.ceil(size_wh[1] / stride)


real, synth = vectors_per_image((1280, 720), 8), vectors_per_image(base.source_size, base.output_stride)
print(f"feature vectors per source image: real GTA5 {real}, synthetic {synth} (ratio {real / synth:.0f})")
for d in sorted(paper6["dict_size"]):
    print(f"paper dict-size {d}: {d / real:.2f} image(s) of vectors -> same memory on synthetic maps: "
          f"{d / real * synth:.0f}")
for d in sorted({*dict_sizes, base.dict_size}):
    print(f"synthetic dict-size {d}: {d / synth:.2f} image(s) of vectors")

# %% [markdown]
# ## The sweep
#
# Committed runs by default. With `live=True`: the planner's grid with the `ours` row only
# (the default point) and the sweep (`cosuda.jobs.plan(..., sweeps=...)`), every point from the
# seed's stage-1 model with its pseudo-labels, run in this process (`executors.run(...,
# "inline")`); a finished run is kept and reused.

# %%
root = resolve_path(run_dir if live else grid_root)
if live:
    plan = jobs.plan(root, "gta5", ["ours"], seeds, source_iterations=source_iterations, iterations=iterations,
                     pseudo_from="source-only", sweeps={"t_cos": t_cos_values, "dict_size": dict_sizes},
                     sets={"eval_max_items": eval_max_items}, data_root=str(resolve_path(data_root)) if data_root else "",
                     evaluations=evaluations)
    executors.run(plan, "inline")
sweep = results.load(jobs.sweep_root(root), "gta5")
default_runs = results.load(root, "gta5").get("ours")
where = f"{jobs.sweep_root(root)}/gta5 (default point: {root}/gta5/ours)"
if not sweep:
    display(Markdown(f"**Not published yet:** the T_cos and dict-size sweeps in `{jobs.sweep_root(grid_root)}/gta5/`. "
                     "Each point is the grid's `ours` row trained with one knob moved (`python -m cosuda.runner "
                     "grid --task gta5 --variants ours11 ours --seeds 0 1 2 --sweep t_cos=0.5,0.7 --publish "
                     f"{grid_root}`), published as `gta5/tcos0.5/seed<N>/` (or `dict<D>`). "
                     "Until then the table and the figures show the default point only."))
if not default_runs:
    display(Markdown(results.missing_note(["ours (the default point)"], f"{grid_root}/gta5")))
points, defaults = results.sweep_points(sweep, default_runs, "miou19")
print(f"runs read from {where}: " + "; ".join(f"{k}: {sorted(v)}" for k, v in points.items()))

# %% [markdown]
# ## Beside Table 6
#
# Final mIoU19 on target val per value: mean ± std over seeds, and the paired difference to
# the default point over the seeds both have (same stage-1 model, same pseudo-labels).

# %%
display(Markdown("**Synthetic benchmark** (this repository; not the paper's numbers):\n\n"
                 + results.sweep_markdown(points, paper6, defaults)))

# %%
# Figure: final target mIoU19 against T_cos on the synthetic benchmark (dots = seeds) beside the paper's Table 6.
fig = plots.sweep_beside_paper("T_cos", {t: list(v.values()) for t, v in points["t_cos"].items()}, paper6["t_cos"]);

# %% [markdown]
# **Figure 1.** Left: final target mIoU19 of Ours against $\mathcal{T}_{cos}$ on the synthetic
# benchmark (line: mean over seeds, dots: seeds; dict-size fixed). Right: the paper's Table 6
# row on real data (dict-size 2500), both in Ours' colour. The two y-axes span the same
# number of points, each centred on its own numbers, so a flat curve looks flat on both
# sides. A curve with only the default point means the sweep has not been published yet.

# %%
# Figure: final target mIoU19 against dict-size on the synthetic benchmark (scaled values) beside the paper's Table 6.
fig = plots.sweep_beside_paper("dict-size", {d: list(v.values()) for d, v in points["dict_size"].items()},
                               paper6["dict_size"]);

# %% [markdown]
# **Figure 2.** The same for dict-size ($\mathcal{T}_{cos}$ fixed at 0.6). The synthetic values
# (left) are scaled to the synthetic feature maps; the paper's (right) are its real-data
# values 1000…3000.

# %% [markdown]
# ## What to take away
#
# - The paper reports a flat optimum: 48.9–49.7 mIoU over the whole $\mathcal{T}_{cos}$ range and
#   49.1–49.7 over dict-size, differences of the order of seed-to-seed variation on
#   Cityscapes. On the benchmark, read the paired differences of the table: a sweep point
#   is different from the default only where they are consistently of one sign across seeds.
#   In the committed sweep (seeds 0–2) no point is: all are within 0.2 mIoU19 of the default.
#   That is flat like Table 6, with a reason of its own: on top of self-training the cosine
#   loss changes little on this benchmark at all (lesson 08), so its knobs have little to move.
# - dict-size is not portable between resolutions: what matters is how many images' worth
#   of vectors each class keeps, which depends on the feature map size and the class mix.
# - A live sweep at full length: `papermill notebooks/09_hyperparameters.ipynb runs/09.ipynb
#   -p live True -y "{t_cos_values: [0.5, 0.55, 0.65, 0.7], dict_sizes: [100, 300, 400, 500], seeds: [0, 1, 2]}"
#   -p source_iterations 1200 -p iterations 600 -p evaluations 4 -p eval_max_items 0`: the same
#   plan as `python -m cosuda.runner grid ... --sweep`, run in the kernel.
