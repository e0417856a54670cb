"""Finished runs as building blocks for lessons and the workshop: train a preset unless that run
is done (`ensure_trained`), the lessons' shared source-only model, pseudo-labels made if missing.

They wrap the engine (`cosuda.train`: `train`, `load_run_model`, `make_pseudo_labels`); a set of
runs (variants x seeds) goes through the planner and executors instead (`cosuda.jobs`,
`cosuda.executors`).
"""
from __future__ import annotations

import json
from pathlib import Path


from .config import ConfigError, config_from_dict, make_config
from .train import latest_checkpoint, load_run_model, make_pseudo_labels, train

__all__ = ["ensure_trained", "lesson_source_model", "ensure_pseudo_labels"]


def ensure_trained(preset: str, run_dir: str | Path, overrides: dict | None = None, progress: bool = True) -> dict:
    """Train `preset` (+ `overrides`) into `run_dir` unless that very run has finished there.

    A finished run with the same configuration is reused (lessons and the workshop share one
    source-only model), an unfinished one is resumed, and a run of another configuration in
    `run_dir` is an error rather than something to overwrite. Returns its metrics.
    """
    cfg = make_config(preset, dict(overrides or {}, progress=progress))
    run_dir = Path(run_dir)
    saved = run_dir / "config.json"
    if saved.is_file():
        # through RunConfig, so that a config.json written by an older version compares by meaning
        old = json.loads(json.dumps(config_from_dict(json.loads(saved.read_text())).to_dict()))
        now = json.loads(json.dumps(cfg.to_dict()))
        diff = sorted(k for k in now if k != "progress" and old.get(k) != now[k])
        if diff:
            raise ConfigError(f"{run_dir} holds another run (differs in {', '.join(diff)}): "
                              "choose another run_dir or delete that folder")
        metrics_path = run_dir / "metrics.json"
        if metrics_path.is_file() and json.loads(metrics_path.read_text()).get("finished"):
            return json.loads(metrics_path.read_text())
        if latest_checkpoint(run_dir) is not None:
            return train(cfg, run_dir, resume=True, preset=preset)
    return train(cfg, run_dir, preset=preset)


def lesson_source_model(run_dir: str | Path, iterations: int = 150, device: str = "cpu", progress: bool = True):
    """(model, cfg) of the source-only model in `run_dir` (eval mode), trained first if missing.

    Lessons 03-07 share one source-only model. If `run_dir` already holds a trained one -- from
    notebook 02 or `python -m cosuda.workshop prepare`, whatever its length -- it is used as is;
    otherwise `synthetic-source-only` is trained there for `iterations` iterations.
    """
    if latest_checkpoint(Path(run_dir)) is None or not (Path(run_dir) / "metrics.json").is_file():
        ensure_trained("synthetic-source-only", run_dir,
                       {"iterations": iterations, "eval_every": iterations, "checkpoint_every": iterations},
                       progress=progress)
    return load_run_model(run_dir, device)


# --- pseudo-labels from a finished source-only run -----------------------------------------
def ensure_pseudo_labels(pseudo_root: str | Path, source_run: str | Path, source_iterations: int = 150,
                         synthetic: bool = True) -> Path:
    """Pseudo-labels in `pseudo_root`, made from the source-only run `source_run` if missing.

    Present means `pseudo_root/thresholds.json` exists (written last by generate_pseudo_labels).
    On the synthetic benchmark a missing source-only model is trained first
    (`lesson_source_model`, `source_iterations` iterations); for real data (`synthetic=False`)
    it must already be a finished `<task>-source-only` run. Returns `pseudo_root` as a Path.
    """
    pseudo_root = Path(pseudo_root)
    if (pseudo_root / "thresholds.json").is_file():
        return pseudo_root
    source_run = Path(source_run)
    if latest_checkpoint(source_run) is None:
        if not synthetic:
            raise FileNotFoundError(f"{source_run} holds no trained source-only model to make the pseudo-labels "
                                    f"with: train the task's source-only preset there first (python -m cosuda.train "
                                    f"--preset <task>-source-only --out {source_run} --set data_root=...)")
        print(f"training the source-only model into {source_run} ({source_iterations} iterations)")
        lesson_source_model(source_run, iterations=source_iterations)
    print(f"pseudo-labels missing: making them in {pseudo_root} with the model of {source_run}")
    make_pseudo_labels(source_run, pseudo_root, device="auto")
    return pseudo_root
