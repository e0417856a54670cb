"""The planner: a set of runs (variants x seeds, Table 6 sweeps, the main job) as jobs with
dependencies, in one on-disk layout.

    <root>/<task>/_prep/seed<N>/source-only    stage 1: the seed's source-only model
    <root>/<task>/_prep/seed<N>/pseudo-<M>     the pseudo-labels (supplementary A) made by model M
    <root>/<task>/<variant>/seed<N>/           every variant
    <root>-sweeps/<task>/<point>/seed<N>/      Ours with one knob moved (Table 6), e.g. tcos0.5

`<task>` is the source of the synthetic benchmark (gta5, synthia) or the preset prefix of the
real data (gta5-deeplabv2, ...). Each job is one `python -m cosuda.train` command: a run
(`--preset ... --out RUN --set ... --resume auto`) or its pseudo-labels (`--pseudo-labels-from`).
The rows of one seed share their stage-1 model and pseudo-labels, so their differences are
paired by seed. On the synthetic benchmark every variant starts from the stage-1 model (the warm
start of the README's table of choices); on real data, as in the paper, from ImageNet.

Every configuration is resolved and validated here (`config.make_config`), so a bad `--set`
fails before any job starts and before any folder is made. `cosuda.executors.run` runs the jobs.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import PRESETS, SYNTHETIC_STAGES, ConfigError, encode_sets, make_config, parse_value

GRID_VARIANTS = ["source-only", "oracle", "only-ssl", "ssl-adv", "adversarial", "ours11", "ours", "wo-dict",
                 "wo-split"]
PSEUDO_MODELS = ("source-only", "ours11", "adversarial")  # which model may make the pseudo-labels
SOURCE_SIZES = {"gta5": (320, 180), "synthia": (320, 190)}  # the generated sizes: no resizing
SWEEP_NAMES = {"t_cos": "tcos", "dict_size": "dict", "lambda_cos": "lambda"}  # folder prefixes of sweep points


@dataclass
class Job:
    """One `python -m cosuda.train ARGS` call writing `out`; it starts once the jobs named in
    `after` have succeeded. `kind` "train": a run, done when its metrics.json says finished;
    "pseudo": pseudo-labels, done when thresholds.json is written (last)."""
    name: str
    args: list[str]
    out: Path
    after: tuple[str, ...] = ()
    kind: str = "train"
    nproc_per_node: int = 1

    def command(self) -> list[str]:
        """The command line, under torchrun for several processes per run."""
        cmd = [sys.executable, "-m"]
        if self.nproc_per_node > 1:
            cmd += ["torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc_per_node}", "-m"]
        return cmd + ["cosuda.train", *self.args]

    def done(self) -> bool:
        if self.kind == "pseudo":
            return (self.out / "thresholds.json").is_file()
        try:
            return bool(json.loads((self.out / "metrics.json").read_text()).get("finished"))
        except (OSError, ValueError):
            return False


def sweep_root(root: str | Path) -> Path:
    """Where the sweeps of the runs under `root` go: the sibling folder `<root>-sweeps`."""
    root = Path(root)
    return root.with_name(root.name + "-sweeps")


def train_job(name: str, preset: str, out: Path, values: dict, after=(), nproc: int = 1) -> Job:
    """One run of `preset` with `values` (RunConfig fields) into `out`, started or continued
    (`--resume auto`). Every key, type and range is checked now, before any job runs."""
    make_config(preset, values)
    return Job(name, ["--preset", preset, "--out", str(out), *encode_sets(values), "--resume", "auto"], Path(out),
               tuple(after), "train", nproc)


def pseudo_job(name: str, model: Path, out: Path, after=(), nproc: int = 1) -> Job:
    """The pseudo-labels of the target train set made by the trained run `model`, into `out`."""
    return Job(name, ["--pseudo-labels-from", str(model), "--out", str(out)], Path(out), tuple(after), "pseudo",
               nproc)


def plan(root: str | Path, task: str = "gta5", variants=GRID_VARIANTS, seeds=(0, 1, 2), *,
         preset_prefix: str = "synthetic", source_iterations: int | None = None, iterations: int | None = None,
         warm_start: bool | None = None, pseudo_from: str | None = None, sets: dict[str, Any] | None = None,
         sweeps: dict[str, list] | None = None, data_root: str = "", evaluations: int | None = 4,
         nproc_per_node: int = 1) -> list[Job]:
    """The jobs of variants x seeds (and `sweeps` = {key: [values]} of Ours), in the layout above.

    preset_prefix: "synthetic" (then `task` gta5 | synthia is the source) or a real-data prefix
    ("gta5-deeplabv2", ..., which is then the task). Lengths: config.SYNTHETIC_STAGES on the
    synthetic benchmark, the preset's otherwise. warm_start (default: on the synthetic benchmark
    only): every variant from the seed's stage-1 model. pseudo_from: the model whose predictions
    become the pseudo-labels (default Ours-(11) on the synthetic benchmark, as BDL's adapted
    model; the source-only model on real data). `sets`: RunConfig values for every run.
    `evaluations`: evaluations (and checkpoints) per run; None keeps the preset's spacing.
    """
    synthetic = preset_prefix == "synthetic"
    if synthetic and task not in SOURCE_SIZES:
        raise ConfigError(f"task {task!r} unknown: choose gta5 or synthia")
    if not synthetic:
        if f"{preset_prefix}-ours" not in PRESETS:
            raise ConfigError(f"preset prefix {preset_prefix!r} unknown: synthetic, or one of gta5-deeplabv2, "
                              "synthia-deeplabv2, gta5-fcn8s, synthia-fcn8s")
        task = preset_prefix
    unknown = [v for v in variants if f"{preset_prefix}-{v}" not in PRESETS]
    if unknown:
        raise ConfigError(f"variant {unknown[0]!r} unknown; choose from "
                          f"{', '.join(p.removeprefix(preset_prefix + '-') for p in PRESETS if p.startswith(preset_prefix + '-') and not p.endswith('-ddp'))}")
    warm_start = synthetic if warm_start is None else warm_start
    pseudo_from = pseudo_from or ("ours11" if synthetic else "source-only")
    if pseudo_from not in PSEUDO_MODELS:
        raise ConfigError(f"--pseudo-from {pseudo_from!r} unknown: choose one of {', '.join(PSEUDO_MODELS)}")
    if pseudo_from != "source-only" and pseudo_from not in variants:
        raise ConfigError(f"--pseudo-from {pseudo_from} makes the pseudo-labels with the {pseudo_from} row: add "
                          f"{pseudo_from} to --variants, or use --pseudo-from source-only")
    reference = make_config(f"{preset_prefix}-source-only")
    stage1_its = source_iterations or (SYNTHETIC_STAGES["source_iterations"] if synthetic else reference.iterations)
    later_its = iterations or (SYNTHETIC_STAGES["iterations"] if synthetic else reference.iterations)
    common: dict[str, Any] = {"progress": False, **({"source": task, "source_size": SOURCE_SIZES[task]}
                                                     if synthetic else {})}
    if data_root:
        common["data_root"] = str(data_root)
    common.update(sets or {})

    def schedule(its: int) -> dict:
        if evaluations is None:
            return {"iterations": its}
        every = max(1, its // evaluations)
        return {"iterations": its, "eval_every": every, "checkpoint_every": every, "keep_checkpoints": 1}

    root = Path(root)
    on_pseudo = {v for v in variants if make_config(f"{preset_prefix}-{v}").flags.uses_pseudo_labels}
    needs_pseudo = bool(on_pseudo or sweeps)
    name = lambda path: str(Path(path).relative_to(root.parent))  # unique: "grid/gta5/ours/seed0"
    jobs: list[Job] = []
    for seed in seeds:  # seed-major: an interrupted plan still has every variant at the first seeds
        prep = root / task / "_prep" / f"seed{seed}"
        stage1 = None
        if warm_start or (pseudo_from == "source-only" and needs_pseudo):
            # without a warm start the stage-1 model is the source-only row itself: trained once
            out = root / task / "source-only" / f"seed{seed}" if not warm_start and "source-only" in variants \
                else prep / "source-only"
            stage1 = train_job(name(out), f"{preset_prefix}-source-only", out,
                                {**common, "seed": seed, **schedule(stage1_its)}, nproc=nproc_per_node)
            jobs.append(stage1)
        pseudo_dir = prep / f"pseudo-{pseudo_from}"
        rows: dict[str, Job] = {}
        for variant in sorted(variants, key=lambda v: v != pseudo_from):  # the pseudo-label model first
            out = root / task / variant / f"seed{seed}"
            if stage1 is not None and out == stage1.out:
                rows[variant] = stage1
                continue
            values, after = {**common, "seed": seed, **schedule(later_its)}, []
            if warm_start:
                values["weights"] = str(stage1.out)
                after.append(stage1.name)
            if variant in on_pseudo:
                values["pseudo_root"] = str(pseudo_dir)
                after.append(name(pseudo_dir))
            rows[variant] = train_job(name(out), f"{preset_prefix}-{variant}", out, values, after, nproc_per_node)
        if needs_pseudo:
            maker = stage1 if pseudo_from == "source-only" else rows[pseudo_from]
            jobs.append(pseudo_job(name(pseudo_dir), maker.out, pseudo_dir, (maker.name,), nproc_per_node))
        jobs += [job for job in rows.values() if job is not stage1]
        for key, values in (sweeps or {}).items():
            for value in values:
                value = parse_value(key, value)
                point = f"{SWEEP_NAMES.get(key, key)}{value}"
                out = sweep_root(root) / task / point / f"seed{seed}"
                settings = {**common, "seed": seed, **schedule(later_its), "pseudo_root": str(pseudo_dir), key: value}
                after = [name(pseudo_dir)]
                if warm_start:
                    settings["weights"] = str(stage1.out)
                    after.insert(0, stage1.name)
                jobs.append(train_job(name(out), f"{preset_prefix}-ours", out, settings, after, nproc_per_node))
    return jobs


def parse_sweeps(pairs: list[str]) -> dict[str, list]:
    """`--sweep KEY=V1,V2` strings -> {key: [typed values]} (ConfigError naming a bad one)."""
    sweeps: dict[str, list] = {}
    for pair in pairs:
        key, sep, values = pair.partition("=")
        if not sep or not values.strip():
            raise ConfigError(f"--sweep expects KEY=V1,V2,..., got {pair!r}")
        sweeps[key.strip()] = [parse_value(key.strip(), v) for v in values.split(",") if v.strip()]
    return sweeps
