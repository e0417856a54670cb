"""A run's logs as TensorBoard events, beside scalars.jsonl and metrics.json (`--set tensorboard=true`).

    RUN_DIR/tensorboard/events.out.tfevents.*      tensorboard --logdir RUN_DIR (or a runs root)

Tags:
    train/<key>              every row of scalars.jsonl (loss terms, lr, lr_<group>, it_per_s, time)
    eval/miou19, miou16, miou13      each evaluation on the target eval split (val, or dev: eval_split)
    eval_iou/<class name>    per-class IoU (spaces as underscores: eval_iou/traffic_light)
    alignment/<measure>      the alignment probe's measures (cosuda/alignment.py), when it is on
    eval_losses/<term>       the mean loss terms since the previous evaluation

Written through `torch.utils.tensorboard.SummaryWriter`, which needs the `tensorboard` package
(the `tensorboard` extra); training without it works as before. A resumed run passes the
iteration it resumes from: TensorBoard then hides what the interrupted process logged after its
checkpoint, as scalars.jsonl is cut back to that iteration.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

from .config import ConfigError
from .labels import CLASS_NAMES

INSTALL = "install the tensorboard extra: pip install 'cosuda[tensorboard]' (or pip install tensorboard)"
EVAL_KEYS = ("miou19", "miou16", "miou13")


def _number(value) -> float | None:
    """`value` as a float if it is a finite number (not a bool, None or NaN), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _tag(name: str) -> str:
    """A class or measure name as a TensorBoard tag part (TensorBoard rewrites spaces with a warning)."""
    return str(name).strip().replace(" ", "_")


class TensorBoardLog:
    """TensorBoard events of one run under RUN_DIR/tensorboard/ (rank 0 only: one writer per run).

    resume_from: the checkpoint's iteration when a run is resumed (None for a new run); events the
    interrupted process wrote after it are purged from TensorBoard's view.
    """

    def __init__(self, run_dir: str | Path, resume_from: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises it when the tensorboard package is missing
            raise ConfigError(f"tensorboard=true needs the tensorboard package, which is not installed: "
                              f"{INSTALL}; or leave tensorboard=false") from None
        self.log_dir = Path(run_dir) / "tensorboard"
        purge_step = None if resume_from is None else resume_from + 1
        self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def log_scalars(self, row: dict) -> None:
        """One row of scalars.jsonl ({"iteration": N, "lr": ..., "loss_seg": ..., ...}) as train/<key>
        at step N; values that are not numbers (it_per_s before the first timed step) are left out."""
        step = int(row["iteration"])
        for key, value in row.items():
            number = _number(value)
            if key != "iteration" and number is not None:
                self._writer.add_scalar(f"train/{_tag(key)}", number, step)

    def log_evaluation(self, row: dict, class_names: Iterable[str] = CLASS_NAMES) -> None:
        """One evaluation, a row of metrics.json's history: {"iteration", "miou19", "miou16", "miou13",
        "per_class_iou": [19 values], "losses": {...}, "alignment": {...} (optional)}. Flushed at once:
        an evaluation is what a user opens TensorBoard to see."""
        step = int(row["iteration"])
        for key in EVAL_KEYS:
            if _number(row.get(key)) is not None:
                self._writer.add_scalar(f"eval/{key}", _number(row[key]), step)
        for name, iou in zip(class_names, row.get("per_class_iou") or []):
            if _number(iou) is not None:  # None: a class absent from both prediction and labels
                self._writer.add_scalar(f"eval_iou/{_tag(name)}", _number(iou), step)
        for group, prefix in (("alignment", "alignment"), ("losses", "eval_losses")):
            for key, value in (row.get(group) or {}).items():
                if _number(value) is not None:
                    self._writer.add_scalar(f"{prefix}/{_tag(key)}", _number(value), step)
        self._writer.flush()

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        """Write what is buffered and close the event file (call it when the run ends or stops)."""
        self._writer.close()
