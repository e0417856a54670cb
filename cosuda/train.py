"""The training engine: one loop for every variant, evaluation, checkpoints, resume, and the CLI.

    python -m cosuda.train --list-presets
    python -m cosuda.train --preset synthetic-ours --out runs/ours [--set KEY=VALUE ...] [--resume [auto]]
    python -m cosuda.train --preset synthetic-ours --out runs/ours --resume --override iterations=2400
    python -m cosuda.train --pseudo-labels-from runs/source-only [--out DIR]

What a step does lives in `cosuda.uda`; this file sets up data, model, optimisers and the
schedule, and makes runs trustworthy: everything is checked before the first step, progress is
shown, target val (or dev: `eval_split`) is evaluated every `eval_every` iterations into
`metrics.json`, and the whole training state (`TrainingState`: model, optimisers, schedulers,
discriminator, dictionaries, iteration, RNG states, history) is written atomically every
`checkpoint_every` iterations, before every evaluation and when the run is interrupted (Ctrl-C,
SIGTERM), so `--resume` continues the same run (`--resume auto`: if there is a checkpoint, which
is what batch and requeued cluster jobs pass) with the configuration it was started with: a
`--set` that differs is refused, `--resume --override KEY=VALUE` changes it on purpose and is
recorded. One process writes a run folder (`cosuda.runfolder`: a lock, whole files, a full disk
or an unreadable image as one line). Read `train` -> `_train` (set-up and resume) -> `_loop`
(one iteration a pass).

Every run writes `config.json`: the resolved configuration, what its weights and pseudo-labels
came from (`inputs`) and the provenance of the run (`cosuda.provenance`: commit, versions, CPU,
threads, seconds). `python -m cosuda.train --config RUN_DIR/config.json --out DIR` trains that run
again. A trained run's model is loaded with `load_run_model`, and its pseudo-labels for the target
train set are written by `make_pseudo_labels` (`--pseudo-labels-from`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from . import distributed as dist
from . import runfolder
from .cli import prog
from .config import (PRESETS, SYNTHETIC_ROOT, ConfigError, RunConfig, config_from_dict, make_config,
                     parse_sets, resolve_path, validate)
from .labels import CLASS_NAMES, SYNTHIA13, SYNTHIA16
from .tensorboard_log import TensorBoardLog
from .runfolder import RunError

if TYPE_CHECKING:
    from .uda import UDAStep

CHECKPOINT_VERSION = 1
# Fields that shape the checkpoint's tensors: a resumed run cannot change them, even by --override.
_RESUME_KEYS = ("variant", "arch", "backbone", "norm", "num_classes", "source", "dict_size")
# Fields a resumed run may give other values without changing what is trained (display only).
_FREE_KEYS = ("progress",)


# --- data ----------------------------------------------------------------------------------
@dataclass
class Paths:
    source: Path
    target: Path
    pseudo: Path | None


def resolve_paths(cfg: RunConfig) -> Paths:
    """Find the data folders of a run, generating the synthetic benchmark if it is the default."""
    data_root = Path(cfg.data_root) if cfg.data_root else None
    if data_root is not None and data_root.resolve() == SYNTHETIC_ROOT.resolve():
        from .synthetic import generate, is_complete, predates_dev, recorded

        # Generate a missing or half-written default benchmark; keep a complete one, whatever
        # seed or sizes the user chose for it. One written before the dev split serves val runs
        # as it is (the same bytes); a dev run writes it again with its own seed and counts.
        if dist.is_main() and not is_complete(data_root):
            print(f"[cosuda] generating the synthetic benchmark under {data_root}", flush=True)
            generate(data_root, seed=0)
        elif dist.is_main() and cfg.eval_split == "dev" and predates_dev(data_root):
            print(f"[cosuda] the synthetic benchmark under {data_root} predates the dev split: "
                  "writing it again with one", flush=True)
            seed, config = recorded(data_root)
            generate(data_root, seed=seed, config=config)
        dist.barrier()
    if data_root is not None and not data_root.is_dir():
        raise ConfigError(f"data_root {data_root} does not exist; point --set data_root=... at the folder "
                          f"holding gta5/, synthia/ and cityscapes/ (or use --set source_root/target_root)")
    source = Path(cfg.source_root) if cfg.source_root else (data_root / cfg.source if data_root else None)
    target = Path(cfg.target_root) if cfg.target_root else (data_root / "cityscapes" if data_root else None)
    for name, path in (("source_root", source), ("target_root", target)):
        if path is None:
            raise ConfigError(f"{name} is not set: give --set data_root=... or --set {name}=...")
        if not path.is_dir():
            raise ConfigError(f"{name} {path} does not exist")
    pseudo = Path(cfg.pseudo_root) if cfg.pseudo_root else None
    return Paths(source, target, pseudo)


class _WithoutLabels(Dataset):
    """Target images for variants that must not see target labels (eq. 8 / 11 / adversarial)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[i])
        item.pop("label", None)
        return item


def build_datasets(cfg: RunConfig, paths: Paths):
    """(source train, target train, target eval split) for `cfg`: the last is `cfg.eval_split` of the
    target ("val" to report, "dev" to choose hyper-parameters on), at `eval_size` with labels at file
    resolution, its first `eval_max_items` if set. Raises naming any missing file or folder (real
    Cityscapes has no dev split: `Cityscapes` says so)."""
    from .data import GTA5, SYNTHIA, Cityscapes, DatasetError

    image_dir = cfg.source_image_dir or None
    source_cls = GTA5 if cfg.source == "gta5" else SYNTHIA
    source = source_cls(paths.source, size=tuple(cfg.source_size), image_dir=image_dir)
    if cfg.flags.uses_pseudo_labels:
        if paths.pseudo is None:
            raise ConfigError(f"variant {cfg.variant!r} trains on pseudo-labels: set --set pseudo_root=DIR "
                              "(make them with `python -m cosuda.train --pseudo-labels-from SOURCE_ONLY_RUN_DIR "
                              "--out DIR`)")
        try:
            target = Cityscapes(paths.target, "train", size=tuple(cfg.target_size), pseudo_root=paths.pseudo)
        except (DatasetError, FileNotFoundError) as e:
            raise ConfigError(f"pseudo-labels in {paths.pseudo} do not match the target train set ({e}); "
                              "make them with `python -m cosuda.train --pseudo-labels-from SOURCE_ONLY_RUN_DIR "
                              f"--out {paths.pseudo}`") from None
    else:
        target = Cityscapes(paths.target, "train", size=tuple(cfg.target_size))
        if not cfg.flags.target_labels:
            target = _WithoutLabels(target)
    evaluated = Cityscapes(paths.target, cfg.eval_split, size=tuple(cfg.eval_size), label_size="original")
    if cfg.eval_max_items:
        evaluated = torch.utils.data.Subset(evaluated, range(min(cfg.eval_max_items, len(evaluated))))
    return source, target, evaluated


class StepSampler(Sampler):
    """Infinite index stream where the index of step i depends only on (seed, salt, i).

    A resumed run restarts the stream at its iteration and sees exactly the images the
    uninterrupted run would have seen; each rank of a distributed run takes every
    world_size-th position, so the ranks together walk the same permutations.
    """

    def __init__(self, n: int, seed: int, salt: int, start_step: int = 0, rank: int = 0, world: int = 1):
        self.n, self.seed, self.salt, self.start, self.rank, self.world = n, seed, salt, start_step, rank, world

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.salt * 7919 + epoch)
        return torch.randperm(self.n, generator=g)

    def __len__(self) -> int:  # endless; DataLoader asks for a length anyway
        return sys.maxsize

    def __iter__(self) -> Iterator[int]:
        step, epoch, perm = self.start, -1, None
        while True:
            position = step * self.world + self.rank
            if position // self.n != epoch:
                epoch = position // self.n
                perm = self._permutation(epoch)
            yield int(perm[position % self.n])
            step += 1


def make_loader(dataset: Dataset, cfg: RunConfig, salt: int, start_step: int, device: torch.device) -> Iterator:
    sampler = StepSampler(len(dataset), cfg.seed, salt, start_step, dist.rank(), dist.world_size())
    loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.num_workers > 0,
                        prefetch_factor=4 if cfg.num_workers > 0 else None)
    return iter(loader)


def make_loaders(cfg: RunConfig, source: Dataset, target: Dataset, start_step: int,
                 device: torch.device) -> tuple[Iterator | None, Iterator | None]:
    """(source, target) batch streams from `start_step` on; None for a domain the variant's step
    never reads. Started here, not lazily: iter(DataLoader) draws from the global generator."""
    variant = cfg.flags
    return (make_loader(source, cfg, 1, start_step, device) if variant.needs_source else None,
            make_loader(target, cfg, 2, start_step, device) if variant.needs_target else None)


def _next_batches(loaders, device: torch.device, channels_last: bool) -> list[dict | None]:
    """The next (source, target) batches of `make_loaders`' streams on `device` (None: no stream)."""
    return [_to_device(next(it), device, channels_last) if it is not None else None for it in loaders]


def _to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


# --- device, precision, optimisers ---------------------------------------------------------
def resolve_device(cfg: RunConfig) -> torch.device:
    """The process's device: under torchrun each process's own GPU, cuda:LOCAL_RANK ("auto" or
    "cuda" without an index), else the CPU, or exactly the device the configuration names."""
    if cfg.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank())
        return torch.device("cpu")
    device = torch.device(cfg.device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", dist.local_rank())
    return device


def resolve_precision(cfg: RunConfig, device: torch.device) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    if device.type == "cuda" and dist.bf16_supported(device):
        return "bf16"
    return "fp32"


def grouped_loss_available(device: torch.device) -> bool:
    """Whether the grouped cosine loss (torch._grouped_mm in bf16), hence a captured step with a
    cosine term, can run on `device`: CPU, or a GPU of compute capability 9.0 or newer."""
    from .method import grouped_available

    return grouped_available(torch.empty(1, 16, dtype=torch.bfloat16, device=device))


def check_capture(cfg: RunConfig, device: torch.device, precision: str) -> None:
    """`compile="step"` needs a step without host synchronisation, hence the grouped cosine loss
    (torch._grouped_mm): bf16, and on a GPU its Hopper-or-newer kernel. Checked before training."""
    if cfg.compile != "step" or not cfg.flags.uses_cos:
        return
    if precision != "bf16" or cfg.cos_impl not in ("auto", "grouped") or not grouped_loss_available(device):
        where = (f"{torch.cuda.get_device_name(device)} (compute capability "
                 f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))})" if device.type == "cuda" else str(device))
        raise ConfigError(f"compile=step needs the grouped cosine loss: precision=bf16 (here {precision}), "
                          f"cos_impl auto or grouped (here {cfg.cos_impl}) and torch._grouped_mm for bf16 on "
                          f"{where} (GPUs: compute capability 9.0 or newer); use compile=model to capture the "
                          f"network only")


def autocast_factory(precision: str, device: torch.device):
    """Mixed precision by autocast: matmuls/convs in bf16/fp16, losses and sums in fp32."""
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return lambda: torch.autocast(device.type, dtype=dtype)
    return nullcontext


def build_optimizer(cfg: RunConfig, model) -> torch.optim.Optimizer:
    groups = model.param_groups(cfg.lr)
    if cfg.optimizer == "sgd":  # DeepLabV2: SGD, momentum 0.9, weight decay 5e-4 (section 4.1)
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay)


def build_scheduler(cfg: RunConfig, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    schedule = cfg.schedule if cfg.schedule != "auto" else ("poly" if cfg.optimizer == "sgd" else "step")
    if schedule == "poly":  # 'poly' policy, power 0.9, over the reference 250k horizon
        horizon = max(cfg.schedule_iterations or cfg.iterations, cfg.iterations)  # 0: this run's length
        rule = lambda it: (1 - min(it, horizon - 1) / horizon) ** cfg.poly_power
    else:  # FCN-8s: 'step' policy, x0.1 every 50k iterations
        rule = lambda it: cfg.step_gamma ** (it // cfg.step_size)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, rule)


# --- checkpoints ---------------------------------------------------------------------------
def _kill_point(point: str) -> None:
    """Test hook: `COSUDA_TEST_KILL_AT=POINT` makes the run SIGKILL itself at POINT, where POINT is
    "iter:N" (right after step N, before its evaluation and checkpoint) or "save:NAME" (inside
    `_atomic_save` of the file NAME, its temporary file written and not yet renamed). Lets
    tests/test_resume.py kill a run at exact moments; without the variable it does nothing."""
    if os.environ.get("COSUDA_TEST_KILL_AT") == point:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _atomic_save(obj: Any, path: Path) -> None:
    """`runfolder.write_atomically`: a kill leaves the old file or the new one, never half; a full
    disk or another write error is one RunError naming the file and the run's last good checkpoint."""
    path = Path(path)
    if isinstance(obj, (dict, list)) and path.suffix == ".json":
        text = json.dumps(obj, indent=2)
        needed, save = len(text.encode()), lambda tmp: tmp.write_text(text)
    else:
        needed, save = runfolder.payload_bytes(obj), lambda tmp: torch.save(obj, tmp)

    def write(tmp: Path) -> None:
        save(tmp)
        _kill_point(f"save:{path.name}")

    runfolder.write_atomically(path, write, needed, _last_good(path))


def _last_good(path: Path) -> Callable[[], Path | None] | None:
    """For a file of a run folder (RUN_DIR/NAME or RUN_DIR/checkpoints/NAME): what finds the run's
    newest checkpoint, which an error message names; None for files elsewhere (pseudo-labels)."""
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return (lambda: latest_checkpoint(run_dir)) if (run_dir / "checkpoints").is_dir() else None


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"iter_{iteration:07d}.pt"


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((Path(run_dir) / "checkpoints").glob("iter_*.pt"))
    return found[-1] if found else None


def _rng_state(device: torch.device | None = None) -> dict:
    """The generators a resumed run must continue: CPU, NumPy, Python, and on a GPU the
    generator of this process's own device only (never every visible GPU, which would create a
    context on each of them from every rank)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore `_rng_state`'s generators; the saved GPU generator goes to this process's device,
    whatever the number of processes that wrote or resume the checkpoint (like the CPU one,
    saved by rank 0 and restored on every rank)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is None or device is None or torch.device(device).type != "cuda":
        return
    device = torch.device(device)
    if isinstance(cuda, (list, tuple)):  # checkpoints of older versions: every GPU's generator
        if not cuda:
            return
        cuda = cuda[device.index] if device.index is not None and device.index < len(cuda) else cuda[0]
    torch.cuda.set_rng_state(cuda, device)


def read_checkpoint(path: Path) -> dict:
    """A checkpoint file as a dict; a one-line ConfigError for a truncated or foreign file.
    (weights_only=False: a training checkpoint also holds RNG and optimiser state.)"""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConfigError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ConfigError(f"{path} is not a cosuda training checkpoint")
    return state


def resume_point(cfg: RunConfig, run_dir: str | Path, overrides: dict[str, Any] | None = None,
                 given: Any = None, preset: str | None = None) -> tuple[RunConfig, Path, dict]:
    """(configuration, checkpoint path, checkpoint) that `--resume` continues: the run as it was
    started, never as the preset or `cfg` would make it now.

    The configuration is the newest checkpoint's own. `cfg` is what the caller asks for: its
    fields named in `given` (the command line's --set and the preset's variant; None: every
    field, as `train(cfg, resume=True)` from Python) must agree with the run, else one
    ConfigError names each field with both values; `progress` may differ. `overrides`
    ({key: value}, `--resume --override KEY=VALUE`) change the run on purpose (a field they name is
    not compared: the override says what it becomes): each is recorded
    in the checkpoint and config.json ("changes": iteration, key, from, to); the fields that shape
    the checkpoint's tensors (`_RESUME_KEYS`) cannot change. `preset`, when the run recorded its
    own in config.json, must be that one.
    """
    run_dir, overrides = Path(run_dir), dict(overrides or {})
    path = latest_checkpoint(run_dir)
    if path is None:
        raise ConfigError(f"--resume: no checkpoint under {run_dir / 'checkpoints'}")
    state = read_checkpoint(path)
    if state.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(f"{path} is not a cosuda training checkpoint (version {CHECKPOINT_VERSION})")
    recorded = _recorded_preset(run_dir)
    if preset and recorded and preset != recorded:
        raise ConfigError(f"--resume: {run_dir} was started with --preset {recorded}, not {preset} "
                          f"(checkpoint {path}); choose another --out for a run of {preset}")
    started = config_from_dict(state["config"])
    fixed = [k for k in overrides if k in _RESUME_KEYS]
    if fixed:
        raise ConfigError(f"--override {fixed[0]}: {', '.join(_RESUME_KEYS)} shape the checkpoint's tensors and "
                          f"cannot change in a resumed run; start a new run (another --out) instead")
    if overrides.get("eval_split", started.eval_split) != started.eval_split:
        # one run, one split: its history and best.pt would otherwise mix val and dev
        raise ConfigError(f"--override eval_split: {run_dir} evaluates on the target {started.eval_split} split "
                          f"(its history and best.pt); start a new run (another --out), or evaluate its checkpoints "
                          f"on another split with python -m cosuda.evaluate {run_dir} --split SPLIT")
    run = dataclasses.replace(started, **overrides)
    validate(run)
    if run.iterations < state["iteration"]:
        raise ConfigError(f"--override iterations={run.iterations}: {path} is already at iteration "
                          f"{state['iteration']}")
    keys = [f.name for f in dataclasses.fields(RunConfig)] if given is None else list(given)
    diff = [k for k in keys if k not in _FREE_KEYS and k not in overrides  # an override says what k becomes
            and _plain(getattr(cfg, k)) != _plain(getattr(run, k))]
    if diff:
        values = ", ".join(f"{k} {_plain(getattr(run, k))} (run) vs {_plain(getattr(cfg, k))} (given)" for k in diff)
        raise ConfigError(f"--resume continues {run_dir} as it was started (checkpoint {path}), but {values}: "
                          f"leave them out, or change them on purpose with --resume --override KEY=VALUE")
    changes = [{"iteration": state["iteration"], "key": k, "from": _plain(getattr(started, k)),
                "to": _plain(getattr(run, k))} for k in overrides if getattr(started, k) != getattr(run, k)]
    state["changes"] = list(state.get("changes", [])) + changes
    run = dataclasses.replace(run, **{k: getattr(cfg, k) for k in _FREE_KEYS})
    if changes and dist.is_main():
        said = ", ".join(f"{c['key']} {c['from']} -> {c['to']}" for c in changes)
        print(f"[cosuda] --override at iteration {state['iteration']}: {said} (recorded in config.json)", flush=True)
    return run, path, state


def _plain(value: Any) -> Any:
    """A config value as JSON writes it (tuples as lists), for comparing and printing."""
    return list(value) if isinstance(value, tuple) else value


def _recorded_preset(run_dir: Path) -> str | None:
    """The preset a run folder's config.json says it was started with (None if it says none)."""
    try:
        return json.loads((Path(run_dir) / "config.json").read_text()).get("preset")
    except (OSError, ValueError, AttributeError):
        return None


def resolve_weights(weights: str):
    """`weights` of a config as `build_model` takes it: "random", "imagenet" and weights files as
    they are; a run directory means the model of that run's newest checkpoint (a warm start from
    a trained model, e.g. the source-only run), returned as its state_dict."""
    if weights in ("random", "imagenet") or not Path(weights).is_dir():
        return weights
    path = latest_checkpoint(Path(weights))
    if path is None:
        raise ConfigError(f"weights={weights} is a folder without checkpoints/iter_*.pt: train that run first")
    return read_checkpoint(path)["model"]


def build_network(cfg: RunConfig, weights=None) -> torch.nn.Module:
    """The network G of a run (arch, backbone, classes, normalisation layers), with `weights`
    (default: the config's own, resolved by `resolve_weights`)."""
    from .models import build_model

    kw = {"norm": cfg.norm, "output_stride": cfg.output_stride} if cfg.arch == "deeplabv2" else {}
    return build_model(cfg.arch, backbone=cfg.backbone, num_classes=cfg.num_classes,
                       weights=resolve_weights(cfg.weights) if weights is None else weights, **kw)


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str | Path | None = None):
    """(model in eval mode, cfg) of a run, with the weights of its newest checkpoint (or `checkpoint`)."""
    run_dir = Path(run_dir)
    path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if path is None or not path.is_file():
        raise ConfigError(f"no checkpoint in {run_dir / 'checkpoints'}: train the run first")
    state = read_checkpoint(path)
    cfg = config_from_dict(state["config"])
    model = build_network(cfg, weights="random")
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def make_pseudo_labels(run_dir: str | Path, out: str | Path | None = None, device: str = "auto",
                       progress: bool = True) -> Path:
    """Pseudo-labels (supplementary A) for the target train set from a trained run's model, into
    `out` (default: the run's pseudo_root, else RUN_DIR/pseudo_labels). Beside them: thresholds.json,
    quality.json (coverage and accuracy against the target labels, which training never reads) and
    provenance.json (which model made them: its config, checkpoint and the provenance record)."""
    from .data import Cityscapes
    from .provenance import record
    from .pseudo import generate_pseudo_labels, score_pseudo_labels

    start = time.perf_counter()
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
    if dist.is_main():
        quality = score_pseudo_labels(out, Cityscapes(paths.target, "train", size=tuple(cfg.target_size)),
                                      cfg.num_classes)
        quality["model"] = str(run_dir)
        (out / "quality.json").write_text(json.dumps(quality, indent=2))
        _atomic_save({"model": run_input(Path(run_dir)), "quality": quality,
                      "provenance": record(time.perf_counter() - start, str(dev))}, out / "provenance.json")
        print(f"pseudo-labels cover {quality['coverage']:.1f}% of the labelled target pixels, "
              f"{quality['accuracy']:.1f}% of them right (mIoU19 {quality['miou19']:.1f})", flush=True)
    return out


# --- what a run was made from: config.json's "inputs" -----------------------------------------
RECORDED_KEYS = ("preset", "variant", "seed", "iterations", "weights", "pseudo_root", "t_cos", "dict_size",
                 "lambda_cos")


def run_input(run_dir: Path) -> dict:
    """A trained run as an input of another (its weights, or the model of its pseudo-labels):
    its folder, newest checkpoint, the settings that say what it is, its own inputs and commit."""
    out: dict[str, Any] = {"path": str(run_dir)}
    ckpt = latest_checkpoint(run_dir)
    out["checkpoint"] = ckpt.name if ckpt else None
    saved = run_dir / "config.json"
    if saved.is_file():
        config = json.loads(saved.read_text())
        out.update({k: config.get(k) for k in RECORDED_KEYS})
        out["inputs"] = config.get("inputs")
        out["commit"] = (config.get("provenance") or {}).get("commit")
    return out


def run_inputs(cfg: RunConfig) -> dict:
    """What the run's weights and pseudo-labels are: a run folder's record (`run_input`), the
    pseudo-label folder's provenance.json, or the plain setting ("imagenet", a file)."""
    inputs: dict[str, Any] = {"weights": cfg.weights}
    if cfg.weights not in ("random", "imagenet") and Path(cfg.weights).is_dir():
        inputs["weights"] = run_input(Path(cfg.weights))
    if cfg.pseudo_root:
        made = Path(cfg.pseudo_root) / "provenance.json"
        inputs["pseudo_labels"] = {"path": cfg.pseudo_root,
                                   **(json.loads(made.read_text()) if made.is_file() else {"model": None})}
    return inputs


# --- the training state ----------------------------------------------------------------------
@dataclass
class TrainingState:
    """Everything a resumed run continues from; `state_dict()` is one checkpoint file.

    The network and its optimiser and schedule, the discriminator of supplementary C with its
    own, the fp16 loss scaler, the step (its feature dictionaries), the RNG states, the
    evaluation history, the iteration, the loss sums since the last evaluation and the seconds
    trained so far. The file's keys are those every CHECKPOINT_VERSION 1 checkpoint holds, and
    "changes" in a run that `--resume --override` changed (see `resume_point`).
    """

    cfg: RunConfig                       # as given; the optimisers hold the lr scale_lr scaled
    model: torch.nn.Module               # the network itself; `step.model` may wrap it (compile, DDP)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: UDAStep                        # one optimisation step; holds the feature dictionaries
    device: torch.device
    discriminator: torch.nn.Module | None = None
    d_optimizer: torch.optim.Optimizer | None = None
    d_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler | None = None
    iteration: int = 0
    history: list[dict] = field(default_factory=list)   # one row per evaluation (metrics.json)
    loss_sums: dict[str, float] = field(default_factory=dict)  # since the last evaluation
    loss_steps: int = 0
    started: float = field(default_factory=time.perf_counter)  # perf_counter() at the run's second 0
    changes: list[dict] = field(default_factory=list)  # --resume --override: iteration, key, from, to

    @property
    def seconds(self) -> float:
        """Seconds since the run started, counting the processes that trained it before a resume."""
        return time.perf_counter() - self.started

    def train_step(self, source: dict | None, target: dict | None) -> dict[str, float]:
        """One iteration: the step (forward, losses, backward, optimisers), its loss terms added
        to the means of the next evaluation, the schedules advanced. Returns the logged losses."""
        logs = self.step(source, target)
        for k, v in logs.items():
            self.loss_sums[k] = self.loss_sums.get(k, 0.0) + v
        self.loss_steps += 1
        self.scheduler.step()
        if self.d_scheduler is not None:
            self.d_scheduler.step()
        self.iteration += 1
        return logs

    def mean_losses(self) -> dict[str, float]:
        return {k: round(v / max(self.loss_steps, 1), 5) for k, v in self.loss_sums.items()}

    def state_dict(self) -> dict[str, Any]:
        state = {
            "version": CHECKPOINT_VERSION, "iteration": self.iteration, "config": self.cfg.to_dict(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "uda": self.step.state_dict(), "rng": _rng_state(self.device),
            "history": self.history, "world_size": dist.world_size(),
            "loss_sums": self.loss_sums, "loss_steps": self.loss_steps, "elapsed": self.seconds,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }
        if self.discriminator is not None:
            state.update(discriminator=self.discriminator.state_dict(), d_optimizer=self.d_optimizer.state_dict(),
                         d_scheduler=self.d_scheduler.state_dict())
        if self.changes:
            state["changes"] = self.changes
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`, the random generators included: call it last in a resumed
        run's set-up, so that the next step sees them exactly as the saved run's next step did."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.d_optimizer.load_state_dict(state["d_optimizer"])
            self.d_scheduler.load_state_dict(state["d_scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step.load_state_dict(state["uda"])
        self.iteration, self.history = state["iteration"], state["history"]
        self.loss_sums, self.loss_steps = state.get("loss_sums", {}), state.get("loss_steps", 0)
        self.started = time.perf_counter() - state.get("elapsed", 0.0)
        self.changes = list(state.get("changes", []))
        _set_rng_state(state["rng"], self.device)

    def best_state_dict(self, miou19: float) -> dict[str, Any]:
        """best.pt: the weights behind the "best" row of the tables, kept beside the pruned checkpoints."""
        return {"version": CHECKPOINT_VERSION, "iteration": self.iteration, "config": self.cfg.to_dict(),
                "model": self.model.state_dict(), "miou19": miou19}


def build_state(cfg: RunConfig, device: torch.device, precision: str) -> TrainingState:
    """A run's state at iteration 0. Seeded first, so that random initialisation is part of the
    seeded run; the order below is the order random numbers are drawn in (keep it)."""
    from .uda import UDAStep

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model = build_network(cfg).to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    with torch.no_grad():  # feature widths for the dictionaries, from one tiny forward
        feature_dims = [f.shape[1] for f in model(torch.zeros(1, 3, 64, 64, device=device))[0]]
    net = _wrap_network(cfg, model, device)
    scaled = cfg  # the configuration itself stays as given: a resume compares it with the checkpoint's
    if cfg.scale_lr and dist.world_size() > 1:  # linear scaling rule for N images per step
        scaled = dataclasses.replace(cfg, lr=cfg.lr * dist.world_size(), d_lr=cfg.d_lr * dist.world_size())
    optimizer = build_optimizer(scaled, model)
    scheduler = build_scheduler(cfg, optimizer)
    discriminator = d_optimizer = d_scheduler = None
    if cfg.flags.adversarial:
        from .adversarial import Discriminator

        discriminator = Discriminator(cfg.num_classes).to(device)  # gradients averaged by UDAStep
        d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=scaled.d_lr, betas=tuple(cfg.d_betas))
        d_scheduler = build_scheduler(cfg, d_optimizer)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    step = UDAStep(net, optimizer, cfg.flags, num_classes=cfg.num_classes, t_cos=cfg.t_cos,
                   lambda_cos=cfg.lambda_cos, dict_size=cfg.dict_size, feature_dims=feature_dims,
                   reduction=cfg.reduction, cos_impl=cfg.cos_impl, dict_dtype=cfg.dict_dtype,
                   discriminator=discriminator, d_optimizer=d_optimizer, lambda_adv=cfg.lambda_adv,
                   autocast=autocast_factory(precision, device), scaler=scaler, device=device,
                   compile="step" if cfg.compile == "step" else "off")
    return TrainingState(cfg, model, optimizer, scheduler, step, device, discriminator, d_optimizer,
                         d_scheduler, scaler)


def _wrap_network(cfg: RunConfig, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """What the step calls: the network, compiled alone (`compile="model"`: static shapes at batch
    1 and fixed sizes; `compile="step"` captures the whole step in UDAStep instead) and wrapped in
    DDP under torchrun."""
    net = model
    if cfg.compile == "model":
        net = torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None)
    if dist.is_distributed():
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    net.upsample = model.upsample  # the step calls model.upsample on whatever it holds
    return net


# --- evaluation ----------------------------------------------------------------------------
def _json_float(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def evaluate_run(model, val: Dataset, device: torch.device, autocast, progress: bool, num_workers: int = 0,
                 probe: dict | None = None) -> dict:
    """Target-val mIoU with the field's protocol, sharded over ranks and summed. Readers in
    `num_workers` processes: at 2048x1024 labels one process cannot feed a GPU.

    `probe` ({"images", "labels", "items", "per_class"}, see `alignment_probe`) adds the
    alignment measures of cosuda/alignment.py on the first `items` val images."""
    from .alignment import AlignmentMeter, probe_dictionary
    from .metrics import evaluate, mean_iou, per_class_iou

    shard_ids = range(dist.rank(), len(val), dist.world_size())
    shard = val if dist.world_size() == 1 else torch.utils.data.Subset(val, shard_ids)
    meter, on_batch = None, None
    with autocast():
        if probe is not None:
            model.eval()
            meter = AlignmentMeter(probe_dictionary(model, probe["images"], probe["labels"], probe["per_class"]))
            measured = set(range(min(probe["items"], len(val))))
            on_batch = lambda i, features, labels: (meter.update(features[0], labels)
                                                    if shard_ids[i] in measured else None)
        result = evaluate(model, shard, device=device, progress=progress and dist.is_main(),
                          num_workers=num_workers, on_batch=on_batch)
    conf = torch.as_tensor(result["confusion"], dtype=torch.int64, device=device)
    conf = dist.all_reduce_sum(conf).cpu().numpy()
    iou = per_class_iou(conf) * 100
    out = {"confusion": conf, "per_class_iou": iou, "miou19": float(mean_iou(conf) * 100),
           "miou16": float(mean_iou(conf, SYNTHIA16) * 100), "miou13": float(mean_iou(conf, SYNTHIA13) * 100)}
    if meter is not None:
        sums = torch.tensor([meter.pixels, meter.nn_correct, meter.same_sum, meter.same_n, meter.other_sum,
                             meter.other_n], dtype=torch.float64, device=device)
        (meter.pixels, meter.nn_correct, meter.same_sum, meter.same_n, meter.other_sum,
         meter.other_n) = dist.all_reduce_sum(sums).tolist()
        out["alignment"] = {k: _json_float(v) for k, v in meter.compute().items()}
    return out


def alignment_probe(cfg: RunConfig, source: Dataset, device: torch.device) -> dict | None:
    """The fixed source images of the probe dictionary (the first `align_items`), or None if off."""
    if not cfg.align_items:
        return None
    items = [source[i] for i in range(min(cfg.align_items, len(source)))]
    return {"images": torch.stack([it["image"] for it in items]).to(device),
            "labels": torch.stack([it["label"] for it in items]).to(device),
            "items": cfg.align_items, "per_class": cfg.align_per_class}


# --- logs: metrics.json, scalars.jsonl ----------------------------------------------------
def _append_scalars(path: Path, iteration: int, seconds: float, optimizer, logs: dict, its: float | None) -> dict:
    """One JSON line per logged step: what a plotting tool (or `tail -f`) follows during a run.
    Returns the row (TensorBoard logs the same one)."""
    lrs = {f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)}
    row = {"iteration": iteration, "time": round(seconds, 3), "lr": optimizer.param_groups[0]["lr"], **lrs,
           **{k: round(v, 6) for k, v in logs.items()}, "it_per_s": its}
    runfolder.append_line(path, json.dumps(row), _last_good(path))
    return row


def _truncate_scalars(path: Path, iteration: int) -> None:
    """Keep the rows up to `iteration` (a resumed run logs the later ones again), and drop a line
    cut short by a kill in the middle of its append."""
    if not path.is_file():
        return
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("iteration"), int) and row["iteration"] <= iteration:
            rows.append(line)
    text = "".join(r + "\n" for r in rows)  # a kill while it is written leaves the old rows or the kept ones
    runfolder.write_atomically(path, lambda tmp: tmp.write_text(text), len(text.encode()), _last_good(path))


# --- the run -------------------------------------------------------------------------------
class _StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current step and write a checkpoint.

    A second Ctrl-C interrupts at once (at most the work since the last checkpoint is lost).
    """

    def __init__(self):
        self.requested, self._old = False, {}

    def __enter__(self):
        if torch.multiprocessing.current_process().name != "MainProcess" or \
                not hasattr(signal, "SIGTERM"):
            return self
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._old = {}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\n[cosuda] stopping after this step and writing a checkpoint "
              "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


@dataclass
class Prepared:
    """What `prepare` checked: the run folder, (source train, target train, target eval split) and the
    checkpoint to resume from (None for a new run) with its path."""

    run_dir: Path
    datasets: tuple[Dataset, Dataset, Dataset]
    checkpoint: dict | None
    checkpoint_path: Path | None = None


def prepare(cfg: RunConfig, run_dir: str | Path, checkpoint: dict | None = None,
            checkpoint_path: Path | None = None) -> Prepared:
    """Every check that can fail before training, with no side effect on `run_dir`. `checkpoint`:
    the one a resumed run continues (`resume_point`); None: a new run, whose folder must hold none."""
    run_dir = Path(run_dir)
    from .data import DatasetError

    if cfg.weights not in ("random", "imagenet") and not Path(cfg.weights).exists():
        raise ConfigError(f"weights={cfg.weights}: no such file or run folder. A run that starts from another "
                          "run needs that one first: train it (its own config.json, or the grid command that "
                          "planned both), or pass weights=imagenet")

    try:
        datasets = build_datasets(cfg, resolve_paths(cfg))
    except (DatasetError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from None
    if checkpoint is None and latest_checkpoint(run_dir) is not None:
        raise ConfigError(f"{run_dir} already holds checkpoints: pass --resume to continue that run, "
                          "or choose another --out")
    return Prepared(run_dir, datasets, checkpoint, checkpoint_path)


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, preset: str | None = None,
          overrides: dict[str, Any] | None = None, given: Any = None) -> dict:
    """Train `cfg` into `run_dir`; returns the final metrics (also in run_dir/metrics.json).

    `resume`: continue the run in `run_dir` from its newest checkpoint, with the configuration it
    was started with (`resume_point`: `cfg`'s fields named in `given`, all if None, must agree
    with it; `overrides` change it on purpose and are recorded). The run folder is locked
    (`runfolder.locked`, by rank 0 under torchrun) from the first write to the end.
    """
    checkpoint = path = None
    if resume:
        cfg, path, checkpoint = resume_point(cfg, run_dir, overrides, given, preset)
    elif overrides:
        raise ConfigError("--override changes a run being resumed: give it with --resume (a new run takes --set)")
    device = resolve_device(cfg)
    created_group = dist.init_from_env(device)  # under torchrun: this process's GPU, then the group
    try:
        return _train_in_group(cfg, run_dir, checkpoint, path, preset, device)
    finally:
        if created_group:  # a run that joined the group leaves it (NCCL's resources, the store)
            dist.destroy()


def _train_in_group(cfg: RunConfig, run_dir, checkpoint: dict | None, checkpoint_path: Path | None, preset,
                    device: torch.device) -> dict:
    precision = resolve_precision(cfg, device)
    check_capture(cfg, device, precision)
    setup = prepare(cfg, run_dir, checkpoint, checkpoint_path)
    if precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    elif device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        # Only rank 0 writes the run folder, so only it locks; after the checks, which write nothing
        with runfolder.locked(setup.run_dir) if dist.is_main() else nullcontext():
            if dist.is_main() and latest_checkpoint(setup.run_dir) != checkpoint_path:
                raise ConfigError(f"{setup.run_dir} changed while this run started (its newest checkpoint is now "
                                  f"{latest_checkpoint(setup.run_dir)}): start again")
            return _train(cfg, preset, device, setup, precision)
    finally:  # a notebook kernel keeps its own setting after the run
        torch.use_deterministic_algorithms(was_deterministic)


@dataclass
class _Run:
    """One process's side of a run, beside its TrainingState: where it writes, what it evaluates
    on, how fast it goes. None of it is checkpointed; a resumed process builds it afresh."""

    run_dir: Path
    name: str                            # the preset (or variant) in progress lines
    preset: str | None
    precision: str
    autocast: Callable
    val: Dataset                         # the target split evaluated: cfg.eval_split (val or dev)
    probe: dict | None                   # the alignment probe (see `alignment_probe`)
    start: int                           # the iteration this process started at
    bar: Any = None
    tensorboard: TensorBoardLog | None = None  # cfg.tensorboard, rank 0: RUN_DIR/tensorboard/ events
    train_seconds: float = 0.0
    timed_steps: int = 0
    stats: dict = field(default_factory=lambda: {"iterations_per_second": None, "method_share": None,
                                                 "last_losses": {}})


def _train(cfg: RunConfig, preset, device: torch.device, setup: Prepared, precision: str) -> dict:
    """Set up the run (a new one, or the checkpoint's), then train it to `cfg.iterations`."""
    state = build_state(cfg, device, precision)
    start = setup.checkpoint["iteration"] if setup.checkpoint is not None else 0
    if dist.is_main():
        changes = setup.checkpoint.get("changes", []) if setup.checkpoint is not None else []
        _open_run_dir(setup.run_dir, state.cfg, preset, start, device, changes)
    source_ds, target_ds, val_ds = setup.datasets
    run = _Run(setup.run_dir, preset or cfg.variant, preset, precision, autocast_factory(precision, device),
               val_ds, alignment_probe(cfg, source_ds, device), start)
    if cfg.tensorboard and dist.is_main():
        run.tensorboard = TensorBoardLog(setup.run_dir, resume_from=start if setup.checkpoint is not None else None)
    loaders = make_loaders(cfg, source_ds, target_ds, start, device)
    if setup.checkpoint is not None:
        # Last: the set-up above (iter(DataLoader) draws its base seed from the global generator)
        # consumed the same random numbers in the uninterrupted run before its first step, so
        # the resumed run's next step must see the generators exactly as they were saved.
        state.load_state_dict(setup.checkpoint)
        if dist.is_main():
            print(f"[cosuda] resuming {setup.run_dir} at iteration {start}", flush=True)
    state.step.model.train()
    if cfg.progress and dist.is_main():
        from .progress import tqdm

        run.bar = tqdm(total=cfg.iterations, initial=start, desc=run.name, unit="it", dynamic_ncols=True)
    try:
        metrics = _loop(state, run, loaders)
    finally:
        if run.bar is not None:
            run.bar.close()
        if run.tensorboard is not None:
            run.tensorboard.close()
    dist.barrier()
    return metrics


def _open_run_dir(run_dir: Path, cfg: RunConfig, preset: str | None, start: int, device: torch.device,
                  changes: list[dict]) -> None:
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    # A resumed run writes the checkpoint's configuration back: only an --override changes it
    _atomic_save(config_record(cfg, preset, device=device, changes=changes), run_dir / "config.json")
    _truncate_scalars(run_dir / "scalars.jsonl", start)  # a resumed run rewrites what followed


def config_record(cfg: RunConfig, preset: str | None, seconds: float | None = None,
                  device: torch.device | None = None, changes: list[dict] | None = None) -> dict:
    """config.json: the resolved configuration, the preset it came from, its `inputs` and the
    provenance record (`seconds` once the run has ended: its training time, resumes included);
    "changes": what `--resume --override` changed, at which iteration (a run that had none has none)."""
    from .provenance import record

    out = {**cfg.to_dict(), "preset": preset, "inputs": run_inputs(cfg),
           "provenance": record(seconds, None if device is None else str(device))}
    if changes:
        out["changes"] = changes
    return out


def _loop(state: TrainingState, run: _Run, loaders) -> dict:
    """Iterations up to `cfg.iterations`: a step, its logs, evaluation and checkpoint when due.
    SIGINT/SIGTERM stop it after the current step, with a checkpoint.

    Every evaluation comes after a checkpoint of its iteration, and the checkpoint is written
    again once the evaluation is in the history: a failed evaluation (an unreadable val image:
    one RunError naming it) loses no training, and a checkpoint whose own evaluation is missing
    was written before one that failed or was cut short, so a resumed run repeats that evaluation
    first (after the file is fixed). An unreadable training image stops the run with a checkpoint
    of the iterations done and one RunError naming the file and the iteration.
    """
    from .data import DatasetError

    cfg = state.cfg
    metrics = _write_metrics(state, run, state.iteration >= cfg.iterations) if state.history else None
    if state.iteration > 0 and _due(state, cfg.eval_every) and not _evaluated(state):
        metrics = _evaluate(state, run)
        _save_checkpoint(state, run.run_dir)
    with _StopFlag() as stop:
        while state.iteration < cfg.iterations:
            t0 = time.perf_counter()
            try:
                batches = _next_batches(loaders, state.device, cfg.channels_last)
            except DatasetError as e:
                _save_checkpoint(state, run.run_dir)
                raise RunError(f"unreadable training image at iteration {state.iteration + 1}: {_reason(e)}; "
                               f"the {state.iteration} iterations before it are in "
                               f"{checkpoint_path(run.run_dir, state.iteration)}: fix or replace the file, "
                               "then resume with --resume") from None
            logs = state.train_step(*batches)
            _kill_point(f"iter:{state.iteration}")
            _log_step(state, run, logs, time.perf_counter() - t0)
            if not all(math.isfinite(v) for v in logs.values()):
                _save_checkpoint(state, run.run_dir)
                raise FloatingPointError(f"non-finite loss at iteration {state.iteration}: {logs}; checkpoint "
                                         f"written to {checkpoint_path(run.run_dir, state.iteration)}")
            if _due(state, cfg.eval_every):
                _save_checkpoint(state, run.run_dir)  # first: an evaluation that fails loses no training
                metrics = _evaluate(state, run)
                _save_checkpoint(state, run.run_dir)  # again, with the evaluation: a resume does not repeat it
            elif _due(state, cfg.checkpoint_every) or stop.requested:
                _save_checkpoint(state, run.run_dir)
            if stop.requested:
                raise KeyboardInterrupt(f"stopped at iteration {state.iteration}; resume with --resume")
    return metrics if metrics is not None else _write_metrics(state, run, True)


def _evaluated(state: TrainingState) -> bool:
    """Whether the history holds the evaluation of the state's own iteration."""
    return bool(state.history) and state.history[-1]["iteration"] == state.iteration


def _reason(e: Exception) -> str:
    """The one-line message of a data error, also one re-raised from a DataLoader worker (whose
    message is the worker's traceback, ending with the original "module.Error: message")."""
    text = str(e).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text.splitlines()[0] if text else type(e).__name__


def _due(state: TrainingState, every: int) -> bool:
    """Whether this iteration is one of every `every`-th, or the last."""
    return state.iteration % every == 0 or state.iteration == state.cfg.iterations


def _log_step(state: TrainingState, run: _Run, logs: dict[str, float], seconds: float) -> None:
    """The step's speed and losses: metrics.json's "train", scalars.jsonl, the progress bar."""
    cfg = state.cfg
    if cfg.compile == "off" or state.iteration > run.start + 1:  # a compiled run's first step compiles
        run.train_seconds += seconds
        run.timed_steps += 1
    timed = run.timed_steps > 0
    run.stats = {"iterations_per_second": round(run.timed_steps / run.train_seconds, 3) if timed else None,
                 # timed in the eager step only (a captured step holds no timer)
                 "method_share": (round(state.step.method_seconds / run.train_seconds, 4)
                                  if timed and cfg.compile != "step" else None),
                 "last_losses": {k: round(v, 5) for k, v in logs.items()}}
    if _due(state, cfg.log_every):
        if dist.is_main():
            row = _append_scalars(run.run_dir / "scalars.jsonl", state.iteration, state.seconds, state.optimizer,
                                  logs, run.stats["iterations_per_second"])
            if run.tensorboard is not None:
                run.tensorboard.log_scalars(row)
        if run.bar is not None:
            run.bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()}, refresh=False)
    if run.bar is not None:
        run.bar.update(1)


def _evaluate(state: TrainingState, run: _Run) -> dict:
    """The target eval split (val or dev, and the alignment probe) into the history, best.pt and
    metrics.json."""
    from .data import DatasetError

    cfg = state.cfg
    try:
        result = evaluate_run(state.model, run.val, state.device, run.autocast, progress=False,
                              num_workers=cfg.num_workers, probe=run.probe)
    except DatasetError as e:
        raise RunError(f"evaluation at iteration {state.iteration} stopped at an unreadable {cfg.eval_split} file: "
                       f"{_reason(e)}; the training up to it is in {checkpoint_path(run.run_dir, state.iteration)}: "
                       "fix or replace the file, then resume with --resume (the evaluation is repeated)") from None
    state.step.model.train()
    best_before = max((h["miou19"] for h in state.history if h["miou19"] is not None), default=None)
    row = {"iteration": state.iteration, **{k: _json_float(result[k]) for k in ("miou19", "miou16", "miou13")},
           "per_class_iou": [_json_float(x) for x in result["per_class_iou"]], "losses": state.mean_losses()}
    if "alignment" in result:
        row["alignment"] = result["alignment"]
    state.history.append(row)
    if run.tensorboard is not None:
        run.tensorboard.log_evaluation(row)
    state.loss_sums, state.loss_steps = {}, 0
    if dist.is_main() and (best_before is None or result["miou19"] > best_before):
        _atomic_save(state.best_state_dict(result["miou19"]), run.run_dir / "checkpoints" / "best.pt")
    metrics = _write_metrics(state, run, state.iteration == cfg.iterations)
    if dist.is_main():
        line = f"[{run.name}] iteration {state.iteration}/{cfg.iterations}: mIoU19 {result['miou19']:.2f}"
        a = result.get("alignment") or {}
        if a.get("nn_accuracy") is not None and a.get("cos_gap") is not None:
            line += (f", target pixels nearest a source vector of their class {a['nn_accuracy']:.1f}%, "
                     f"cosine to own/other classes {a['cos_same']:.3f}/{a['cos_other']:.3f}")
        (run.bar.write if run.bar is not None else print)(line)
    return metrics


def _save_checkpoint(state: TrainingState, run_dir: Path) -> None:
    """The state as checkpoints/iter_N.pt (rank 0), keeping the newest `keep_checkpoints`. A full
    disk is one RunError naming the file, the space needed and free, and the last good checkpoint."""
    if not dist.is_main():
        return
    _atomic_save(state.state_dict(), checkpoint_path(run_dir, state.iteration))
    for path in sorted((run_dir / "checkpoints").glob("iter_*.pt"))[:-max(state.cfg.keep_checkpoints, 1)]:
        path.unlink(missing_ok=True)


def _write_metrics(state: TrainingState, run: _Run, final: bool) -> dict:
    """metrics.json (rank 0): the newest evaluation, the best one, the history, the run's speed."""
    history, cfg = state.history, state.cfg
    last = history[-1] if history else {}
    best = max(history, key=lambda h: h["miou19"] if h["miou19"] is not None else -1) if history else {}
    metrics = {
        "preset": run.preset, "variant": cfg.variant, "seed": cfg.seed, "finished": final,
        # which target split every mIoU below is on: val reports, dev chose (docs/preregistration.md)
        "eval_split": cfg.eval_split,
        "iteration": last.get("iteration", 0), "miou19": last.get("miou19"), "miou16": last.get("miou16"),
        "miou13": last.get("miou13"), "per_class_iou": last.get("per_class_iou"),
        "class_names": list(CLASS_NAMES),
        "best": {k: best.get(k) for k in ("iteration", "miou19", "miou16", "miou13")},
        "history": [{k: h.get(k) for k in ("iteration", "miou19", "miou16", "miou13", "losses", "alignment")
                     if k in h} for h in history],
        "alignment": last.get("alignment"),
        "train": run.stats, "precision": run.precision, "device": str(state.device),
        "world_size": dist.world_size(),
    }
    if dist.is_main():
        _atomic_save(metrics, run.run_dir / "metrics.json")
        if final:  # the provenance with the run's seconds, written once it has ended
            _atomic_save(config_record(cfg, run.preset, state.seconds, state.device, state.changes),
                         run.run_dir / "config.json")
    return metrics


# --- command line --------------------------------------------------------------------------
PATH_KEYS = ("data_root", "source_root", "source_image_dir", "target_root", "pseudo_root", "weights")


def config_from_file(path: str | Path, sets: dict[str, Any] | None = None) -> tuple[RunConfig, str | None]:
    """(RunConfig, preset) of a saved config.json (a run's, or a published one), with `sets` on top.
    Relative paths in it are taken from cosuda's home (published configs write them so); keys it
    lacks take RunConfig's defaults, keys RunConfig does not know (inputs, provenance) are ignored."""
    path = Path(path)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--config {path}: cannot read it as JSON ({e})") from None
    if not isinstance(saved, dict) or "variant" not in saved:
        raise ConfigError(f"--config {path}: not a run's config.json (no 'variant')")
    cfg = config_from_dict(saved)
    for key in PATH_KEYS:
        value = getattr(cfg, key)
        if value and not (key == "weights" and value in ("imagenet", "random")) and not Path(value).is_absolute():
            setattr(cfg, key, str(resolve_path(value)))
    cfg = dataclasses.replace(cfg, **(sets or {}))
    validate(cfg)
    return cfg, saved.get("preset")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every option's default and keeps the description's line breaks."""


def _resume_mode(value: str) -> str:
    if value != "auto":
        raise argparse.ArgumentTypeError(f"expected nothing or 'auto', got {value!r}")
    return value


def resume_requested(mode: bool | str, run_dir: str | Path) -> bool:
    """`--resume` (True: RUN_DIR must hold a checkpoint), no flag (False: it must not) or
    `--resume auto` (continue if it holds one, start otherwise: what a requeued job needs)."""
    if mode == "auto":
        return latest_checkpoint(Path(run_dir)) is not None
    return bool(mode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog("cosuda.train"), description=__doc__.split("\n\n")[0],
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--list-presets", action="store_true", help="print one preset name per line")
    parser.add_argument("--preset", help="a name from --list-presets")
    parser.add_argument("--config", metavar="CONFIG_JSON",
                        help="train the run a config.json describes (a run's, or one published under "
                             "docs/results/); --set still applies on top")
    parser.add_argument("--out", help="run directory (checkpoints/, metrics.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration field (repeatable; see --show-config)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, type=_resume_mode, metavar="auto",
                        help="continue from the newest checkpoint in --out (it must hold one), with the "
                             "configuration the run was started with (a --set that differs from it is "
                             "refused); '--resume auto': continue if it holds one, else start (batch jobs, "
                             "requeued Slurm jobs); without --resume, --out must hold no checkpoint")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="with --resume: change a field of the run on purpose (repeatable), recorded "
                             "in its config.json under \"changes\" with the iteration")
    parser.add_argument("--show-config", action="store_true", help="print the resolved configuration and exit")
    parser.add_argument("--pseudo-labels-from", metavar="RUN_DIR",
                        help="write pseudo-labels for the target train set with RUN_DIR's model (to --out "
                             "or the run's pseudo_root)")
    args = parser.parse_args(argv)
    if args.list_presets:
        print("\n".join(PRESETS))
        return 0
    # rank 0 prints the result; the process group is gone by then (train() leaves it)
    main_process = int(os.environ.get("RANK", "0")) == 0
    try:
        if args.pseudo_labels_from:
            out = make_pseudo_labels(args.pseudo_labels_from, args.out)
            if main_process:
                print(f"pseudo-labels written to {out}")
            return 0
        if bool(args.preset) == bool(args.config):
            parser.error("give --preset NAME (see --list-presets) or --config CONFIG_JSON")
        if args.override and not args.resume:
            parser.error("--override changes a run being resumed: use it with --resume (a new run takes --set)")
        sets, overrides = parse_sets(args.set), parse_sets(args.override)
        resume = bool(args.out) and resume_requested(args.resume, args.out)
        if not resume:  # a new run (--resume auto on an empty folder): nothing to change, all are settings
            sets, overrides = {**sets, **overrides}, {}
        if args.config:
            cfg, args.preset = config_from_file(args.config, sets)
        else:
            cfg = make_config(args.preset, sets)
        if args.show_config:
            print(cfg.to_json())
            return 0
        if not args.out:
            parser.error("--out RUN_DIR is required")
        if args.resume == "auto" and main_process:
            what = f"resuming from {latest_checkpoint(Path(args.out))}" if resume else \
                f"no checkpoint in {args.out}, starting the run"
            print(f"[cosuda] --resume auto: {what}", file=sys.stderr, flush=True)
        # A resumed --preset run is compared on what this command names (its --set, the preset's
        # variant); every other field comes from the checkpoint, not from today's preset.
        given = None if args.config else {"variant", *sets}
        metrics = train(cfg, args.out, resume=resume, preset=args.preset, overrides=overrides, given=given)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # bad weights file, full disk, unreadable image mid-run: one line, no traceback
        from .data import DatasetError
        from .models import WeightsNotFoundError

        if not isinstance(e, (WeightsNotFoundError, RunError, DatasetError)):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, WeightsNotFoundError) else 1
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    finally:
        dist.destroy()  # --pseudo-labels-from under torchrun joined the group too
    if main_process:
        print(json.dumps({k: metrics[k] for k in ("iteration", "miou19", "miou16", "miou13")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
