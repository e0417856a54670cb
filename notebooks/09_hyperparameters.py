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
# **The experiment.** Train `synthetic-ours` (eq. 12) once per value, with the other knob
# fixed, and plot mIoU against the value beside the paper's Table 6.
#
# **Honest labelling.** The defaults sweep two values of each knob for a few iterations so
# the notebook runs in under a minute; differences then are noise. Pass the full lists and
# `iterations=800`, `seeds=[0, 1, 2]` for a measurement.

# %% tags=["parameters"]
t_cos_values: list = [0.5, 0.7]  # T_cos values to train (Table 6: [0.5, 0.55, 0.6, 0.65, 0.7])
dict_sizes: list = [100, 500]  # dict-size values, scaled to the synthetic maps (full: [100, 200, 300, 400, 500])
fixed_t_cos: float = 0.6  # T_cos while dict-size is swept (Table 6: 0.6)
fixed_dict_size: int = 500  # dict-size while T_cos is swept (Table 6: 2500; the synthetic preset: 500)
seeds: list = [0]  # one run per value and seed
iterations: int = 4  # training iterations per run (the synthetic preset's full run: 800)
eval_every: int = 4  # evaluate on target val every this many iterations
eval_max_items: int = 10  # evaluate on the first N target val images (0: the whole split)
preset: str = "synthetic-ours"  # the method (eq. 12); real data: gta5-deeplabv2-ours with data_root
data_root: str = ""  # empty: the preset's data; real data: the folder with gta5/ synthia/ cityscapes/
pseudo_root: str = "runs/lessons/pseudo_labels"  # pseudo-labels of the target train set (made if missing)
source_run: str = "runs/lessons/source-only"  # the source-only model that makes missing pseudo-labels
source_iterations: int = 150  # its iterations if it must be trained (synthetic only)
results_dir: str = ""  # a folder of finished sweep runs (tcos<T>-dict<D>-seed<N>/): only read and plot
keep_models: bool = False  # keep each finished run's checkpoint (~140 MB each); the tables need only metrics.json
run_dir: str = "runs/notebooks/09_hyperparameters"  # where the sweep's runs go

# %%
import math
import shutil
import time

import torch
from IPython.display import Markdown, display

from cosuda import plots
from cosuda.config import make_config, resolve_path
from cosuda.metrics import PAPER_RESULTS
from cosuda.runner import collect, mean_std
from cosuda.train import ensure_pseudo_labels, ensure_trained

torch.manual_seed(0)



base = make_config(preset)
paper6 = PAPER_RESULTS["table6"]
print(f"{preset}: T_cos {base.t_cos}, dict-size {base.dict_size}, lambda_cos {base.lambda_cos}; "
      f"source images {base.source_size[0]}x{base.source_size[1]}")
print(f"paper (Table 6, real data): T_cos {sorted(paper6['t_cos'])} at dict-size 2500, "
      f"dict-size {sorted(paper6['dict_size'])} at T_cos 0.6")

# %% [markdown]
# ## Scaling dict-size to the synthetic benchmark
#
# DeepLabV2's feature map (layer4, output stride 8) of a 1280x720 GTA5 image has about
# 160x90 = 14,400 vectors; a 160x90 synthetic image gives 20x12 = 240, sixty times fewer.
# A dictionary of 2500 vectors per class therefore holds a fraction of one real image's
# vectors of a frequent class, while 500 synthetic vectors hold about two whole synthetic
# images' worth. The paper's 1000…3000 would be 17…50 on the synthetic maps if the memory
# in images were to stay the same; that leaves rare classes with almost no history, so
# the sweep uses 100…500 instead, which keeps the *relative* range (1 : 5 instead of 1 : 3)
# and the order of magnitude of a few images of memory.

# %%
def vectors_per_image(size_wh, stride=8):
    return math.ceil(size_wh[0] / stride) * math.ceil(size_wh[1] / stride)


real, synth = vectors_per_image((1280, 720)), vectors_per_image(base.source_size)
print(f"feature vectors per source image: real GTA5 {real}, synthetic {synth} (ratio {real / synth:.0f})")
for d in sorted(paper6["dict_size"]):
    print(f"paper dict-size {d}: {d / real:.2f} image(s) of vectors -> same memory on synthetic maps: "
          f"{d / real * synth:.0f}")
for d in dict_sizes:
    print(f"synthetic dict-size {d}: {d / synth:.2f} image(s) of vectors")

# %% [markdown]
# ## The sweep
#
# One run per (T_cos, dict-size) pair and seed, named `tcos<T>-dict<D>-seed<N>`; the point
# shared by both sweeps (fixed T_cos and fixed dict-size) is trained once.

# %%
points = sorted({(float(t), int(fixed_dict_size)) for t in t_cos_values}
                | {(float(fixed_t_cos), int(d)) for d in dict_sizes})
name = lambda t, d: f"tcos{t:g}-dict{d}"
if results_dir:
    out = resolve_path(results_dir)
    print(f"reading finished runs from {out}")
else:
    out = resolve_path(run_dir)
    pseudo_path = ensure_pseudo_labels(resolve_path(pseudo_root), resolve_path(source_run), source_iterations,
                                       synthetic=preset.startswith("synthetic-"))
    start_all = time.perf_counter()
    for t, d in points:
        for seed in seeds:
            overrides = {"t_cos": t, "dict_size": d, "iterations": iterations, "eval_every": eval_every,
                         "seed": seed, "eval_max_items": eval_max_items, "keep_checkpoints": 1,
                         "checkpoint_every": min(iterations, base.checkpoint_every), "pseudo_root": str(pseudo_path)}
            if data_root:
                overrides["data_root"] = str(resolve_path(data_root))
            start = time.perf_counter()
            m = ensure_trained(preset, out / f"{name(t, d)}-seed{seed}", overrides, progress=False)
            if not keep_models:  # a finished run is still recognised (and reused) by its metrics.json
                shutil.rmtree(out / f"{name(t, d)}-seed{seed}" / "checkpoints", ignore_errors=True)
            print(f"T_cos {t:<5g} dict-size {d:<5d} seed {seed}: mIoU19 {m['miou19']:5.2f}% "
                  f"({time.perf_counter() - start:.0f} s)")
    print(f"all runs: {time.perf_counter() - start_all:.0f} s")
found = collect(out)
finals = lambda t, d: [m["miou19"] for m in found.get(name(t, d), [])]

# %% [markdown]
# ## Beside Table 6

# %%
rows = ["| knob | value | synthetic mIoU19, final (mean ± std) | seeds |", "|---|---|---|---|"]
for t in sorted(float(x) for x in t_cos_values):
    mean, std = mean_std(finals(t, fixed_dict_size))
    rows.append(f"| T_cos (dict-size {fixed_dict_size}) | {t:g} | {mean:.2f} ± {std:.2f} | "
                f"{len(finals(t, fixed_dict_size))} |")
for d in sorted(int(x) for x in dict_sizes):
    mean, std = mean_std(finals(fixed_t_cos, d))
    rows.append(f"| dict-size (T_cos {fixed_t_cos:g}) | {d} | {mean:.2f} ± {std:.2f} | {len(finals(fixed_t_cos, d))} |")
paper_rows = ["| knob | " + " | ".join(f"{t:g}" for t in sorted(paper6["t_cos"])) + " |",
              "|---" * (1 + len(paper6["t_cos"])) + "|",
              "| T_cos (dict-size 2500) | " + " | ".join(f"{paper6['t_cos'][t]:.2f}" for t in sorted(paper6["t_cos"])) + " |",
              "| dict-size | " + " | ".join(str(d) for d in sorted(paper6["dict_size"])) + " |",
              "| mIoU (T_cos 0.6) | " + " | ".join(f"{paper6['dict_size'][d]:.2f}" for d in sorted(paper6["dict_size"])) + " |"]
display(Markdown("**Synthetic benchmark** (this repository):\n\n" + "\n".join(rows)
                 + "\n\n**The paper**, Table 6 (GTA5→Cityscapes, DeepLabV2-ResNet101, real data, mIoU %):\n\n"
                 + "\n".join(paper_rows)))

# %%
# Figure: final target mIoU against T_cos on the synthetic benchmark (dots = seeds) beside the paper's Table 6.
fig = plots.sweep_beside_paper("T_cos", {float(t): finals(float(t), fixed_dict_size) for t in t_cos_values},
                               paper6["t_cos"]);

# %%
# Figure: final target mIoU against dict-size on the synthetic benchmark (scaled values) beside the paper's Table 6.
fig = plots.sweep_beside_paper("dict-size", {int(d): finals(fixed_t_cos, int(d)) for d in dict_sizes},
                               paper6["dict_size"]);

# %% [markdown]
# ## What to take away
#
# - The paper reports a flat optimum: 48.9–49.7 mIoU over the whole $\mathcal{T}_{cos}$ range and
#   49.1–49.7 over dict-size, differences of the order of seed-to-seed variation on
#   Cityscapes. A sweep is only informative with several seeds per point.
# - dict-size is not portable between resolutions: what matters is how many images' worth
#   of vectors each class keeps, which depends on the feature map size and the class mix.
# - Full synthetic sweep: `papermill notebooks/09_hyperparameters.ipynb runs/09.ipynb
#   -y "{t_cos_values: [0.5, 0.55, 0.6, 0.65, 0.7], dict_sizes: [100, 200, 300, 400, 500], seeds: [0, 1, 2]}"
#   -p iterations 800 -p eval_every 200 -p eval_max_items 0` (9 points x 3 seeds).
