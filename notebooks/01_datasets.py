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
# # 1. The datasets: what does the domain gap look like?
#
# The paper adapts a segmentation network trained on rendered images with free labels
# (**GTA5**, **SYNTHIA**) to real street photographs without labels (**Cityscapes**). Before
# any method, it pays to *look* at the gap it has to close: how differently do the classes look,
# how often does each class occur, and how far does appearance alone carry across domains?
#
# By default this lesson runs on the **synthetic benchmark** shipped with the repository
# (`python -m cosuda.synthetic`): three small procedural datasets written in exactly the
# download formats of GTA5, SYNTHIA and Cityscapes, with a built-in gap (saturated, clean game
# renders vs. desaturated, blurred, noisy "photographs"; different viewpoints and class mixes).
# The last section shows how to point the same notebook at the real downloads.

# %% tags=["parameters"]
data_root: str = ""  # empty: the synthetic benchmark under data/synthetic (generated if missing)
gta5_root: str = ""  # empty: <data_root>/gta5
gta5_image_dir: str = ""  # empty: <gta5_root>/images; else e.g. the CycleGAN-translated GTA5 images
synthia_root: str = ""  # empty: <data_root>/synthia
cityscapes_root: str = ""  # empty: <data_root>/cityscapes
n_samples: int = 4  # rows of example images
max_items: int = 100  # images per dataset used for the statistics (spread evenly)
stats_width: int = 320  # images are resized to this width (aspect kept) for the statistics
seed: int = 0  # which examples are shown

# %%
import cosuda  # first: it sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads once, when torch loads it
import numpy as np
from PIL import Image

from cosuda import data, labels, metrics, synthetic
from cosuda.paths import resolve_path
from cosuda.plots import datasets as dplots

if n_samples < 1 or max_items < 2 or stats_width < 16:
    raise ValueError(f"need n_samples >= 1, max_items >= 2, stats_width >= 16; got "
                     f"{n_samples}, {max_items}, {stats_width}")
# Paths resolve through the package, so this runs from notebooks/ (Jupyter, nbval) and from
# the repository root (papermill) alike.
root = resolve_path(data_root) if data_root else synthetic.DEFAULT_ROOT
if root.resolve() == synthetic.DEFAULT_ROOT.resolve():
    synthetic.ensure(root)  # no-op when the benchmark is already there
gta5 = data.GTA5(resolve_path(gta5_root or root / "gta5"),
                 image_dir=resolve_path(gta5_image_dir) if gta5_image_dir else None)
synthia = data.SYNTHIA(resolve_path(synthia_root or root / "synthia"))
cityscapes_train = data.Cityscapes(resolve_path(cityscapes_root or root / "cityscapes"), "train")
cityscapes_val = data.Cityscapes(resolve_path(cityscapes_root or root / "cityscapes"), "val")
for name, ds in [("GTA5", gta5), ("SYNTHIA", synthia), ("Cityscapes train", cityscapes_train),
                 ("Cityscapes val", cityscapes_val)]:
    w, h = Image.open(ds.images[0]).size
    print(f"{name:17s} {len(ds):6d} images, first one {w}x{h}, e.g. {ds.names[0]}")

# %% [markdown]
# ## Images and labels
#
# Every reader returns the same item: an RGB image in [0, 1], a label of **trainIds** (the 19
# Cityscapes evaluation classes, 255 = ignore) and the file name. The raw label files differ:
# GTA5 stores Cityscapes *labelIds* as palette indices, SYNTHIA a 16-bit id in the red channel
# of a 3-channel PNG, Cityscapes 8-bit labelIds; `cosuda.labels` maps all three (black = ignore,
# e.g. the ego vehicle's bonnet at the bottom of Cityscapes frames).

# %%
# Figure: Samples of the three domains: image and colourised label (official Cityscapes palette) for GTA5-like, SYNTHIA-like and Cityscapes-like data.
fig = dplots.show_samples({"GTA5": gta5, "SYNTHIA": synthia, "Cityscapes": cityscapes_val},
                          n=n_samples, seed=seed);

# %% [markdown]
# **Figure 1.** Example images of the three domains (one row per example), each beside its
# label coloured with the official Cityscapes palette (black = ignored): GTA5-like and
# SYNTHIA-like renders, and Cityscapes-like "photographs" (greyer, blurred, noisy).

# %% [markdown]
# ## How often does each class occur?
#
# The pixel share of each class (log scale): road and building dominate everywhere, while the
# classes that decide mIoU (people, riders, bicycles, traffic lights) cover a percent or two at
# most, and less in the sources. (They are rarer still in the real datasets: the generator draws
# thin things twice their real width and objects within 35 m, so that every class covers pixels
# at 320x160.) The mixes differ between domains, and SYNTHIA has no terrain, truck or train at
# all: this is why SYNTHIA results are averaged over 16 (or 13) classes.

# %%
# Figure: Pixel share of each class per domain (log scale): the label distributions differ between the synthetic sources and the target.
def resized(ds, make):
    """The same dataset at stats_width (aspect ratio of its first image kept)."""
    w, h = Image.open(ds.images[0]).size
    return make((stats_width, max(1, round(stats_width * h / w))))


stats_sets = {
    "GTA5": resized(gta5, lambda s: data.GTA5(gta5.root, size=s, image_dir=gta5.image_dir)),
    "SYNTHIA": resized(synthia, lambda s: data.SYNTHIA(synthia.root, size=s)),
    "Cityscapes": resized(cityscapes_train, lambda s: data.Cityscapes(cityscapes_train.root, "train", size=s)),
}
counts = {name: data.class_frequencies(ds, max_items=max_items) for name, ds in stats_sets.items()}
fig = dplots.plot_class_frequencies(counts);

# %% [markdown]
# **Figure 2.** Pixel share of each of the 19 classes per domain, on a log scale: a few classes
# cover most pixels everywhere, the mixes differ between the sources and the target, and the
# classes missing from a domain have no bar.

# %%
shares = {name: 100 * c / c.sum() for name, c in counts.items()}
print("pixel share (%)    " + "".join(f"{name:>12s}" for name in shares))
for cls in ("road", "sky", "person", "rider", "bicycle", "truck", "terrain"):
    c = labels.CLASS_NAMES.index(cls)
    print(f"{cls:18s} " + "".join(f"{s[c]:12.2f}" for s in shares.values()))

# %% [markdown]
# ## How does each class look?
#
# The mean colour of each class per domain, and the intensity histograms of all pixels.
# Classes keep their identity across domains (roads are grey, vegetation is green-ish), but
# their colours shift: the target is greyer and cooler, its buildings and vegetation have other
# hues, and blur and sensor noise soften the edges the sources draw crisply.

# %%
# Figure: Mean colour of each class per domain: the same class looks different in the target.
stats = {name: data.domain_statistics(ds, max_items=max_items) for name, ds in stats_sets.items()}
fig = dplots.plot_class_colours({name: s["class_mean_rgb"] for name, s in stats.items()});

# %% [markdown]
# **Figure 3.** The mean colour of each class (columns) in each domain (rows; an empty cell: the
# class does not occur): the same class has another colour in the target than in the sources.

# %%
# Figure: Per-channel intensity histograms per domain: the target's colour statistics differ from the sources'.
fig = dplots.plot_channel_histograms({name: s["channel_hist"] for name, s in stats.items()});

# %% [markdown]
# **Figure 4.** Histograms of the red, green and blue intensities of all pixels, per domain: the
# target's colour statistics differ from the sources'.

# %%
target_mean = stats["Cityscapes"]["class_mean_rgb"]
for name in ("GTA5", "SYNTHIA"):
    shift = np.linalg.norm(stats[name]["class_mean_rgb"] - target_mean, axis=1) * 255
    worst = np.argsort(np.nan_to_num(shift, nan=-1))[::-1][:3]
    print(f"{name} -> Cityscapes: mean colour shift {np.nanmean(shift):.0f}/255 per class; largest: "
          + ", ".join(f"{labels.CLASS_NAMES[c]} {shift[c]:.0f}" for c in worst))

# %% [markdown]
# ## A one-minute experiment: how far does appearance alone carry?
#
# The crudest segmenter models each class by one Gaussian over the pixel's colour and labels a
# pixel with the most likely class (quadratic discriminant analysis). Fitted on target labels it
# is an "oracle"; fitted on a source it sees the target through the source's palette: the drop
# between the two is the appearance part of the domain gap. Adding *where* the pixel is (its
# row: sky on top, road at the bottom) helps both, because layout is shared across domains.
# A network uses such shape and context cues too, and they are what adaptation, and the
# paper's cosine-similarity loss on features, can build on.

# %%
# Figure: IoU per class on the target of a colour-only Gaussian pixel classifier fitted on each domain: fitted on a source, it does clearly worse.
def pixel_features(dataset, n_images, stride=4):
    """Features (N, 4) float32 = RGB + row (0 at the top, 1 at the bottom) and labels (N,) of every
    stride-th pixel of n_images images spread over the dataset; ignored pixels dropped."""
    xs, ys = [], []
    for i in np.linspace(0, len(dataset) - 1, min(n_images, len(dataset))).round().astype(int):
        item = dataset[int(i)]
        image = item["image"].numpy()[:, ::stride, ::stride]
        rows = np.repeat(np.linspace(0, 1, image.shape[1], dtype=np.float32), image.shape[2])
        xs.append(np.concatenate([image.reshape(3, -1), rows[None]]).T)
        ys.append(item["label"].numpy()[::stride, ::stride].reshape(-1))
    x, y = np.concatenate(xs), np.concatenate(ys)
    return x[y != labels.IGNORE_INDEX], y[y != labels.IGNORE_INDEX]


def fit_gaussians(x, y):
    """Per class: mean, inverse covariance and log det - 2 log(prior); None for an absent class."""
    gaussians = []
    for c in range(labels.NUM_CLASSES):
        xc = x[y == c]
        if len(xc) < 20:  # e.g. terrain in SYNTHIA: never predicted
            gaussians.append(None)
            continue
        cov = np.cov(xc.T) + 1e-4 * np.eye(x.shape[1])
        gaussians.append((xc.mean(0), np.linalg.inv(cov).astype(np.float32),
                          np.linalg.slogdet(cov)[1] - 2 * np.log(len(xc) / len(x))))
    return gaussians


def segment_miou(gaussians, x, y):
    """mIoU19 (%) and per-class IoU (%) of labelling pixels x (N, d) with their most likely class."""
    score = np.full((len(x), labels.NUM_CLASSES), -np.inf, dtype=np.float32)
    for c, g in enumerate(gaussians):
        if g is not None:
            mean, precision, norm = g
            d = x - mean.astype(np.float32)
            mahalanobis = (d[:, :, None] * precision * d[:, None, :]).sum((1, 2))
            score[:, c] = -0.5 * (mahalanobis + norm)  # log-likelihood + log-prior
    conf = metrics.confusion_matrix(score.argmax(1), y)
    return 100 * metrics.mean_iou(conf), 100 * metrics.per_class_iou(conf)


w, h = Image.open(cityscapes_val.images[0]).size
val_small = data.Cityscapes(cityscapes_val.root, "val", size=(stats_width, max(1, round(stats_width * h / w))))
val_x, val_y = pixel_features(val_small, max_items)
fit_data = {name: pixel_features(ds, max_items // 2) for name, ds in stats_sets.items()}
per_class, table = {}, {}
for name, (x, y) in fit_data.items():
    colour_only = segment_miou(fit_gaussians(x[:, :3], y), val_x[:, :3], val_y)
    with_row = segment_miou(fit_gaussians(x, y), val_x, val_y)
    table[name] = (colour_only[0], with_row[0])
    per_class[f"fitted on {name}"] = colour_only[1]
print("fitted on        colour   colour + row   (mIoU19 on Cityscapes val, %)")
for name, (colour_only, with_row) in table.items():
    print(f"{name:14s} {colour_only:8.1f} {with_row:14.1f}")
fig = dplots.plot_per_class(per_class, title="Colour-only Gaussian classifier on Cityscapes val: IoU per class");

# %% [markdown]
# **Figure 5.** IoU per class on Cityscapes-like val images of the **colour-only** Gaussian
# classifier (the "colour" column of the table), fitted on each domain: fitted on a source
# instead of the target, it loses much of its IoU. The row position ("colour + row" in the
# table) is not part of the figure.

# %% [markdown]
# ## Running on the real datasets
#
# The readers use the download layouts unchanged (details in `data/README.md`):
#
# | parameter | folder layout |
# |---|---|
# | `gta5_root` | `images/00001.png`, `labels/00001.png` (palette PNGs of labelIds) |
# | `gta5_image_dir` | a folder of CycleGAN-translated GTA5 images with the same file names (the paper trains on these) |
# | `synthia_root` | `RGB/0000000.png`, `GT/LABELS/0000000.png` (RAND-CITYSCAPES) |
# | `cityscapes_root` | `leftImg8bit/{train,val}/<city>/…_leftImg8bit.png`, `gtFine/{train,val}/<city>/…_gtFine_labelIds.png` |
#
# With the three folders side by side under one directory, `data_root` alone is enough:
#
# ```bash
# papermill notebooks/01_datasets.ipynb runs/01_real.ipynb -p data_root /datasets \
#     -p gta5_image_dir /datasets/gta5_cyclegan -p max_items 200
# ```
#
# Use absolute paths (relative ones are read from the kernel's working directory). The
# statistics resize images to `stats_width`, so real full-resolution images stay cheap.

# %% [markdown]
# ## Exercises
#
# **1.** Which class has the **largest difference in pixel share** (percentage points) between
# the GTA5-like and the Cityscapes-like data? Use `counts` from above (pixels per class).

# %% tags=["solution"]
share_gta5 = 100 * counts["GTA5"] / counts["GTA5"].sum()
share_cityscapes = 100 * counts["Cityscapes"] / counts["Cityscapes"].sum()
largest_difference = labels.CLASS_NAMES[int(np.argmax(np.abs(share_gta5 - share_cityscapes)))]

# %%
from cosuda.exercises import datasets as ex

ex.check_largest_share_difference(largest_difference, counts["GTA5"], counts["Cityscapes"])

# %% [markdown]
# **2.** Which classes **never occur** in the SYNTHIA-like images we counted? (A list of class
# names; they are the reason SYNTHIA results are averaged over 16 or 13 classes.)

# %% tags=["solution"]
absent_in_synthia = [labels.CLASS_NAMES[c] for c in np.flatnonzero(counts["SYNTHIA"] == 0)]

# %%
ex.check_absent_classes(absent_in_synthia, counts["SYNTHIA"])
