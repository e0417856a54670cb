"""TensorBoard for real (issue 21, item 7): the events a run writes under RUN_DIR/tensorboard/,
read back from the file with TensorBoard's own reader, tag by tag and value by value.

The first tests drive `cosuda.tensorboard_log.TensorBoardLog` with the rows train.py writes to
scalars.jsonl and metrics.json's history; the last trains a tiny run with `--set tensorboard=true`
and is skipped until train.py creates a TensorBoardLog (then it runs by itself).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cosuda import train as engine
from cosuda.config import ConfigError, make_config
from cosuda.labels import CLASS_NAMES
from cosuda.tensorboard_log import TensorBoardLog
# requirements.txt installs it (bash scripts/setup.sh); a missing one fails here rather than skipping
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parent.parent

# rows as train.py writes them: scalars.jsonl (`_append_scalars`) and one evaluation (`_evaluate`)
SCALARS = [{"iteration": 10, "time": 1.5, "lr": 2e-4, "lr_backbone": 2e-4, "lr_head": 2e-3, "seg_s": 2.5,
            "seg_t": 2.25, "cos": 0.125, "it_per_s": None},
           {"iteration": 20, "time": 3.0, "lr": 1.5e-4, "lr_backbone": 1.5e-4, "lr_head": 1.5e-3, "seg_s": 1.75,
            "seg_t": 2.0, "cos": 0.0625, "it_per_s": 6.5}]
PER_CLASS = [float(i) for i in range(18)] + [None]  # bicycle: absent from predictions and labels
EVALUATION = {"iteration": 20, "miou19": 12.5, "miou16": 14.0, "miou13": 16.25, "per_class_iou": PER_CLASS,
              "losses": {"seg_s": 2.0, "cos": 0.09}, "alignment": {"nn_accuracy": 41.5, "cos_gap": 0.25,
                                                                   "cos_same": 0.5, "cos_other": 0.25}}


def _events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar under RUN_DIR/tensorboard/, as TensorBoard shows them."""
    files = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert files, f"no events.out.tfevents.* under {run_dir / 'tensorboard'}"
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_training_rows_and_an_evaluation_are_read_back_by_tag_and_value(tmp_path):
    log = TensorBoardLog(tmp_path)
    for row in SCALARS:
        log.log_scalars(row)
    log.log_evaluation(EVALUATION)
    log.close()
    events = _events(tmp_path)

    for key in ("time", "lr", "lr_backbone", "lr_head", "seg_s", "seg_t", "cos"):
        assert events[f"train/{key}"] == [(10, pytest.approx(SCALARS[0][key])),
                                          (20, pytest.approx(SCALARS[1][key]))], key
    assert events["train/it_per_s"] == [(20, 6.5)]  # None (no timed step yet) is not a point
    assert "train/iteration" not in events  # the step, not a curve
    for key in ("miou19", "miou16", "miou13"):
        assert events[f"eval/{key}"] == [(20, EVALUATION[key])]
    assert events["eval_iou/road"] == [(20, 0.0)] and events["eval_iou/motorcycle"] == [(20, 17.0)]
    assert events["eval_iou/traffic_light"] == [(20, 6.0)]  # class names with spaces: underscores
    assert {t for t in events if t.startswith("eval_iou/")} == \
        {f"eval_iou/{n.replace(' ', '_')}" for n in CLASS_NAMES[:18]}  # no bicycle: its IoU is None
    for key, value in EVALUATION["alignment"].items():
        assert events[f"alignment/{key}"] == [(20, value)]
    assert events["eval_losses/seg_s"] == [(20, 2.0)] and events["eval_losses/cos"] == [(20, pytest.approx(0.09))]


def test_a_resumed_run_hides_what_the_interrupted_process_logged_after_its_checkpoint(tmp_path):
    first = TensorBoardLog(tmp_path)
    for row in SCALARS:  # logged iterations 10 and 20; the checkpoint was at 10
        first.log_scalars(row)
    first.close()
    resumed = TensorBoardLog(tmp_path, resume_from=10)
    resumed.log_scalars(dict(SCALARS[1], seg_s=1.25))  # iteration 20 again, as the resumed run sees it
    resumed.close()
    assert _events(tmp_path)["train/seg_s"] == [(10, 2.5), (20, 1.25)]  # once each, the newest 20


def test_without_the_tensorboard_package_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` of it raises ImportError
    with pytest.raises(ConfigError, match=r"install the tensorboard extra: pip install 'cosuda\[tensorboard\]'"):
        TensorBoardLog(tmp_path)
    assert not (tmp_path / "tensorboard").exists()


def test_tensorboard_is_a_run_setting_off_by_default():
    assert make_config("synthetic-ours").tensorboard is False
    assert make_config("synthetic-ours", {"tensorboard": "true"}).tensorboard is True


def test_a_run_with_tensorboard_true_writes_the_scalars_and_evaluations_it_writes_to_its_files(
        tmp_path, tiny_benchmark):
    out = tmp_path / "run"
    sets = {"data_root": str(tiny_benchmark), "iterations": "4", "eval_every": "2", "checkpoint_every": "2",
            "log_every": "1", "source_size": "32x18", "target_size": "32x16", "eval_size": "32x16",
            "backbone": "resnet18", "weights": "random", "norm": "group", "output_stride": "8", "dict_size": "20",
            "num_workers": "0", "progress": "false", "align_items": "2", "align_per_class": "5", "tensorboard": "true"}
    cmd = [sys.executable, "-m", "cosuda.train", "--preset", "synthetic-ours11", "--out", str(out)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = _events(out)

    rows = [json.loads(line) for line in (out / "scalars.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    for key in ("lr", "seg_s", "cos"):
        assert events[f"train/{key}"] == [(r["iteration"], pytest.approx(r[key], rel=1e-5)) for r in rows], key
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["iteration"] for h in history] == [2, 4]
    assert events["eval/miou19"] == [(h["iteration"], pytest.approx(h["miou19"], abs=1e-3)) for h in history]
    assert [step for step, _ in events["eval_iou/road"]] == [2, 4]
    assert [step for step, _ in events["alignment/nn_accuracy"]] == [2, 4]
