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
# # 08 — Ablations: which parts of the method matter? (Table 4, Fig. 4)
#
# **The question.** The paper removes one building block at a time (section 4.4, Table 4):
# the dictionary ("w/o Dictionary": the cosine matrix only against this iteration's source
# features), the class-wise split ("w/o Class-wise Split": all source against all target
# features, no processes A/B), and it adds the output-space adversarial loss ("with
# Adversarial", "SSL with Adversarial"). The paper's reading, on real data: every block helps,
# and the adversarial loss rather hurts. Does the same ordering appear on the synthetic benchmark?
#
# **The experiment.** Each row of Table 4 is a row of `cosuda.config.VARIANTS` (which loss
# terms are on) and a preset `synthetic-<variant>`. By default the notebook reads the
# committed grid (`docs/results/synthetic/<task>/<variant>/seed<N>/metrics.json`): per seed,
# every row starts from the same stage-1 source-only model (1,200 iterations) and trains 600
# more iterations with the same pseudo-labels, so rows of one seed differ only in their loss
# terms and their differences are *paired by seed*. It reports mean ± std over seeds, the
# paired differences to only SSL with 95 % intervals, and the paper's Table 4 beside them.
# Source-only (same budget) and an oracle trained on target labels frame the table.
#
# **Honest labelling.** The grid's numbers are on the synthetic benchmark (DeepLabV2 on an
# ImageNet EfficientNet-Lite0 at 320x180 → 320x160), not the paper's: only the *ordering* and
# the sign of the differences can be compared with Table 4, and only where the intervals
# exclude 0. `-p live True` trains
# every row here instead, with smoke-sized defaults (a handful of iterations: noise).

# %% tags=["parameters"]
variants: list = ["ours", "wo-dict", "wo-split", "with-adv", "only-ssl", "ssl-adv", "source-only", "oracle"]  # rows
live: bool = False  # train every row here (smoke-sized defaults) instead of reading the committed grid
grid_root: str = "docs/results/synthetic"  # a runs root (<task>/<variant>/seed<N>/): the committed grid, or runs/grid
seeds: list = [0]  # live runs: one run per variant and seed (the committed grid: [0, 1, 2])
source_iterations: int = 4  # live runs: the stage-1 source-only model of each seed (the grid: 1200)
iterations: int = 4  # live runs: training iterations of every row from it (the grid: 600)
evaluations: int = 2  # live runs: evaluations on target val per run, the points of the curves (the grid: 4)
eval_max_items: int = 10  # live runs: evaluate on the first N target val images (0: the whole split)
preset_prefix: str = "synthetic"  # live runs: synthetic, or gta5-deeplabv2, synthia-deeplabv2, gta5-fcn8s, ...
data_root: str = ""  # live runs: empty: the preset's data; real data: the folder with gta5/ synthia/ cityscapes/
run_dir: str = "runs/notebooks/08_ablations"  # live runs: their runs root (<task>/<variant>/seed<N>/)

# %%
import cosuda  # first: it sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads once, when torch loads it

import torch
from IPython.display import Markdown, display

from cosuda import executors, jobs, plots, results
from cosuda.config import VARIANTS, resolve_path, variant_label
from cosuda.jobs import GRID_VARIANTS
from cosuda.paper_results import PAPER_RESULTS

torch.manual_seed(0)

unknown = [v for v in variants if v not in VARIANTS]
if unknown:
    raise ValueError(f"unknown variant {unknown[0]!r}: variants are {', '.join(VARIANTS)}")
for v in variants:
    f = VARIANTS[v]
    print(f"{v:12s} source seg {str(f.source_seg):5s}  target seg {f.target_seg:6s}  cos {f.cos:7s}  "
          f"adversarial {f.adversarial}")

# %% [markdown]
# ## The runs
#
# By default: the committed grid, GTA5-like task (and the SYNTHIA-like one where it has been
# published). `with Adversarial` is not part of the synthetic grid (`cosuda.GRID_VARIANTS`):
# its row stays empty unless you train it live. With `live=True` the rows are planned as the
# grid plans them (`cosuda.jobs.plan`: per seed a stage-1 source-only model, its pseudo-labels,
# every row from it) and run in this process (`executors.run(..., "inline")`) into
# `run_dir/<task>/<variant>/seed<N>`; a finished run there is reused.

# %%
root = resolve_path(run_dir if live else grid_root)
if live:
    plan = jobs.plan(root, "gta5", variants, seeds, preset_prefix=preset_prefix, source_iterations=source_iterations,
                     iterations=iterations, pseudo_from="source-only", sets={"eval_max_items": eval_max_items},
                     data_root=str(resolve_path(data_root)) if data_root else "", evaluations=evaluations)
    executors.run(plan, "inline")
sources = {}  # label -> (runs {variant: {seed: metrics}}, the paper's task, arch, metric)
for t in results.tasks(root) or ["gta5"]:
    ctx = results.table_context({}, t)
    label = f"{'synthetic grid' if ctx['synthetic'] else 'runs'}, {ctx['task']}" + (" (trained here)" if live else "")
    sources[label] = (results.load(root, t), ctx["source"], ctx["arch"], ctx["metric"])
for label, (runs, src, arch, metric) in sources.items():
    rows_here = [v for v in variants if v in runs]
    print(f"{label}: {metric}; " + ", ".join(f"{v} (seeds {','.join(map(str, sorted(runs[v])))})" for v in rows_here))
    absent = [v for v in variants if v not in runs and (live or v in GRID_VARIANTS)]
    if absent and live:
        print(f"{label}: no finished run of {', '.join(absent)} in {root} (the runner's lines above say why)")
    elif absent:
        display(Markdown(results.missing_note(absent, label)))
main_label = next(iter(sources))
runs, source, arch, metric = sources[main_label]
not_in_grid = {v: "not in the synthetic grid (train it with live=True)" for v in variants if v not in GRID_VARIANTS}

# %% [markdown]
# ## Table 4, beside the paper
#
# Final snapshot on target val (the paper reports the final model too; picking the best
# snapshot would need target labels). Synthetic: mean ± sample std over seeds, and each row
# minus only SSL paired by seed, with a 95 % t-interval from two seeds on. Paper: its
# published real-data numbers (DeepLabV2-ResNet101; mIoU19 for GTA5, mIoU13 for SYNTHIA) and
# the same differences.

# %%
for label, (task_runs, src, net, m) in sources.items():
    display(Markdown(f"**{label}** ({'this repository' if not live else 'trained here'}, {m.replace('miou', 'mIoU')} %; "
                     f"the paper's columns are real data, {src.upper()}→Cityscapes):\n\n"
                     + results.table_beside_paper(task_runs, variants, task=src, reference="only-ssl", metric=m,
                                                arch=net, missing_text=None if live else not_in_grid)))

# %%
# Figure: final target mIoU of each Table 4 row on the synthetic benchmark (mean ± std, dots = seeds) beside the paper's Table 4 (real data), both axes spanning the same number of points.
table4, table1 = PAPER_RESULTS["table4"][arch], PAPER_RESULTS["table1"][arch]
shown = list(variants)  # unpublished rows stay, empty on the left (n=0), so the paper's panel is complete
paper_columns = {"GTA5→CS": {variant_label(v): (table4.get(v) or table1.get(v) or {}).get("gta5") for v in shown},
                 "SYNTHIA→CS": {variant_label(v): (table4.get(v) or table1.get(v) or {}).get("synthia") for v in shown}}
fig = plots.beside_paper({variant_label(v): [m[metric] for m in results.seed_list(runs, v)] for v in shown},
                         paper_columns, synthetic_label=main_label, metric=metric.replace("miou", "mIoU"),
                         paper_label=f"paper, real data ({'DeepLabV2-ResNet101' if arch == 'deeplabv2' else 'FCN-8s-VGG16'})");

# %% [markdown]
# **Figure 1.** Left: each Table 4 row on the synthetic benchmark, final target mIoU (large
# marker: mean over seeds, whisker: sample std from two seeds on, small dots: the seeds).
# Right: the paper's Table 4 (and Table 1 for rows it reports there) on real data, a cross
# for GTA5→Cityscapes and a plus for SYNTHIA→Cityscapes. Every row keeps its colour and
# marker in every figure of the course. The two axes span the same number of points, each
# centred on its own numbers: a gap of one point is equally wide on both sides, while the
# levels (different benchmarks) are not compared. Dots rather than bars, since neither axis
# starts at 0. The spans below are read from both panels.

# %%
# The spans, from the numbers of the two panels: how far apart the self-training rows lie on each side.
def span(values):
    values = [v for v in values if v is not None]
    return max(values) - min(values) if values else float("nan")

paper_ssl = [(table4.get(v) or {}).get("gta5") for v in shown if v in table4]
grid_means = {v: results.mean_std([m[metric] for m in results.seed_list(runs, v)])[0] for v in shown if v in runs}
grid_ssl = [m for v, m in grid_means.items() if VARIANTS[v].uses_pseudo_labels]
frame = [grid_means[v] for v in ("source-only", "oracle") if v in grid_means]
line = (f"The paper's Table 4 rows lie within {span(paper_ssl):.1f} points of each other (GTA5→Cityscapes); "
        f"the self-training rows of the {main_label} lie within {span(grid_ssl):.1f} points of each other")
if len(frame) == 2 and grid_ssl:
    line += f", against {frame[1] - frame[0]:.1f} points from source-only to the oracle"
display(Markdown(line + "."))

# %% [markdown]
# ## Does the paper's ordering hold here?
#
# The paper's claims, as paired differences: Ours > w/o Dictionary > w/o Class-wise Split >
# only SSL, and SSL with Adversarial < only SSL (with Adversarial < Ours too, but that row is
# not in the synthetic grid). A claim holds on the benchmark only where the 95 % interval
# of the difference excludes 0; with one seed there is no interval yet.

# %%
claims = [("ours", "only-ssl", "the cosine loss on top of SSL"), ("ours", "wo-dict", "the dictionary"),
          ("ours", "wo-split", "the class-wise split"), ("wo-dict", "wo-split", "Table 4's order of the two"),
          ("wo-split", "only-ssl", "the unsplit cosine loss"), ("only-ssl", "ssl-adv", "the adversarial loss, removed (paper: it hurts)"),
          ("ours", "with-adv", "the adversarial loss, removed (paper: it hurts)"), ("only-ssl", "source-only", "self-training")]
claim_rows = results.paired_rows(runs, claims, metric, source, arch)
display(Markdown(results.paired_markdown(claim_rows, metric)))
for r in claim_rows:
    print(results.effect_sentence(r, metric))
if not claim_rows:
    print("no pair of Table 4 rows is published yet")

# %%
# Figure: paired differences between Table 4 rows on the synthetic benchmark (dots = seeds, mean with 95 % interval) and the paper's differences.
fig = plots.paired_figure(claim_rows, metric);

# %% [markdown]
# **Figure 2.** Each claim of Table 4 as a paired difference on the synthetic benchmark:
# grey dots one seed each, black diamond the mean with its 95 % interval, red cross the
# paper's difference between the same rows on real data. Right of the vertical line: the
# first row of the pair is better. Top: differences between two self-training rows (Table
# 4's comparisons). Bottom: only SSL − source-only, the difference self-training itself
# makes, on its own axis so that it does not squash the comparisons above; each axis is
# centred on 0. The sentences under the table above give each interval's verdict. Lesson 07 looks at *why* through the
# alignment measures.

# %% [markdown]
# ## mIoU against iterations (Fig. 4)
#
# The paper's Fig. 4 plots Ours (model 1), with Adversarial (model 2) and only SSL
# (model 3) every 2,000 iterations: with Adversarial rises fast, then stalls and fluctuates;
# Ours keeps rising. Here: the rows of the benchmark every 150 iterations of the 600 after
# the stage-1 model, mean over seeds with the min–max band.

# %%
# Figure: target val mIoU against iterations for Ours, with Adversarial and only SSL (Fig. 4 layout), synthetic benchmark.
fig = plots.grid_curves(runs, [v for v in ("ours", "with-adv", "only-ssl") if v in runs or live], metric=metric,
                        title=f"{main_label} (Fig. 4 layout)");

# %% [markdown]
# **Figure 3.** Fig. 4's layout on the synthetic benchmark: Ours and only SSL (and with
# Adversarial when trained live) over training, mean over seeds with the min–max band.
# Figure 4's lower panel draws their difference.

# %%
# How close the two curves lie, from the paired curves (Ours − only SSL per seed at each evaluation).
gaps = [h[metric] for c in results.paired_curves(runs, "ours", "only-ssl", metric) for h in c["history"]]
if gaps:
    display(Markdown(f"Ours − only SSL over training, per seed at each evaluation: from {min(gaps):+.2f} to "
                     f"{max(gaps):+.2f} points ({main_label})."))

# %%
# Figure: target val mIoU against iterations for every Table 4 row of the synthetic benchmark (top) and each self-training row minus only SSL, paired by seed (bottom).
self_training = [v for v in variants if v in runs and VARIANTS[v].uses_pseudo_labels]
fig = plots.curves_and_differences(runs, [v for v in variants if v in runs], "only-ssl", self_training, metric=metric,
                                   title=main_label);

# %% [markdown]
# **Figure 4.** Top: every row of the table over training (mean over seeds, min–max band);
# the spans under Figure 1 say where source-only and the oracle lie against the
# self-training rows. Bottom: each self-training row minus only SSL
# (the orange line at 0), per seed at every evaluation, then the mean over seeds with the
# min–max band, on an axis centred on 0: curves above the line beat only SSL at that point
# of training.

# %% [markdown]
# ## What to take away
#
# - Every ablation is one configuration row; the same loop trains them all from the same
#   model with the same pseudo-labels, so paired differences come from the loss terms alone.
# - Read a table of means only together with its paired intervals. Where an interval
#   includes 0, the benchmark does not separate the two rows, whatever the paper found on
#   Cityscapes; the printout above says which of Table 4's claims hold here.
# - More seeds: `python -m cosuda.runner grid --task gta5 --seeds 0 1 2 3 4 --publish
#   docs/results/synthetic`, then re-run this notebook. On real data (GPU): `python -m
#   cosuda.runner grid --preset-prefix gta5-deeplabv2 --data-root /data --executor gpus`, then
#   this notebook with `-p grid_root runs/grid`.

# %% [markdown]
# ## Exercises
#
# **1.** Each ablation of Table 4 is Ours with one building block changed, and each is a row of
# `cosuda.config.VARIANTS` (printed at the top of this lesson). Which field of `Variant` does
# each of w/o Dictionary (`wo-dict`), w/o Class-wise Split (`wo-split`) and with Adversarial
# (`with-adv`) change with respect to `ours`? Give a dict {variant: field name}; the fields are
# `source_seg`, `target_seg`, `cos`, `split` and `adversarial`.

# %% tags=["solution"]
# The field of Variant that each ablation changes from "ours"
answer_fields = {"wo-dict": "cos", "wo-split": "cos", "with-adv": "adversarial"}

# %%
from cosuda.exercises import ablations as ex

ex.check_changed_fields(answer_fields, base="ours", ablations=("wo-dict", "wo-split", "with-adv"))

# %% [markdown]
# **2.** An imagined grid with three seeds gave these final mIoU19 on target val (the two rows
# of one seed start from the same stage-1 model and pseudo-labels, so they are paired). What
# are the mean paired difference Ours − only SSL and its 95 % t-interval? Give `(mean, low,
# high)` in mIoU points. Student's t for 2 degrees of freedom is 4.303.

# %%
ours_per_seed = [34.20, 35.05, 33.10]      # Ours, seeds 0, 1, 2
only_ssl_per_seed = [33.60, 34.85, 32.40]  # only SSL, the same seeds

# %% tags=["solution"]
# (mean, low, high) of Ours - only SSL, paired by seed
diffs = [a - b for a, b in zip(ours_per_seed, only_ssl_per_seed)]
mean = sum(diffs) / len(diffs)
sd = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5  # sample std: n - 1
half = 4.303 * sd / len(diffs) ** 0.5  # t for 2 degrees of freedom, times the standard error
answer_interval = (mean, mean - half, mean + half)

# %%
ex.check_paired_interval(answer_interval, ours_per_seed, only_ssl_per_seed)

# %% [markdown]
# **3.** A mean above 0 is not yet a claim that holds. Five seeds of another imagined grid gave
# the per-seed differences below (first row minus second, mIoU points). For which pairs does the
# claim "the first row is better" hold, i.e. the 95 % interval lies wholly above 0? Give the set
# of pairs as they are written in `differences` (`results.t_interval` computes an interval).

# %%
differences = {("ours", "only-ssl"): [0.6, 0.2, 0.7, 0.4, 0.5],
               ("ours", "wo-dict"): [0.3, -0.2, 0.4, 0.1, -0.1],
               ("wo-split", "only-ssl"): [0.9, -0.4, 1.2, 0.3, 0.2],
               ("only-ssl", "ssl-adv"): [0.3, 0.5, 0.2, 0.4, 0.35]}

# %% tags=["solution"]
# The pairs (a, b) for which "a is better than b" holds at 95 %
answer_claims = {pair for pair, d in differences.items() if results.t_interval(d)["low"] > 0}

# %%
ex.check_claims(answer_claims, differences)
