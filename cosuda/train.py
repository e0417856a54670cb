"""The training engine: one loop for every variant, evaluation, checkpoints, resume, and the CLI.

    python -m cosuda.train --list-presets
    python -m cosuda.train --preset synthetic-ours --out runs/ours [--set KEY=VALUE ...] [--resume [auto]]
    python -m cosuda.train --pseudo-labels-from runs/source-only [--out DIR]

What a step does lives in `cosuda.uda`; this file sets up data, model, optimisers and the
schedule, and makes runs trustworthy: everything is checked before the first step, progress
is shown, target val is evaluated every `eval_every` iterations into `metrics.json`, and a
checkpoint (model, optimisers, schedulers, discriminator, dictionaries, iteration, RNG states,
history) is written atomically every `checkpoint_every` iterations and when the run is
interrupted (Ctrl-C, SIGTERM), so `--resume` continues the same run (`--resume auto`: if there
is a checkpoint, which is what batch and requeued cluster jobs pass).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from . import distributed as dist
from .config import PRESETS, SYNTHETIC_ROOT, ConfigError, RunConfig, make_config, parse_value
from .labels import CLASS_NAMES, SYNTHIA13, SYNTHIA16

CHECKPOINT_VERSION = 1
# Fields that must agree between a checkpoint and the run resuming from it.
_RESUME_KEYS = ("variant", "arch", "backbone", "norm", "num_classes", "source", "dict_size")


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
        from .synthetic import MARKER, generate

        marker = data_root / MARKER
        # Generate a missing or half-written default benchmark; keep a complete one, whatever
        # seed or sizes the user chose for it.
        if dist.is_main() and not (marker.is_file() and json.loads(marker.read_text()).get("complete")):
            print(f"[cosuda] generating the synthetic benchmark under {data_root}", flush=True)
            generate(data_root, seed=0)
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
    """(source train, target train, target val) for `cfg`; raises naming any missing file."""
    from .data import GTA5, SYNTHIA, Cityscapes, DatasetError

    image_dir = cfg.source_image_dir or None
    source_cls = GTA5 if cfg.source == "gta5" else SYNTHIA
    source = source_cls(paths.source, size=tuple(cfg.source_size), image_dir=image_dir)
    mode = cfg.flags["target_seg"]
    if mode == "pseudo":
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
        if mode == "none":
            target = _WithoutLabels(target)
    val = Cityscapes(paths.target, "val", size=tuple(cfg.eval_size), label_size="original")
    if cfg.eval_max_items:
        val = torch.utils.data.Subset(val, range(min(cfg.eval_max_items, len(val))))
    return source, target, val


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
    if cfg.compile != "step" or cfg.flags["cos"] == "none":
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
    """Write to a temporary file and rename: a kill leaves the old file or the new one, never half.
    (The temporary `NAME.tmp` never matches `iter_*.pt`, so a resume never picks it.)"""
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(obj, (dict, list)) and path.suffix == ".json":
        tmp.write_text(json.dumps(obj, indent=2))
    else:
        torch.save(obj, tmp)
    _kill_point(f"save:{path.name}")
    os.replace(tmp, path)


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


def load_checkpoint(path: Path, cfg: RunConfig) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ConfigError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(f"{path} is not a cosuda training checkpoint (version {CHECKPOINT_VERSION})")
    saved = state["config"]
    diff = [f"{k}: checkpoint {saved.get(k)!r} vs run {getattr(cfg, k)!r}" for k in _RESUME_KEYS
            if saved.get(k) != getattr(cfg, k) and not (isinstance(getattr(cfg, k), tuple)
                                                       and tuple(saved.get(k)) == getattr(cfg, k))]
    if diff:
        raise ConfigError(f"checkpoint {path} is incompatible with this run ({'; '.join(diff)})")
    return state


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


def prepare(cfg: RunConfig, run_dir: str | Path, resume: bool = False) -> dict:
    """Every check that can fail before training, with no side effect on `run_dir`."""
    run_dir = Path(run_dir)
    from .data import DatasetError

    paths = resolve_paths(cfg)
    try:
        datasets = build_datasets(cfg, paths)
    except (DatasetError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from None
    checkpoint = None
    if resume:
        path = latest_checkpoint(run_dir)
        if path is None:
            raise ConfigError(f"--resume: no checkpoint under {run_dir / 'checkpoints'}")
        checkpoint = load_checkpoint(path, cfg)
    elif latest_checkpoint(run_dir) is not None:
        raise ConfigError(f"{run_dir} already holds checkpoints: pass --resume to continue that run, "
                          "or choose another --out")
    return {"run_dir": run_dir, "paths": paths, "datasets": datasets, "checkpoint": checkpoint}


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, preset: str | None = None) -> dict:
    """Train `cfg` into `run_dir`; returns the final metrics (also in run_dir/metrics.json)."""
    device = resolve_device(cfg)
    created_group = dist.init_from_env(device)  # under torchrun: this process's GPU, then the group
    try:
        return _train_in_group(cfg, run_dir, resume, preset, device)
    finally:
        if created_group:  # a run that joined the group leaves it (NCCL's resources, the store)
            dist.destroy()


def _train_in_group(cfg: RunConfig, run_dir, resume: bool, preset, device: torch.device) -> dict:
    precision = resolve_precision(cfg, device)
    check_capture(cfg, device, precision)
    setup = prepare(cfg, run_dir, resume)
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
        return _train(cfg, run_dir, resume, preset, device, setup, precision)
    finally:  # a notebook kernel keeps its own setting after the run
        torch.use_deterministic_algorithms(was_deterministic)


def _train(cfg: RunConfig, run_dir, resume: bool, preset, device, setup, precision) -> dict:
    from .models import build_model
    from .uda import UDAStep

    run_dir = setup["run_dir"]
    source_ds, target_ds, val_ds = setup["datasets"]
    autocast = autocast_factory(precision, device)

    # Seeds first, so that random initialisation is part of the seeded run.
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model = build_model(cfg.arch, backbone=cfg.backbone, num_classes=cfg.num_classes,
                        weights=resolve_weights(cfg.weights), **_norm_kw(cfg))
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    with torch.no_grad():  # feature widths for the dictionaries, from one tiny forward
        probe_h, probe_w = 64, 64
        feature_dims = [f.shape[1] for f in model(torch.zeros(1, 3, probe_h, probe_w, device=device))[0]]
    net = model
    if cfg.compile == "model":
        # The network alone (static shapes at batch 1 and fixed sizes); the rest of the step stays
        # eager. `compile="step"` captures the whole step instead (UDAStep); "off" runs eager.
        net = torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None)
    if dist.is_distributed():
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    net.upsample = model.upsample  # the step calls model.upsample on whatever it holds
    if cfg.scale_lr and dist.world_size() > 1:  # linear scaling rule for N images per step
        cfg = dataclasses.replace(cfg, lr=cfg.lr * dist.world_size(), d_lr=cfg.d_lr * dist.world_size())
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    discriminator = d_optimizer = None
    if cfg.flags["adversarial"]:
        from .adversarial import Discriminator

        discriminator = Discriminator(cfg.num_classes).to(device)  # gradients averaged by UDAStep
        d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=cfg.d_lr, betas=tuple(cfg.d_betas))
        d_scheduler = build_scheduler(cfg, d_optimizer)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    step = UDAStep(net, optimizer, cfg.flags, num_classes=cfg.num_classes, t_cos=cfg.t_cos,
                   lambda_cos=cfg.lambda_cos, dict_size=cfg.dict_size, feature_dims=feature_dims,
                   reduction=cfg.reduction, cos_impl=cfg.cos_impl, dict_dtype=cfg.dict_dtype,
                   discriminator=discriminator, d_optimizer=d_optimizer, lambda_adv=cfg.lambda_adv,
                   autocast=autocast, scaler=scaler, device=device,
                   compile="step" if cfg.compile == "step" else "off")

    start, history, elapsed, resume_rng = 0, [], 0.0, None
    loss_sums, loss_steps = {}, 0
    if setup["checkpoint"] is not None:
        state = setup["checkpoint"]
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if discriminator is not None:
            _unwrap(discriminator).load_state_dict(state["discriminator"])
            d_optimizer.load_state_dict(state["d_optimizer"])
            d_scheduler.load_state_dict(state["d_scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step.load_state_dict(state["uda"])
        resume_rng = state["rng"]  # restored just before the first step (see below)
        start, history, elapsed = state["iteration"], state["history"], state.get("elapsed", 0.0)
        loss_sums, loss_steps = state.get("loss_sums", {}), state.get("loss_steps", 0)
        if dist.is_main():
            print(f"[cosuda] resuming {run_dir} at iteration {start}", flush=True)

    if dist.is_main():
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        _atomic_save(dict(cfg.to_dict(), preset=preset), run_dir / "config.json")
        _truncate_scalars(run_dir / "scalars.jsonl", start)  # a resumed run rewrites what followed
    clock = time.perf_counter() - elapsed  # "time" in scalars.jsonl: seconds since the run started

    def save(iteration: int) -> None:
        if not dist.is_main():
            return
        state = {
            "version": CHECKPOINT_VERSION, "iteration": iteration, "config": cfg.to_dict(),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "uda": step.state_dict(), "rng": _rng_state(device),
            "history": history, "world_size": dist.world_size(),
            "loss_sums": loss_sums, "loss_steps": loss_steps, "elapsed": time.perf_counter() - clock,
            "scaler": scaler.state_dict() if scaler is not None else None,
        }
        if discriminator is not None:
            state.update(discriminator=_unwrap(discriminator).state_dict(),
                         d_optimizer=d_optimizer.state_dict(), d_scheduler=d_scheduler.state_dict())
        _atomic_save(state, checkpoint_path(run_dir, iteration))
        old = sorted((run_dir / "checkpoints").glob("iter_*.pt"))[:-max(cfg.keep_checkpoints, 1)]
        for path in old:
            path.unlink(missing_ok=True)

    def write_metrics(final: bool) -> dict:
        last = history[-1] if history else {}
        best = max(history, key=lambda h: h["miou19"] if h["miou19"] is not None else -1) if history else {}
        metrics = {
            "preset": preset, "variant": cfg.variant, "seed": cfg.seed, "finished": final,
            "iteration": last.get("iteration", 0), "miou19": last.get("miou19"), "miou16": last.get("miou16"),
            "miou13": last.get("miou13"), "per_class_iou": last.get("per_class_iou"),
            "class_names": list(CLASS_NAMES),
            "best": {k: best.get(k) for k in ("iteration", "miou19", "miou16", "miou13")},
            "history": [{k: h.get(k) for k in ("iteration", "miou19", "miou16", "miou13", "losses", "alignment")
                         if k in h} for h in history],
            "alignment": last.get("alignment"),
            "train": train_stats, "precision": precision, "device": str(device),
            "world_size": dist.world_size(),
        }
        if dist.is_main():
            _atomic_save(metrics, run_dir / "metrics.json")
        return metrics

    train_stats = {"iterations_per_second": None, "method_share": None, "last_losses": {}}
    probe = alignment_probe(cfg, source_ds, device)
    source_iter = make_loader(source_ds, cfg, 1, start, device) if _needs(cfg, "source") else None
    target_iter = make_loader(target_ds, cfg, 2, start, device) if _needs(cfg, "target") else None
    if resume_rng is not None:
        # Only now: setting up (iter(DataLoader) draws its base seed from the global generator)
        # consumed the same random numbers in the uninterrupted run before its first step, so
        # the resumed run's next step must see the generators exactly as they were saved.
        _set_rng_state(resume_rng, device)
    net.train()
    train_seconds, timed_steps = 0.0, 0
    bar = None
    if cfg.progress and dist.is_main():
        from .progress import tqdm

        bar = tqdm(total=cfg.iterations, initial=start, desc=f"{preset or cfg.variant}", unit="it",
                   dynamic_ncols=True)
    iteration = start
    metrics = write_metrics(False) if history else None
    with _StopFlag() as stop:
        while iteration < cfg.iterations:
            t0 = time.perf_counter()
            src = _to_device(next(source_iter), device, cfg.channels_last) if source_iter else None
            tgt = _to_device(next(target_iter), device, cfg.channels_last) if target_iter else None
            logs = step(src, tgt)
            for k, v in logs.items():  # mean loss terms between evaluations, for the curves
                loss_sums[k] = loss_sums.get(k, 0.0) + v
            loss_steps += 1
            scheduler.step()
            if discriminator is not None:
                d_scheduler.step()
            iteration += 1
            _kill_point(f"iter:{iteration}")
            if cfg.compile == "off" or iteration > start + 1:  # a compiled run's first step compiles
                train_seconds += time.perf_counter() - t0
                timed_steps += 1
            train_stats = {"iterations_per_second": round(timed_steps / train_seconds, 3) if timed_steps else None,
                           # timed in the eager step only (a captured step holds no timer)
                           "method_share": (round(step.method_seconds / train_seconds, 4)
                                            if timed_steps and cfg.compile != "step" else None),
                           "last_losses": {k: round(v, 5) for k, v in logs.items()}}
            if iteration % cfg.log_every == 0 or iteration == cfg.iterations:
                if dist.is_main():
                    _append_scalars(run_dir / "scalars.jsonl", iteration, time.perf_counter() - clock,
                                    optimizer, logs, train_stats["iterations_per_second"])
                if bar is not None:
                    bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()}, refresh=False)
            if bar is not None:
                bar.update(1)
            if not all(math.isfinite(v) for v in logs.values()):
                save(iteration)
                raise FloatingPointError(f"non-finite loss at iteration {iteration}: {logs}; "
                                         f"checkpoint written to {checkpoint_path(run_dir, iteration)}")
            if iteration % cfg.eval_every == 0 or iteration == cfg.iterations:
                result = evaluate_run(model, val_ds, device, autocast, progress=False, num_workers=cfg.num_workers,
                                      probe=probe)
                net.train()
                best_before = max((h["miou19"] for h in history if h["miou19"] is not None), default=None)
                history.append({"iteration": iteration, "miou19": _json_float(result["miou19"]),
                                "miou16": _json_float(result["miou16"]), "miou13": _json_float(result["miou13"]),
                                "per_class_iou": [_json_float(x) for x in result["per_class_iou"]],
                                "losses": {k: round(v / max(loss_steps, 1), 5) for k, v in loss_sums.items()}})
                if "alignment" in result:
                    history[-1]["alignment"] = result["alignment"]
                loss_sums, loss_steps = {}, 0
                if dist.is_main() and (best_before is None or result["miou19"] > best_before):
                    # the weights behind the "best" row of the tables, kept beside the pruned checkpoints
                    _atomic_save({"version": CHECKPOINT_VERSION, "iteration": iteration, "config": cfg.to_dict(),
                                  "model": model.state_dict(), "miou19": result["miou19"]},
                                 run_dir / "checkpoints" / "best.pt")
                metrics = write_metrics(iteration == cfg.iterations)
                if dist.is_main():
                    line = f"[{preset or cfg.variant}] iteration {iteration}/{cfg.iterations}: mIoU19 {result['miou19']:.2f}"
                    a = result.get("alignment") or {}
                    if a.get("nn_accuracy") is not None and a.get("cos_gap") is not None:
                        line += (f", target pixels nearest a source vector of their class {a['nn_accuracy']:.1f}%, "
                                 f"cosine to own/other classes {a['cos_same']:.3f}/{a['cos_other']:.3f}")
                    (bar.write if bar is not None else print)(line)
            if iteration % cfg.checkpoint_every == 0 or iteration == cfg.iterations:
                save(iteration)
            if stop.requested:
                save(iteration)
                if bar is not None:
                    bar.close()
                raise KeyboardInterrupt(f"stopped at iteration {iteration}; resume with --resume")
    if bar is not None:
        bar.close()
    if metrics is None:
        metrics = write_metrics(True)
    dist.barrier()
    return metrics


def resolve_weights(weights: str):
    """`weights` of a config as `build_model` takes it: "random", "imagenet" and weights files as
    they are; a run directory means the model of that run's newest checkpoint (a warm start from
    a trained model, e.g. the source-only run), returned as its state_dict."""
    if weights in ("random", "imagenet") or not Path(weights).is_dir():
        return weights
    path = latest_checkpoint(Path(weights))
    if path is None:
        raise ConfigError(f"weights={weights} is a folder without checkpoints/iter_*.pt: train that run first")
    # a cosuda training checkpoint (it also holds RNG and optimiser state, hence weights_only=False)
    return load_checkpoint_file(path)["model"]


def load_checkpoint_file(path: Path) -> dict:
    """A training checkpoint as a dict; a one-line ConfigError for a truncated or foreign file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConfigError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ConfigError(f"{path} is not a cosuda training checkpoint")
    return state


def _append_scalars(path: Path, iteration: int, seconds: float, optimizer, logs: dict, its: float | None) -> None:
    """One JSON line per logged step: what a plotting tool (or `tail -f`) follows during a run."""
    lrs = {f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)}
    row = {"iteration": iteration, "time": round(seconds, 3), "lr": optimizer.param_groups[0]["lr"], **lrs,
           **{k: round(v, 6) for k, v in logs.items()}, "it_per_s": its}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(r + "\n" for r in rows))
    os.replace(tmp, path)  # a kill here leaves the old rows or the kept ones


def _needs(cfg: RunConfig, domain: str) -> bool:
    f = cfg.flags
    if domain == "source":
        return f["source_seg"] or f["cos"] != "none" or f["adversarial"]
    return f["target_seg"] != "none" or f["cos"] != "none" or f["adversarial"]


def _norm_kw(cfg: RunConfig) -> dict:
    return {"norm": cfg.norm, "output_stride": cfg.output_stride} if cfg.arch == "deeplabv2" else {}


def _unwrap(module):
    return module.module if hasattr(module, "module") else module


def config_from_dict(values: dict) -> RunConfig:
    """The RunConfig of a saved config.json or checkpoint: lists back to tuples, keys RunConfig
    does not know (e.g. "preset") dropped, values of older versions normalised by RunConfig."""
    defaults = RunConfig()
    return RunConfig(**{k: tuple(v) if isinstance(getattr(defaults, k), tuple) else v
                        for k, v in values.items() if k in RunConfig.__dataclass_fields__})


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


# --- pseudo-labels from a finished source-only run -----------------------------------------
def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str | Path | None = None):
    """(model, cfg) of a run, with the weights of its newest checkpoint (or `checkpoint`)."""
    from .models import build_model

    run_dir = Path(run_dir)
    path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if path is None or not path.is_file():
        raise ConfigError(f"no checkpoint in {run_dir / 'checkpoints'}: train the run first")
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = config_from_dict(state["config"])
    model = build_model(cfg.arch, backbone=cfg.backbone, num_classes=cfg.num_classes, weights="random",
                        **_norm_kw(cfg))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


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


# --- command line --------------------------------------------------------------------------
def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        parse_value(key.strip(), value.strip())
        out[key.strip()] = value.strip()
    return out


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
    parser = argparse.ArgumentParser(prog="python -m cosuda.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--list-presets", action="store_true", help="print one preset name per line")
    parser.add_argument("--preset", help="a name from --list-presets")
    parser.add_argument("--out", help="run directory (checkpoints/, metrics.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration field (repeatable; see --show-config)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, type=_resume_mode, metavar="auto",
                        help="continue from the newest checkpoint in --out (it must hold one); "
                             "'--resume auto': continue if it holds one, else start (batch jobs, "
                             "requeued Slurm jobs); without --resume, --out must hold no checkpoint")
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
        if not args.preset:
            parser.error("--preset is required (see --list-presets)")
        cfg = make_config(args.preset, _parse_sets(args.set))
        if args.show_config:
            print(cfg.to_json())
            return 0
        if not args.out:
            parser.error("--out RUN_DIR is required")
        resume = resume_requested(args.resume, args.out)
        if args.resume == "auto" and main_process:
            what = f"resuming from {latest_checkpoint(Path(args.out))}" if resume else \
                f"no checkpoint in {args.out}, starting the run"
            print(f"[cosuda] --resume auto: {what}", file=sys.stderr, flush=True)
        metrics = train(cfg, args.out, resume=resume, preset=args.preset)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # bad weights file, unreadable image mid-run: one line, no traceback wall
        from .models import WeightsNotFoundError

        if not isinstance(e, WeightsNotFoundError):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
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
