"""One dataclass for a training run, and the named presets (paper section 4.1 and Table 5).

A run is plain data: every knob of the engine is a field of `RunConfig`, a preset is a set of
field values, and `--set KEY=VALUE` overrides one field. Variants of the paper (Tables 1 and 4)
are rows of `VARIANTS`: which loss terms the one training loop switches on.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paper_results import TABLE5  # the paper's hyper-parameters, kept with its other numbers
from .paths import SYNTHETIC_ROOT, resolve_path

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout: its notebooks/ and docs/


class ConfigError(ValueError):
    """A bad preset, key, value or path, reported before any training starts."""


# --- The variants: which terms of eq. 11/12 (and supplementary C) are switched on ----------
LOSS_TERMS = ("seg_s", "seg_t", "cos", "adv")  # the names under which the step logs each term
_CHOICES = {"target_seg": ("none", "pseudo", "gt"), "cos": ("none", "dict", "current", "unsplit"),
            "split": ("pseudo", "pred")}


@dataclass(frozen=True)
class Variant:
    """Which terms of the total loss one variant trains on: a row of Tables 1 and 4.

    source_seg:  eq. 1 on the labelled source images
    target_seg:  "none" | "pseudo" (eq. 2 with the pseudo-labels of supplementary A) |
                 "gt" (the oracle: target labels)
    cos:         "none" | "dict" (the method: process A -> dictionary, process B, eq. 10) |
                 "current" (w/o dictionary: this iteration's split source features) |
                 "unsplit" (w/o class-wise split: all source against all target vectors)
    split:       how process B splits the target: "pseudo" (eq. 7) or "pred" (eq. 8)
    adversarial: the output-space adversarial loss of supplementary C (eq. 14/15)

    A value outside these raises at once: a typo is an error, never a silently other run.
    """

    source_seg: bool
    target_seg: str
    cos: str
    split: str
    adversarial: bool

    def __post_init__(self):
        for name in ("source_seg", "adversarial"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Variant.{name} is True or False, got {getattr(self, name)!r}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"Variant.{name} {getattr(self, name)!r} unknown; choose one of "
                                 f"{', '.join(choices)}")
        if self.split == "pseudo" and self.target_seg != "pseudo":
            raise ValueError("Variant.split 'pseudo' (eq. 7) needs the pseudo-labels: target_seg 'pseudo'")
        if not (self.source_seg or self.target_seg != "none"):
            raise ValueError("a Variant trains on at least one segmentation loss (source_seg or target_seg)")

    @property
    def uses_cos(self) -> bool:
        """Whether the cosine similarity loss (or one of its ablations) is a term."""
        return self.cos != "none"

    @property
    def uses_dictionary(self) -> bool:
        """Whether the step keeps feature dictionaries (process A's vectors, newest first)."""
        return self.cos == "dict"

    @property
    def uses_pseudo_labels(self) -> bool:
        """Whether the run needs pseudo-labels for the target train set (`pseudo_root`)."""
        return self.target_seg == "pseudo"

    @property
    def target_labels(self) -> bool:
        """Whether target images reach the step with a label (pseudo-labels or the oracle's)."""
        return self.target_seg != "none"

    @property
    def needs_source(self) -> bool:
        """Whether a step runs the forward pass on a source image."""
        return self.source_seg or self.uses_cos or self.adversarial

    @property
    def needs_target(self) -> bool:
        """Whether a step runs the forward pass on a target image."""
        return self.target_labels or self.uses_cos or self.adversarial

    @property
    def terms(self) -> tuple[str, ...]:
        """The names (from LOSS_TERMS, in that order) of the terms the total loss adds up."""
        on = (self.source_seg, self.target_labels, self.uses_cos, self.adversarial)
        return tuple(name for name, used in zip(LOSS_TERMS, on) if used)


VARIANTS: dict[str, Variant] = {
    "source-only": Variant(source_seg=True, target_seg="none", cos="none", split="pred", adversarial=False),
    "oracle": Variant(source_seg=False, target_seg="gt", cos="none", split="pred", adversarial=False),
    "only-ssl": Variant(source_seg=True, target_seg="pseudo", cos="none", split="pseudo", adversarial=False),
    "ssl-adv": Variant(source_seg=True, target_seg="pseudo", cos="none", split="pseudo", adversarial=True),
    "adversarial": Variant(source_seg=True, target_seg="none", cos="none", split="pred", adversarial=True),
    "ours11": Variant(source_seg=True, target_seg="none", cos="dict", split="pred", adversarial=False),
    "ours": Variant(source_seg=True, target_seg="pseudo", cos="dict", split="pseudo", adversarial=False),
    "wo-dict": Variant(source_seg=True, target_seg="pseudo", cos="current", split="pseudo", adversarial=False),
    "wo-split": Variant(source_seg=True, target_seg="pseudo", cos="unsplit", split="pseudo", adversarial=False),
    "with-adv": Variant(source_seg=True, target_seg="pseudo", cos="dict", split="pseudo", adversarial=True),
}

# How every table, figure and lesson names a variant: the paper's row names (Tables 1 and 4).
VARIANT_LABELS = {"source-only": "source-only", "oracle": "oracle (target labels)", "only-ssl": "only SSL",
                  "ssl-adv": "SSL with Adversarial", "adversarial": "Adversarial", "ours11": "Ours-(11)",
                  "ours": "Ours (eq. 12)", "wo-dict": "w/o Dictionary", "wo-split": "w/o Class-wise Split",
                  "with-adv": "with Adversarial"}


def variant_label(variant: str) -> str:
    """The paper's name of a variant (a sweep point or another run name: itself)."""
    return VARIANT_LABELS.get(variant, variant)


# How every figure draws a variant (lines, bands, bars, dots), in every lesson, the README and the
# site: one colour and one marker each, so a reader who learnt "Ours is the blue diamond" in one
# figure finds it again in the next. Colours from Okabe & Ito's colour-blind-safe palette, three
# more (brown, olive, indigo) for the ten rows; the markers differ too, for grey-scale prints. The
# rows most often side by side (source-only, oracle, only SSL, Ours-(11), Ours) have the most
# distinct hues: black, purple, orange, green, blue.
VARIANT_STYLES = {
    "source-only": {"color": "#000000", "marker": "o"},   # black: the baseline every gain is measured from
    "oracle": {"color": "#CC79A7", "marker": "*"},        # reddish purple: the upper bound
    "only-ssl": {"color": "#E69F00", "marker": "s"},      # orange
    "ssl-adv": {"color": "#8C564B", "marker": "v"},       # brown
    "adversarial": {"color": "#D55E00", "marker": "^"},   # vermillion
    "ours11": {"color": "#009E73", "marker": "P"},        # bluish green
    "ours": {"color": "#0072B2", "marker": "D"},          # blue
    "wo-dict": {"color": "#56B4E9", "marker": "X"},       # sky blue
    "wo-split": {"color": "#999933", "marker": ">"},      # olive
    "with-adv": {"color": "#332288", "marker": "<"},      # indigo
}
NEUTRAL_STYLE = {"color": "#7F7F7F", "marker": "o"}  # a name that is no variant (a sweep point, a live run)
PAPER_STYLE = {"color": "#B2182B", "marker": "x"}    # the paper's published numbers beside ours


def variant_of(name: str) -> str | None:
    """The variant a figure's name stands for: its key ("ours"), its paper label ("Ours (eq. 12)"),
    or either followed by a parenthesis ("ours (seed 0)", "Ours (eq. 12) (n=3)"); else None."""
    best = None
    for v, label in VARIANT_LABELS.items():
        for known in (v, label):
            if (name == known or name.startswith(known + " (")) and (best is None or len(known) > len(best[1])):
                best = (v, known)
    return best[0] if best else None


def variant_style(name: str) -> dict:
    """{"color", "marker"} of a variant (by key, label or run name, see `variant_of`); a neutral
    grey and a dot for any other name. A copy: a figure may add to it."""
    v = variant_of(name)
    return dict(VARIANT_STYLES[v] if v else NEUTRAL_STYLE)


PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
# The target splits a run may evaluate on. val reports; dev (written by cosuda.synthetic only) is
# where hyper-parameters are chosen, so that no choice is made on val (docs/preregistration.md).
EVAL_SPLITS = ("val", "dev")


@dataclass
class RunConfig:
    # --- what is trained ---
    variant: str = "ours"
    source: str = "gta5"                 # gta5 | synthia
    arch: str = "deeplabv2"              # deeplabv2 | fcn8s
    backbone: str = "resnet101"          # deeplabv2 backbones: resnet18/34/50/101, efficientnet_lite0
    output_stride: int = 8               # deeplabv2: 8 (the paper's); 16 for efficientnet_lite0 on CPU
    weights: str = "imagenet"            # imagenet | random | /path/to/weights.pth
    norm: str = "frozen_bn"              # frozen_bn (paper) | group (training from random weights)
    num_classes: int = 19

    # --- data (sizes are (W, H), as in the paper) ---
    data_root: str = ""                  # folder holding gta5/ synthia/ cityscapes/
    source_root: str = ""                # default: <data_root>/<source>
    source_image_dir: str = ""           # CycleGAN-translated source images (same names)
    target_root: str = ""                # default: <data_root>/cityscapes
    pseudo_root: str = ""                # pseudo-label folder (variants with target_seg=pseudo)
    source_size: tuple = (1280, 720)
    target_size: tuple = (1024, 512)
    eval_size: tuple = (1024, 512)       # prediction size; labels stay at file resolution
    eval_max_items: int = 0              # 0 = the whole eval split
    eval_split: str = "val"              # the target split evaluated into metrics.json: val (reporting) |
                                         # dev (choosing hyper-parameters; the synthetic benchmark only)
    num_workers: int = 2

    # --- optimisation (section 4.1) ---
    iterations: int = 120000
    optimizer: str = "sgd"               # sgd (DeepLabV2) | adam (FCN-8s)
    schedule: str = "auto"               # auto (sgd: poly, adam: step) | poly | step
    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    schedule_iterations: int = 250000    # poly horizon of the reference code; 0 = `iterations`
    adam_betas: tuple = (0.9, 0.99)
    scale_lr: bool = False               # multi-GPU: lr x world size (linear scaling rule)
    step_size: int = 50000
    step_gamma: float = 0.1

    # --- the cosine similarity loss (section 3.2, Table 5) ---
    lambda_cos: float = 0.01
    t_cos: float = 0.6
    dict_size: int = 2500
    reduction: str = "mean"              # see notebooks/06_cosine_loss for why
    cos_impl: str = "auto"
    dict_dtype: str = "float32"          # float32 | float16 | bfloat16 storage

    # --- adversarial baseline (supplementary C) ---
    lambda_adv: float = 0.001
    d_lr: float = 1e-4
    d_betas: tuple = (0.9, 0.99)

    # --- the paper's hypothesis, measured at every evaluation (cosuda/alignment.py) ---
    align_items: int = 0                 # source probe images and target val images; 0 = off
    align_per_class: int = 100           # probe-dictionary vectors per class

    # --- the run ---
    seed: int = 0
    eval_every: int = 2000
    checkpoint_every: int = 2000
    keep_checkpoints: int = 3
    log_every: int = 10
    precision: str = "auto"              # auto (bf16 on capable GPUs, fp32 on CPU) | fp32 | tf32 | bf16 | fp16
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    deterministic: bool = False
    compile: str = "off"                 # off (eager) | model (the network only) | step (the whole
                                         # step, CUDA graphs on GPU: see cosuda/uda.py)
    channels_last: bool = False
    progress: bool = True
    tensorboard: bool = False            # also write RUN_DIR/tensorboard/ events (cosuda/tensorboard_log.py;
                                         # needs the tensorboard extra)

    def __post_init__(self):
        # config.json files written when `compile` was a bool: true meant the network
        old = str(self.compile).strip().lower()
        if isinstance(self.compile, bool) or old in ("true", "false", "1", "0", "yes", "no"):
            self.compile = "model" if old in ("true", "1", "yes") else "off"

    @property
    def flags(self) -> Variant:
        """The row of `VARIANTS` this run trains: which loss terms are on."""
        return VARIANTS[self.variant]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


FIELD_TYPES = {f.name: f for f in dataclasses.fields(RunConfig)}


# --- Presets ----------------------------------------------------------------------------------
_REAL_NETWORKS = {
    # Section 4.1 and the field's conventions (docs/design.md): DeepLabV2 SGD/poly, FCN-8s
    # Adam/step; supplementary C for the discriminator D.
    "deeplabv2": dict(arch="deeplabv2", backbone="resnet101", optimizer="sgd", lr=2.5e-4,
                      lambda_adv=0.001, d_lr=1e-4),
    "fcn8s": dict(arch="fcn8s", backbone="vgg16", optimizer="adam", lr=1e-5, weight_decay=0.0,
                  lambda_adv=0.0001, d_lr=1e-6),
}
# One reader process decodes and resizes about 5-10 GTA5 images of 1280x720 per second (measured
# on this project's CPU); a 30 ms GPU step takes ~33 source + 33 target images per second, so
# each of the two loaders gets 6 workers (12 of a 16-core GPU node).
_REAL_SOURCES = {"gta5": dict(source_size=(1280, 720), num_workers=6),
                 "synthia": dict(source_size=(1280, 760), num_workers=6)}

# The synthetic benchmark: the paper's regime (ImageNet backbone, frozen BN, Table 5's T_cos)
# within a 2-core laptop's budget. Every value that departs from the paper is a row of the README's
# table of choices, with what was measured (docs/benchmark.md).
SYNTHETIC = dict(
    source="gta5", arch="deeplabv2", backbone="efficientnet_lite0", weights="imagenet", norm="frozen_bn",
    output_stride=16, data_root=str(SYNTHETIC_ROOT), source_size=(320, 180), target_size=(320, 160),
    eval_size=(320, 160), iterations=1200, optimizer="adam", lr=2e-4, schedule="poly",
    schedule_iterations=0, weight_decay=5e-4, lambda_cos=0.1, t_cos=0.6, dict_size=200, eval_every=300,
    checkpoint_every=300, num_workers=0, lambda_adv=0.001, d_lr=1e-4, log_every=10, align_items=30,
)
# The synthetic pipeline's two stages (runner main / grid): the source-only model, then every
# variant trained this much further from it (see cosuda/jobs.py).
SYNTHETIC_STAGES = {"source_iterations": 1200, "iterations": 600}


def _preset_table() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        presets[f"synthetic-{variant}"] = dict(SYNTHETIC, variant=variant)
        for source, src_kw in _REAL_SOURCES.items():
            for net, net_kw in _REAL_NETWORKS.items():
                presets[f"{source}-{net}-{variant}"] = dict(net_kw, **src_kw, **TABLE5[(source, net)],
                                                            source=source, variant=variant)
        # Several GPUs under torchrun: each rank takes 1 source + 1 target image, so the effective
        # batch is N; the linear scaling rule (Goyal et al. 2017) keeps the per-image step: lr x N.
        for source in _REAL_SOURCES:
            presets[f"{source}-deeplabv2-{variant}-ddp"] = dict(presets[f"{source}-deeplabv2-{variant}"],
                                                                 scale_lr=True)
    return presets


PRESETS = _preset_table()


# --- `--set KEY=VALUE`: the one codec of every command that takes it --------------------------
def parse_key(key: str) -> str:
    """`key` if it is a RunConfig field, else a ConfigError naming it (and close names)."""
    if key not in FIELD_TYPES:
        close = [k for k in FIELD_TYPES if k.startswith(key[:3])]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown configuration key {key!r}{hint}; see `python -m cosuda.train --show-config`")
    return key


def parse_value(key: str, value: Any) -> Any:
    """`value` as the type of RunConfig.KEY: a string from the command line is parsed, a Python
    value is checked (an int where a float is expected is fine). Raises ConfigError naming both."""
    default = getattr(RunConfig(), parse_key(key))
    kind = type(default).__name__
    try:
        if isinstance(value, str):
            text = value.strip()
            if isinstance(default, bool):
                low = text.lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                return low in ("true", "1", "yes")
            if isinstance(default, (int, float)):
                return type(default)(text)
            if isinstance(default, tuple):
                parts = text.replace("x", ",").strip("()[] ").split(",")
                return tuple(type(default[0])(p) for p in parts if p.strip())
            return text
        if isinstance(default, bool) or isinstance(value, bool):
            if type(value) is not type(default):
                raise ValueError(value)
            return value
        if isinstance(default, float) and isinstance(value, (int, float)):
            return float(value)
        if isinstance(default, tuple) and isinstance(value, (tuple, list)):
            return tuple(type(default[0])(v) for v in value)
        if isinstance(value, type(default)):
            return value
        raise ValueError(value)
    except (ValueError, TypeError):
        raise ConfigError(f"--set {key}={value}: expected a value of type {kind} (like {default!r})") from None


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` strings -> {key: typed value}; a malformed pair, an unknown key or a
    value of the wrong type raises one ConfigError naming it. Ranges are checked by `validate`,
    once the values meet a preset (`make_config`)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = parse_value(key.strip(), value)
    return out


def encode_sets(values: dict[str, Any]) -> list[str]:
    """The inverse of `parse_sets`: ["--set", "key=value", ...] for a `python -m cosuda.train`
    command line (tuples as "a,b", bools as "true"/"false")."""
    args = []
    for key, value in values.items():
        if isinstance(value, (tuple, list)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = str(value).lower()
        args += ["--set", f"{parse_key(key)}={value}"]
    return args


def make_config(preset: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The preset's RunConfig with `overrides` applied (typed values, or strings as from the
    command line), validated: a bad key, type or range raises ConfigError."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; list them with `python -m cosuda.train --list-presets`")
    values = dict(PRESETS[preset])
    for key, value in (overrides or {}).items():
        values[key] = parse_value(key, value)
    cfg = RunConfig(**values)
    validate(cfg)
    return cfg


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """The RunConfig of a saved config.json or checkpoint: lists back to tuples, keys RunConfig
    does not know (e.g. "preset", or fields of older versions) dropped, values of older versions
    normalised by RunConfig."""
    defaults = RunConfig()
    return RunConfig(**{k: tuple(v) if isinstance(getattr(defaults, k), tuple) else v
                        for k, v in values.items() if k in FIELD_TYPES})


# Backbones each architecture builds (cosuda.models.available_backbones, kept here too so that
# checking a configuration needs no torch; tests/test_config_ranges.py holds the two equal) and
# the output strides each backbone supports.
BACKBONES = {"deeplabv2": ("resnet18", "resnet34", "resnet50", "resnet101", "efficientnet_lite0"),
             "fcn8s": ("vgg16",)}
_OUTPUT_STRIDES = {"efficientnet_lite0": (8, 16, 32)}  # the ResNets: 8 (the paper's) or 16
_COS_IMPLS = ("auto", "reference", "sorted", "grouped")  # cosuda.method.IMPLS


def _did_you_mean(value: Any, choices) -> str:
    import difflib

    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _one_of(name: str, value: Any, choices, where: str = "") -> None:
    """ConfigError unless `value` is one of `choices`: names the key, the value, the choices and
    the closest of them."""
    if value not in choices:
        raise ConfigError(f"{name} {value!r} unknown{where}; choose one of {', '.join(map(str, choices))}"
                          f"{_did_you_mean(value, choices)}")


def validate(cfg: RunConfig) -> None:
    """Checks that need no files: every name against its choices, every number against its range.

    Raises ConfigError with one line naming the key, the value and what is allowed; returns None
    when the configuration is valid. Paths (data, weights, pseudo-labels) are checked by the engine.
    """
    _one_of("variant", cfg.variant, tuple(VARIANTS))
    _one_of("source", cfg.source, ("gta5", "synthia"))
    _one_of("arch", cfg.arch, tuple(BACKBONES))
    _one_of("backbone", cfg.backbone, BACKBONES[cfg.arch], f" for arch {cfg.arch}")
    _one_of("schedule", cfg.schedule, ("auto", "poly", "step"))
    _one_of("optimizer", cfg.optimizer, ("sgd", "adam"))
    _one_of("precision", cfg.precision, ("auto",) + PRECISIONS)
    _one_of("compile", cfg.compile, ("off", "model", "step"))
    _one_of("reduction", cfg.reduction, ("mean", "sum"))
    _one_of("cos_impl", cfg.cos_impl, _COS_IMPLS)
    _one_of("dict_dtype", cfg.dict_dtype, ("float32", "float16", "bfloat16"))
    _one_of("norm", cfg.norm, ("frozen_bn", "group"))
    _one_of("eval_split", cfg.eval_split, EVAL_SPLITS)
    if cfg.backbone == "efficientnet_lite0" and cfg.norm != "frozen_bn":
        raise ConfigError(f"norm {cfg.norm!r} is not supported by backbone efficientnet_lite0; choose frozen_bn "
                          "(its ImageNet BatchNorm statistics are frozen, section 4.1)")
    if not (cfg.device in ("auto", "cpu", "cuda", "mps")
            or (cfg.device.startswith("cuda:") and cfg.device[5:].isdigit())):
        raise ConfigError(f"device {cfg.device!r} unknown; choose auto, cpu, cuda, cuda:N or mps"
                          f"{_did_you_mean(cfg.device, ('auto', 'cpu', 'cuda', 'mps'))}")
    # A float that is inf or NaN passes no range below: `not x > 0` is True for NaN.
    for name in ("lr", "d_lr", "lambda_cos", "lambda_adv", "weight_decay", "momentum", "poly_power",
                 "step_gamma", "t_cos"):
        if not math.isfinite(getattr(cfg, name)):
            raise ConfigError(f"{name} must be a finite number, got {getattr(cfg, name)}")
    for name in ("iterations", "eval_every", "checkpoint_every", "keep_checkpoints", "log_every", "dict_size",
                 "num_classes", "poly_power", "step_size", "align_per_class"):
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"{name} must be positive, got {getattr(cfg, name)}")
    # lr 0 is allowed: a run that only evaluates its (warm-start) weights (tests/test_engine_logs.py)
    for name in ("lr", "d_lr", "lambda_cos", "lambda_adv", "weight_decay", "momentum", "step_gamma", "seed",
                 "num_workers", "eval_max_items", "schedule_iterations", "align_items"):
        if not getattr(cfg, name) >= 0:
            raise ConfigError(f"{name} must be 0 or more, got {getattr(cfg, name)}")
    if not cfg.momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), got {cfg.momentum}")
    if not cfg.step_gamma <= 1:  # the step schedule decays: lr x step_gamma every step_size iterations
        raise ConfigError(f"step_gamma must be in [0, 1], got {cfg.step_gamma}")
    if not cfg.seed < 2 ** 32:  # NumPy's seeds
        raise ConfigError(f"seed must be in [0, 2**32), got {cfg.seed}")
    if not cfg.num_classes <= 255:  # labels are uint8 and 255 is the ignore index
        raise ConfigError(f"num_classes must be in [1, 255], got {cfg.num_classes}")
    for name in ("adam_betas", "d_betas"):
        betas = getattr(cfg, name)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"{name} must be two values in [0, 1) (Adam's beta1, beta2), got {betas}")
    strides = _OUTPUT_STRIDES.get(cfg.backbone, (8, 16))
    if cfg.arch == "deeplabv2" and cfg.output_stride not in strides:
        raise ConfigError(f"output_stride must be {' or '.join(map(str, strides))} for backbone {cfg.backbone}, "
                          f"got {cfg.output_stride}")
    for name in ("source_size", "target_size", "eval_size"):
        size = getattr(cfg, name)
        if len(size) != 2 or min(size) <= 0:
            raise ConfigError(f"{name} must be (W, H) with positive values, got {size}")
    if VARIANTS[cfg.variant].adversarial:
        small = [n for n in ("source_size", "target_size") if min(getattr(cfg, n)) < 32]
        if small:
            raise ConfigError(f"{', '.join(small)} below 32 px: the discriminator's five stride-2 4x4 "
                              "convolutions (supplementary C) need at least 32 pixels per side")
    if not -1.0 <= cfg.t_cos <= 1.0:
        raise ConfigError(f"t_cos is a cosine similarity threshold in [-1, 1], got {cfg.t_cos}")


def run_overrides(preset: str, iterations: int, eval_every: int = 0, seed: int = 0, data_root: str = "",
                  eval_max_items: int = 0, keep_checkpoints: int = 1, **extra: Any) -> dict[str, Any]:
    """The overrides a notebook passes to `cosuda.runs.ensure_trained` for one run of `preset`.

    eval_every 0 means iterations // 4 (four points on the curve); checkpoints every
    min(iterations, the preset's interval), so a short run writes one at its end; `data_root`
    empty keeps the preset's data, otherwise it is resolved with `resolve_path`. `extra` are
    further RunConfig fields (t_cos=0.5, pseudo_root=..., weights=...); an empty string or
    None among them means "the preset's value" and is left out. Unknown keys raise ConfigError.
    """
    if iterations <= 0:
        raise ConfigError(f"iterations must be positive, got {iterations}")
    overrides: dict[str, Any] = {
        "iterations": int(iterations), "eval_every": int(eval_every) or max(1, int(iterations) // 4),
        "checkpoint_every": min(int(iterations), make_config(preset).checkpoint_every),
        "keep_checkpoints": int(keep_checkpoints), "seed": int(seed), "eval_max_items": int(eval_max_items)}
    if data_root:
        overrides["data_root"] = str(resolve_path(data_root))
    for key, value in extra.items():
        parse_key(key)
        if value is not None and value != "":
            overrides[key] = value
    return overrides
