"""The command line of sets of runs: the main job, grids of variants x seeds (and Table 6
sweeps), their tables.

    python -m cosuda.runner main [--out runs/main] [--seed N] [--data-seed M]     # the README's main job
    python -m cosuda.runner grid --task gta5 --seeds 0 1 2 --parallel 2           # the synthetic grid
    python -m cosuda.runner grid --preset-prefix gta5-deeplabv2 --data-root /data --executor gpus   # real data
    python -m cosuda.runner table runs/grid                                       # its tables again

A front only: the jobs are planned by `cosuda.jobs`, run by `cosuda.executors` (this machine's
cores, one run per GPU, Slurm through `cosuda.cluster`), tabulated by `cosuda.results`, and the
main job is `cosuda.main_job`. Every `--set`, `--sweep` and `--slurm` value is checked before any
job starts and before any folder is made: an error is one line and exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from .cli import prog
from .config import ConfigError, parse_sets
from .executors import EXECUTORS
from .jobs import GRID_VARIANTS, PSEUDO_MODELS, parse_sweeps, sweep_root
from .paths import RUNS_ROOT, resolve_path


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every option's default and keeps the description's line breaks."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog("cosuda.runner"), description=__doc__.split("\n\n")[0],
                                     formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def executor_options(p, parallel: int):
        p.add_argument("--executor", default="local", choices=EXECUTORS,
                       help="local: this machine's cores (--parallel runs at a time); gpus: one run per free GPU; "
                            "slurm: one Slurm job per run, requeued and resumed when preempted; inline: in this "
                            "process; submitit-local: Slurm's code path on this machine (tests)")
        p.add_argument("--parallel", type=int, default=parallel,
                       help="--executor local: runs at a time (each gets cores / parallel threads)")
        p.add_argument("--gpus", nargs="+", default=None, metavar="ID",
                       help="--executor gpus: the GPUs to use; none: every visible one")
        p.add_argument("--slurm", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                       help="--executor slurm: submitit/Slurm options, e.g. partition=gpu account=proj "
                            "time=24:00:00 gpus_per_node=1 cpus_per_task=16 mem_gb=64 max_num_timeout=20")

    p_main = sub.add_parser("main", help="the synthetic pipeline end to end (bash scripts/main.sh)",
                            formatter_class=_HelpFormatter)
    p_main.add_argument("--out", default=str(RUNS_ROOT / "main"), help="the job's folder (summary.json)")
    p_main.add_argument("--seed", type=int, default=0, help="training seed (initialisation, image order)")
    p_main.add_argument("--data-seed", type=int, default=0,
                        help="benchmark seed: 0 = the default benchmark under data/synthetic, others under OUT/data")
    p_main.add_argument("--source-iterations", type=int, default=None, help="stage 1; none: config.SYNTHETIC_STAGES")
    p_main.add_argument("--iterations", type=int, default=None,
                        help="Ours (and the continued baseline) from the stage-1 model; none: config.SYNTHETIC_STAGES")
    p_main.add_argument("--pseudo-from", choices=PSEUDO_MODELS, default="source-only",
                        help="the model whose predictions become the pseudo-labels; an adapted one costs one more run")
    p_main.add_argument("--baseline", choices=["continued", "stage1"], default="stage1",
                        help="source-only row: trained as long as Ours (continued) or the stage-1 model")
    p_main.add_argument("--publish", default=None, metavar="NAME",
                        help="copy summary.json, config.json and the figure to docs/results/main/NAME/")
    executor_options(p_main, 1)

    p_grid = sub.add_parser("grid", help="variants x seeds, paired by seed (Tables 1, 4) and Table 6 sweeps",
                            formatter_class=_HelpFormatter,
                            description="Per seed: the stage-1 source-only model (OUT/<task>/_prep/seed<N>/source-only),\n"
                                        "its pseudo-labels (supplementary A), then every variant (OUT/<task>/<variant>/seed<N>),\n"
                                        "then OUT/<task>/results.md. Finished runs are kept, interrupted ones resumed:\n"
                                        "the same command continues a grid.")
    p_grid.add_argument("--task", default="gta5", choices=["gta5", "synthia"],
                        help="the synthetic benchmark's source domain (real data: --preset-prefix)")
    p_grid.add_argument("--preset-prefix", default="synthetic",
                        help="synthetic, or gta5-deeplabv2, synthia-deeplabv2, gta5-fcn8s, synthia-fcn8s for the real "
                             "experiments (then also --data-root)")
    p_grid.add_argument("--data-root", default="", help="folder with gta5/ synthia/ cityscapes/; empty: the preset's")
    p_grid.add_argument("--out", default=str(RUNS_ROOT / "grid"), help="runs root (<task>/<variant>/seed<N>/)")
    p_grid.add_argument("--variants", nargs="+", default=GRID_VARIANTS, help="variants (preset suffixes)")
    p_grid.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    p_grid.add_argument("--source-iterations", type=int, default=None,
                        help="stage 1; none: config.SYNTHETIC_STAGES (synthetic) or the preset's")
    p_grid.add_argument("--iterations", type=int, default=None,
                        help="every variant; none: config.SYNTHETIC_STAGES (synthetic) or the preset's")
    p_grid.add_argument("--evaluations", type=int, default=None,
                        help="evaluations (and checkpoints) per run; none: 4 on the synthetic benchmark, the "
                             "preset's spacing on real data")
    p_grid.add_argument("--pseudo-from", default=None, choices=PSEUDO_MODELS,
                        help="the model whose predictions become the pseudo-labels; none: ours11 (synthetic), "
                             "source-only (real data)")
    p_grid.add_argument("--warm-start", default=None, action=argparse.BooleanOptionalAction,
                        help="every variant from the seed's stage-1 model; none: on the synthetic benchmark only")
    p_grid.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a configuration field for every run (repeatable)")
    p_grid.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                        help="Table 6: Ours with KEY (t_cos, dict_size, lambda_cos, ...) set to each value, paired "
                             "with the grid (runs under OUT-sweeps/<task>/)")
    p_grid.add_argument("--nproc-per-node", type=int, default=1, help="processes (GPUs) per run, through torchrun")
    p_grid.add_argument("--publish", default=None, metavar="DIR",
                        help="copy finished runs' metrics.json and config.json to DIR/<task>/<variant>/seed<N>/ "
                             "(sweeps: DIR-sweeps/<task>/<point>/seed<N>/)")
    executor_options(p_grid, 2)

    p_tab = sub.add_parser("table", help="print the results tables of finished runs", formatter_class=_HelpFormatter)
    p_tab.add_argument("root", help="a runs root (<task>/<variant>/seed<N>/metrics.json), e.g. runs/grid")
    p_tab.add_argument("--task", default=None, help="one task; none: every task under ROOT")
    return parser


def _grid(args) -> int:
    from . import executors, jobs, results
    from .cluster import parse_slurm_options

    out = resolve_path(args.out)
    plan = jobs.plan(out, args.task, args.variants, args.seeds, preset_prefix=args.preset_prefix,
                     source_iterations=args.source_iterations, iterations=args.iterations, warm_start=args.warm_start,
                     pseudo_from=args.pseudo_from, sets=parse_sets(args.set), sweeps=parse_sweeps(args.sweep),
                     data_root=str(resolve_path(args.data_root)) if args.data_root else "",
                     evaluations=args.evaluations or (4 if args.preset_prefix == "synthetic" else None),
                     nproc_per_node=args.nproc_per_node)
    slurm = parse_slurm_options(args.slurm) if args.slurm else None
    outcome = executors.run(plan, args.executor, args.parallel, args.gpus, slurm)
    task = args.task if args.preset_prefix == "synthetic" else args.preset_prefix
    runs = results.load(out, task)
    if runs:
        table = results.results_markdown(runs, task)
        (out / task / "results.md").write_text(table, encoding="utf-8")
        print(table)
    if args.publish:
        written = results.publish(out, task, args.publish)
        if args.sweep:
            written += results.publish(sweep_root(out), task, sweep_root(args.publish))
        print(f"[runner] {len(written)} runs published under {args.publish} (metrics.json and config.json)")
    return 0 if all(r.ok for r in outcome.values()) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "table":
            from . import results

            root = resolve_path(args.root)
            found = [args.task] if args.task else results.tasks(root)
            if not found:
                raise FileNotFoundError(f"no runs under {root} (<task>/<variant>/seed<N>/metrics.json)")
            print("\n".join(results.results_markdown(results.load(root, t), t) for t in found))
            return 0
        if args.command == "grid":
            return _grid(args)
        from .cluster import parse_slurm_options
        from .main_job import main_job, publish_main

        slurm = parse_slurm_options(args.slurm) if args.slurm else None
        summary = main_job(args.out, args.seed, args.data_seed, args.source_iterations, args.iterations,
                           args.baseline, args.pseudo_from, args.executor, slurm)
        if args.publish and summary["ok"]:
            print(f"[runner] published to {publish_main(args.out, args.publish)}")
        return 0 if summary["ok"] else 1
    except (ConfigError, ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
