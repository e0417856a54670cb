"""Write the config.json of the results published before runs recorded their own (2026-12-06).

The grid's metrics.json files under docs/results/synthetic*/ were published by the commands the
README gives, when run folders kept no provenance and the run folders are gone. This script
re-plans those commands with `cosuda.jobs.plan` (the same stage lengths, seeds, warm start and
pseudo-label model), takes each published run's resolved configuration from its job, checks it
against what its metrics.json does record (preset, seed, iterations, evaluation spacing), and
writes it beside it with `"provenance": {"recorded": false, ...}`: the commit is the one that
published the metrics.json, torch the version requirements.txt pinned at that commit, and
threads the one thread per run of `--parallel 2` on the project's 2 cores (README); the CPU
model and the seconds were not recorded and stay null. A re-run publishes recorded ones over
these (`python -m cosuda.runner grid ... --publish`).

    python scripts/reconstruct_provenance.py        # idempotent; prints what it wrote
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cosuda import jobs  # noqa: E402
from cosuda.config import make_config  # noqa: E402
from cosuda.paths import RUNS_ROOT  # noqa: E402
from cosuda.results import PUBLISHED, PUBLISHED_SWEEPS, portable_config  # noqa: E402

# The README's commands, as plans (runs/grid is the grid command's default --out).
COMMANDS = {
    "gta5": ("python -m cosuda.runner grid --task gta5 --seeds 0 1 2 --parallel 2",
             dict(task="gta5", variants=jobs.GRID_VARIANTS, pseudo_from="ours11",
                  sweeps={"t_cos": [0.5, 0.7], "dict_size": [100, 400]})),
    "synthia": ("python -m cosuda.runner grid --task synthia --variants source-only only-ssl ours "
                "--pseudo-from source-only --seeds 0 1 2 --parallel 2",
                dict(task="synthia", variants=["source-only", "only-ssl", "ours"], pseudo_from="source-only")),
}


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def pinned_torch(commit: str) -> str | None:
    m = re.search(r"^torch==(\S+)", git("show", f"{commit}:requirements.txt"), re.MULTILINE)
    return m.group(1) if m else None


def job_config(job: jobs.Job) -> dict:
    args = job.args
    preset = args[args.index("--preset") + 1]
    sets = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--set")
    return {**make_config(preset, sets).to_dict(), "preset": preset}


def main() -> int:
    written = 0
    for task, (command, kw) in COMMANDS.items():
        plan = jobs.plan(RUNS_ROOT / "grid", kw.pop("task"), kw.pop("variants"), [0, 1, 2], **kw)
        by_out = {j.out: j for j in plan}
        for published_root, runs_root in ((PUBLISHED, RUNS_ROOT / "grid"),
                                          (PUBLISHED_SWEEPS, jobs.sweep_root(RUNS_ROOT / "grid"))):
            for metrics_path in sorted((published_root / task).glob("*/seed*/metrics.json")):
                rel = metrics_path.parent.relative_to(published_root)
                job = by_out[runs_root / rel]
                config = job_config(job)
                metrics = json.loads(metrics_path.read_text())
                every = [h["iteration"] for h in metrics["history"]]
                assert metrics["preset"] == config["preset"] and metrics["seed"] == config["seed"], metrics_path
                assert metrics["iteration"] == config["iterations"], metrics_path
                assert every == list(range(config["eval_every"], config["iterations"] + 1, config["eval_every"])), \
                    metrics_path
                inputs = {"weights": config["weights"]}
                if config["weights"] not in ("imagenet", "random"):
                    stage1 = job_config(by_out[Path(config["weights"])])
                    inputs["weights"] = {"path": config["weights"], "checkpoint": None,
                                         **{k: stage1[k] for k in ("preset", "variant", "seed", "iterations",
                                                                   "weights")}}
                if config["pseudo_root"]:
                    maker = next(j for j in plan if j.out == Path(config["pseudo_root"]))
                    model_dir = Path(maker.args[maker.args.index("--pseudo-labels-from") + 1])
                    made = job_config(by_out[model_dir])
                    inputs["pseudo_labels"] = {"path": config["pseudo_root"], "model": {
                        "path": str(model_dir), **{k: made[k] for k in ("preset", "variant", "seed", "iterations",
                                                                         "weights")}}}
                commit = git("log", "-1", "--format=%H", "--", str(metrics_path.relative_to(REPO)))
                provenance = {
                    "recorded": False, "reconstructed": "2026-12-06 by scripts/reconstruct_provenance.py from the "
                    f"plan of `{command}` (sweeps: with --sweep t_cos=0.5,0.7 --sweep dict_size=100,400); the run "
                    "kept no record of its own", "commit": commit, "dirty": None, "torch": pinned_torch(commit),
                    "timm": None, "python": None, "cpu": None, "threads": 1, "cores": 2, "device": "cpu",
                    "date": git("log", "-1", "--format=%cI", commit), "seconds": None}
                record = portable_config({**config, "inputs": inputs, "provenance": provenance})
                (metrics_path.parent / "config.json").write_text(json.dumps(record, indent=1) + "\n")
                written += 1
    print(f"wrote {written} config.json files (provenance not recorded, reconstructed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
