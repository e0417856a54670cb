"""Finished runs as building blocks: train a preset unless that run is done, load a run's model,
make pseudo-labels with it, train a small grid of rows in this process (`train_rows`).

What notebooks, the workshop and the grid call around the engine (`cosuda.train`, which keeps
only the training loop and its command line). These names are also importable from
`cosuda.train`, where they lived before.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import distributed as dist
from .config import ConfigError, config_from_dict, make_config
from .train import build_network, latest_checkpoint, read_checkpoint, resolve_paths, train

__all__ = ["ensure_trained", "load_run_model", "lesson_source_model", "ensure_pseudo_labels",
           "make_pseudo_labels", "train_rows"]


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


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str | Path | None = None):
    """(model, cfg) of a run, with the weights of its newest checkpoint (or `checkpoint`)."""
    run_dir = Path(run_dir)
    path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if path is None or not path.is_file():
        raise ConfigError(f"no checkpoint in {run_dir / 'checkpoints'}: train the run first")
    state = read_checkpoint(path)
    cfg = config_from_dict(state["config"])
    model = build_network(cfg, weights="random")
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


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


def make_pseudo_labels(run_dir: str | Path, out: str | Path | None = None, device: str = "auto",
                       progress: bool = True) -> Path:
    """Pseudo-labels (supplementary A) for the target train set from a trained run's model."""
    from .data import Cityscapes
    from .pseudo import generate_pseudo_labels

    dev = torch.device(f"cuda:{dist.local_rank()}" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    dist.init_from_env(dev)  # the CLI's main() leaves the group at the end
    model, cfg = load_run_model(run_dir, dev)
    paths = resolve_paths(cfg)
    out = Path(out) if out else (Path(cfg.pseudo_root) if cfg.pseudo_root else Path(run_dir) / "pseudo_labels")
    dataset = Cityscapes(paths.target, "train", size=tuple(cfg.target_size))
    if dist.world_size() > 1:  # each rank labels a shard; the threshold histograms are summed
        dataset = torch.utils.data.Subset(dataset, range(dist.rank(), len(dataset), dist.world_size()))
    generate_pseudo_labels(model, dataset, out, device=dev, progress=progress and dist.is_main(),
                           num_workers=cfg.num_workers,
                           reduce_histograms=dist.all_reduce_sum, write_summary=dist.is_main())
    dist.barrier()
    if dist.is_main():  # measured against the target's labels, which training never reads
        from .pseudo import score_pseudo_labels

        quality = score_pseudo_labels(out, Cityscapes(paths.target, "train", size=tuple(cfg.target_size)),
                                      cfg.num_classes)
        quality["model"] = str(run_dir)
        (out / "quality.json").write_text(json.dumps(quality, indent=2))
        print(f"pseudo-labels cover {quality['coverage']:.1f}% of the labelled target pixels, "
              f"{quality['accuracy']:.1f}% of them right (mIoU19 {quality['miou19']:.1f})", flush=True)
    return out


def train_rows(rows: dict[str, tuple[str, dict]], seeds, out_root: str | Path, iterations: int,
               eval_every: int = 0, data_root: str = "", eval_max_items: int = 0, pseudo_root: str | Path = "",
               source_run: str | Path = "", source_iterations: int = 150, keep_models: bool = False,
               echo=print) -> dict[str, dict[int, dict]]:
    """A small grid trained in this process: what notebooks 08-10 run with `live=True`.

    rows: {name: (preset, extra RunConfig overrides)}, e.g. {"ours": ("synthetic-ours", {})} or
    {"tcos0.5-dict200": ("synthetic-ours", {"t_cos": 0.5, "dict_size": 200})}. Each row at each
    seed goes to out_root/<name>-seed<N>: the layout of `python -m cosuda.runner reproduce`, read
    back by `cosuda.runner.collect`; a finished run there is reused (`ensure_trained`). Rows that
    train on pseudo-labels share those in `pseudo_root`, made from `source_run` if missing
    (`ensure_pseudo_labels`). Without `keep_models` a run's checkpoints are deleted once it
    finishes (its metrics.json stays). `echo` gets one line per run. Returns {name: {seed: metrics}}.
    """
    import shutil
    import time

    from .config import run_overrides

    out_root = Path(out_root)
    on_pseudo = {name for name, (preset, _) in rows.items() if make_config(preset).flags.uses_pseudo_labels}
    pseudo_path = None
    if on_pseudo:
        if not pseudo_root:
            raise ConfigError("a row trains on pseudo-labels: give pseudo_root (and source_run to make them)")
        pseudo_path = ensure_pseudo_labels(pseudo_root, source_run, source_iterations,
                                           synthetic=all(p.startswith("synthetic-") for p, _ in rows.values()))
    results: dict[str, dict[int, dict]] = {}
    start_all = time.perf_counter()
    for name, (preset, extra) in rows.items():
        for seed in seeds:
            pseudo = str(pseudo_path) if name in on_pseudo else ""
            overrides = run_overrides(preset, iterations, eval_every, seed, data_root, eval_max_items,
                                      **{"pseudo_root": pseudo, **extra})
            run_dir = out_root / f"{name}-seed{seed}"
            start = time.perf_counter()
            metrics = ensure_trained(preset, run_dir, overrides, progress=False)
            if not keep_models:  # a finished run is still recognised (and reused) by its metrics.json
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            results.setdefault(name, {})[seed] = metrics
            echo(f"{name:16s} seed {seed}: mIoU19 {metrics['miou19']:5.2f}% after {metrics['iteration']} iterations "
                 f"({time.perf_counter() - start:.0f} s)")
    echo(f"all runs: {time.perf_counter() - start_all:.0f} s")
    return results
