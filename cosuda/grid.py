"""The synthetic grid: variants x seeds, paired by seed, run as `python -m cosuda.train` processes.

    python -m cosuda.runner grid --task gta5 --seeds 0 1 2 --parallel 2   # the README's tables

Per seed, and per task (`gta5` or `synthia` as the source, Cityscapes-like target):

    _prep/seed<N>/source-only    the source-only model (stage 1, `source_iterations` iterations)
    _prep/seed<N>/pseudo-<M>     its pseudo-labels (supplementary A), or those of model M
    <variant>/seed<N>            every variant, `iterations` more iterations from the stage-1 model

so that the rows of a seed share their initial model and their pseudo-labels and differ only
in their loss terms: the per-seed differences (Ours - only SSL, ...) are paired. The stage-1
warm start is a choice of the synthetic benchmark (the paper starts every run from ImageNet
weights; see the README's table of choices): it gives each variant a well-trained network, the
regime in which the paper's effects appear, within a laptop's budget. With `warm_start=False`
every variant starts from the preset's weights instead.

Finished runs are skipped and interrupted ones resumed, so an interrupted grid is continued by
running the same command again. `publish` copies each run's metrics.json to
docs/results/synthetic/<task>/<variant>/seed<N>/ (the committed grid), and the Table 6 sweeps'
to docs/results/synthetic-sweeps/<task>/<tcos0.5|dict100|...>/seed<N>/ (same layout, kept apart
so that the grid's folder holds only tasks and presets' variants).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .config import REPO_ROOT
from .paths import HOME

__all__ = ["GRID_VARIANTS", "PSEUDO_MODELS", "PUBLISHED", "PUBLISHED_SWEEPS", "sweeps_dest", "TrainJob", "plan",
           "run", "publish", "load", "paired", "t_interval", "results_markdown", "PAIRS", "ROW_ORDER", "publish_extras", "PICTURE_CLASSES", "sweep_plan", "SWEEP_NAMES"]

GRID_VARIANTS = ["source-only", "oracle", "only-ssl", "ssl-adv", "adversarial", "ours11", "ours", "wo-dict",
                 "wo-split"]
PSEUDO_MODELS = ("source-only", "ours11", "adversarial")  # which model makes the pseudo-labels
PUBLISHED = REPO_ROOT / "docs" / "results" / "synthetic"


def sweeps_dest(dest: str | Path) -> Path:
    """Where the sweeps of a grid published in `dest` go: the sibling folder `<dest>-sweeps`."""
    dest = Path(dest)
    return dest.with_name(dest.name + "-sweeps")


PUBLISHED_SWEEPS = sweeps_dest(PUBLISHED)
SOURCE_SIZES = {"gta5": (320, 180), "synthia": (320, 190)}  # the generated sizes: no resizing


@dataclass
class TrainJob:
    """One `python -m cosuda.train` call writing `out`; it starts once the jobs in `after` are done."""
    name: str
    args: list[str]
    out: Path
    after: tuple[str, ...] = ()
    kind: str = "train"  # "train" (a run: done when metrics.json says finished) or "pseudo"

    def done(self) -> bool:
        if self.kind == "pseudo":
            return (self.out / "thresholds.json").is_file()
        path = self.out / "metrics.json"
        return path.is_file() and bool(json.loads(path.read_text()).get("finished"))


def _sets(values: dict) -> list[str]:
    out = []
    for key, value in values.items():
        if isinstance(value, (tuple, list)):
            value = ",".join(str(v) for v in value)
        out += ["--set", f"{key}={value}"]
    return out


def _stage2_schedule(iterations: int) -> dict:
    """Length, evaluations and checkpoints of a run from the stage-1 model (grid rows and sweeps alike)."""
    return {"iterations": iterations, "eval_every": max(1, iterations // 4),
            "checkpoint_every": max(1, iterations // 4), "keep_checkpoints": 1}


def plan(out_root: str | Path, task: str = "gta5", variants=GRID_VARIANTS, seeds=(0, 1, 2),
         source_iterations: int | None = None, iterations: int | None = None, warm_start: bool = True,
         pseudo_from: str = "ours11", sets: dict | None = None, data_root: str = "") -> list[TrainJob]:
    """The jobs of one task's grid (see the module docstring). `sets` are extra `--set` values for
    every run (e.g. {"t_cos": 0.8} for a sweep); lengths default to config.SYNTHETIC_STAGES."""
    from .config import SYNTHETIC_STAGES, make_config

    if task not in SOURCE_SIZES:
        raise ValueError(f"task {task!r} unknown: choose gta5 or synthia")
    if pseudo_from not in PSEUDO_MODELS:
        raise ValueError(f"pseudo_from {pseudo_from!r} unknown: choose one of {', '.join(PSEUDO_MODELS)}")
    out_root = Path(out_root)
    source_iterations = source_iterations or SYNTHETIC_STAGES["source_iterations"]
    iterations = iterations or SYNTHETIC_STAGES["iterations"]
    common = {"source": task, "source_size": SOURCE_SIZES[task], "progress": "false", **(sets or {})}
    if data_root:
        common["data_root"] = data_root
    jobs: list[TrainJob] = []
    for seed in seeds:
        prep = out_root / "_prep" / f"seed{seed}"
        stage1 = TrainJob(f"{task}/_prep/seed{seed}/source-only",
                          ["--preset", "synthetic-source-only", "--out", str(prep / "source-only"),
                           *_sets({**common, "seed": seed, "iterations": source_iterations, "keep_checkpoints": 1})],
                          prep / "source-only")
        jobs.append(stage1)
        maker = stage1 if pseudo_from == "source-only" else None
        pseudo_dir = prep / f"pseudo-{pseudo_from}"
        runs = {}
        ordered = sorted(variants, key=lambda v: v != pseudo_from)  # the pseudo-label model first
        if pseudo_from != "source-only" and pseudo_from not in variants:
            raise ValueError(f"pseudo_from={pseudo_from!r} must be one of the grid's variants ({', '.join(variants)})")
        for variant in ordered:
            needs_pseudo = make_config(f"synthetic-{variant}").flags.uses_pseudo_labels
            values = {**common, "seed": seed, **_stage2_schedule(iterations)}
            after = []
            if warm_start:
                values["weights"] = str(stage1.out)
                after.append(stage1.name)
            if needs_pseudo:
                values["pseudo_root"] = str(pseudo_dir)
                after.append(f"{task}/_prep/seed{seed}/pseudo-{pseudo_from}")
            run_dir = out_root / variant / f"seed{seed}"
            runs[variant] = TrainJob(f"{task}/{variant}/seed{seed}",
                                     ["--preset", f"synthetic-{variant}", "--out", str(run_dir), *_sets(values)],
                                     run_dir, tuple(after))
            if variant == pseudo_from and pseudo_from != "source-only":  # source-only: the stage-1 model
                maker = runs[variant]
        if any("pseudo_root" in " ".join(j.args) for j in runs.values()):
            jobs.append(TrainJob(f"{task}/_prep/seed{seed}/pseudo-{pseudo_from}",
                                 ["--pseudo-labels-from", str(maker.out), "--out", str(pseudo_dir)],
                                 pseudo_dir, (maker.name,), kind="pseudo"))
        jobs += list(runs.values())
    return jobs


SWEEP_NAMES = {"t_cos": "tcos", "dict_size": "dict", "lambda_cos": "lambda"}  # run folder prefixes


def sweep_plan(grid_root: str | Path, sweep_root: str | Path, sweeps: dict[str, list], task: str = "gta5",
               seeds=(0, 1, 2), iterations: int | None = None, pseudo_from: str = "ours11",
               data_root: str = "") -> list[TrainJob]:
    """Table 6: `ours` with one hyper-parameter changed, e.g. sweeps={"t_cos": [0.5, 0.7]}, each run
    from the seed's stage-1 model of the grid in `grid_root` with its pseudo-labels (so every
    sweep point is paired with the grid's `ours` row). Runs go to
    <sweep_root>/<tcos0.5|dict100|lambda1.0>/seed<N>; plan them with the grid's own jobs (their
    `after` names are the grid's) and run both lists together."""
    from .config import SYNTHETIC_STAGES

    grid_root, sweep_root = Path(grid_root), Path(sweep_root)
    iterations = iterations or SYNTHETIC_STAGES["iterations"]
    jobs = []
    for key, values in sweeps.items():
        if key not in SWEEP_NAMES:
            raise ValueError(f"sweep over {key!r}: choose one of {', '.join(SWEEP_NAMES)}")
        for value in values:
            name = f"{SWEEP_NAMES[key]}{value}"
            for seed in seeds:
                prep = grid_root / "_prep" / f"seed{seed}"
                run_dir = sweep_root / name / f"seed{seed}"
                settings = {"source": task, "source_size": SOURCE_SIZES[task], "progress": "false", "seed": seed,
                            **_stage2_schedule(iterations),
                            "weights": str(prep / "source-only"), "pseudo_root": str(prep / f"pseudo-{pseudo_from}"),
                            key: value}
                if data_root:
                    settings["data_root"] = data_root
                jobs.append(TrainJob(f"{task}-sweep/{name}/seed{seed}",
                                     ["--preset", "synthetic-ours", "--out", str(run_dir), *_sets(settings)], run_dir,
                                     (f"{task}/_prep/seed{seed}/source-only", f"{task}/_prep/seed{seed}/pseudo-{pseudo_from}")))
    return jobs


def _progress_line(job: TrainJob) -> str:
    scalars = job.out / "scalars.jsonl"
    if not scalars.is_file():
        return f"{job.name}: starting"
    lines = scalars.read_text().strip().splitlines()
    if not lines:
        return f"{job.name}: starting"
    last = json.loads(lines[-1])
    metrics = job.out / "metrics.json"
    miou = ""
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        if m.get("miou19") is not None:
            miou = f", mIoU19 {m['miou19']:.1f} at {m['iteration']}"
    return f"{job.name}: iteration {last['iteration']}{miou}"


def run(jobs: list[TrainJob], parallel: int = 1, threads: int | None = None, progress: bool = True,
        status_every: float = 60.0) -> dict[str, bool]:
    """Run `jobs` respecting `after`, `parallel` at a time, each with `threads` CPU threads
    (default: the cores shared out). Each job's output goes to <out>.log; a failed job is reported
    with the last lines of its log, and the jobs that need it are skipped. Returns {name: ok}."""
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, parallel))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    results: dict[str, bool] = {j.name: True for j in jobs if j.done()}
    pending = [j for j in jobs if j.name not in results]
    running: dict = {}
    start = time.perf_counter()
    say = print if progress else (lambda *a, **k: None)
    say(f"[grid] {len(jobs)} jobs, {len(results)} already done, {parallel} at a time x {threads} threads", flush=True)

    def execute(job: TrainJob) -> bool:
        args = list(job.args)
        if job.kind == "train":
            from .train import latest_checkpoint

            if latest_checkpoint(job.out) is not None:
                args.append("--resume")
        log = Path(str(job.out) + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            f.write(" ".join([sys.executable, "-m", "cosuda.train", *args]) + "\n")
            f.flush()
            proc = subprocess.run([sys.executable, "-m", "cosuda.train", *args], cwd=HOME, env=env,
                                  stdout=f, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = "\n    ".join(log.read_text().splitlines()[-8:])
            say(f"[grid] FAILED {job.name} (exit {proc.returncode}); the last lines of {log}:\n    {tail}", flush=True)
        return proc.returncode == 0

    last_status = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        while pending or running:
            for job in list(pending):
                if len(running) >= parallel:
                    break
                if any(results.get(a) is False for a in job.after):
                    results[job.name] = False
                    pending.remove(job)
                    say(f"[grid] skipped {job.name}: {', '.join(a for a in job.after if not results.get(a))} failed",
                        flush=True)
                elif all(results.get(a) for a in job.after):
                    pending.remove(job)
                    running[pool.submit(execute, job)] = (job, time.perf_counter())
                    say(f"[grid] started {job.name}", flush=True)
            if not running:
                if pending:  # nothing can start: an `after` names no job of this grid
                    for job in pending:
                        results[job.name] = False
                        say(f"[grid] cannot start {job.name}: waits for {job.after}", flush=True)
                break
            finished, _ = wait(list(running), timeout=5, return_when=FIRST_COMPLETED)
            for future in finished:
                job, t0 = running.pop(future)
                results[job.name] = future.result()
                if results[job.name]:
                    extra = ""
                    if job.kind == "train":
                        m = json.loads((job.out / "metrics.json").read_text())
                        extra = f", mIoU19 {m['miou19']:.2f}"
                    say(f"[grid] done {job.name} in {time.perf_counter() - t0:.0f} s{extra}", flush=True)
            if progress and running and time.perf_counter() - last_status > status_every:
                last_status = time.perf_counter()
                say("[grid] " + "; ".join(_progress_line(j) for j, _ in running.values()) +
                    f" ({time.perf_counter() - start:.0f} s)", flush=True)
    ok = sum(results.values())
    say(f"[grid] {ok}/{len(results)} jobs ok in {time.perf_counter() - start:.0f} s", flush=True)
    return results


# --- results: the committed layout and paired statistics ------------------------------------
def publish(out_root: str | Path, task: str, dest: str | Path = PUBLISHED) -> list[Path]:
    """Copy <out_root>/<variant>/seed<N>/metrics.json of finished runs to
    <dest>/<task>/<variant>/seed<N>/metrics.json (the committed grid). Returns the files written."""
    written = []
    for path in sorted(Path(out_root).glob("*/seed*/metrics.json")):
        metrics = json.loads(path.read_text())
        if not metrics.get("finished"):
            continue
        target = Path(dest) / task / path.parent.parent.name / path.parent.name / "metrics.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(metrics, indent=1) + "\n")
        written.append(target)
    return written


def load(task: str = "gta5", root: str | Path = PUBLISHED) -> dict[str, dict[int, dict]]:
    """{variant: {seed: metrics}} of a committed (or any same-layout) grid."""
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted((Path(root) / task).glob("*/seed*/metrics.json")):
        runs.setdefault(path.parent.parent.name, {})[int(path.parent.name[4:])] = json.loads(path.read_text())
    return runs


# two-sided 95 % quantiles of Student's t for 1..10 degrees of freedom (more: the normal's 1.96)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def paired(runs: dict[str, dict[int, dict]], a: str, b: str, metric: str = "miou19") -> dict:
    """Per-seed differences a - b over the seeds both have: {"seeds", "diffs", "mean", "low", "high"}
    (mean and 95 % t-interval; the interval is NaN for one seed)."""
    seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
    diffs = [runs[a][s][metric] - runs[b][s][metric] for s in seeds
             if runs[a][s].get(metric) is not None and runs[b][s].get(metric) is not None]
    return {"seeds": seeds, "diffs": diffs, **t_interval(diffs)}


def t_interval(diffs: list[float]) -> dict:
    """{"mean", "low", "high"}: the mean of paired differences and its 95 % t-interval (NaN for
    fewer than two)."""
    n = len(diffs)
    mean = sum(diffs) / n if n else math.nan
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan}
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = _T975.get(n - 1, 1.96) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half}


# --- tables of the committed grid ---------------------------------------------------------
ROW_ORDER = ["source-only", "only-ssl", "ssl-adv", "adversarial", "ours11", "ours", "wo-dict", "wo-split",
             "with-adv", "oracle"]
# The paired comparisons the README reports: (a, b, what a - b measures).
PAIRS = [("ours", "only-ssl", "the cosine loss on top of self-training (Table 4)"),
         ("ours11", "source-only", "the cosine loss alone, eq. 11 (Table 1)"),
         ("ours11", "adversarial", "eq. 11 against output-space adversarial training (Table 1)"),
         ("only-ssl", "source-only", "self-training on pseudo-labels"),
         ("ours", "source-only", "the full method, eq. 12"),
         ("ours", "wo-dict", "the dictionary (Table 4)"),
         ("ours", "wo-split", "the class-wise split (Table 4)"),
         ("ours", "ssl-adv", "the cosine loss against the adversarial loss, both on self-training (Table 4)")]


def _fmt(mean: float, std: float | None = None) -> str:
    if mean is None or math.isnan(mean):
        return "—"
    return f"{mean:.2f}" if std is None or math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def results_markdown(task: str = "gta5", root: str | Path = PUBLISHED) -> str:
    """The README's tables for one task of a committed grid: mean ± sample std over seeds (final
    snapshot, best beside it, the paper's real-data number in its own column), then the paired
    differences with 95 % intervals. Synthetic numbers: the header says so."""
    from .paper_results import paper_metric, paper_miou

    metric = paper_metric(task)
    runs = load(task, root)
    name = metric.replace("miou", "mIoU")
    lines = [f"Synthetic benchmark, {task.upper()}-like -> Cityscapes-like, DeepLabV2-EfficientNet-Lite0 "
             f"({name} on the 100 target val images, final snapshot; the paper's column is its real-data "
             f"DeepLabV2-ResNet-101 result)", "",
             f"| variant | seeds | synthetic {name}, final (mean ± std) | best snapshot | paper ({name}, real data) |",
             "|---|---|---|---|---|"]
    for variant in ROW_ORDER + sorted(set(runs) - set(ROW_ORDER)):
        if variant not in runs:
            continue
        seeds = sorted(runs[variant])
        final = [runs[variant][s].get(metric) for s in seeds]
        best = [runs[variant][s].get("best", {}).get(metric) for s in seeds]
        paper = paper_miou(task, "deeplabv2", variant)
        lines.append(f"| {variant} | {','.join(map(str, seeds))} | {_fmt(*_mean_std(final))} | "
                     f"{_fmt(*_mean_std(best))} | {_fmt(paper) if paper is not None else '—'} |")
    rows = [(a, b, why, paired(runs, a, b, metric)) for a, b, why in PAIRS if a in runs and b in runs]
    if rows:
        lines += ["", f"Paired by seed (same stage-1 model and pseudo-labels): {name} difference, per seed, "
                      "mean and 95 % t-interval", "",
                  "| difference | what it measures | per seed | mean [95 % interval] |", "|---|---|---|---|"]
        for a, b, why, p in rows:
            per_seed = ", ".join(f"{d:+.2f}" for d in p["diffs"])
            interval = "" if math.isnan(p["low"]) else f" [{p['low']:+.2f}, {p['high']:+.2f}]"
            lines.append(f"| {a} − {b} | {why} | {per_seed} | {p['mean']:+.2f}{interval} |")
    return "\n".join(lines)


def _mean_std(values) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# --- what notebooks need besides metrics: predictions and a 2-D picture of the features -----
PICTURE_CLASSES = ("road", "car", "person", "vegetation")  # big, small and thin, thing and stuff


def publish_extras(out_root: str | Path, task: str = "gta5", seed: int = 0,
                   variants=("source-only", "only-ssl", "ours"), dest: str | Path = PUBLISHED,
                   progress: bool = True) -> list[Path]:
    """For seed `seed`: each variant's predictions on every target val image (trainId PNGs,
    `<dest>/<task>/<variant>/seed<N>/predictions/`) and the feature sample of its model
    (`features2d.json`: 2-D PCA of source and target vectors of PICTURE_CLASSES), so that
    lessons 07 and 11 draw them without the models. Returns the folders written."""
    from .alignment import feature_sample, pca_2d
    from .data import GTA5, SYNTHIA, Cityscapes
    from .labels import CLASS_NAMES
    from .predict import predict_images
    from .runs import load_run_model
    from .train import resolve_paths

    written = []
    for variant in variants:
        run_dir = Path(out_root) / variant / f"seed{seed}"
        target = Path(dest) / task / variant / f"seed{seed}"
        model, cfg = load_run_model(run_dir, "cpu")
        paths = resolve_paths(cfg)
        val_dir = paths.target / "leftImg8bit" / "val"
        predict_images(run_dir, [val_dir], target / "predictions", formats=("trainIds",), progress=progress)
        source_cls = GTA5 if cfg.source == "gta5" else SYNTHIA
        datasets = {"source": source_cls(paths.source, size=tuple(cfg.source_size)),
                    "target": Cityscapes(paths.target, "val", size=tuple(cfg.target_size))}
        ids = [CLASS_NAMES.index(c) for c in PICTURE_CLASSES]
        sample = feature_sample(model, datasets, ids)
        xy = pca_2d(sample["feats"])
        (target / "features2d.json").write_text(json.dumps({
            "variant": variant, "seed": seed, "classes": [CLASS_NAMES[c] for c in sample["classes"].tolist()],
            "domain": sample["domain"], "xy": [[round(a, 4), round(b, 4)] for a, b in xy.tolist()]}) + "\n")
        written.append(target)
    return written
