"""The README's main job on the synthetic benchmark: benchmark -> source-only (stage 1) ->
pseudo-labels -> Ours (eq. 12) from the stage-1 model -> summary.json, config.json, figure.

    python -m cosuda.runner main --out runs/main [--seed N] [--data-seed M]   (bash scripts/main.sh)

It is the planner's grid (`cosuda.jobs.plan`) with one row and one seed, two evaluations per run
(half-way and final: each costs seconds of the 15-minute budget), pseudo-labels from the stage-1
model, run by an executor (`cosuda.executors.run`). Its runs lie in the one layout under OUT
(OUT/gta5/_prep/seed<N>/source-only, OUT/gta5/ours/seed<N>, ...). `summary.json` holds the
contract's fields; `config.json` the job's settings, every run's config.json and the provenance
of the whole job. `publish_main` copies both to docs/results/main/<name>/.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from . import executors, jobs
from .config import SYNTHETIC_ROOT, SYNTHETIC_STAGES
from .paths import resolve_path
from .provenance import record

TASK = "gta5"


def _runs_of(root: Path, seed: int, baseline: str, pseudo_from: str) -> dict[str, Path]:
    """{summary name: run folder} of the main job's runs."""
    runs = {"source-only-stage1": root / TASK / "_prep" / f"seed{seed}" / "source-only",
            "ours": root / TASK / "ours" / f"seed{seed}"}
    if baseline == "continued":
        runs["source-only-continued"] = root / TASK / "source-only" / f"seed{seed}"
    if pseudo_from != "source-only":
        runs[pseudo_from] = root / TASK / pseudo_from / f"seed{seed}"
    return runs


def main_job(out_root: str | Path, seed: int = 0, data_seed: int = 0, source_iterations: int | None = None,
             iterations: int | None = None, baseline: str = "stage1", pseudo_from: str = "source-only",
             executor: str = "local", slurm: dict | None = None) -> dict:
    """Run the main job into `out_root`; writes and returns out_root/summary.json (CONTRACT.md).

    The benchmark is generated with `data_seed`: the default one under data/synthetic for seed 0
    (kept if complete), otherwise under out_root/data, never over the default benchmark.
    `baseline="continued"` also trains the source-only model as long again (the equal-budget
    baseline); `pseudo_from="ours11"` makes the pseudo-labels with Ours-(11), as the grid does.
    """
    from .synthetic import ensure

    out_root = resolve_path(out_root)  # absolute: the steps may run elsewhere
    out_root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data_root = SYNTHETIC_ROOT if data_seed == 0 else out_root / "data"
    print(f"[runner] benchmark (seed {data_seed}) in {data_root}", flush=True)
    t0 = time.perf_counter()
    ensure(data_root, seed=data_seed, progress=False)
    data_seconds = time.perf_counter() - t0
    print(f"[runner] benchmark ready in {data_seconds:.0f} s", flush=True)
    source_iterations = source_iterations or SYNTHETIC_STAGES["source_iterations"]
    iterations = iterations or SYNTHETIC_STAGES["iterations"]
    variants = ["ours"] + (["source-only"] if baseline == "continued" else []) + \
        ([pseudo_from] if pseudo_from != "source-only" else [])
    plan = jobs.plan(out_root, TASK, variants, [seed], source_iterations=source_iterations, iterations=iterations,
                     pseudo_from=pseudo_from, data_root=str(data_root), evaluations=2)
    results = executors.run(plan, executor, slurm=slurm)  # one at a time: each needs the one before
    runs, configs = {}, {}
    for name, folder in _runs_of(out_root, seed, baseline, pseudo_from).items():
        metrics = executors.read_json(folder / "metrics.json")
        if metrics is not None and metrics.get("finished"):
            runs[name] = {k: metrics.get(k) for k in ("miou19", "miou16", "miou13", "iteration", "best", "alignment")}
            runs[name]["run"] = str(folder.relative_to(out_root))
            configs[name] = executors.read_json(folder / "config.json")
    # the contract's "source-only": the equal-budget baseline when it was trained, else the stage-1 model
    base = "source-only-continued" if baseline == "continued" else "source-only-stage1"
    if base in runs:
        runs["source-only"] = runs[base]
    seconds = round(time.perf_counter() - start, 1)
    summary = {"seed": seed, "data_seed": data_seed, "data_root": str(data_root), "seconds": seconds,
               "ok": all(r.ok for r in results.values()), "baseline": baseline, "pseudo_from": pseudo_from,
               "runs": runs, "jobs": {name: {"ok": r.ok, "seconds": round(r.seconds, 1), "error": r.error,
                                             "skipped": r.skipped} for name, r in results.items()},
               "benchmark_seconds": round(data_seconds, 1)}
    (out_root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    config = {"command": {"seed": seed, "data_seed": data_seed, "source_iterations": source_iterations,
                          "iterations": iterations, "baseline": baseline, "pseudo_from": pseudo_from,
                          "executor": executor},
              "runs": configs, "provenance": record(seconds)}
    (out_root / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    _figure(out_root, seed, baseline, pseudo_from)
    if summary["ok"] and "source-only" in runs and "ours" in runs:
        so, ours = runs["source-only"]["miou19"], runs["ours"]["miou19"]
        print(f"[runner] synthetic benchmark (data seed {data_seed}), seed {seed}: source-only {so:.2f} -> Ours "
              f"{ours:.2f} mIoU19 ({ours - so:+.2f}); {seconds / 60:.1f} min; {out_root / 'summary.json'}", flush=True)
    return summary


def _figure(out_root: Path, seed: int, baseline: str, pseudo_from: str) -> None:
    """The main job's runs on one time axis: stage 1, then each run trained from its model."""
    import matplotlib

    matplotlib.use("Agg")
    from . import plots

    done = {name: executors.read_json(folder / "metrics.json")
            for name, folder in _runs_of(out_root, seed, baseline, pseudo_from).items()}
    done = {k: v for k, v in done.items() if v and v.get("history")}
    if "source-only-stage1" not in done:
        return
    offset = done["source-only-stage1"]["iteration"]
    curves = {"source-only (stage 1)": [done.pop("source-only-stage1")]}
    for name, metrics in done.items():
        shifted = dict(metrics, history=[dict(h, iteration=h["iteration"] + offset) for h in metrics["history"]])
        curves[f"{name} (from stage 1)"] = [shifted]
    fig = plots.miou_curves(curves)
    fig.axes[0].set_title("Main job on the synthetic benchmark (not the paper's data)")
    fig.savefig(out_root / "miou_curves.png", dpi=120, bbox_inches="tight")


def publish_main(out_root: str | Path, name: str, dest: str | Path | None = None) -> Path:
    """Copy a finished main job's summary.json and config.json (paths relative to cosuda's home)
    to docs/results/main/<name>/ (or dest/<name>), with its figure. Returns the folder."""
    from .results import PUBLISHED_MAIN, portable_config

    out_root = resolve_path(out_root)
    target = Path(dest or PUBLISHED_MAIN) / name
    target.mkdir(parents=True, exist_ok=True)
    summary = json.loads((out_root / "summary.json").read_text())
    config = json.loads((out_root / "config.json").read_text())
    (target / "summary.json").write_text(json.dumps(portable_config(summary), indent=2) + "\n")
    (target / "config.json").write_text(json.dumps(portable_config(config), indent=2) + "\n")
    if (out_root / "miou_curves.png").is_file():
        shutil.copy(out_root / "miou_curves.png", target / "miou_curves.png")
    return target
