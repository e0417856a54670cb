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
# # 05 — The feature dictionary: a queue of source vectors per class
#
# The loss of lesson 06 matches each target vector of class $c$ with source vectors of class $c$.
# If it used only the current source image, a class that appears in the target image but not in
# the source image would have nothing to be matched with: the paper calls this the **unmatching
# problem** (section 3.2). Its answer is a **dictionary** $D$: for each class $c$, a queue $D^c$ of
# the newest *dict-size* source vectors from process A; each iteration enqueues the new ones and the
# oldest fall out.
#
# The questions of this lesson: **how fast does the dictionary fill, how old are the vectors in it,
# and how often does it save a class that the current source image lacks?** We stream source and
# target images through the lesson model as a training loop would, with `cosuda.method.FeatureDictionary`.

# %% tags=["parameters"]
source_run: str = "runs/lessons/source-only"  # the shared source-only lesson model (trained there if missing)
source_iterations: int = 150  # its training iterations when it must be trained (`cosuda.workshop prepare` trains 1200)
run_dir: str = "runs/lessons/05_feature_dictionary"  # this lesson's outputs (the saved dictionary)
iterations: int = 40  # (source, target) pairs streamed through the dictionary
dict_size: int = 200  # vectors per class (the synthetic preset's value; the paper uses 2500 / 2000)
batch_size: int = 16  # images per forward pass
seed: int = 0  # which images, in which order

# %%
import cosuda  # first: it sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads once, when torch loads it
import json

import numpy as np
import torch
from IPython.display import Markdown, display

from cosuda import lessons, method
from cosuda.config import REPO_ROOT, resolve_path
from cosuda.labels import CLASS_NAMES, NUM_CLASSES
from cosuda.paper_results import PAPER_RESULTS
from cosuda.plots import method as mplots

if iterations < 2 or dict_size < 1:
    raise ValueError(f"need iterations >= 2 and dict_size >= 1, got {iterations}, {dict_size}")
model, cfg, source_set, target_set = lessons.setup(source_run, source_iterations, seed)
order = torch.Generator().manual_seed(seed)
source_stream = lessons.predict(model, source_set, torch.randperm(len(source_set), generator=order)[:iterations],
                                batch_size=batch_size)
target_stream = lessons.predict(model, target_set, torch.randperm(len(target_set), generator=order)[:iterations],
                                batch_size=batch_size)
k = source_stream["features"].shape[1]
source_metrics_iteration = json.loads((resolve_path(source_run) / "metrics.json").read_text())["iteration"]
print(f"{iterations} source and {iterations} target images predicted; feature size k = {k}")

# %% [markdown]
# ## A queue per class
#
# First a toy dictionary whose "vectors" are single numbers (their ids), so that we can read it:
# two classes, dict-size 3. Within one call later rows are newer; `get(c)` lists $D^c$ oldest first.

# %%
toy = method.FeatureDictionary(num_classes=2, size=3, dim=1)
toy.enqueue(torch.tensor([[0.], [1.], [2.]]), torch.tensor([0, 0, 1]))
toy.enqueue(torch.tensor([[3.], [4.], [5.], [6.]]), torch.tensor([0, 0, 0, 1]))
for c in range(2):
    print(f"D^{c} = {toy.get(c)[:, 0].int().tolist()}   (enqueued so far: {int(toy.enqueued[c])})")

# %% [markdown]
# Class 0 received 0, 1, 3, 4, 5 and holds the newest three; class 1 received 2 and 6 and holds
# both. Storage is one preallocated ring buffer per class, so enqueuing never reallocates.
#
# ## Filling up and rolling over
#
# Now the real stream. Each iteration runs process A on a source image (eq. 6) and enqueues its
# vectors. To see *where* the stored vectors come from, a second dictionary of the same shape
# stores, instead of each vector, the iteration it was enqueued at: it holds the same slots, so
# it tells the age of every vector in $D$.

# %%
dictionary = method.FeatureDictionary(NUM_CLASSES, dict_size, k)
half = method.FeatureDictionary(NUM_CLASSES, dict_size, k, dtype=torch.float16)  # for the last section
origin = method.FeatureDictionary(NUM_CLASSES, dict_size, 1)                       # iteration of origin
fill = np.zeros((iterations, NUM_CLASSES), dtype=np.int64)
in_target = np.zeros(NUM_CLASSES)
unmatched_without, unmatched_with = np.zeros(NUM_CLASSES), np.zeros(NUM_CLASSES)
for it in range(iterations):
    s = slice(it, it + 1)
    s_feats, s_classes = method.process_a(source_stream["features"][s], source_stream["logits"][s],
                                          source_stream["label"][s])                   # eq. 6
    dictionary.enqueue(s_feats, s_classes)
    half.enqueue(s_feats, s_classes)
    origin.enqueue(torch.full((len(s_classes), 1), float(it)), s_classes)
    fill[it] = dictionary.counts.numpy()
    # the target side of the same iteration: its classes by process B (eq. 8, the current argmax)
    _, t_classes = method.process_b(target_stream["features"][s], target_stream["logits"][s])
    in_target[torch.unique(t_classes).numpy()] += 1
    unmatched_without[lessons.unmatched_classes(t_classes, source_classes=s_classes)] += 1
    unmatched_with[lessons.unmatched_classes(t_classes, bank_counts=dictionary.counts)] += 1
print(f"after {iterations} iterations: " + ", ".join(f"{CLASS_NAMES[c]} {int(n)}/{dict_size}"
                                                     for c, n in enumerate(dictionary.counts) if n > 0))
# Figure: Vectors held per class as source images are enqueued; each queue stops growing at dict-size.
fig = mplots.fill_levels(fill, dict_size);

# %%
# The fill levels in words: which queues filled and after how many images, which did not.
filled_at = {c: int(np.argmax(fill[:, c] >= dict_size)) + 1 for c in range(NUM_CLASSES) if fill[-1, c] >= dict_size}
partial = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if 0 < fill[-1, c] < dict_size]
empty = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if fill[-1, c] == 0]
display(Markdown(
    (f"{len(filled_at)} queues filled up: " + ", ".join(f"{CLASS_NAMES[c]} after {n} images"
                                                       for c, n in sorted(filled_at.items(), key=lambda x: x[1]))
     if filled_at else "No queue filled up") + f" (of {iterations}); "
    + (f"{len(partial)} never filled ({', '.join(partial)}); " if partial else "")
    + (f"{len(empty)} stayed empty ({', '.join(empty)})." if empty else "none stayed empty.")))

# %% [markdown]
# A class that fills its queue from then on only rotates. Rare classes, or classes the model
# seldom gets right, trickle in and may never fill; classes it never classifies correctly stay
# empty. The ages show the consequence:

# %%
ages = {c: origin.get(c)[:, 0].numpy() for c in range(NUM_CLASSES)}
# Figure: The iteration each stored vector was enqueued at, per class, after the whole stream.
fig = mplots.vector_ages(ages, iterations, dict_size);

# %% [markdown]
# A full queue of a frequent class holds only the last few images' vectors: it remembers about
# dict-size / (vectors of the class per image) images, so dict-size decides how far back the
# dictionary reaches (the line below gives a source image's vectors here; about 14,600 for a
# 1280x720 GTA5 image at output stride 8). A rare class keeps vectors from long ago: the network has changed
# since then (here it has not, the lesson model is fixed; in training it does), which is the
# price of remembering. This is the trade-off behind the dict-size analysis of Table 6.

# %%
per_image = source_stream["features"].shape[-2] * source_stream["features"].shape[-1]
print(f"a source image gives {per_image} vectors here ({source_stream['features'].shape[-2]} x "
      f"{source_stream['features'].shape[-1]} cells at output stride {cfg.output_stride})")

# %% [markdown]
# ## The unmatching problem
#
# For every iteration we asked: which classes do the target vectors have (process B), and for
# which of them is there **no** source vector to match, (a) among this iteration's source vectors
# only ("w/o dictionary" of Table 4), (b) in the dictionary?

# %%
# Figure: Per class, the iterations whose target image contains it, and how often it had nothing to be matched with, without and with the dictionary.
fig = mplots.class_bars({"class among the target vectors": in_target,
                         "unmatched w/o dictionary": unmatched_without,
                         "unmatched with dictionary": unmatched_with},
                        ylabel="iterations", title=f"{iterations} (source, target) pairs");

# %%
for c in np.flatnonzero(in_target):
    print(f"{CLASS_NAMES[c]:14s} in {int(in_target[c]):3d} target images; unmatched "
          f"without the dictionary {int(unmatched_without[c]):3d}x, with it {int(unmatched_with[c]):3d}x")

# %% [markdown]
# Without the dictionary, the target vectors of a class the current source image lacks (or gets
# wrong) receive no cosine loss at all in that iteration. With it, they are matched as soon as
# the class has been seen once: what remains are the first iterations, before the queue has any
# vector of that class, and classes the model seldom gets right on the source.

# %%
# The counts above in words: the classes most often unmatched without the dictionary, and with it.
worst = [c for c in np.argsort(-unmatched_without, kind="stable") if unmatched_without[c] > 0][:2]
still = [c for c in np.argsort(-unmatched_with, kind="stable") if unmatched_with[c] > 0][:3]
display(Markdown(
    ("Without the dictionary " + " and ".join(
        f"{CLASS_NAMES[c]} goes unmatched in {int(unmatched_without[c])} of the {int(in_target[c])} target images "
        "that contain it" for c in worst) if worst else "Without the dictionary no class goes unmatched")
    + "; with it, " + (", ".join(f"{CLASS_NAMES[c]} {int(unmatched_with[c])} of {int(in_target[c])}" for c in still)
                       + " are the most often unmatched" if still else "no class is ever unmatched")
    + f" ({iterations} pairs, lesson model of {source_metrics_iteration} iterations)."))
#
# ## Half precision
#
# The dictionary is large at the paper's sizes: 19 classes x 2500 vectors x 2048 numbers. Storing it
# in float16 halves the memory; the loss normalises the vectors anyway, so what matters is whether
# the cosine similarities change. We filled `half` with the same vectors:

# %%
t_feats, t_classes = method.process_b(target_stream["features"][:4], target_stream["logits"][:4])
sim32 = lessons.class_similarity_matrices(t_feats, t_classes, dictionary)
sim16 = lessons.class_similarity_matrices(t_feats, t_classes, half)
largest = max((sim32[c] - sim16[c]).abs().max().item() for c in sim32)
loss32 = method.cosine_loss(t_feats, t_classes, dictionary, cfg.t_cos, NUM_CLASSES).item()
loss16 = method.cosine_loss(t_feats, t_classes, half, cfg.t_cos, NUM_CLASSES).item()
print(f"largest change of a cosine similarity: {largest:.1e}; L_cos {loss32:.5f} (float32) vs {loss16:.5f} (float16)")
print(f"this dictionary: {dictionary.buffer.numel() * 4 / 1e6:.1f} MB in float32, "
      f"{half.buffer.numel() * 2 / 1e6:.1f} MB in float16")
print("at the paper's sizes (vectors only):")
for name, dims, size in (("DeepLabV2, layer4", [2048], 2500), ("FCN-8s, fc7 + pool4 + pool3", [4096, 512, 256], 2000)):
    for dtype in (torch.float32, torch.float16):
        mb = sum(lessons.dictionary_bytes(NUM_CLASSES, size, d, dtype) for d in dims) / 1e6
        print(f"  {name:28s} dict-size {size}: {mb:7.1f} MB in {str(dtype).replace('torch.', '')}")

# %%
# Compared with the spacing of the paper's T_cos sweep (Table 6): how far float16 moves a similarity.
t_values = sorted(PAPER_RESULTS["table6"]["t_cos"])
spacing = min(b - a for a, b in zip(t_values, t_values[1:]))
display(Markdown(f"The largest change of a similarity, {largest:.1e}, is "
                 + (f"{spacing / largest:,.0f} times smaller than" if largest < spacing else "not smaller than")
                 + f" the spacing {spacing:g} of the paper's $\\mathcal T_{{cos}}$ sweep, for half the memory "
                 "(`--set dict_dtype=float16` in the engine)."))
#
# ## Checkpoints: the dictionary is part of the training state
#
# A resumed run must continue with the same queues, pointers included, or it is not the same run.
# `state_dict()` holds the buffer, the write pointers and the counts:

# %%
out_dir = REPO_ROOT / run_dir
out_dir.mkdir(parents=True, exist_ok=True)
torch.save(dictionary.state_dict(), out_dir / "dictionary.pt")
restored = method.FeatureDictionary(NUM_CLASSES, dict_size, k)
restored.load_state_dict(torch.load(out_dir / "dictionary.pt"))
same = all(torch.equal(dictionary.get(c), restored.get(c)) for c in range(NUM_CLASSES))
# enqueue the same new vectors into both: the pointers must agree too
extra_feats, extra_classes = method.process_a(source_stream["features"][:1], source_stream["logits"][:1],
                                              source_stream["label"][:1])
for d in (dictionary, restored):
    d.enqueue(extra_feats, extra_classes)
same_after = all(torch.equal(dictionary.get(c), restored.get(c)) for c in range(NUM_CLASSES))
size_mb = (out_dir / "dictionary.pt").stat().st_size / 1e6
print(f"saved to {run_dir}/dictionary.pt ({size_mb:.1f} MB); identical after loading: {same}; "
      f"after one more enqueue into both: {same_after}")

# %% [markdown]
# **Take away.** $D^c$ is a per-class queue of the newest correctly classified source vectors.
# Frequent classes rotate fast and hold recent vectors, rare ones hold old vectors; either way
# a target class has something to be matched with far more often than without it (the counts
# above), which is what the dictionary is for. It is part of the training state (checkpointed exactly) and can be stored in half
# precision.
#
# ## Exercises
#
# **1.** These batches are enqueued, in order, into a dictionary of **dict-size 4**, each vector
# being its id. Which ids does the queue of **class 0** hold at the end?

# %%
batches = [([0, 1, 2, 3], [0, 1, 0, 0]),   # (ids, classes) of the first batch
           ([4, 5, 6], [1, 0, 1]),
           ([7, 8, 9], [0, 0, 1])]

# %% tags=["solution"]
ids_of_class_0 = [i for ids, classes in batches for i, c in zip(ids, classes) if c == 0]  # arrival order
remaining = ids_of_class_0[-4:]  # a queue keeps the newest dict-size

# %%
from cosuda.exercises import dictionary as ex

ex.check_remaining(remaining, batches, size=4, c=0)

# %% [markdown]
# **2.** How many megabytes (10^6 bytes) do the vectors of a DeepLabV2 dictionary take in
# **half precision** at the largest dict-size of the paper's Table 6 (19 classes, dict-size 3000,
# k = 2048)?

# %% tags=["solution"]
memory_mb = 19 * 3000 * 2048 * 2 / 1e6  # float16: 2 bytes per number

# %%
ex.check_memory(memory_mb, num_classes=19, size=3000, dim=2048, dtype=torch.float16)
