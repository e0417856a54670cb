"""Segment images with a trained run's model and write the predictions as PNG files.

    python -m cosuda.predict RUN_DIR IMAGE_OR_FOLDER [...] --out DIR [--checkpoint last|best|PATH] [--skip-bad]

For each input image X.png (or .jpg / .jpeg) it writes, at X's own resolution:

    DIR/X_trainIds.png  uint8 single-channel, trainIds 0..18 (255 is never predicted)
    DIR/X_labelIds.png  uint8 single-channel, the Cityscapes labelIds of those classes
                        (what cityscapesScripts' evalPixelLevelSemanticLabeling reads)
    DIR/X_color.png     RGB, the official Cityscapes palette

A folder input is searched recursively for .png/.jpg/.jpeg files (sorted) and its subfolders
are mirrored under DIR (FOLDER/frankfurt/a.png -> DIR/frankfurt/a_*.png), so images with the
same name in different subfolders never overwrite each other; a file input is written straight
into DIR. Two inputs that would write the same files are an error, before anything is written.

The prediction follows the run's evaluation protocol: the image is resized to the run's
`eval_size` (bicubic, by the dataset readers' own code), the logits are upsampled bilinearly to
the image's resolution, argmax; under inference mode, in the run's precision.

An unreadable (corrupt, truncated) image stops the command with one line naming it and how many
files were written before it; with `--skip-bad` such images are skipped, counted and named at the
end, and the exit status is 0.

cityscapesScripts matches predictions by `<city>_<seq>_<frame>*.png` anywhere under its
results folder and stops at a second match: for it, write the labelIds alone into a folder of
their own (`--formats labelIds`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .cli import prog
from .config import ConfigError
from .data import DatasetError, _PairedDataset, read_image
from .labels import NUM_CLASSES, TRAIN_TO_CITYSCAPES, colorize
from .evaluate import LoadedRun, _first_line, add_device_options, load_run

__all__ = ["IMAGE_SUFFIXES", "FORMATS", "Predictions", "collect_inputs", "to_label_ids", "predict_images", "main"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FORMATS = ("trainIds", "labelIds", "color")

_LABEL_IDS = np.zeros(256, dtype=np.uint8)  # trainId -> Cityscapes labelId (255 -> 0, unlabeled)
for _train, _label in TRAIN_TO_CITYSCAPES.items():
    _LABEL_IDS[_train] = _label


def to_label_ids(train_ids) -> np.ndarray:
    """trainIds (H, W) -> Cityscapes labelIds (H, W) uint8; 255 (and ids >= 19) -> 0 (unlabeled)."""
    ids = np.asarray(train_ids)
    return _LABEL_IDS[np.where((ids >= 0) & (ids < 256), ids, 255).astype(np.intp)]


def collect_inputs(inputs, out: str | Path | None = None) -> list[tuple[Path, Path]]:
    """(image file, output stem relative to the output folder) for each input image, in order.

    inputs: image files and/or folders (one path or a sequence). A file's stem is its name
    without suffix; a folder contributes every .png/.jpg/.jpeg under it (recursively, sorted by
    relative path, files inside `out` excluded) with its relative subfolder kept. Raises
    ConfigError for a missing path, a folder without images, or two inputs mapping to the same
    output stem.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise ConfigError("no input image or folder given")
    out_resolved = Path(out).resolve() if out is not None else None
    found: list[tuple[Path, Path]] = []
    for given in map(Path, inputs):
        if given.is_file():
            found.append((given, Path(given.stem)))
        elif given.is_dir():
            images = sorted((p for p in given.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                             and not (out_resolved is not None and out_resolved in p.resolve().parents)),
                            key=lambda p: p.relative_to(given).as_posix())
            if not images:
                raise ConfigError(f"input folder {given} holds no {'/'.join(IMAGE_SUFFIXES)} image "
                                  "(searched recursively)")
            found.extend((p, p.relative_to(given).with_suffix("")) for p in images)
        else:
            raise ConfigError(f"input {given} does not exist: give image files or folders of images")
    seen: dict[str, Path] = {}
    unique = []
    for path, stem in found:
        key = stem.as_posix()
        if key in seen:
            if seen[key].resolve() == path.resolve():
                continue  # the same file named twice
            raise ConfigError(f"inputs {seen[key]} and {path} would both write {key}_*.png: predict them into "
                              "different --out folders, or pass their parent folder instead")
        seen[key] = path
        unique.append((path, stem))
    return unique


class _ImageFiles(_PairedDataset):
    """Image files as the dataset readers deliver them, without labels: item "image" float
    (3, H', W') in [0, 1] at `size` (bicubic, the readers' own resize), "size_hw" the file's
    (H, W), "index". Inherits the readers' decoding and error messages (names the file)."""

    _NO_LABEL = np.zeros((1, 1), dtype=np.uint8)

    def __init__(self, paths, size):
        super().__init__(size=size, label_size="original")
        self.images = [Path(p) for p in paths]
        self.names = [str(p) for p in self.images]
        self.labels = [None] * len(self.images)
        self._size_hw = (0, 0)

    def _pair(self, index: int):
        image = read_image(self.images[index])
        self._size_hw = (image.size[1], image.size[0])
        return image, self._NO_LABEL

    def __getitem__(self, index: int) -> dict:
        # An unreadable file comes back as an item with "error" set rather than as an exception:
        # raised in a DataLoader worker, the exception's first line would no longer name the file,
        # and the loop decides whether to stop or skip it.
        try:
            item = super().__getitem__(index)
        except DatasetError as err:
            return {"image": torch.zeros(3, 1, 1), "name": self.names[index], "size_hw": torch.tensor((0, 0)),
                    "index": index, "error": str(err)}
        del item["label"]
        item["size_hw"] = torch.tensor(self._size_hw)
        item["index"] = index
        item["error"] = ""
        return item


class Predictions(list):
    """The files `predict_images` wrote (a list of Paths), with ``skipped``: [(image, reason)]
    of the unreadable images it skipped (``skip_bad=True``)."""

    def __init__(self):
        super().__init__()
        self.skipped: list[tuple[Path, str]] = []


def _save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")  # a kill leaves no half-written PNG under the name
    Image.fromarray(array).save(tmp)
    tmp.replace(path)
    return path


def predict_images(run_dir: str | Path, inputs, out: str | Path, checkpoint: str | Path = "last",
                   device: str | torch.device = "auto", precision: str = "run",
                   formats=FORMATS, num_workers: int | None = None, progress: bool = True,
                   run: LoadedRun | None = None, skip_bad: bool = False) -> Predictions:
    """Predict every input image with a run's model and write PNGs under `out`.

    inputs: image files and/or folders (see `collect_inputs`). out: created if missing.
    checkpoint, device, precision: see `cosuda.evaluate.load_run` (or pass a loaded `run`).
    formats: any of "trainIds" (uint8 (H, W), trainIds 0..18), "labelIds" (uint8 (H, W),
    Cityscapes labelIds), "color" (uint8 (H, W, 3) RGB palette), each written as
    `out/<stem>_<format>.png` at the input's resolution (H, W). num_workers: reader processes
    (None: the run's num_workers). progress: a tqdm bar on stderr over the images.
    skip_bad: an unreadable (corrupt, truncated) image is skipped and listed in the result's
    ``skipped``; otherwise prediction stops at it.
    Returns the written files (a `Predictions` list), image by image in input order, formats in
    the order given. Raises ConfigError (bad input path, run or checkpoint) or
    cosuda.data.DatasetError (an unreadable image, without skip_bad: names the image and how
    many files were written before it), both naming the path.
    """
    from .progress import tqdm

    formats = tuple(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"formats {', '.join(bad) or '(none)'}: choose from {', '.join(FORMATS)}")
    items = collect_inputs(inputs, out)  # before loading the model: a typo fails at once
    run = run or load_run(run_dir, checkpoint, device, precision)
    if "labelIds" in formats and run.cfg.num_classes != NUM_CLASSES:
        raise ConfigError(f"labelIds need the {NUM_CLASSES} Cityscapes classes; this run has "
                          f"{run.cfg.num_classes}: use --formats trainIds,color")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = _ImageFiles([p for p, _ in items], tuple(run.cfg.eval_size))
    workers = run.cfg.num_workers if num_workers is None else int(num_workers)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers,
                                         pin_memory=run.device.type == "cuda")
    model, written, done = run.model, Predictions(), 0
    with run.matmul_precision(), tqdm(total=len(dataset), desc="predict", unit="img", file=sys.stderr,
                                      disable=not progress, dynamic_ncols=True) as bar:
        for batch in loader:
            error = batch["error"][0]
            if error and skip_bad:
                written.skipped.append((items[int(batch["index"][0])][0], error))
                bar.update(1)
                continue
            if error:
                raise DatasetError(
                    f"{error}; stopped there: {len(written)} files written for {done} of {len(dataset)} images "
                    f"under {out} (pass --skip-bad to predict the other images and list the unreadable ones)")
            x = batch["image"].to(run.device, non_blocking=True)
            size_hw = tuple(int(s) for s in batch["size_hw"][0])
            with torch.inference_mode(), run.autocast():  # as cosuda.train.evaluate_run / metrics.evaluate
                _, logits = model(x)
                pred = model.upsample(logits.float(), size_hw).argmax(dim=1)[0]
            train_ids = pred.to(torch.uint8).cpu().numpy()
            stem = out / items[int(batch["index"][0])][1]
            for fmt in formats:
                array = (train_ids if fmt == "trainIds" else to_label_ids(train_ids) if fmt == "labelIds"
                         else colorize(train_ids))
                written.append(_save(array, stem.with_name(f"{stem.name}_{fmt}.png")))
            done += 1
            bar.update(1)
    return written


def _formats(text: str) -> tuple[str, ...]:
    names = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in names if f not in FORMATS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated subset of {','.join(FORMATS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog("cosuda.predict"), description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run folder (the --out of cosuda.train)")
    parser.add_argument("inputs", metavar="IMAGE_OR_FOLDER", nargs="+",
                        help="image files and/or folders (searched recursively for .png/.jpg/.jpeg)")
    parser.add_argument("--out", required=True, default=argparse.SUPPRESS,
                        help="output folder (created; folder inputs keep their subfolders)")
    parser.add_argument("--checkpoint", default="last",
                        help="last (newest checkpoints/iter_*.pt), best (checkpoints/best.pt) or a .pt file")
    parser.add_argument("--formats", type=_formats, default=",".join(FORMATS),
                        help="comma-separated files to write per image (labelIds alone for cityscapesScripts)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable (corrupt, truncated) images and list them at the end, exit status 0; "
                             "without it prediction stops at the first one")
    add_device_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    formats = _formats(args.formats) if isinstance(args.formats, str) else args.formats
    try:
        written = predict_images(args.run_dir, args.inputs, args.out, args.checkpoint, args.device,
                                 args.precision, formats, args.num_workers, progress=not args.no_progress,
                                 skip_bad=args.skip_bad)
    except (ConfigError, DatasetError, FileNotFoundError) as e:
        print(f"error: {_first_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # the output folder cannot be written
        print(f"error: cannot write predictions under {args.out}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    summary = (f"wrote {len(written)} files ({len(written) // max(len(formats), 1)} images x {', '.join(formats)}) "
               f"under {args.out}")
    if written.skipped:
        for image, reason in written.skipped:
            print(f"skipped: {reason}", file=sys.stderr)
        summary += (f"; skipped {len(written.skipped)} unreadable image(s): "
                    f"{', '.join(str(image) for image, _ in written.skipped)}")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
