"""Readers for GTA5, SYNTHIA (RAND-CITYSCAPES) and Cityscapes in their download layouts.

One code path serves the real downloads and the synthetic benchmark (``cosuda.synthetic``),
which writes exactly the same formats. Every reader is a ``torch.utils.data.Dataset`` whose
item is a dict::

    image  float32 tensor (3, H, W), RGB in [0, 1]   (normalisation happens inside the model)
    label  int64 tensor (H, W), trainIds 0..18, 255 = ignore
    name   the image path relative to the image folder, e.g. "00001.png" or
           "frankfurt/frankfurt_000000_000294_leftImg8bit.png"

Sizes are ``(W, H)`` like the paper ("1280x720"). ``size`` resizes the image (bicubic) and the
label (nearest); ``label_size`` resizes the label separately, for evaluation at label resolution.

Image/label pairs are matched when the dataset is built (a missing label is an error) and
checked again when an item is loaded (unreadable, truncated or wrongly sized files are errors).
Nothing is skipped silently: a dataset never comes back partial or empty.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageFile

from cosuda import labels
from cosuda.config import ConfigError

__all__ = [
    "DatasetError", "MissingFileError", "IncompleteBenchmarkError", "GTA5", "SYNTHIA", "Cityscapes",
    "class_frequencies", "domain_statistics", "check_dataset", "main",
]

# Pseudo-labels are stored as trainIds already: the identity map (anything else -> 255).
_TRAIN_IDENTITY = {t: t for t in range(labels.NUM_CLASSES)}


class DatasetError(ValueError):
    """A dataset on disk is not what the reader expects; the message names the path and the fix."""


class MissingFileError(DatasetError, FileNotFoundError):
    """A root, folder, image, label or list file does not exist (catchable as FileNotFoundError)."""


class IncompleteBenchmarkError(DatasetError, ConfigError):
    """A synthetic benchmark whose generation was interrupted (catchable as ConfigError, so that
    training and evaluation report it in one line before the first step)."""


def refuse_incomplete_benchmark(dataset_root) -> None:
    """Raise IncompleteBenchmarkError if ``dataset_root`` (e.g. OUT/cityscapes) lies in a synthetic
    benchmark OUT whose marker says it is incomplete, whatever OUT is.

    An interrupted generation leaves every split partly written (e.g. 15 of 60 val images), which
    the readers would otherwise take as a smaller, valid dataset.
    """
    from cosuda import synthetic

    out = Path(dataset_root).parent
    if synthetic.interrupted(out):
        raise IncompleteBenchmarkError(_incomplete(out))


def _incomplete(out: Path) -> str:
    from cosuda import synthetic

    return (f"the synthetic benchmark under {out} is incomplete: its {synthetic.MARKER} says its generation "
            f"did not finish, so it holds only part of its images; write it again with "
            f"`{synthetic.regenerate_command(out)}`")


# ------------------------------------------------------------------------------------------
# Decoding single files
# ------------------------------------------------------------------------------------------

def _open_png(path: Path) -> Image.Image:
    """Open and fully decode a file with PIL, so truncation is caught here and not later."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Some libraries flip this global; it makes PIL pad truncated files with black silently.
        raise DatasetError(
            f"PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True while reading {path}: truncated files "
            "would load silently padded. Set it back to False.")
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise MissingFileError(f"file not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL's decoders raise all three
        raise DatasetError(
            f"cannot decode {path} ({err}); the file is corrupt or truncated: "
            "download or generate it again") from None
    return img


def read_image(path) -> Image.Image:
    """An RGB PIL image (W, H) from any file PIL reads."""
    img = _open_png(Path(path))
    return img if img.mode == "RGB" else img.convert("RGB")


def read_id_png(path) -> np.ndarray:
    """Ids from an 8-bit grey or palette PNG (GTA5 / Cityscapes labelIds, pseudo-labels) -> (H, W).

    A palette PNG stores the ids as palette indices: they are read as such, never as colours.
    """
    path = Path(path)
    img = _open_png(path)
    if img.mode not in ("P", "L", "I", "I;16"):
        raise DatasetError(
            f"{path} is a {img.mode} image, expected a single-channel or palette PNG of label "
            "ids (a colour-coded label such as *_gtFine_color.png cannot be read as ids)")
    return np.asarray(img)


def read_synthia_label(path) -> np.ndarray:
    """Raw SYNTHIA class ids (H, W) uint16 from GT/LABELS/*.png.

    The file is a 16-bit multi-channel PNG with the class id in its first stored (red) channel,
    the instance id in the second. OpenCV returns BGR order, hence channel index 2.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise MissingFileError(f"file not found: {path}") from None
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if raw is None:
        raise DatasetError(
            f"cannot decode {path}: not a readable PNG (corrupt or truncated); "
            "download or generate it again")
    if raw.ndim == 3:
        if raw.shape[2] < 3:
            raise DatasetError(f"{path} has {raw.shape[2]} channels, expected 1, 3 or 4")
        raw = raw[:, :, 2]
    return raw


# ------------------------------------------------------------------------------------------
# Building the list of pairs
# ------------------------------------------------------------------------------------------

def _require_dir(path: Path, what: str, fix: str) -> None:
    if not path.is_dir():
        raise MissingFileError(f"{what} not found: {path}. {fix}")


def _read_list_file(list_file, strip_prefixes: tuple[str, ...]) -> list[str]:
    """Relative image names from a list file: one per line, blanks and whitespace ignored."""
    path = Path(list_file)
    if not path.is_file():
        raise MissingFileError(f"list file not found: {path}")
    names = []
    for line in path.read_text().splitlines():
        name = line.strip().replace("\\", "/")
        if not name:
            continue
        for prefix in strip_prefixes:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        names.append(name)
    if not names:
        raise DatasetError(f"list file {path} names no image: one relative image path per line")
    return names


def _scan(folder: Path, pattern: str) -> list[str]:
    """Relative paths (forward slashes) of the files under ``folder`` matching ``pattern``, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.glob(pattern) if p.is_file())


class _PairedDataset(torch.utils.data.Dataset):
    """Image/label file pairs + the decoding, mapping and resizing shared by every reader.

    Subclasses fill ``self.images``, ``self.labels`` and ``self.names`` (same length, same order)
    and set ``self.mapping`` (raw id -> trainId) and ``self.allow_size_mismatch``.
    """

    mapping: dict = labels.CITYSCAPES_TO_TRAIN
    allow_size_mismatch = False   # GTA5 only: see GTA5's docstring
    label_may_be_rescaled = False  # pseudo-labels may be saved at another resolution

    def __init__(self, size=None, label_size=None):
        self.size = _check_size(size, "size")
        # "original": labels at the file's resolution whatever `size` is (the field's evaluation
        # protocol: predict at 1024x512, compare at 2048x1024).
        self.label_size = label_size if label_size == "original" else _check_size(label_size, "label_size")
        self.images: list[Path] = []
        self.labels: list[Path] = []
        self.names: list[str] = []

    def _finish(self, image_dir: Path, label_of, fix: str) -> None:
        """Pair every name with its label file; any missing file is an error naming it."""
        if not self.names:
            raise DatasetError(f"{type(self).__name__}: no image found under {image_dir}. {fix}")
        for name in self.names:
            image, label = image_dir / name, label_of(name)
            if not image.is_file():
                raise MissingFileError(
                    f"{type(self).__name__}: image {image} (listed as {name!r}) does not exist. "
                    "Check the root, image_dir and list file.")
            if not label.is_file():
                raise MissingFileError(
                    f"{type(self).__name__}: no label for image {image}: expected {label}. {fix}")
            self.images.append(image)
            self.labels.append(label)

    def _flat_layout(self, what: str, root, image_dir, image_folder: str, label_folder: Path, list_file) -> None:
        """GTA5 / SYNTHIA: root/<image_folder>/X.png paired with root/<label_folder>/X.png."""
        self.root = Path(root)
        fix = (f"Expected the {what} layout root/{image_folder}/*.png + root/{label_folder.as_posix()}/*.png "
               "(see data/README.md).")
        _require_dir(self.root, f"{what} root", fix)
        refuse_incomplete_benchmark(self.root)
        self.image_dir = Path(image_dir) if image_dir is not None else self.root / image_folder
        _require_dir(self.image_dir, f"{what} image folder", fix)
        _require_dir(self.root / label_folder, f"{what} label folder", fix)
        if list_file is not None:
            self.names = _read_list_file(list_file, (f"{image_folder}/",))
        else:
            self.names = _scan(self.image_dir, "*.png")
        self._finish(self.image_dir, lambda n: self.root / label_folder / n, fix)

    def __len__(self) -> int:
        return len(self.names)

    def _read_raw_label(self, path: Path) -> np.ndarray:
        return read_id_png(path)

    def _pair(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """The decoded image (PIL RGB) and trainIds (H, W) uint8 at file resolution, checked."""
        image = read_image(self.images[index])
        train_ids = labels.to_train_ids(self._read_raw_label(self.labels[index]), self.mapping)
        label_wh = (train_ids.shape[1], train_ids.shape[0])
        if image.size != label_wh:
            if self.allow_size_mismatch:
                if self.size is None:  # GTA5: bring the image to its label (documented above)
                    image = image.resize(label_wh, Image.BICUBIC)
            elif not (self.label_may_be_rescaled and _same_aspect(image.size, label_wh)):
                raise DatasetError(
                    f"label {self.labels[index]} is {label_wh[0]}x{label_wh[1]} but image "
                    f"{self.images[index]} is {image.size[0]}x{image.size[1]} (WxH): they must "
                    "match; re-download or regenerate the pair")
        return image, train_ids

    def read_label(self, index: int) -> np.ndarray:
        """The trainIds (H, W) uint8 of item ``index`` without decoding the image.

        At ``label_size``, else ``size``, else the label file's own resolution.
        """
        train_ids = labels.to_train_ids(self._read_raw_label(self.labels[index]), self.mapping)
        if self.label_size == "original":
            return train_ids
        target = self.label_size or self.size
        return _resize_label(train_ids, target) if target else train_ids

    def __getitem__(self, index: int) -> dict:
        image, train_ids = self._pair(index)
        if self.size is not None and image.size != self.size:
            image = image.resize(self.size, Image.BICUBIC)
        # The label follows the image unless told otherwise (label_size: evaluation resolution).
        if self.label_size != "original":
            target = self.label_size or self.size or image.size
            train_ids = _resize_label(train_ids, target)
        # Converted in NumPy: tiny torch ops in DataLoader workers pay for thread start-up.
        chw = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1), dtype=np.float32)
        chw /= 255.0
        return {
            "image": torch.from_numpy(chw),
            "label": torch.from_numpy(train_ids.astype(np.int64)),
            "name": self.names[index],
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, size={self.size}, label_size={self.label_size})"


def _check_size(size, what: str):
    if size is None:
        return None
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"{what} must be (W, H) with positive integers, got {size}")
    return size


def _same_aspect(a, b, tol: float = 0.02) -> bool:
    return abs(a[0] / a[1] - b[0] / b[1]) <= tol * a[0] / a[1]


def _resize_label(train_ids: np.ndarray, size) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 id map to ``size`` = (W, H): ids are never blended."""
    if (train_ids.shape[1], train_ids.shape[0]) == tuple(size):
        return train_ids
    return np.asarray(Image.fromarray(train_ids).resize(tuple(size), Image.NEAREST))


# ------------------------------------------------------------------------------------------
# The three datasets
# ------------------------------------------------------------------------------------------

class GTA5(_PairedDataset):
    """GTA5: ``root/images/00001.png`` + ``root/labels/00001.png`` (palette PNG of Cityscapes labelIds).

    ``image_dir`` replaces ``root/images`` (e.g. the CycleGAN-translated images the paper trains on,
    stored under the same file names). A handful of real GTA5 images differ in size from their
    label: with ``size`` both are resized separately, with ``size=None`` the image is resized
    (bicubic) to the label's size, so image and label always match.
    """

    mapping = labels.CITYSCAPES_TO_TRAIN
    allow_size_mismatch = True

    def __init__(self, root, size=None, list_file=None, image_dir=None, label_size=None):
        super().__init__(size, label_size)
        self._flat_layout("GTA5", root, image_dir, "images", Path("labels"), list_file)


class SYNTHIA(_PairedDataset):
    """SYNTHIA RAND-CITYSCAPES: ``root/RGB/0000000.png`` + ``root/GT/LABELS/0000000.png``.

    Labels are 16-bit multi-channel PNGs (class id in the red channel, read with OpenCV), mapped
    to the 16 shared classes; terrain, truck and train never occur. ``image_dir`` replaces
    ``root/RGB``.
    """

    mapping = labels.SYNTHIA_TO_TRAIN

    def __init__(self, root, size=None, list_file=None, image_dir=None, label_size=None):
        super().__init__(size, label_size)
        self._flat_layout("SYNTHIA", root, image_dir, "RGB", Path("GT") / "LABELS", list_file)

    def _read_raw_label(self, path: Path) -> np.ndarray:
        return read_synthia_label(path)


def _dev_split_fix(root: Path) -> str:
    """What to do where Cityscapes-layout ``root`` has no dev split: real Cityscapes has no labelled
    split beside train and val (its test labels are withheld), so the fix is where dev comes from,
    not how the download is laid out."""
    from cosuda import synthetic

    out = root.parent
    if (out / synthetic.MARKER).is_file():
        command = synthetic.regenerate_command(out).replace(" --cityscapes-dev 0", "")
        return (f"This synthetic benchmark has no dev split (written before the split existed, or with "
                f"--cityscapes-dev 0): write it again with `{command}`.")
    return ("Real Cityscapes has no dev split (only the synthetic benchmark writes one, for choosing "
            "hyper-parameters): evaluate on val (eval_split=val, --split val).")


class Cityscapes(_PairedDataset):
    """Cityscapes: ``root/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` with
    labels ``root/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png`` (8-bit labelIds).

    ``split`` is any folder under leftImg8bit/: "train" and "val" in the real download; the
    synthetic benchmark also writes "dev", a labelled split for choosing hyper-parameters
    (a missing dev folder is an error that says where dev comes from).

    With ``pseudo_root``, labels come instead from ``pseudo_root/<name>``, the image's own relative
    name, holding 8-bit trainIds (255 = ignore), as written by ``cosuda.pseudo``. Pseudo-labels
    may be stored at a lower resolution than the image (same aspect ratio); they are resized by
    nearest neighbour like any label.
    """

    def __init__(self, root, split="train", size=None, list_file=None, pseudo_root=None,
                 label_size=None):
        super().__init__(size, label_size)
        self.root = Path(root)
        self.split = split
        fix = ("Expected the Cityscapes layout root/leftImg8bit/<split>/<city>/*_leftImg8bit.png + "
               "root/gtFine/<split>/<city>/*_gtFine_labelIds.png (see data/README.md).")
        if split == "dev":
            fix = _dev_split_fix(self.root)
        _require_dir(self.root, "Cityscapes root", fix)
        refuse_incomplete_benchmark(self.root)
        self.image_dir = self.root / "leftImg8bit" / split
        _require_dir(self.image_dir, f"Cityscapes {split!r} image folder", fix)
        if list_file is not None:
            self.names = _read_list_file(list_file, (f"leftImg8bit/{split}/",))
        else:
            self.names = _scan(self.image_dir, "*/*_leftImg8bit.png")
        for name in self.names:
            if not name.endswith("_leftImg8bit.png"):
                raise DatasetError(
                    f"Cityscapes image name {name!r} does not end with '_leftImg8bit.png'; "
                    "list files hold paths like frankfurt/frankfurt_000000_000294_leftImg8bit.png")
        if pseudo_root is None:
            self.pseudo_root = None
            self.mapping = labels.CITYSCAPES_TO_TRAIN
            _require_dir(self.root / "gtFine" / split, f"Cityscapes {split!r} label folder", fix)
            label_dir = self.root / "gtFine" / split

            def label_of(name):
                return label_dir / name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
        else:
            self.pseudo_root = Path(pseudo_root)
            self.mapping = _TRAIN_IDENTITY
            self.label_may_be_rescaled = True
            fix = (f"Pseudo-labels are missing under {self.pseudo_root}: generate them for the "
                   f"{split!r} split with cosuda.pseudo.generate_pseudo_labels(model, "
                   f"Cityscapes(root, {split!r}), {str(self.pseudo_root)!r}, device) from a "
                   "trained source-only model (see the pseudo-label notebook).")
            _require_dir(self.pseudo_root, "pseudo-label folder", fix)

            def label_of(name):
                return self.pseudo_root / name
        self._finish(self.image_dir, label_of, fix)


# ------------------------------------------------------------------------------------------
# Statistics over a dataset (what the dataset notebook plots)
# ------------------------------------------------------------------------------------------

def _sample_indices(n: int, max_items) -> np.ndarray:
    """All indices, or ``max_items`` of them spread evenly over the dataset (deterministic)."""
    if max_items is None or max_items >= n:
        return np.arange(n)
    if max_items <= 0:
        raise ValueError(f"max_items must be positive, got {max_items}")
    return np.unique(np.linspace(0, n - 1, max_items).round().astype(np.int64))


def class_frequencies(dataset, max_items=None) -> np.ndarray:
    """Pixels per trainId, int64 (NUM_CLASSES,), over ``dataset`` (ignore pixels not counted).

    ``max_items`` items spread evenly over the dataset are used when given. Only labels are
    decoded when the dataset has ``read_label`` (every reader here).
    """
    counts = np.zeros(labels.NUM_CLASSES, dtype=np.int64)
    for i in _sample_indices(len(dataset), max_items):
        if hasattr(dataset, "read_label"):
            ids = dataset.read_label(int(i))
        else:
            ids = np.asarray(dataset[int(i)]["label"])
        counts += np.bincount(ids.reshape(-1).astype(np.int64), minlength=256)[:labels.NUM_CLASSES]
    return counts


def domain_statistics(dataset, max_items=None, bins: int = 32) -> dict:
    """Colour statistics of a dataset in one pass over images and labels.

    Returns a dict of numpy arrays:
      ``class_pixels`` int64 (19,): pixels per class;
      ``class_mean_rgb`` float64 (19, 3): mean RGB in [0, 1] per class, NaN for an absent class;
      ``channel_hist`` float64 (3, bins): per-channel histogram of all pixels, each row sums to 1.
    Labels must have the image's resolution (no ``label_size`` on the dataset).
    """
    n_cls = labels.NUM_CLASSES
    pixels = np.zeros(n_cls, dtype=np.int64)
    sums = np.zeros((n_cls, 3), dtype=np.float64)
    hist = np.zeros((3, bins), dtype=np.float64)
    for i in _sample_indices(len(dataset), max_items):
        item = dataset[int(i)]
        image = item["image"].numpy().reshape(3, -1)     # (3, H*W)
        ids = item["label"].numpy().reshape(-1)          # (H*W,)
        if ids.size != image.shape[1]:
            raise ValueError("domain_statistics needs labels at the image's resolution "
                             "(build the dataset without label_size)")
        keep = ids < n_cls
        pixels += np.bincount(ids[keep], minlength=n_cls)
        for c in range(3):
            sums[:, c] += np.bincount(ids[keep], weights=image[c, keep], minlength=n_cls)
            hist[c] += np.histogram(image[c], bins=bins, range=(0.0, 1.0))[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_rgb = sums / pixels[:, None]
    mean_rgb[pixels == 0] = np.nan
    hist /= np.maximum(hist.sum(axis=1, keepdims=True), 1)
    return {"class_pixels": pixels, "class_mean_rgb": mean_rgb, "channel_hist": hist}


# ------------------------------------------------------------------------------------------
# Checking a dataset before a long run: python -m cosuda.data check ROOT [--task TASK]
# ------------------------------------------------------------------------------------------

TASKS = ("gta5", "synthia", "cityscapes")
# Under a dataset's root: its image folder and its label folder (the readers' layouts above).
_LAYOUT = {"gta5": ("images", "labels"), "synthia": ("RGB", "GT/LABELS"), "cityscapes": ("leftImg8bit", "gtFine")}
_LABEL_IDS = {"gta5": labels.CITYSCAPES_LABEL_IDS, "synthia": labels.SYNTHIA_LABEL_IDS,
              "cityscapes": labels.CITYSCAPES_LABEL_IDS}


def detect_task(root) -> str | None:
    """The dataset whose layout ``root`` has ("gta5", "synthia" or "cityscapes"), else None."""
    root = Path(root)
    for task, (image_folder, label_folder) in _LAYOUT.items():
        if (root / image_folder).is_dir() or (root / label_folder).is_dir():
            return task
    return None


def _match(image_dir: Path, label_dir: Path, images: list[str], label_names: list[str],
           label_of, image_of) -> list[tuple]:
    """(name, image path, label path, missing) for every image and every label, sorted by name;
    missing: None (a pair), "label" (an image without its label) or "image" (a label without its
    image). ``label_of``: image name -> label name; ``image_of``: the inverse."""
    have_label = set(label_names)
    pairs = [(name, image_dir / name, label_dir / label_of(name), None if label_of(name) in have_label else "label")
             for name in images]
    paired = {label_of(name) for name in images}
    pairs += [(image_of(label), image_dir / image_of(label), label_dir / label, "image")
              for label in label_names if label not in paired]
    return sorted(pairs, key=lambda pair: pair[0])


def _parts(task: str, root: Path) -> dict[str, list]:
    """The image/label pairs of a dataset root, per part: {"gta5": [...]} or {"cityscapes/val": [...], ...}."""
    image_dir, label_dir = root / _LAYOUT[task][0], root / _LAYOUT[task][1]

    def scan(folder: Path, pattern: str) -> list[str]:
        return _scan(folder, pattern) if folder.is_dir() else []

    if task != "cityscapes":
        same = lambda name: name  # noqa: E731
        return {task: _match(image_dir, label_dir, scan(image_dir, "*.png"), scan(label_dir, "*.png"), same, same)}
    splits = sorted({p.name for d in (image_dir, label_dir) if d.is_dir() for p in d.iterdir() if p.is_dir()})
    return {f"cityscapes/{split}": _match(
        image_dir / split, label_dir / split,
        scan(image_dir / split, "*/*_leftImg8bit.png"), scan(label_dir / split, "*/*_gtFine_labelIds.png"),
        lambda name: name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"),
        lambda name: name.replace("_gtFine_labelIds.png", "_leftImg8bit.png")) for split in splits}


def _check_pair(task: str, pair) -> dict:
    """Decode one image and its label completely. Returns {"image_size": (W, H) | None,
    "label_size": (W, H) | None, "values": sorted raw label values, "problems": [one line each]}."""
    _, image, label, missing = pair
    result = {"image_size": None, "label_size": None, "values": [], "problems": []}
    if missing == "label":
        result["problems"].append(f"{image}: no label; expected {label}")
    elif missing == "image":
        result["problems"].append(f"{label}: a label without its image; expected {image}")
    if missing != "image":
        try:
            result["image_size"] = _open_png(image).size
        except DatasetError as err:
            result["problems"].append(str(err))
    if missing != "label":
        try:
            raw = read_synthia_label(label) if task == "synthia" else read_id_png(label)
        except DatasetError as err:
            result["problems"].append(str(err))
        else:
            result["label_size"] = (raw.shape[1], raw.shape[0])
            values = np.unique(raw)
            result["values"] = values.tolist()
            known = _LABEL_IDS[task]
            outside = values[(values < known.start) | (values >= known.stop)]
            if outside.size:
                shown = ", ".join(map(str, outside[:8].tolist())) + (" ..." if outside.size > 8 else "")
                result["problems"].append(
                    f"{label}: label values {shown} outside the {task} label ids {known.start}..{known.stop - 1} "
                    f"({int(np.isin(raw, outside).sum())} pixels); is it a labelIds file of this dataset "
                    "(not colours, not trainIds)? (id mappings: cosuda/labels.py)")
    sizes = result["image_size"], result["label_size"]
    if None not in sizes and sizes[0] != sizes[1] and task != "gta5":  # GTA5: the reader resizes
        result["problems"].append(f"{label}: {sizes[1][0]}x{sizes[1][1]} but its image {image} is "
                                  f"{sizes[0][0]}x{sizes[0][1]} (WxH); they must match")
    return result


def _recorded_counts(out: Path) -> dict[str, int]:
    """The image count per part ("gta5", "synthia", "cityscapes/<split>") that the marker of a
    finished synthetic benchmark under ``out`` records; {} without a readable, finished marker.
    A part the marker does not name (an older generator's benchmark has no dev) is left out."""
    from cosuda import synthetic

    try:
        saved = json.loads((out / synthetic.MARKER).read_text())
        config = saved["config"] if saved.get("complete") is True else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    fields = {"gta5": "gta5_count", "synthia": "synthia_count", "cityscapes/train": "cityscapes_train_count",
              "cityscapes/val": "cityscapes_val_count", "cityscapes/dev": "cityscapes_dev_count"}
    return {part: int(config[field]) for part, field in fields.items() if isinstance(config.get(field), int)}


def check_dataset(root, task: str | None = None, workers: int | None = None, progress: bool = True) -> dict:
    """Decode every image and label under ``root`` and report what a training run would trip on.

    root: a dataset root in its download layout (GTA5, SYNTHIA or Cityscapes, see the readers
    above), or a data root holding gta5/, synthia/ and/or cityscapes/ (e.g. a synthetic
    benchmark). task: "gta5", "synthia" or "cityscapes"; None: detected from the layout.
    workers: decoding threads (default: up to 4); progress: a bar on stderr.

    Returns a JSON-serialisable dict:
      "root" (str), "tasks" (the datasets checked), "ok" (bool: no problem),
      "problems": one line per problem, each naming its file (missing image or label,
          unreadable or truncated file, label values outside the dataset's label ids,
          image/label size mismatch, a synthetic benchmark whose generation was interrupted, or
          whose part -- the dev split included -- holds another number of images than its marker
          records),
      "parts": {part: {"root", "pairs", "images", "labels", "image_sizes" {"WxH": count},
          "label_values" (sorted raw ids seen), "size_mismatches"}} with part "gta5", "synthia",
          "cityscapes/<split>".
    Raises DatasetError (MissingFileError) when root is missing or holds none of the layouts.
    """
    from concurrent.futures import ThreadPoolExecutor

    from cosuda import synthetic
    from cosuda.progress import tqdm

    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"dataset root not found: {root}")
    if task is not None and task not in TASKS:
        raise DatasetError(f"task {task!r} unknown; choose one of {', '.join(TASKS)}")
    if task is not None and detect_task(root) is None and (root / task).is_dir():
        root = root / task  # a data root and the dataset to check in it
    found = detect_task(root)
    if found is not None:
        datasets = {task or found: root}
        marker_root = root.parent
    else:
        datasets = {t: root / t for t in TASKS if (task in (None, t)) and detect_task(root / t) == t}
        marker_root = root
    if not datasets:
        raise MissingFileError(
            f"{root} holds no {' / '.join(task and [task] or TASKS)} layout: expected "
            + "; ".join(f"{t}: ROOT/{a}/ + ROOT/{b}/" for t, (a, b) in _LAYOUT.items() if task in (None, t))
            + " (or a data root holding gta5/, synthia/, cityscapes/; see data/README.md)")
    problems = []
    if synthetic.interrupted(marker_root):
        problems.append(f"{marker_root / synthetic.MARKER}: {_incomplete(marker_root)}")
    found_pairs = {t: _parts(t, path) for t, path in datasets.items()}
    jobs = [(t, part, pair) for t, by_part in found_pairs.items() for part, pairs in by_part.items() for pair in pairs]
    parts = {part: {"root": str(datasets[t]), "pairs": 0, "images": 0, "labels": 0, "image_sizes": {},
                    "label_values": set(), "size_mismatches": 0}
             for t, by_part in found_pairs.items() for part in by_part}
    for t, path in datasets.items():
        if not found_pairs[t]:
            problems.append(f"{path}: no {t} image or label found; expected {_LAYOUT[t][0]}/ and {_LAYOUT[t][1]}/")
    workers = min(4, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(jobs), desc=f"check {root}", unit="pair",
                                                   file=sys.stderr, disable=not progress) as bar:
        for (t, part, pair), result in zip(jobs, pool.map(lambda job: _check_pair(job[0], job[2]), jobs)):
            report = parts[part]
            report["pairs"] += pair[3] is None
            report["images"] += pair[3] != "image"
            report["labels"] += pair[3] != "label"
            if result["image_size"]:
                size = "x".join(map(str, result["image_size"]))
                report["image_sizes"][size] = report["image_sizes"].get(size, 0) + 1
            if None not in (result["image_size"], result["label_size"]):
                report["size_mismatches"] += result["image_size"] != result["label_size"]
            report["label_values"].update(result["values"])
            problems += result["problems"]
            bar.update(1)
    for part, report in parts.items():
        report["label_values"] = sorted(report["label_values"])
        if report["images"] == 0:
            problems.append(f"{report['root']}: no image in {part}")
    # A split deleted whole (e.g. dev) leaves no folder to scan: the marker says it should be there.
    for part, count in _recorded_counts(marker_root).items():
        if part.split("/")[0] not in datasets:
            continue
        # images, not pairs: a missing label is already a problem line of its own
        images = parts[part]["images"] if part in parts else 0
        if images != count:
            problems.append(
                f"{marker_root / synthetic.MARKER}: records {count} {part} images but {images} are there; "
                f"write the benchmark again with `{synthetic.regenerate_command(marker_root)}`")
    return {"root": str(root), "tasks": list(datasets), "ok": not problems, "problems": problems, "parts": parts}


def _print_report(report: dict) -> None:
    for part, r in report["parts"].items():
        sizes = ", ".join(f"{size} ({n})" for size, n in sorted(r["image_sizes"].items(), key=lambda kv: -kv[1]))
        line = (f"{part}: {r['pairs']} image/label pairs ({r['images']} images, {r['labels']} labels); "
                f"image sizes {sizes or '-'}; label values {', '.join(map(str, r['label_values'])) or '-'}")
        if r["size_mismatches"] and part == "gta5":
            line += f"; {r['size_mismatches']} labels differ in size from their image (the GTA5 reader resizes the image)"
        print(line)


def main(argv: list[str] | None = None) -> int:
    """``python -m cosuda.data check ROOT [--task TASK]``: 0 when every file decodes and pairs,
    1 when a problem was found (one line each on stderr), 2 for a bad command line or root."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cosuda.data",
                                     description="Readers for GTA5, SYNTHIA and Cityscapes; checks a dataset on disk.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check", help="decode every image and label of a dataset and report problems",
        description="Decode every image and label under ROOT (in parallel) and report counts, image sizes, "
                    "label values, missing image/label pairs, unreadable files and label values outside the "
                    "dataset's label ids. Exit status 1 on any problem, each named on one line.")
    check.add_argument("root", metavar="ROOT", help="a GTA5, SYNTHIA or Cityscapes root, or a data root holding them")
    check.add_argument("--task", choices=TASKS, default=None, help="the dataset's layout (default: detected)")
    check.add_argument("--workers", type=int, default=None, help="decoding threads (default: up to 4)")
    check.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        report = check_dataset(args.root, args.task, args.workers, progress=not args.no_progress)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
    for problem in report["problems"]:
        print(f"error: {problem}", file=sys.stderr)
    files = sum(r["images"] + r["labels"] for r in report["parts"].values())
    if report["problems"]:
        print(f"{len(report['problems'])} problem(s) in {report['root']} (listed on stderr, one per file); "
              "fix or regenerate those files before training", file=sys.stderr)
        return 1
    if not args.json:
        print(f"ok: {files} files decoded under {report['root']} ({', '.join(report['tasks'])}), no problem found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
