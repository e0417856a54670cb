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
# # 11 — Qualitative comparison: with Adversarial against Ours (Fig. 5)
#
# **The question.** Tables compress a model into one number per class. The paper's Fig. 5
# shows what the numbers hide: with the adversarial loss added ("with Adversarial", Table 4),
# predictions are noisier, roads get other classes, distant people are missed; "Ours"
# (eq. 12) gives smoother maps. Do the synthetic runs look like that?
#
# **The experiment.** The same target val images through two trained runs, next to the
# ground truth, and two numbers per image that make "noisy" measurable: the image's mIoU
# and the *boundary density*, the share of neighbouring pixel pairs whose labels differ
# (a speckled map has many more boundaries than its ground truth).
#
# **Honest labelling.** By default two tiny runs are trained here (a few iterations each),
# whose maps are still blurry blobs; pass `adv_run` and `ours_run` pointing at full runs
# (e.g. `runs/reproduce/with-adv-seed0`, `runs/reproduce/ours-seed0`) for a real comparison.

# %% tags=["parameters"]
adv_run: str = ""  # a trained 'with Adversarial' run; empty: train a tiny one into run_dir/with-adv
ours_run: str = ""  # a trained 'Ours' run; empty: train a tiny one into run_dir/ours
iterations: int = 6  # iterations of the tiny runs trained here (the synthetic preset's full run: 800)
n_images: int = 3  # target val images shown
first_image: int = 0  # index of the first target val image shown
pseudo_root: str = "runs/lessons/pseudo_labels"  # pseudo-labels for the tiny runs (made from source_run if missing)
source_run: str = "runs/lessons/source-only"  # the source-only model that makes missing pseudo-labels
source_iterations: int = 150  # its iterations if it must be trained
run_dir: str = "runs/notebooks/11_qualitative"  # where the tiny runs go

# %%

import torch

from cosuda import plots
from cosuda.config import REPO_ROOT, resolve_path
from cosuda.data import Cityscapes
from cosuda.metrics import confusion_matrix, mean_iou
from cosuda.train import ensure_pseudo_labels, ensure_trained, latest_checkpoint, load_run_model
from cosuda.train import resolve_paths

torch.manual_seed(0)



run_dirs = {}
for name, given, variant in (("with Adversarial", adv_run, "with-adv"), ("Ours", ours_run, "ours")):
    if given:
        run_dirs[name] = resolve_path(given)
        continue
    pseudo_path = ensure_pseudo_labels(resolve_path(pseudo_root), resolve_path(source_run), source_iterations)
    run_dirs[name] = resolve_path(run_dir) / variant
    ensure_trained(f"synthetic-{variant}", run_dirs[name],
                   {"iterations": iterations, "eval_every": iterations, "checkpoint_every": iterations,
                    "keep_checkpoints": 1, "eval_max_items": 10, "pseudo_root": str(pseudo_path)}, progress=False)
models = {}
for name, path in run_dirs.items():
    model, cfg = load_run_model(path)
    models[name] = model
    print(f"{name}: {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path} "
          f"(variant {cfg.variant!r}, seed {cfg.seed}, {torch.load(latest_checkpoint(path), map_location='cpu', weights_only=False)['iteration']} iterations)")

# %% [markdown]
# ## Target image, ground truth, with Adversarial, Ours

# %%
# Figure: target val images, ground truth, and the predictions of 'with Adversarial' and 'Ours' (paper Fig. 5 layout).
paths = resolve_paths(cfg)
val = Cityscapes(paths.target, "val", size=tuple(cfg.eval_size))
indices = list(range(first_image, min(first_image + n_images, len(val))))
images, truths, predictions = [], [], {name: [] for name in models}
with torch.inference_mode():
    for i in indices:
        item = val[i]
        images.append(item["image"].permute(1, 2, 0).numpy())
        truths.append(item["label"].numpy())
        for name, model in models.items():
            _, logits = model(item["image"][None])
            predictions[name].append(model.upsample(logits, tuple(item["label"].shape)).argmax(1)[0].numpy())
fig = plots.qualitative(images, {"ground truth": truths, **predictions}, max_rows=n_images);

# %% [markdown]
# ## Measuring "noisy"
#
# Boundary density: the share of horizontally or vertically adjacent pixel pairs with
# different labels (ignored pixels left out). Per-image mIoU uses the classes present in
# the image's ground truth or prediction (`cosuda.metrics.mean_iou` ignores the others).

# %%
def boundary_density(label_map, valid):
    right = (label_map[:, 1:] != label_map[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    down = (label_map[1:] != label_map[:-1]) & valid[1:] & valid[:-1]
    pairs = (valid[:, 1:] & valid[:, :-1]).sum() + (valid[1:] & valid[:-1]).sum()
    return (right.sum() + down.sum()) / max(pairs, 1)


print(f"{'image':>6s} {'GT boundaries':>14s}" + "".join(f" {name + ' mIoU':>22s} {'boundaries':>11s}" for name in models))
for k, i in enumerate(indices):
    valid = truths[k] != 255
    line = f"{i:6d} {100 * boundary_density(truths[k], valid):13.1f}%"
    for name in models:
        pred = predictions[name][k]
        miou = 100 * mean_iou(confusion_matrix(pred, truths[k]))
        line += f" {miou:21.1f}% {100 * boundary_density(pred, valid):10.1f}%"
    print(line)

# %% [markdown]
# ## What to take away
#
# - The paper's qualitative claim — adversarial training makes predictions noisier — can
#   be checked with a number per image, not only by eye; the two runs must share the seed
#   and the training length for the comparison to mean anything.
# - More examples of the paper: supplementary E. Here: change `first_image` and `n_images`.
