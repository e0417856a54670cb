"""Batch execution of the notebooks with papermill, and the results tables.

    python -m cosuda.runner main                       # the README's main job (synthetic)
    python -m cosuda.runner reproduce --seeds 0 1 2    # Table 4-style grid on the synthetic benchmark
    python -m cosuda.runner table runs/reproduce       # rebuild the table from finished runs

Each job executes one paired notebook with parameters into `<out>/<job>/notebook.ipynb`;
the notebook's run writes `<out>/<job>/metrics.json`. A failed job is reported with its
error and the partial output notebook, and the other jobs go on. Jobs run one after the
other here, one per GPU on a multi-GPU machine (`--executor gpus`), or on a Slurm cluster
through submitit (`--executor slurm`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import REPO_ROOT
from .paths import RUNS_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"


@dataclass
class Job:
    """One papermill execution: `notebook` (a stem of notebooks/, e.g. "07_adapt", or the path of
    any py:percent notebook) with `parameters`."""
    name: str
    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobResult:
    name: str
    ok: bool
    seconds: float
    output: Path
    metrics: dict | None
    error: str | None = None


def _watch(run_dir: Path, name: str, stop: threading.Event, every: float) -> None:
    """Print the job's training progress (from its scalars.jsonl / metrics.json) every `every` s."""
    start = time.perf_counter()
    while not stop.wait(every):
        line = f"[runner] {name}: running ({time.perf_counter() - start:.0f} s)"
        scalars = run_dir / "scalars.jsonl"
        if scalars.is_file():
            rows = scalars.read_text().strip().splitlines()
            if rows:
                last = json.loads(rows[-1])
                line += f", iteration {last['iteration']}"
                if last.get("it_per_s"):
                    line += f" at {last['it_per_s']:.1f} it/s"
        metrics_path = run_dir / "metrics.json"
        if metrics_path.is_file():
            try:
                m = json.loads(metrics_path.read_text())
                if m.get("miou19") is not None:
                    line += f", mIoU19 {m['miou19']:.2f} at iteration {m['iteration']}"
            except json.JSONDecodeError:  # being replaced at this moment
                pass
        print(line, flush=True)


def execute(job: Job, out_root: Path, env: dict | None = None, progress: bool = True,
            status_every: float = 30.0) -> JobResult:
    """Run one job with papermill into out_root/job.name/; never raises for a failing notebook.

    The notebook's own output (its prints, the training's progress) goes to
    out_root/job.name/log.txt as it comes (`tail -f` it); with `progress`, one line says how
    the job ended and, while it runs, a line every `status_every` seconds gives its progress.
    """
    import jupytext
    import papermill

    job_dir = out_root / job.name
    job_dir.mkdir(parents=True, exist_ok=True)
    source = Path(job.notebook) if job.notebook.endswith(".py") else NOTEBOOKS / f"{job.notebook}.py"
    notebook = jupytext.read(source)
    declared = notebook_parameters(source)
    params = dict(job.parameters)
    if "run_dir" in declared:
        params.setdefault("run_dir", str(job_dir))
    unknown = sorted(set(params) - declared)
    if unknown:  # papermill would only warn, and the notebook would run with its defaults
        raise ValueError(f"{source.name} has no parameter {', '.join(unknown)} (its parameters: "
                         f"{', '.join(sorted(declared))})")
    output = job_dir / "notebook.ipynb"
    log_path = job_dir / "log.txt"
    start = time.perf_counter()
    error = None
    old_env = {}
    stop = threading.Event()
    run_dir = Path(params.get("run_dir", job_dir))
    watcher = threading.Thread(target=_watch, args=(run_dir, job.name, stop, status_every), daemon=True)
    try:
        for k, v in {"TQDM_MININTERVAL": "10", "COSUDA_TEXT_PROGRESS": "1", **(env or {})}.items():
            old_env[k] = os.environ.get(k)
            os.environ[k] = v
        if progress:
            watcher.start()
        with open(log_path, "w") as log, warnings.catch_warnings():
            # jupyter_client's notice that the kernel talks over local TCP, once per kernel
            warnings.filterwarnings("ignore", message=".*without encryption.*")
            papermill.execute_notebook(notebook, str(output), parameters=params, cwd=str(NOTEBOOKS),
                                       progress_bar=False, kernel_name="python3", language="python",
                                       log_output=False, stdout_file=log, stderr_file=log)
    except Exception as e:  # PapermillExecutionError carries the failing cell and traceback
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    finally:
        stop.set()
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    result = JobResult(job.name, error is None, time.perf_counter() - start, output, metrics, error)
    if progress:
        status = "ok" if result.ok else f"FAILED ({error}); see {output} and {log_path}"
        miou = f", mIoU19 {metrics['miou19']:.2f}" if metrics and metrics.get("miou19") is not None else ""
        print(f"[runner] {job.name}: {status} in {result.seconds:.0f} s{miou}", flush=True)
    return result


def notebook_parameters(source: Path) -> set[str]:
    """The names in the `parameters` cell of the py:percent notebook `source`, as papermill parses them."""
    import tempfile

    import jupytext
    import papermill

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (Path(source).stem + ".ipynb")
        jupytext.write(jupytext.read(source), path)
        return set(papermill.inspect_notebook(str(path)))


def run_jobs(jobs: list[Job], out_root: Path, executor: str = "local", gpus: int | None = None,
             slurm: dict | None = None, parallel: int = 1) -> list[JobResult]:
    """Execute `jobs`: on this machine (`parallel` at a time), one per visible GPU (gpus), or via
    submitit (slurm)."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    if executor == "local" and parallel <= 1:
        results = [execute(job, out_root) for job in jobs]
    elif executor == "local":
        # Small CPU runs scale better as several 1-thread processes than as one multi-threaded one.
        threads = str(max(1, (os.cpu_count() or 1) // parallel))
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            results = list(pool.map(lambda job: _execute_in_subprocess(job, out_root, env), jobs))
    elif executor == "gpus":
        n = gpus or _gpu_count()
        if n < 1:
            raise RuntimeError("--executor gpus: no GPU visible (CUDA_VISIBLE_DEVICES / nvidia-smi)")
        # One worker per GPU; each job pinned to its worker's GPU through CUDA_VISIBLE_DEVICES
        # in a child process, so runs never share a device.
        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [pool.submit(_execute_in_subprocess, job, out_root, {"CUDA_VISIBLE_DEVICES": str(i % n)})
                       for i, job in enumerate(jobs)]
            results = [f.result() for f in futures]
    elif executor in ("slurm", "submitit-local"):
        results = _run_submitit(jobs, out_root, executor, slurm or {})
    else:
        raise ValueError(f"unknown executor {executor!r}: choose local, gpus, slurm or submitit-local")
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"[runner] {len(failed)} of {len(results)} jobs failed: " + ", ".join(r.name for r in failed),
              file=sys.stderr, flush=True)
    return results


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def _execute_in_subprocess(job: Job, out_root: Path, env: dict) -> JobResult:
    """`execute` in a child Python so that CUDA_VISIBLE_DEVICES applies to the kernel it starts."""
    spec = json.dumps({"name": job.name, "notebook": job.notebook, "parameters": job.parameters})
    code = ("import json,sys; from pathlib import Path; from cosuda.runner import Job, execute; "
            "j=json.loads(sys.argv[1]); r=execute(Job(**j), Path(sys.argv[2])); sys.exit(0 if r.ok else 1)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, spec, str(out_root)], env={**os.environ, **env})
    metrics_path = Path(job.parameters.get("run_dir", out_root / job.name)) / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    return JobResult(job.name, proc.returncode == 0, time.perf_counter() - start,
                     out_root / job.name / "notebook.ipynb", metrics,
                     None if proc.returncode == 0 else f"exit status {proc.returncode}")


def _run_submitit(jobs: list[Job], out_root: Path, executor: str, slurm: dict) -> list[JobResult]:
    """Submit each job as a Slurm job (or submitit's local executor, for tests)."""
    try:
        import submitit
    except ImportError:
        raise RuntimeError("the slurm executor needs submitit: pip install submitit") from None
    logs = out_root / "submitit"
    ex = submitit.LocalExecutor(folder=logs) if executor == "submitit-local" else \
        submitit.AutoExecutor(folder=logs, cluster="slurm")
    params = {"timeout_min": 60 * 24, "gpus_per_node": 1, "tasks_per_node": 1, "cpus_per_task": 8}
    params.update(slurm)
    if executor == "submitit-local":
        params = {k: v for k, v in params.items() if k in ("timeout_min",)}
    ex.update_parameters(**params)
    handles = [(job, ex.submit(execute, job, out_root, None, False)) for job in jobs]
    results = []
    for job, handle in handles:
        try:
            results.append(handle.result())
        except Exception as e:  # the job itself crashed (node failure, time limit)
            results.append(JobResult(job.name, False, 0.0, out_root / job.name / "notebook.ipynb", None,
                                     f"{type(e).__name__}: {e}"))
        r = results[-1]
        print(f"[runner] {r.name}: {'ok' if r.ok else 'FAILED ' + str(r.error)}", flush=True)
    return results


# --- results tables ------------------------------------------------------------------------
def torchrun(preset: str, out: str | Path, nproc_per_node: int = 2, overrides: dict[str, Any] | None = None,
             threads_per_process: int | None = None, resume: bool = False, progress: bool = True) -> dict:
    """One training run on `nproc_per_node` processes, started from Python (a notebook, a script).

    Runs `python -m torch.distributed.run --standalone --nproc_per_node N -m cosuda.train --preset
    PRESET --out OUT [--set K=V ...] [--resume]`: one process per GPU, or per CPU process with the
    gloo backend where there is no GPU. The processes' output is shown as it comes and kept in
    OUT/torchrun.log. Returns OUT/metrics.json as a dict; raises RuntimeError with the log's last
    lines if the run fails.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
           "-m", "cosuda.train", "--preset", preset, "--out", str(out)]
    for key, value in (overrides or {}).items():
        if isinstance(value, (tuple, list)):
            value = ",".join(str(v) for v in value)
        cmd += ["--set", f"{key}={value}"]
    if resume:
        cmd.append("--resume")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    # CPU processes share the cores: without a limit each would start one thread per core
    threads = threads_per_process or max(1, (os.cpu_count() or 1) // nproc_per_node)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["OMP_NUM_THREADS"] = str(threads)
    log_path = out / "torchrun.log"
    with open(log_path, "w") as log, subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                                       stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        log.write(" ".join(cmd) + "\n")
        try:
            for line in proc.stdout:
                log.write(line)
                if progress:
                    sys.stdout.write(line)
                    sys.stdout.flush()
        except KeyboardInterrupt:  # a stopped notebook cell stops the run too: torchrun passes the
            proc.terminate()       # signal on, the run checkpoints after its step, resume=True continues
            proc.wait()
            raise
    if proc.returncode != 0:
        lines = log_path.read_text().splitlines()
        # the processes' own errors, which torchrun's closing summary does not repeat
        errors = list(dict.fromkeys(l.strip() for l in lines if re.match(r"\s*(error:|\w+(Error|Exception):)", l)))
        tail = "\n".join(lines[-15:])
        raise RuntimeError(f"torchrun exited with status {proc.returncode}: {'; '.join(errors) or 'no error line'}"
                           f"\nthe last lines of {log_path}:\n{tail}")
    return json.loads((out / "metrics.json").read_text())


def collect(out_root: Path) -> dict[str, list[dict]]:
    """{run name without the seed suffix: [metrics of each seed]} from out_root/*/metrics.json
    of finished runs."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(Path(out_root).glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        if not metrics.get("finished", True):  # an interrupted run is not a result
            continue
        name = path.parent.name.rsplit("-seed", 1)[0]
        runs.setdefault(name, []).append(metrics)
    return runs


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def paper_row(variant: str, source: str = "gta5", arch: str = "deeplabv2") -> str:
    """The paper's mIoU for the variant (DeepLabV2, GTA5->Cityscapes by default), as text."""
    from .paper_results import paper_miou

    value = paper_miou(source, arch, variant)
    return "—" if value is None else f"{value:.2f}"


ROW_ORDER = ["source-only", "only-ssl", "ssl-adv", "adversarial", "ours11", "ours", "wo-dict", "wo-split",
             "with-adv", "oracle"]


def results_table(out_root: Path, metric: str = "miou19") -> str:
    """Markdown: synthetic mean ± std over seeds (final and best snapshot) beside the paper."""
    runs = collect(out_root)
    lines = ["| variant | seeds | synthetic mIoU19, final (mean ± std) | synthetic, best snapshot | "
             "paper, GTA5→CS DeepLabV2 (real data) |", "|---|---|---|---|---|"]
    order = ROW_ORDER + sorted(set(runs) - set(ROW_ORDER))
    for name in order:
        if name not in runs:
            continue
        final = mean_std([m.get(metric) for m in runs[name]])
        best = mean_std([m.get("best", {}).get(metric) for m in runs[name]])
        seeds = ",".join(str(m.get("seed")) for m in runs[name])
        lines.append(f"| {name} | {seeds} | {final[0]:.2f} ± {final[1]:.2f} | {best[0]:.2f} ± {best[1]:.2f} "
                     f"| {paper_row(name)} |")
    return "\n".join(lines)


# --- the pipelines -------------------------------------------------------------------------
def main_jobs(out_root: Path, data_root: Path, seed: int = 0, source_iterations: int | None = None,
              iterations: int | None = None, baseline: str = "continued") -> list[Job]:
    """data figures -> source-only (stage 1) -> pseudo-labels -> Ours (eq. 12) from the stage-1
    model; with `baseline="continued"` also the source-only model trained as long again, the
    equal-budget baseline Ours is compared with. Lengths default to config.SYNTHETIC_STAGES."""
    from .config import SYNTHETIC_STAGES

    source_dir, pseudo_dir = out_root / "source-only", out_root / "pseudo_labels"
    stage1 = {"seed": seed, "data_root": str(data_root),
              "iterations": source_iterations or SYNTHETIC_STAGES["source_iterations"]}
    later = {"seed": seed, "data_root": str(data_root), "weights": str(source_dir), "compare_with": str(source_dir),
             "iterations": iterations or SYNTHETIC_STAGES["iterations"]}
    jobs = [Job("datasets", "01_datasets", {"data_root": str(data_root)}),
            Job("source-only", "02_source_only", stage1),
            Job("pseudo-labels", "03_pseudo_labels", {"source_run": str(source_dir), "pseudo_root": str(pseudo_dir)}),
            Job("ours", "07_adapt", {**later, "preset": "synthetic-ours", "pseudo_root": str(pseudo_dir)})]
    if baseline == "continued":
        jobs.append(Job("source-only-continued", "07_adapt", {**later, "preset": "synthetic-source-only"}))
    return jobs


def main_job(out_root: str | Path, seed: int = 0, data_seed: int = 0, source_iterations: int | None = None,
             iterations: int | None = None, baseline: str = "continued") -> dict:
    """The README's main job; writes and returns out_root/summary.json (see CONTRACT.md).

    The benchmark is generated with `data_seed`: the default one under data/synthetic for the
    default seed 0 (kept if already complete), otherwise under out_root/data, never over the
    default benchmark.
    """
    from .config import SYNTHETIC_ROOT
    from .synthetic import ensure

    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data_root = SYNTHETIC_ROOT if data_seed == 0 else out_root / "data"
    print(f"[runner] benchmark (seed {data_seed}) in {data_root}", flush=True)
    t0 = time.perf_counter()
    ensure(data_root, seed=data_seed, progress=False)
    print(f"[runner] benchmark ready in {time.perf_counter() - t0:.0f} s", flush=True)
    results = run_jobs(main_jobs(out_root, data_root, seed, source_iterations, iterations, baseline), out_root)
    runs = {}
    for r in results:
        if r.metrics is not None and r.name != "datasets":
            runs[r.name] = {"miou19": r.metrics.get("miou19"), "miou16": r.metrics.get("miou16"),
                            "miou13": r.metrics.get("miou13"), "iteration": r.metrics.get("iteration"),
                            "best": r.metrics.get("best"), "alignment": r.metrics.get("alignment")}
    # the contract's "source-only": the equal-budget baseline when it was trained, else the stage-1 model
    if "source-only" in runs:
        runs["source-only-stage1"] = runs["source-only"]
    if "source-only-continued" in runs:
        runs["source-only"] = runs.pop("source-only-continued")
    summary = {"seed": seed, "data_seed": data_seed, "data_root": str(data_root),
               "seconds": round(time.perf_counter() - start, 1), "ok": all(r.ok for r in results),
               "baseline": baseline, "runs": runs,
               "jobs": {r.name: {"ok": r.ok, "seconds": round(r.seconds, 1), "error": r.error} for r in results}}
    (out_root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def reproduce_jobs(out_root: Path, variants: list[str], seeds: list[int], iterations: int,
                   pseudo_root: Path, preset_prefix: str = "synthetic", data_root: str = "") -> list[Job]:
    source_run = out_root / "_prep" / "pseudo-source-only"  # made the pseudo-labels
    jobs = []
    for seed in seeds:  # seed-major: an interrupted grid still has every variant at the first seeds
        for variant in variants:
            params = {"preset": f"{preset_prefix}-{variant}", "iterations": iterations, "seed": seed,
                      "pseudo_root": str(pseudo_root), "compare_with": str(source_run)}
            if data_root:
                params["data_root"] = data_root
            jobs.append(Job(f"{variant}-seed{seed}", "07_adapt", params))
    return jobs


REPRODUCE_VARIANTS = ["source-only", "oracle", "only-ssl", "ssl-adv", "adversarial", "ours11", "ours",
                      "wo-dict", "wo-split", "with-adv"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosuda.runner", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_main = sub.add_parser("main", help="the synthetic pipeline end to end")
    p_main.add_argument("--out", default=str(RUNS_ROOT / "main"))
    p_main.add_argument("--seed", type=int, default=0, help="training seed (initialisation, image order)")
    p_main.add_argument("--data-seed", type=int, default=0,
                        help="benchmark seed: 0 = the default benchmark under data/synthetic, others under OUT/data")
    p_main.add_argument("--source-iterations", type=int, default=None, help="stage 1 (default: the preset's)")
    p_main.add_argument("--iterations", type=int, default=None,
                        help="Ours (and the continued baseline) from the stage-1 model (default: the preset's)")
    p_main.add_argument("--baseline", choices=["continued", "stage1"], default="continued",
                        help="source-only row: trained as long as Ours (continued) or the stage-1 model")
    p_rep = sub.add_parser("reproduce", help="variants x seeds on the synthetic benchmark")
    p_rep.add_argument("--out", default=str(RUNS_ROOT / "reproduce"))
    p_rep.add_argument("--variants", nargs="+", default=REPRODUCE_VARIANTS)
    p_rep.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p_rep.add_argument("--iterations", type=int, default=800)
    p_rep.add_argument("--pseudo-root", default="", help="default: made from a source-only run (seed 0)")
    p_rep.add_argument("--executor", default="local", choices=["local", "gpus", "slurm", "submitit-local"])
    p_rep.add_argument("--parallel", type=int, default=1, help="local executor: runs at a time")
    p_rep.add_argument("--preset-prefix", default="synthetic",
                       help="e.g. gta5-deeplabv2 for the real experiments (then also --data-root)")
    p_rep.add_argument("--data-root", default="", help="folder with gta5/ synthia/ cityscapes/ (real data)")
    from .grid import GRID_VARIANTS, PSEUDO_MODELS

    p_grid = sub.add_parser("grid", help="the synthetic grid: variants x seeds, paired by seed (cosuda.grid)",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p_grid.add_argument("--task", default="gta5", choices=["gta5", "synthia"], help="the source domain")
    p_grid.add_argument("--out", default=None, help="runs folder (default: runs/grid/<task>)")
    p_grid.add_argument("--variants", nargs="+", default=GRID_VARIANTS)
    p_grid.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p_grid.add_argument("--source-iterations", type=int, default=None, help="stage 1 (default: SYNTHETIC_STAGES)")
    p_grid.add_argument("--iterations", type=int, default=None, help="every variant (default: SYNTHETIC_STAGES)")
    p_grid.add_argument("--pseudo-from", default="source-only", choices=PSEUDO_MODELS,
                        help="the model whose predictions become the pseudo-labels")
    p_grid.add_argument("--no-warm-start", action="store_true", help="every variant from the preset's weights")
    p_grid.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every run (sweeps)")
    p_grid.add_argument("--parallel", type=int, default=2, help="runs at a time (each gets cores / parallel threads)")
    p_grid.add_argument("--publish", default=None, metavar="DIR",
                        help="copy finished runs' metrics.json to DIR/<task>/<variant>/seed<N>/")
    p_tab = sub.add_parser("table", help="print the results table of finished runs")
    p_tab.add_argument("out")
    args = parser.parse_args(argv)

    if args.command == "table":
        print(results_table(Path(args.out)))
        return 0
    if args.command == "grid":
        from . import grid

        out = Path(args.out) if args.out else RUNS_ROOT / "grid" / args.task
        sets = dict(pair.split("=", 1) for pair in args.set)
        jobs = grid.plan(out, args.task, args.variants, args.seeds, args.source_iterations, args.iterations,
                         warm_start=not args.no_warm_start, pseudo_from=args.pseudo_from, sets=sets)
        results = grid.run(jobs, parallel=args.parallel)
        if args.publish:
            written = grid.publish(out, args.task, args.publish)
            print(f"[grid] {len(written)} metrics.json copied under {args.publish}/{args.task}")
        return 0 if all(results.values()) else 1
    out_root = Path(args.out)
    start = time.perf_counter()
    if args.command == "main":
        summary = main_job(out_root, args.seed, args.data_seed, args.source_iterations, args.iterations,
                           args.baseline)
        so, ours = summary["runs"].get("source-only", {}), summary["runs"].get("ours", {})
        if so.get("miou19") is not None and ours.get("miou19") is not None:
            print(f"[runner] synthetic benchmark (data seed {args.data_seed}), seed {args.seed}: source-only "
                  f"{so['miou19']:.2f} -> Ours {ours['miou19']:.2f} mIoU19 ({ours['miou19'] - so['miou19']:+.2f}); "
                  f"{summary['seconds'] / 60:.1f} min; {out_root / 'summary.json'}")
        return 0 if summary["ok"] else 1
    else:
        pseudo_root = Path(args.pseudo_root) if args.pseudo_root else out_root / "pseudo_labels"
        if not pseudo_root.exists():
            # the pseudo-labels of every SSL row come from one separately trained source-only model
            source_params = {"preset": f"{args.preset_prefix}-source-only", "iterations": args.iterations, "seed": 0}
            if args.data_root:
                source_params["data_root"] = args.data_root
            prep = run_jobs([Job("pseudo-source-only", "02_source_only", source_params),
                             Job("pseudo-labels", "03_pseudo_labels",
                                 {"source_run": str(out_root / "_prep" / "pseudo-source-only"),
                                  "pseudo_root": str(pseudo_root)})], out_root / "_prep", "local")
            if not all(r.ok for r in prep):
                return 1
        jobs = reproduce_jobs(out_root, args.variants, args.seeds, args.iterations, pseudo_root,
                              args.preset_prefix, args.data_root)
        results = run_jobs(jobs, out_root, args.executor, parallel=args.parallel)
    table = results_table(out_root)
    (out_root / "results.md").write_text(
        "Synthetic benchmark (not the paper's real data). mIoU19 in %, mean ± std over seeds.\n\n" + table + "\n")
    from . import plots

    fig = plots.miou_curves(collect(out_root))
    fig.savefig(out_root / "miou_curves.png", dpi=120, bbox_inches="tight")
    print(table)
    print(f"[runner] {sum(r.ok for r in results)}/{len(results)} jobs ok in {time.perf_counter() - start:.0f} s; "
          f"results in {out_root}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
