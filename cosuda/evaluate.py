"""Evaluate a finished or interrupted training run on the target split of its configuration.

    python -m cosuda.evaluate RUN_DIR [--checkpoint last|best|PATH] [--split val|dev]
                              [--max-items N] [--data-root DIR] [--device auto|cpu|cuda]

Prints exactly one JSON line on stdout (progress and information go to stderr):
{"miou19", "miou16", "miou13", "per_class_iou" (19 floats, null for a class absent from both
prediction and ground truth), "class_names", "iteration", "checkpoint", "split", "items", ...},
mIoU in percent rounded to 4 decimals like RUN_DIR/metrics.json. The protocol is the run's own
(the one training evaluated with): images resized to the run's `eval_size` (bicubic), logits
upsampled bilinearly to the label files' resolution, argmax, one confusion matrix over the
split; the run's precision on the chosen device. The split is the run's `eval_split` (val, or the
synthetic benchmark's dev split) unless --split names another. Evaluating the newest checkpoint
of a finished run therefore reproduces the final numbers of its metrics.json.

Checkpoints: `last` is the newest RUN_DIR/checkpoints/iter_*.pt, `best` is
RUN_DIR/checkpoints/best.pt (the weights of the run's best-mIoU19 evaluation), anything else is
a checkpoint file (absolute, relative to the current folder, or relative to RUN_DIR or
RUN_DIR/checkpoints). Errors (no run, no checkpoint, unreadable checkpoint, missing data) end
with exit status 2 and one line `error: ...` that names the path and the fix.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .cli import prog
from .config import SYNTHETIC_ROOT, ConfigError, RunConfig
from .labels import CLASS_NAMES

__all__ = ["LoadedRun", "resolve_checkpoint", "load_run", "target_root", "evaluate_checkpoint", "main"]

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("run", "fp32", "tf32", "bf16", "fp16")


@dataclass
class LoadedRun:
    """A run's model ready for inference: `model` in eval mode on `device`, `cfg` the checkpoint's
    RunConfig, `checkpoint` the file loaded, `iteration` its training iteration (None if the
    file does not say), `precision` what `autocast()` applies."""

    model: torch.nn.Module
    cfg: RunConfig
    checkpoint: Path
    iteration: int | None
    device: torch.device
    precision: str

    def autocast(self):
        """A fresh autocast context for `precision` on `device` (a no-op for fp32 / tf32)."""
        from .train import autocast_factory

        return autocast_factory(self.precision, self.device)()

    @contextmanager
    def matmul_precision(self):
        """TF32 on for `tf32`, off otherwise on a GPU (as training does); restored on exit."""
        if self.device.type != "cuda":
            yield
            return
        before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.precision == "tf32"
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _preset_hint(run_dir: Path) -> str:
    """`--preset NAME` of the run if its config.json says, for commands in error messages."""
    try:
        preset = json.loads((run_dir / "config.json").read_text()).get("preset")
    except (OSError, ValueError, AttributeError):
        preset = None
    return f"--preset {preset}" if preset else "--preset NAME"


def resolve_checkpoint(run_dir: str | Path, checkpoint: str | Path = "last") -> Path:
    """The checkpoint file meant by `checkpoint` for the run in `run_dir`.

    "last": the newest `run_dir/checkpoints/iter_*.pt`; "best": `run_dir/checkpoints/best.pt`;
    otherwise a file path (as given, else relative to `run_dir`, else to `run_dir/checkpoints`).
    Raises ConfigError (a ValueError) with a one-line message naming the path and the fix.
    """
    from .train import latest_checkpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist: pass the --out folder of a "
                          "`python -m cosuda.train` run")
    folder = run_dir / "checkpoints"
    name = str(checkpoint)
    if name == "last":
        path = latest_checkpoint(run_dir)
        if path is None:
            raise ConfigError(f"no checkpoint {folder / 'iter_*.pt'}: the run has not written one yet; train "
                              f"or resume it (python -m cosuda.train {_preset_hint(run_dir)} --out {run_dir} "
                              "[--resume]) or pass --checkpoint PATH")
        return path
    if name == "best":
        path = folder / "best.pt"
        if not path.is_file():
            raise ConfigError(f"no best checkpoint {path}: best.pt holds the weights of a run's best-mIoU19 "
                              "evaluation and exists only in runs trained by a cosuda version that writes it, "
                              "after their first evaluation; use --checkpoint last or --checkpoint PATH")
        return path
    given = Path(checkpoint)
    for path in (given, run_dir / given, folder / given):
        if path.is_file():
            return path
    raise ConfigError(f"checkpoint file {given} does not exist (looked as given, in {run_dir} and in {folder}); "
                      "use --checkpoint last, best or the path of a .pt file")


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message (or its type): error messages stay one line."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _resolve_device(cfg: RunConfig, device: str | torch.device) -> torch.device:
    from .train import resolve_device

    name = str(device)
    if name != "auto" and name.split(":")[0] not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: choose auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    return resolve_device(dataclasses.replace(cfg, device=name))


def load_run(run_dir: str | Path, checkpoint: str | Path = "last", device: str | torch.device = "auto",
             precision: str = "run") -> LoadedRun:
    """Load the model of a run for inference.

    run_dir: a training run folder (RUN_DIR/checkpoints/...). checkpoint: "last", "best" or a
    file (see `resolve_checkpoint`). device: "auto" (a GPU if there is one), "cpu", "cuda",
    "cuda:N". precision: "run" (the run's own, resolved on `device` like training does: "auto"
    is bf16 on a capable GPU, fp32 on CPU) or one of fp32, tf32, bf16, fp16.
    The model is built by `cosuda.runs.load_run_model` from the checkpoint's configuration.
    Raises ConfigError with a one-line message for a missing run, checkpoint or unreadable file.
    """
    from .config import config_from_dict
    from .runs import load_run_model
    from .train import resolve_precision

    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    path = resolve_checkpoint(run_dir, checkpoint)
    fix = "use another --checkpoint (last, best or a .pt file) or train the run again"
    try:  # mmap: the tensors (optimiser state included) are not read here, only the metadata
        try:
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # a file in the legacy (non-zip) format cannot be mapped
            state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated, empty or foreign file
        raise ConfigError(f"cannot read checkpoint {path} ({type(e).__name__}: {_first_line(e)}); {fix}") from None
    if not isinstance(state, dict) or "model" not in state or not isinstance(state.get("config"), dict):
        raise ConfigError(f"{path} is not a cosuda checkpoint (a dict with 'model' and 'config'); {fix}")
    iteration = state.get("iteration")
    cfg = config_from_dict(state["config"])
    del state
    dev = _resolve_device(cfg, device)
    try:
        model, cfg = load_run_model(run_dir, "cpu", checkpoint=path)
    except Exception as e:  # weights that do not fit the configured network
        raise ConfigError(f"cannot load the model of checkpoint {path} ({type(e).__name__}: "
                          f"{_first_line(e)}); {fix}") from None
    chosen = resolve_precision(cfg, dev) if precision == "run" else precision
    return LoadedRun(model.to(dev).eval(), cfg, path, int(iteration) if iteration is not None else None,
                     dev, chosen)


def target_root(cfg: RunConfig, data_root: str | Path | None = None, target: str | Path | None = None) -> Path:
    """The target (Cityscapes-layout) folder of a run: `target`, else `data_root/cityscapes`,
    else the run's own target_root or data_root/cityscapes. The default synthetic benchmark is
    generated if it is the run's data root and missing (as training does)."""
    if target:
        root = Path(target)
    elif data_root:
        root = Path(data_root) / "cityscapes"
    elif cfg.target_root:
        root = Path(cfg.target_root)
    elif cfg.data_root:
        data = Path(cfg.data_root)
        if data.resolve() == SYNTHETIC_ROOT.resolve():
            from .train import resolve_paths

            resolve_paths(cfg)  # (re)generates the default benchmark when it is missing or partial
        root = data / "cityscapes"
    else:
        raise ConfigError("the run's configuration names no data (data_root and target_root are empty): "
                          "pass --data-root DIR (holding cityscapes/) or --target-root DIR")
    if not root.is_dir():
        raise ConfigError(f"target data {root} does not exist (a run moved to another machine?): pass "
                          "--data-root DIR holding cityscapes/, or --target-root DIR")
    return root


def _round(x: Any) -> float | None:
    from .train import _json_float

    return _json_float(float(x))


def evaluate_checkpoint(run_dir: str | Path, checkpoint: str | Path = "last", split: str | None = None,
                        max_items: int | None = None, data_root: str | Path | None = None,
                        target: str | Path | None = None, device: str | torch.device = "auto",
                        precision: str = "run", num_workers: int | None = None,
                        progress: bool = False) -> dict:
    """mIoU of a run's checkpoint on the target `split` (Cityscapes layout) of its configuration.

    run_dir: a training run folder; checkpoint: "last" (newest iter_*.pt), "best" (best.pt) or a
    file. split: a folder under the target's leftImg8bit/ ("val", "dev" (the synthetic benchmark's
    split for choosing hyper-parameters), "train"); None: the run's `eval_split`.
    max_items: the first N images of the split; None: the run's `eval_max_items` (0 there
    means all), 0: all. data_root / target: where the data is now (see `target_root`).
    device, precision: see `load_run`. num_workers: reader processes (None: the run's).
    Returns a JSON-serialisable dict: "miou19", "miou16", "miou13" (floats in percent rounded
    to 4 decimals as in metrics.json, None if NaN), "per_class_iou" (19 floats or None, trainId
    order), "class_names" (19), "confusion" ((19, 19) ints, rows ground truth, columns
    prediction), "iteration", "checkpoint" (path), "run_dir", "split", "items", "eval_size"
    ([W, H]), "device", "precision". Raises ConfigError (missing run, checkpoint or data) or
    cosuda.data.DatasetError (unreadable data file), both naming the path.
    """
    from .data import Cityscapes, DatasetError, IncompleteBenchmarkError
    from .train import evaluate_run

    run = load_run(run_dir, checkpoint, device, precision)
    cfg = run.cfg
    split = cfg.eval_split if split is None else split
    root = target_root(cfg, data_root, target)
    try:
        dataset = Cityscapes(root, split, size=tuple(cfg.eval_size), label_size="original")
    except IncompleteBenchmarkError:
        raise  # its message already gives the fix
    except (DatasetError, FileNotFoundError) as e:
        raise ConfigError(f"{e} (pass --data-root or --target-root if the data moved)") from None
    limit = cfg.eval_max_items if max_items is None else int(max_items)
    if limit and limit < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(limit))
    print(f"[cosuda] evaluating {run.checkpoint} (iteration {run.iteration}) on {root} {split!r}: "
          f"{len(dataset)} images at {cfg.eval_size[0]}x{cfg.eval_size[1]}, {run.device}, {run.precision}",
          file=sys.stderr, flush=True)
    with run.matmul_precision():
        result = evaluate_run(run.model, dataset, run.device, run.autocast, progress=progress,
                              num_workers=cfg.num_workers if num_workers is None else int(num_workers))
    return {
        "miou19": _round(result["miou19"]), "miou16": _round(result["miou16"]),
        "miou13": _round(result["miou13"]),
        "per_class_iou": [_round(x) for x in result["per_class_iou"]],
        "class_names": list(CLASS_NAMES)[: len(result["per_class_iou"])],
        "iteration": run.iteration, "checkpoint": str(run.checkpoint), "run_dir": str(run_dir),
        "split": split, "items": len(dataset), "eval_size": list(cfg.eval_size),
        "device": str(run.device), "precision": run.precision,
        "confusion": result["confusion"].tolist(),
    }


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--device, --precision, --num-workers, --no-progress: the options evaluate and predict share."""
    parser.add_argument("--device", default="auto", help="auto (a GPU if available), cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="run", choices=PRECISIONS,
                        help="arithmetic; run: the run's precision on this device")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="reader processes; None: the run's num_workers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog("cosuda.evaluate"), description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run folder (the --out of cosuda.train)")
    parser.add_argument("--checkpoint", default="last",
                        help="last (newest checkpoints/iter_*.pt), best (checkpoints/best.pt) or a .pt file")
    parser.add_argument("--split", default=None,
                        help="target split to evaluate on (a folder under leftImg8bit/): val, dev (the synthetic "
                             "benchmark's split for choosing hyper-parameters) or train; None: the run's eval_split")
    parser.add_argument("--max-items", type=int, default=None,
                        help="evaluate the first N images only; None: the run's eval_max_items; 0: all")
    parser.add_argument("--data-root", default=None,
                        help="folder holding cityscapes/, replacing the run's data_root (a moved run); "
                             "None: the run's")
    parser.add_argument("--target-root", default=None,
                        help="the Cityscapes-layout folder itself; None: from --data-root or the run")
    add_device_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .data import DatasetError

    args = build_parser().parse_args(argv)
    try:
        result = evaluate_checkpoint(args.run_dir, args.checkpoint, args.split, args.max_items, args.data_root,
                                     args.target_root, args.device, args.precision, args.num_workers,
                                     progress=not args.no_progress)
    except (ConfigError, DatasetError, FileNotFoundError) as e:
        print(f"error: {_first_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
