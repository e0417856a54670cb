"""Results: load runs, aggregate seeds, pair them, tabulate them, publish them. Draws nothing
(the figures are in `cosuda.plots`).

Every set of runs has one layout (`cosuda.jobs`): `<root>/<task>/<variant>/seed<N>/` holding
`metrics.json` and `config.json` (the resolved configuration, its inputs and its provenance).
`load(root, task)` -> `runs` = {variant: {seed: metrics}}, each metrics dict with its run's
config.json under the key "config" (None where a run has none), so that tables read a run's
settings (t_cos, dict_size, lambda_cos, ...) from its own record. The committed results are
`PUBLISHED` (docs/results/synthetic) and its Table 6 sweeps `PUBLISHED_SWEEPS`.

Statistics: the mean ± sample standard deviation over seeds (`mean_std`, `fmt`), and paired
differences between two variants of the same seeds with a 95 % Student t-interval (`paired`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .config import REPO_ROOT, variant_label
from .jobs import sweep_root
from .labels import CLASS_NAMES
from .paths import HOME

PUBLISHED = REPO_ROOT / "docs" / "results" / "synthetic"
PUBLISHED_SWEEPS = sweep_root(PUBLISHED)
PUBLISHED_MAIN = REPO_ROOT / "docs" / "results" / "main"
SWEEP_KEYS = ("t_cos", "dict_size", "lambda_cos")  # the knobs a sweep point may move (Table 6)


def grid_command(task: str = "gta5") -> str:
    """The command that trains and publishes a task's committed grid."""
    return f"python -m cosuda.runner grid --task {task} --seeds 0 1 2 --publish docs/results/synthetic"


EXTRAS_COMMAND = "python -c \"from cosuda import results; results.publish_extras('runs/grid', 'gta5', seed=0)\""


# --- loading and publishing ------------------------------------------------------------------
def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load(root: str | Path = PUBLISHED, task: str = "gta5", finished_only: bool = True,
         split: str = "val") -> dict[str, dict[int, dict]]:
    """{variant: {seed: metrics}} of the runs under <root>/<task>/<variant>/seed<N>/ (the planner's
    runs folder, or a published one); each metrics dict carries its config.json as "config".
    Unfinished runs are not results (left out unless `finished_only=False`); `_prep` is not a row.
    Every run must have been evaluated on `split` (its metrics.json's "eval_split", "val" when
    absent): a dev-split selection run mixed into a reported table is an error, never a row."""
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted((Path(root) / task).glob("*/seed*/metrics.json")):
        variant, seed = path.parent.parent.name, path.parent.name[4:]
        metrics = _read(path)
        if variant.startswith("_") or not seed.isdigit() or metrics is None:
            continue
        if metrics.get("eval_split", "val") != split:
            raise ValueError(f"{path} was evaluated on the {metrics['eval_split']!r} split, not {split!r}: "
                             f"selection runs belong under a folder of their own (docs/preregistration.md)")
        if finished_only and not metrics.get("finished", True):
            continue
        metrics["config"] = _read(path.parent / "config.json")
        runs.setdefault(variant, {})[int(seed)] = metrics
    return runs


def tasks(root: str | Path = PUBLISHED) -> list[str]:
    """The tasks (gta5, synthia, gta5-deeplabv2, ...) that have runs under `root`."""
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and any(p.glob("*/seed*/metrics.json"))) \
        if Path(root).is_dir() else []


def portable_config(config: dict) -> dict:
    """A config.json to publish: paths under cosuda's home written relative to it (so that
    `python -m cosuda.train --config` re-runs it in any clone), the rest as recorded."""
    def rel(value):
        if isinstance(value, str) and value.startswith(str(HOME) + "/"):
            return value[len(str(HOME)) + 1:]
        if isinstance(value, dict):
            return {k: rel(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rel(v) for v in value]
        return value

    return rel(config)


def publish(root: str | Path, task: str, dest: str | Path = PUBLISHED) -> list[Path]:
    """Copy every finished run's metrics.json and config.json from <root>/<task>/<variant>/seed<N>/
    to the same place under `dest` (the committed results). A run without config.json is refused:
    a published number always has its settings and provenance beside it; every run is checked
    before anything is written, so a refused publish leaves `dest` as it was. Returns the folders."""
    runs = [(variant, seed, metrics) for variant, seeds in load(root, task).items() for seed, metrics in seeds.items()]
    for variant, seed, metrics in runs:
        config = metrics["config"]
        if config is None or "provenance" not in config:
            source = Path(root) / task / variant / f"seed{seed}"
            raise FileNotFoundError(f"{source / 'config.json'} is missing or has no provenance: this run "
                                    "cannot be published (re-run it with this version of cosuda)")
    written = []
    for variant, seed, metrics in runs:
        config = metrics.pop("config")
        target = Path(dest) / task / variant / f"seed{seed}"
        target.mkdir(parents=True, exist_ok=True)
        (target / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        (target / "config.json").write_text(json.dumps(portable_config(config), indent=1) + "\n")
        written.append(target)
    return written


# --- seeds: mean ± std, paired differences ---------------------------------------------------
def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """(mean, sample std) of the values present (None and NaN skipped); the std is NaN for one
    value (a spread of one value is unknown, not 0), both NaN for none."""
    values = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def fmt(mean: float | None, std: float = math.nan, signed: bool = False, digits: int = 2) -> str:
    """'12.34 ± 0.56'; the mean alone when the std is NaN (one seed), '—' for no value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text if std is None or math.isnan(std) else f"{text} ± {std:.{digits}f}"


def format_seeds(values: Iterable[float | None], digits: int = 2) -> str:
    """The values of a variant's seeds as 'mean ± std' (`mean_std`, `fmt`)."""
    return fmt(*mean_std(values), digits=digits)


def seed_list(runs: dict[str, dict[int, dict]], variant: str) -> list[dict]:
    """The metrics of `variant`, one per seed, in seed order ([] when it is not there)."""
    return [runs[variant][s] for s in sorted(runs.get(variant, {}))]


def seeds_text(runs: dict[str, dict[int, dict]], variant: str) -> str:
    seeds = sorted(runs.get(variant, {}))
    return ",".join(map(str, seeds)) if seeds else "none"


def setting(metrics: dict, key: str):
    """A run's configuration value (t_cos, dict_size, lambda_cos, ...) from its config.json;
    a KeyError naming the run when it has no record."""
    config = metrics.get("config")
    if not config or key not in config:
        raise KeyError(f"run {metrics.get('preset')} seed {metrics.get('seed')} has no config.json with {key!r}: "
                       "its settings are unknown")
    return config[key]


def missing_note(missing: Iterable[str], what: str = "the committed grid") -> str:
    """Markdown: which runs a lesson looked for and this copy of the results lacks ('' if none).

    In class nobody can act on a grid command (hours of training), so the note says why the runs
    are absent rather than how to make them; the teacher finds the command in the README."""
    missing = list(missing)
    if not missing:
        return ""
    return (f"**Not in this copy of the results** ({what}): {', '.join(missing)}. The published runs come with "
            "the repository (`docs/results/`); the teacher's `python -m cosuda.workshop prepare` does not fetch "
            "or train them, so a missing folder means that this clone is incomplete or that these runs have not "
            "been published yet. Nothing to run in class: the cells below show what is there. (Teachers: the "
            "README's Results section gives the command that makes them.)")


def extras_note(what: str = "predictions") -> str:
    return (f"**Not published yet:** the {what} of the grid's seed-0 models. Run `{grid_command()}`, then "
            f"`{EXTRAS_COMMAND}`.")


# two-sided 95 % quantiles of Student's t for 1..10 degrees of freedom (more: the normal's 1.96)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def paired(runs: dict[str, dict[int, dict]], a: str, b: str, metric: str = "miou19") -> dict:
    """Per-seed differences a - b over the seeds both have: {"seeds", "diffs", "mean", "low", "high"}
    (mean and 95 % t-interval; the interval is NaN for one seed)."""
    seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
    diffs = [runs[a][s][metric] - runs[b][s][metric] for s in seeds
             if runs[a][s].get(metric) is not None and runs[b][s].get(metric) is not None]
    return {"seeds": seeds, "diffs": diffs, **t_interval(diffs)}


def paired_curves(runs: dict[str, dict[int, dict]], a: str, b: str, metric: str = "miou19") -> list[dict]:
    """The curve of a - b over training, paired by seed: for each seed both variants have, a
    metrics-like dict {"seed", "history": [{"iteration", metric: a - b}]} at the evaluations both
    logged (what `plots.grid_curves(..., reference=b)` draws as a mean with its min-max band)."""
    out = []
    for s in sorted(set(runs.get(a, {})) & set(runs.get(b, {}))):
        at_b = {h["iteration"]: h.get(metric) for h in runs[b][s].get("history", [])}
        history = [{"iteration": h["iteration"], metric: h[metric] - at_b[h["iteration"]]}
                   for h in runs[a][s].get("history", [])
                   if h.get(metric) is not None and at_b.get(h["iteration"]) is not None]
        if history:
            out.append({"seed": s, "history": history})
    return out


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


# The paired comparisons the README reports: (a, b, what a - b measures).
PAIRS = [("ours", "only-ssl", "the cosine loss on top of self-training (Table 4)"),
         ("ours11", "source-only", "the cosine loss alone, eq. 11 (Table 1)"),
         ("ours11", "adversarial", "eq. 11 against output-space adversarial training (Table 1)"),
         ("only-ssl", "source-only", "self-training on pseudo-labels"),
         ("ours", "source-only", "the full method, eq. 12"),
         ("ours", "wo-dict", "the dictionary (Table 4)"),
         ("ours", "wo-split", "the class-wise split (Table 4)"),
         ("ours", "ssl-adv", "the cosine loss against the adversarial loss, both on self-training (Table 4)")]
ROW_ORDER = ["source-only", "only-ssl", "ssl-adv", "adversarial", "ours11", "ours", "wo-dict", "wo-split",
             "with-adv", "oracle"]


# --- paired differences ------------------------------------------------------------------------
def paired_rows(runs: dict[str, dict[int, dict]], pairs: Sequence[tuple], metric: str = "miou19",
                task: str = "gta5", arch: str = "deeplabv2") -> list[dict]:
    """For each (a, b[, why]) whose variants are both published: the per-seed differences a - b
    (`paired`: seeds, diffs, mean, low, high of the 95 % t-interval) plus `paper`,
    the paper's real-data difference (network `arch`) where it reports both rows, else None."""
    from .paper_results import paper_miou

    rows = []
    for pair in pairs:
        a, b, why = (tuple(pair) + ("",))[:3]
        if not (runs.get(a) and runs.get(b)):
            continue
        p = paired(runs, a, b, metric)
        pa, pb = paper_miou(task, arch, a), paper_miou(task, arch, b)
        rows.append({"a": a, "b": b, "why": why, **p, "paper": None if pa is None or pb is None else pa - pb})
    return rows


def paired_markdown(rows: list[dict], metric: str = "miou19") -> str:
    """A markdown table of `paired_rows`: per seed, mean, 95 % interval, the paper's difference."""
    name = metric.replace("miou", "mIoU")
    if not rows:
        return "*(no pair of variants published yet)*"
    lines = [f"| difference ({name} points) | what it measures | seeds | per seed | mean [95 % interval] | "
             "paper, real data |", "|---|---|---|---|---|---|"]
    for r in rows:
        per_seed = ", ".join(f"{d:+.2f}" for d in r["diffs"]) or "—"
        interval = "one seed: no interval" if math.isnan(r["low"]) else f"[{r['low']:+.2f}, {r['high']:+.2f}]"
        paper = "—" if r["paper"] is None else f"{r['paper']:+.2f}"
        lines.append(f"| {variant_label(r['a'])} − {variant_label(r['b'])} | {r['why']} | {','.join(map(str, r['seeds']))} | "
                     f"{per_seed} | {fmt(r['mean'], signed=True)} {interval} | {paper} |")
    return "\n".join(lines)


def effect_sentence(row: dict, metric: str = "miou19") -> str:
    """One plain sentence on a `paired_rows` row: the mean difference, its interval and whether
    the interval excludes 0 (a measurable effect) or not."""
    name = metric.replace("miou", "mIoU")
    what = f"{variant_label(row['a'])} − {variant_label(row['b'])}: {row['mean']:+.2f} {name} points"
    seeds = ",".join(map(str, row["seeds"]))
    if not row["diffs"]:
        return f"{variant_label(row['a'])} − {variant_label(row['b'])}: no seed has both runs yet."
    if math.isnan(row["low"]):
        return f"{what} on seed {seeds} only: no interval yet, so no verdict (more seeds will land)."
    interval = f"95 % interval [{row['low']:+.2f}, {row['high']:+.2f}] over seeds {seeds}"
    if row["low"] > 0:
        verdict = f"{variant_label(row['a'])} is measurably better"
    elif row["high"] < 0:
        verdict = f"{variant_label(row['a'])} is measurably worse"
    else:
        verdict = "the interval includes 0: no measurable difference at this number of seeds"
    return f"{what}, {interval}: {verdict}."


# --- the loss terms over training ---------------------------------------------------------------
def cos_share(metrics: dict) -> tuple[list[int], list[float]]:
    """(iterations, % of the total loss that lambda_cos * L_cos takes) from a run's history
    `losses` (the mean of each term since the previous evaluation) and the lambda_cos of its
    config.json; 0 for a run without L_cos."""
    lam = setting(metrics, "lambda_cos")
    its, shares = [], []
    for h in metrics.get("history", []):
        losses = h.get("losses") or {}
        if losses.get("total"):
            its.append(h["iteration"])
            shares.append(100.0 * lam * losses.get("cos", 0.0) / losses["total"])
    return its, shares


# --- the paper's hypothesis measured (cosuda/alignment.py) -------------------------------------
def alignment_markdown(runs: dict[str, dict[int, dict]], variants: Sequence[str]) -> str:
    """The final alignment measures per variant, mean ± std over seeds (markdown)."""
    keys = ("nn_accuracy", "cos_same", "cos_other", "cos_gap")
    lines = ["| variant | seeds | nearest source vector of the own class (%) | cos same class | cos other classes "
             "| gap |", "|---|---|---|---|---|---|"]
    for v in variants:
        seeds = seed_list(runs, v)
        if not seeds:
            continue
        finals = [(m.get("alignment") or (m.get("history") or [{}])[-1].get("alignment") or {}) for m in seeds]
        cells = [fmt(*mean_std([f.get(k) for f in finals]), digits=1 if k == "nn_accuracy" else 3) for k in keys]
        lines.append(f"| {variant_label(v)} | {seeds_text(runs, v)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else "*(no alignment measures published yet)*"


def table_beside_paper(runs: dict[str, dict[int, dict]], variants: Sequence[str], task: str = "gta5",
                       reference: str | None = "only-ssl", metric: str | None = None,
                       names: dict[str, str] | None = None, arch: str = "deeplabv2",
                       missing_text: dict[str, str] | None = None) -> str:
    """Markdown: per variant the synthetic final mean ± std over seeds, the paired difference to
    `reference` (per-seed mean and 95 % interval), and the paper's real-data number and difference
    (network `arch`, `paper_results`; the paper's metric for the task unless `metric` is given).
    A variant without runs says "not published yet", or its entry in `missing_text`."""
    from .paper_results import paper_metric, paper_miou

    metric = metric or paper_metric(task, arch)
    name = metric.replace("miou", "mIoU")
    names = names or {}
    ref = f" vs {variant_label(reference)}" if reference else ""
    lines = [f"| row | seeds | synthetic {name}, final (mean ± std) | synthetic Δ{ref} (paired, 95 % interval) | "
             f"paper {name} (real data) | paper Δ{ref} |", "|---|---|---|---|---|---|"]
    paper_ref = paper_miou(task, arch, reference) if reference else None
    for v in variants:
        paper = paper_miou(task, arch, v)
        if not runs.get(v):
            lines.append(f"| {names.get(v, variant_label(v))} | {(missing_text or {}).get(v, 'not published yet')} | — | — | "
                         f"{fmt(paper)} | "
                         f"{fmt(paper - paper_ref, signed=True) if paper is not None and paper_ref is not None and v != reference else '—'} |")
            continue
        finals = [m.get(metric) for m in seed_list(runs, v)]
        diff = "—"
        if reference and v != reference and runs.get(reference):
            p = paired(runs, v, reference, metric)
            if p["diffs"]:
                diff = fmt(p["mean"], signed=True) + ("" if math.isnan(p["low"])
                                                        else f" [{p['low']:+.2f}, {p['high']:+.2f}]")
        paper_diff = (fmt(paper - paper_ref, signed=True) if paper is not None and paper_ref is not None
                      and v != reference else "—")
        lines.append(f"| {names.get(v, variant_label(v))} | {seeds_text(runs, v)} | {fmt(*mean_std(finals))} | {diff} | "
                     f"{fmt(paper) if paper is not None else '—'} | {paper_diff} |")
    return "\n".join(lines)


# --- per class: what transfers (lesson 02) ------------------------------------------------------
def per_class_mean(runs: dict[str, dict[int, dict]], variant: str) -> np.ndarray:
    """Per-class IoU (19,) of a variant's final snapshot, mean over seeds (NaN where missing)."""
    rows = [[np.nan if v is None else v for v in m.get("per_class_iou", [None] * len(CLASS_NAMES))]
            for m in seed_list(runs, variant)]
    if not rows:
        return np.full(len(CLASS_NAMES), np.nan)
    table = np.asarray(rows, dtype=float)
    with np.errstate(all="ignore"):
        out = np.full(table.shape[1], np.nan)
        ok = ~np.all(np.isnan(table), axis=0)
        out[ok] = np.nanmean(table[:, ok], axis=0)
    return out


def transfer_markdown(runs: dict[str, dict[int, dict]], a: str = "source-only", b: str = "oracle",
                      transfers: float = 75.0, fails: float = 40.0) -> str:
    """Markdown, one row per class sorted by how much of `b`'s IoU `a` keeps: the source-only
    model's IoU, the oracle's, a / b in %, and a verdict (transfers >= `transfers` %, does not
    < `fails` %, partly in between)."""
    if not (runs.get(a) and runs.get(b)):
        return missing_note([v for v in (a, b) if not runs.get(v)])
    ia, ib = per_class_mean(runs, a), per_class_mean(runs, b)
    with np.errstate(all="ignore"):
        ratio = np.where(ib > 0, 100.0 * ia / np.where(ib > 0, ib, 1.0), np.nan)
    order = sorted(range(len(CLASS_NAMES)), key=lambda c: -np.nan_to_num(ratio[c], nan=-1.0))
    lines = [f"| class | {variant_label(a)} IoU (seeds {seeds_text(runs, a)}) | {variant_label(b)} IoU (seeds "
             f"{seeds_text(runs, b)}) | kept (%) | verdict |", "|---|---|---|---|---|"]
    for c in order:
        verdict = ("—" if np.isnan(ratio[c]) else "transfers" if ratio[c] >= transfers
                   else "does not transfer" if ratio[c] < fails else "partly")
        lines.append(f"| {CLASS_NAMES[c]} | {fmt(ia[c])} | {fmt(ib[c])} | "
                     f"{'—' if np.isnan(ratio[c]) else f'{ratio[c]:.0f}'} | {verdict} |")
    ma, mb = np.nanmean(ia), np.nanmean(ib)
    lines.append(f"| **mIoU19** | **{ma:.2f}** | **{mb:.2f}** | **{100 * ma / mb:.0f}** | |")
    return "\n".join(lines)


# --- Table 6 sweeps ----------------------------------------------------------------------------
def sweep_points(sweep: dict[str, dict[int, dict]], default_runs: dict[int, dict] | None = None,
                 metric: str = "miou19") -> tuple[dict[str, dict[float, dict[int, float]]], dict[str, float]]:
    """(points, defaults): points = {knob: {value: {seed: final metric}}} of a loaded sweep
    ({point name: {seed: metrics}}), each point's knob being the one of SWEEP_KEYS whose value in
    its config.json differs from the default runs' (the grid's `ours`, `default_runs` = {seed:
    metrics}), which are added to every knob as its default point. defaults = {knob: value} as
    the default runs recorded them. Settings come from the runs' config.json, never from names."""
    defaults = {}
    for m in (default_runs or {}).values():
        defaults = {k: setting(m, k) for k in SWEEP_KEYS}
        break
    points: dict[str, dict[float, dict[int, float]]] = {k: {} for k in SWEEP_KEYS}
    for name, seeds in sweep.items():
        for seed, m in seeds.items():
            moved = [k for k in SWEEP_KEYS if not defaults or setting(m, k) != defaults[k]]
            if len(moved) != 1:  # both knobs moved, or none: not a one-knob sweep point
                continue
            points.setdefault(moved[0], {}).setdefault(setting(m, moved[0]), {})[seed] = m.get(metric)
    for knob in points if defaults else ():
        points[knob].setdefault(defaults[knob], {}).update({s: m.get(metric) for s, m in default_runs.items()})
    return points, defaults

def _paired_cell(values: dict[int, float], base: dict[int, float], shared: list[int]) -> str:
    """Mean paired difference, its 95 % t-interval from two seeds on, and the seeds."""
    if not shared:
        return "—"
    p = t_interval([values[s] - base[s] for s in shared])
    interval = "" if math.isnan(p["low"]) else f" [{fmt(p['low'], signed=True)}, {fmt(p['high'], signed=True)}]"
    return f"{fmt(p['mean'], signed=True)}{interval} (seeds {','.join(map(str, shared))})"


def sweep_markdown(points: dict[str, dict[float, dict[int, float]]], paper: dict[str, dict[float, float]],
                   defaults: dict, metric: str = "miou19") -> str:
    """Markdown per knob of `sweep_points`: synthetic value, seeds, mean ± std, paired difference
    to the default point (`defaults`, as its runs recorded them); the paper's Table 6 row beside
    (its own values: dict-size is scaled here)."""
    if not defaults:
        return "*(no default point: the sweep's differences need the grid's `ours` runs)*"
    name = metric.replace("miou", "mIoU")
    out = []
    for knob, title in (("t_cos", "T_cos"), ("dict_size", "dict-size")):
        values = points.get(knob, {})
        lines = [f"**{title}** ({'dict-size' if knob == 't_cos' else 'T_cos'} fixed at "
                 f"{defaults['dict_size' if knob == 't_cos' else 't_cos']:g}):", "",
                 f"| {title} | seeds | synthetic {name} (mean ± std) | Δ vs default (paired, mean [95 % interval]) |", "|---|---|---|---|"]
        base = values.get(defaults[knob], {})
        for value in sorted(values):
            seeds = values[value]
            shared = sorted(s for s in seeds if s in base and seeds[s] is not None and base[s] is not None)
            diff = "default" if math.isclose(value, defaults[knob]) else _paired_cell(seeds, base, shared)
            lines.append(f"| {value:g} | {','.join(map(str, sorted(seeds)))} | "
                         f"{fmt(*mean_std(list(seeds.values())))} | {diff} |")
        if len(lines) == 4:
            lines.append("| — | none published | — | — |")
        p = paper.get(knob, {})
        lines += ["", "paper, Table 6 (real data, mIoU19): " + ", ".join(f"{title} {k:g}: {p[k]:.2f}" for k in sorted(p))]
        out.append("\n".join(lines))
    return "\n\n".join(out)


def prediction_path(pred_root: str | Path, name: str) -> Path:
    """The published trainId PNG of a Cityscapes item name ('city/x_leftImg8bit.png')."""
    return Path(pred_root) / (str(Path(name).with_suffix("")) + "_trainIds.png")


def published_predictions(root: str | Path, task: str, variants: Sequence[str], seed: int = 0) -> dict[str, Path]:
    """{variant: its predictions folder} for the variants whose seed-`seed` predictions exist."""
    found = {}
    for v in variants:
        folder = Path(root) / task / v / f"seed{seed}" / "predictions"
        if folder.is_dir() and any(folder.rglob("*_trainIds.png")):
            found[v] = folder
    return found


def changed_to_correct(before: np.ndarray, after: np.ndarray, truth: np.ndarray, ignore_index: int = 255) -> int:
    """Pixels (ground truth not ignored) that `before` got wrong and `after` gets right."""
    before, after, truth = np.asarray(before), np.asarray(after), np.asarray(truth)
    valid = truth != ignore_index
    return int(np.count_nonzero(valid & (before != truth) & (after == truth)))


def rank_by_gain(before: Sequence[np.ndarray], after: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                 ignore_index: int = 255) -> list[tuple[int, int, int]]:
    """(index, pixels that became correct, pixels that became wrong) per image, the largest net
    gain (became correct - became wrong) first."""
    rows = [(i, changed_to_correct(b, a, t, ignore_index), changed_to_correct(a, b, t, ignore_index))
            for i, (b, a, t) in enumerate(zip(before, after, truths))]
    return sorted(rows, key=lambda r: (-(r[1] - r[2]), r[0]))


def boundary_density(label_map: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Share of horizontally or vertically adjacent pixel pairs (both `valid`) whose labels
    differ: a speckled prediction has many more boundaries than its ground truth."""
    label_map = np.asarray(label_map)
    valid = np.ones(label_map.shape, bool) if valid is None else np.asarray(valid, bool)
    right = (label_map[:, 1:] != label_map[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    down = (label_map[1:] != label_map[:-1]) & valid[1:] & valid[:-1]
    pairs = (valid[:, 1:] & valid[:, :-1]).sum() + (valid[1:] & valid[:-1]).sum()
    return float((right.sum() + down.sum()) / max(int(pairs), 1))


def centroid_accuracy(picture: dict) -> dict[str, float]:
    """Per class of a features2d picture: % of its target points nearer (in the 2-D projection) to
    the centroid of the source points of their class than to any other class's source centroid."""
    classes = np.asarray(picture["classes"])
    domain = np.asarray(picture["domain"])
    xy = np.asarray(picture["xy"], dtype=float).reshape(-1, 2)
    names = [c for c in dict.fromkeys(picture["classes"]) if np.any((classes == c) & (domain == "source"))]
    if not names:
        return {}
    centroids = np.stack([xy[(classes == c) & (domain == "source")].mean(0) for c in names])
    out = {}
    for k, c in enumerate(names):
        pts = xy[(classes == c) & (domain == "target")]
        if len(pts):
            nearest = np.argmin(((pts[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
            out[c] = 100.0 * float(np.mean(nearest == k))
    return out


def change_word(before: float, after: float, tolerance: float = 1.0) -> str:
    """"rose", "fell" or "did not change" (within +-tolerance points): the direction word of a
    sentence is chosen by the numbers, never typed."""
    if after - before > tolerance:
        return "rose"
    if before - after > tolerance:
        return "fell"
    return "did not change"


def feature_steps_markdown(before: dict, ssl: dict, ours: dict) -> str:
    """Per class of three features2d pictures (source-only, only SSL, Ours): which step moved the
    share of target points nearest their own source centre (`centroid_accuracy`), and which way.
    Self-training is only SSL - source-only; the cosine loss is Ours - only SSL."""
    shares = [centroid_accuracy(p) for p in (before, ssl, ours)]
    lines = []
    for c in shares[0]:
        if not all(c in s for s in shares):
            continue
        # rounded as printed, so that the word agrees with the numbers beside it
        a, b, o = (round(s[c]) for s in shares)
        lines.append(f"- **{c}**: {a} → {b} → {o} %; with self-training it "
                     f"{change_word(a, b)}, with the cosine loss it {change_word(b, o)}.")
    return "\n".join(lines)


# --- tables of a results folder (runner table, the grid's results.md) --------------------------
def paper_row(variant: str, source: str = "gta5", arch: str = "deeplabv2") -> str:
    """The paper's number for the variant on that task and network (mIoU19 for GTA5, mIoU13 /
    mIoU16 for SYNTHIA with DeepLabV2 / FCN-8s), as text."""
    from .paper_results import paper_miou

    value = paper_miou(source, arch, variant)
    return "—" if value is None else f"{value:.2f}"


_TASK_NAMES = {"gta5": "GTA5", "synthia": "SYNTHIA"}
_ARCH_NAMES = {"deeplabv2": "DeepLabV2", "fcn8s": "FCN-8s"}
_BACKBONE_NAMES = {"resnet101": "ResNet-101", "resnet50": "ResNet-50", "resnet18": "ResNet-18", "vgg16": "VGG16",
                   "efficientnet_lite0": "EfficientNet-Lite0"}
_PAPER_NETWORKS = {"deeplabv2": "DeepLabV2-ResNet-101", "fcn8s": "FCN-8s-VGG16"}


def table_context(runs: dict[str, dict[int, dict]], task: str) -> dict:
    """What the runs of `task` are: source, network (from their config.json), synthetic or real
    data (task gta5 | synthia: the synthetic benchmark; gta5-deeplabv2, ...: real data), and the
    paper's metric for that task and network (`paper_results.paper_metric`)."""
    from .paper_results import paper_metric

    synthetic = task in _TASK_NAMES
    source, arch = (task, "deeplabv2") if synthetic else (task.split("-", 1) + [""])[:2]
    if source not in _TASK_NAMES or arch not in _ARCH_NAMES:
        raise ValueError(f"unknown task {task!r}: gta5, synthia (synthetic) or {{gta5,synthia}}-{{deeplabv2,fcn8s}}")
    configs = [m["config"] for seeds in runs.values() for m in seeds.values() if m.get("config")]
    backbone = configs[0].get("backbone") if configs else ("efficientnet_lite0" if synthetic else
                                                           {"deeplabv2": "resnet101", "fcn8s": "vgg16"}[arch])
    metric = paper_metric(source, arch)
    return {"synthetic": synthetic, "source": source, "arch": arch, "metric": metric,
            "metric_name": metric.replace("miou", "mIoU"),
            "network": f"{_ARCH_NAMES[arch]}-{_BACKBONE_NAMES.get(backbone, backbone)}",
            "task": (f"{_TASK_NAMES[source]}-like → Cityscapes-like" if synthetic
                     else f"{_TASK_NAMES[source]} → Cityscapes"), "paper_network": _PAPER_NETWORKS[arch]}


def _ordered(runs: dict) -> list[str]:
    return [v for v in ROW_ORDER if v in runs] + sorted(set(runs) - set(ROW_ORDER))


def results_table(runs: dict[str, dict[int, dict]], task: str, metric: str | None = None) -> str:
    """Markdown: a line that says what the runs are (task, network, metric, synthetic or real
    data), then per variant the mean ± sample std over seeds of the task's metric (mIoU19 for
    GTA5; mIoU13 with DeepLabV2, mIoU16 with FCN-8s on SYNTHIA), final and best snapshot, beside
    the paper's number for the same task and network."""
    ctx = table_context(runs, task)
    metric = metric or ctx["metric"]
    name = metric.replace("miou", "mIoU")
    if ctx["synthetic"]:
        title = (f"Synthetic benchmark ({ctx['task']}, {ctx['network']}; not the paper's data): {name} in % on "
                 f"the target val split, mean ± sample std over seeds. The paper's column is its real-data "
                 f"{_TASK_NAMES[ctx['source']]} → Cityscapes result with {ctx['paper_network']}.")
        label = f"synthetic {name}"
    else:
        title = (f"{ctx['task']}, {ctx['network']}: {name} in % on Cityscapes val, mean ± sample std over "
                 f"seeds, beside the paper's Tables 1 and 4 ({ctx['paper_network']}).")
        label = name
    lines = [title, "", f"| variant | seeds | {label}, final (mean ± std) | best snapshot | "
                        f"paper ({ctx['metric_name']}, {ctx['paper_network']}) |", "|---|---|---|---|---|"]
    for variant in _ordered(runs):
        seeds = seed_list(runs, variant)
        lines.append(f"| {variant} | {seeds_text(runs, variant)} | {format_seeds(m.get(metric) for m in seeds)} | "
                     f"{format_seeds((m.get('best') or {}).get(metric) for m in seeds)} | "
                     f"{paper_row(variant, ctx['source'], ctx['arch'])} |")
    return "\n".join(lines)


def paired_table(runs: dict[str, dict[int, dict]], task: str, pairs: Sequence[tuple] = PAIRS) -> str:
    """Markdown: each pair of PAIRS whose rows both exist, a - b per seed, mean and 95 % interval."""
    metric = table_context(runs, task)["metric"]
    rows = [(a, b, why, paired(runs, a, b, metric)) for a, b, why in pairs if a in runs and b in runs]
    if not rows:
        return ""
    name = metric.replace("miou", "mIoU")
    lines = [f"Paired by seed (same stage-1 model and pseudo-labels): {name} difference, per seed, mean and 95 % "
             "t-interval", "", "| difference | what it measures | per seed | mean [95 % interval] |", "|---|---|---|---|"]
    for a, b, why, p in rows:
        interval = "" if math.isnan(p["low"]) else f" [{p['low']:+.2f}, {p['high']:+.2f}]"
        lines.append(f"| {a} − {b} | {why} | {', '.join(f'{d:+.2f}' for d in p['diffs'])} | "
                     f"{fmt(p['mean'], signed=True)}{interval} |")
    return "\n".join(lines)


def per_class_table(runs: dict[str, dict[int, dict]], task: str) -> str:
    """Markdown: per-class IoU (%, final snapshot, mean over seeds) of each variant, laid out as
    the paper's Table 2 (GTA5: 19 classes) or Table 3 (SYNTHIA: 16 classes), with the paper's
    "Ours" row of that table and network underneath. '' when no run has per-class values."""
    from .paper_results import PAPER_RESULTS, TABLE2_COLUMNS, TABLE3_COLUMNS

    ctx = table_context(runs, task)
    table, columns = ("table2", TABLE2_COLUMNS) if ctx["source"] == "gta5" else ("table3", TABLE3_COLUMNS)
    rows = []
    for variant in _ordered(runs):
        per_seed = [m["per_class_iou"] for m in seed_list(runs, variant) if m.get("per_class_iou")]
        if not per_seed:
            continue
        cells = [fmt(mean_std(v[CLASS_NAMES.index(c)] for v in per_seed)[0], digits=1) for c in columns]
        mean = fmt(mean_std(m.get(ctx["metric"]) for m in seed_list(runs, variant))[0], digits=1)
        rows.append(f"| {variant} ({len(per_seed)} seed{'s' if len(per_seed) > 1 else ''}) | " + " | ".join(cells)
                    + f" | {mean} |")
    if not rows:
        return ""
    paper = PAPER_RESULTS[table].get(ctx["arch"], {})
    paper_iou = paper.get("per_class_iou", {})
    paper_mean = paper.get("mIoU" if table == "table2" else ctx["metric_name"])
    cells = [fmt(paper_iou.get(c), digits=1) for c in columns]
    data = "synthetic benchmark" if ctx["synthetic"] else "Cityscapes val"
    number = "2" if table == "table2" else "3"
    return "\n".join([f"Per-class IoU in % ({ctx['task']}, {ctx['network']}, {data}, final snapshot, mean over seeds), "
                      f"laid out as the paper's Table {number}; its last row is the paper's Ours "
                      f"({ctx['paper_network']}, real data).", "",
                      "| variant | " + " | ".join(columns) + f" | {ctx['metric_name']} |",
                      "|---|" + "---|" * (len(columns) + 1), *rows,
                      "| paper: Ours | " + " | ".join(cells) + f" | {fmt(paper_mean, digits=1)} |"])


def results_markdown(runs: dict[str, dict[int, dict]], task: str) -> str:
    """The tables of one task's runs: per variant, the paired differences, per class."""
    return "\n\n".join(t for t in (results_table(runs, task), paired_table(runs, task), per_class_table(runs, task))
                        if t) + "\n"


# --- what notebooks need besides metrics: predictions and a 2-D picture of the features -----
PICTURE_CLASSES = ("road", "car", "person", "vegetation")  # big, small and thin, thing and stuff


def publish_extras(root: str | Path, task: str = "gta5", seed: int = 0,
                   variants=("source-only", "only-ssl", "ours"), dest: str | Path = PUBLISHED,
                   progress: bool = True) -> list[Path]:
    """For seed `seed`: each variant's predictions on every target val image (trainId PNGs,
    `<dest>/<task>/<variant>/seed<N>/predictions/`) and the feature sample of its model
    (`features2d.json`: 2-D PCA of source and target vectors of PICTURE_CLASSES), so that
    lessons 07 and 11 draw them without the models. Returns the folders written."""
    from .alignment import feature_sample, pca_2d
    from .data import GTA5, SYNTHIA, Cityscapes
    from .predict import predict_images
    from .train import load_run_model, resolve_paths

    written = []
    for variant in variants:
        run_dir = Path(root) / task / variant / f"seed{seed}"
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
