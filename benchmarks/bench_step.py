"""Speed of one UDA training step, of evaluation and of pseudo-labelling (run by hand).

    python benchmarks/bench_step.py                # paper scale on a GPU (DeepLabV2-ResNet101)
    python benchmarks/bench_step.py --cpu-preset   # the synthetic presets (EfficientNet-Lite0, 320x180)
    python benchmarks/bench_step.py --smoke        # tiny, for CI: checks the script still runs

Random weights and random images at the paper's sizes (GTA5 1280x720 source, Cityscapes
1024x512 target, k = 2048, dictionary 19 x 2500), batch 1 + 1, variant "ours". Two
configurations are measured in the same process:
  defaults  fp32 (TF32 off), eval-mode BatchNorm, per-class reference cosine loss, eager;
  fast      bf16 autocast (GPU) / fp32 (CPU), frozen BN folded into the convs, sorted/grouped
            cosine loss, a bfloat16 dictionary, fused SGD, channels_last and the whole step
            captured by torch.compile(mode="reduce-overhead") (CUDA graphs; --compile, GPU).
Reported: s/iter (median), peak memory, FLOPs of a step (torch.utils.flop_counter) and MFU
against --peak-tflops, the share of the step spent in processes A/B + dictionary + cosine
loss, evaluation images/s (logits upsampled to 2048x1024; the network alone, and end to end
through the real readers with --workers processes), and pseudo-label generation end to end.
Results are printed and written to benchmarks/results/bench_step_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cosuda.config import VARIANTS  # noqa: E402
from cosuda.models import build_model  # noqa: E402
from cosuda.uda import UDAStep  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batch(size_wh, num_classes, device, channels_last):
    w, h = size_wh
    x = torch.rand(1, 3, h, w, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # blocky random labels, so that classes form regions as in real label maps
    y = torch.randint(0, num_classes, (1, 1, max(h // 32, 1), max(w // 32, 1)), device=device).float()
    y = torch.nn.functional.interpolate(y, size=(h, w), mode="nearest")[:, 0].long()
    return {"image": x, "label": y}


def measure(args, fast: bool, device: torch.device) -> dict:
    torch.manual_seed(0)
    precision = (args.precision or ("bf16" if device.type == "cuda" else "fp32")) if fast else "fp32"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = fast
    model = build_model(args.arch, backbone=args.backbone, num_classes=19, weights="random",
                        fold_bn=fast).to(device)
    channels_last = fast and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        dims = [f.shape[1] for f in model(torch.zeros(1, 3, 64, 64, device=device))[0]]
    compile_mode = args.compile if fast else "off"
    net = model
    if compile_mode == "model":
        net = torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None)
        net.upsample = model.upsample
    opt = torch.optim.SGD(model.param_groups(2.5e-4), lr=2.5e-4, momentum=0.9, weight_decay=5e-4,
                          **({"fused": True} if fast and device.type == "cuda" else {}))
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else \
        (lambda: torch.autocast(device.type, enabled=False))
    dict_dtype = "bfloat16" if precision == "bf16" else "float32"  # no per-step cast of the bank
    cos_impl = args.cos_impl if fast else "reference"
    step = UDAStep(net, opt, VARIANTS["ours"], num_classes=19, t_cos=0.6, lambda_cos=0.01,
                   dict_size=args.dict_size, feature_dims=dims, cos_impl=cos_impl,
                   autocast=autocast, device=device, dict_dtype=dict_dtype,
                   compile="step" if compile_mode == "step" else "off")
    t0 = time.perf_counter()
    step(_batch(args.source_size, 19, device, channels_last), _batch(args.target_size, 19, device, channels_last))
    _sync(device)
    compile_seconds = time.perf_counter() - t0  # the first step: compilation and capture, if any
    src = _batch(args.source_size, 19, device, channels_last)
    tgt = _batch(args.target_size, 19, device, channels_last)
    for _ in range(args.warmup):
        step(src, tgt)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    step.method_seconds = 0.0
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step(src, tgt)
        _sync(device)
        times.append(time.perf_counter() - t0)
    result = {"precision": precision, "fold_bn": fast, "compile": compile_mode, "channels_last": channels_last,
              "cos_impl": cos_impl, "dict_dtype": dict_dtype, "fused_sgd": bool(opt.defaults.get("fused")),
              "s_per_iter": statistics.median(times), "first_step_s": compile_seconds}
    if device.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    # The rest is measured on an eager step of the same configuration: a captured step has no
    # profiler ranges inside, and compiled graphs are invisible to the FLOP counter.
    eager = UDAStep(model, opt, VARIANTS["ours"], num_classes=19, t_cos=0.6, lambda_cos=0.01,
                    dict_size=args.dict_size, feature_dims=dims, autocast=autocast, device=device,
                    cos_impl=cos_impl, dict_dtype=dict_dtype)
    # The method's share of the step, backward included: the profiler's time in the
    # "cosuda.method" region (processes A/B, enqueue, loss forward) plus the loss's backward node,
    # over the eager step's time.
    from torch.profiler import ProfilerActivity, profile

    eager(src, tgt)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    eager_times = []
    with profile(activities=activities) as prof:
        for _ in range(3):
            t0 = time.perf_counter()
            eager(src, tgt)
            _sync(device)
            eager_times.append(time.perf_counter() - t0)
    events = prof.key_averages()
    key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    method_us = sum(getattr(e, key, 0) for e in events if e.key == "cosuda.method" or
                    ("CosineLoss" in e.key and "Backward" in e.key))
    result["method_share_profiled"] = method_us / (sum(eager_times) * 1e6)
    result["method_ms_profiled"] = method_us / 3 / 1e3
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        eager(src, tgt)
    result["tflop_per_step"] = counter.get_total_flops() / 1e12
    if args.peak_tflops:
        result["mfu"] = result["tflop_per_step"] / result["s_per_iter"] / args.peak_tflops
    return result, model


def measure_eval(model, args, device) -> dict:
    """Images/s of evaluation: predict at target size, upsample logits to 2x (label resolution)."""
    model.eval()
    w, h = args.target_size
    x = torch.rand(1, 3, h, w, device=device)
    label = torch.randint(0, 19, (2 * h * 2 * w,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else \
        torch.autocast(device.type, enabled=False)
    n = max(args.iters, 3)
    with torch.inference_mode(), autocast:
        for i in range(n + 2):
            if i == 2:
                _sync(device)
                t0 = time.perf_counter()
            _, logits = model(x)
            pred = model.upsample(logits.float(), (2 * h, 2 * w)).argmax(1)
            torch.bincount(label * 19 + pred.flatten(), minlength=19 * 19)  # the confusion matrix
        _sync(device)
    per_image = (time.perf_counter() - t0) / n
    return {"eval_images_per_s": 1 / per_image, "eval_500_images_s": 500 * per_image}


def measure_io(model, args, device) -> dict:
    """Evaluation and pseudo-labelling through the real readers, measured end to end: PNG decoding
    and resizing in `--workers` reader processes, the network, upsampling to 2x the target size
    (2048x1024 labels at paper scale), the confusion matrix / the two passes and the PNG writes
    of `generate_pseudo_labels`. Images are synthetic street scenes in the Cityscapes layout."""
    import tempfile
    from contextlib import nullcontext

    from cosuda.data import Cityscapes
    from cosuda.metrics import evaluate
    from cosuda.pseudo import generate_pseudo_labels
    from cosuda.synthetic import SyntheticConfig, generate

    w, h = args.target_size
    n = args.io_images
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SyntheticConfig(gta5_count=0, synthia_count=0, cityscapes_train_count=n, cityscapes_val_count=n,
                              cityscapes_dev_count=0, cityscapes_size=(2 * w, 2 * h))
        generate(Path(tmp) / "data", seed=0, config=cfg, progress=False)
        root = Path(tmp) / "data" / "cityscapes"
        val = Cityscapes(root, "val", size=(w, h), label_size="original")
        train = Cityscapes(root, "train", size=(w, h))
        with autocast:
            evaluate(model, torch.utils.data.Subset(val, range(min(2, n))), device=device, progress=False)  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            evaluate(model, val, device=device, num_workers=args.workers, progress=False)
            _sync(device)
            eval_s = (time.perf_counter() - t0) / n
            t0 = time.perf_counter()
            generate_pseudo_labels(model, train, Path(tmp) / "pseudo", device=device, num_workers=args.workers,
                                   progress=False)
            _sync(device)
            pseudo_s = (time.perf_counter() - t0) / n
    return {"io_images": n, "io_workers": args.workers, "label_size": [2 * w, 2 * h],
            "eval_images_per_s_end_to_end": 1 / eval_s, "eval_500_images_s_end_to_end": 500 * eval_s,
            "pseudo_label_images_per_s_end_to_end": 1 / pseudo_s, "pseudo_label_2975_images_s": 2975 * pseudo_s}


def parse_args(argv=None) -> argparse.Namespace:
    """The options, with --cpu-preset / --smoke / the --compile default applied (what `measure`
    takes: benchmarks/gpu_check.py builds its configurations with this too)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="deeplabv2")
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--source-size", type=int, nargs=2, default=(1280, 720))
    p.add_argument("--target-size", type=int, nargs=2, default=(1024, 512))
    p.add_argument("--dict-size", type=int, default=2500)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=0.0, help="e.g. 989 for an H100 SXM in bf16 dense")
    p.add_argument("--compile", choices=("off", "model", "step"), default=None,
                   help="capture for the fast path (default: step on Hopper-class GPUs, model on older ones, off on CPU)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                   help="of the fast path (default: bf16 on CUDA, fp32 on CPU; compile=step on CPU needs bf16)")
    p.add_argument("--cos-impl", choices=("auto", "sorted", "grouped"), default="auto",
                   help="cosine loss of the fast path (auto: grouped on CUDA where it can run, else sorted)")
    p.add_argument("--io-images", type=int, default=32, help="images generated for the end-to-end eval/pseudo-label timing")
    p.add_argument("--workers", type=int, default=6, help="reader processes for evaluation and pseudo-labels")
    p.add_argument("--cpu-preset", action="store_true", help="the synthetic presets' network, sizes and dictionary")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 iteration (CI)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.cpu_preset:  # the network, sizes and dictionary of the synthetic presets (cosuda.config)
        from cosuda.config import make_config

        cfg = make_config("synthetic-ours")
        args.arch, args.backbone, args.dict_size = cfg.arch, cfg.backbone, cfg.dict_size
        args.source_size, args.target_size = tuple(cfg.source_size), tuple(cfg.target_size)
    if args.smoke:
        args.backbone, args.source_size, args.target_size = "resnet18", (64, 36), (64, 32)
        args.iters, args.warmup, args.dict_size = 1, 1, 50
        args.io_images, args.workers = 3, 0
    device = torch.device(args.device)
    if args.compile is None:  # the whole step where the grouped loss can be captured (bf16, Hopper+)
        from cosuda.train import grouped_loss_available

        args.compile = "off" if device.type != "cuda" else ("step" if grouped_loss_available(device) else "model")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "args": vars(args)}
    report["defaults"], _ = measure(args, fast=False, device=device)
    report["fast"], model = measure(args, fast=True, device=device)
    report["speedup"] = report["defaults"]["s_per_iter"] / report["fast"]["s_per_iter"]
    report.update(measure_eval(model, args, device))
    report.update(measure_io(model, args, device))
    print(json.dumps(report, indent=2, default=str))
    if not args.smoke:
        out = Path(__file__).resolve().parent / "results" / f"bench_step_{device.type}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
