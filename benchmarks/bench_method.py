"""Speed and memory of the method (cosuda.method, cosuda.pseudo) on the CPU. Run by hand:

    .venv/bin/python benchmarks/bench_method.py            # paper scale, a few minutes
    .venv/bin/python benchmarks/bench_method.py --quick    # small scale, a few seconds (smoke test)

Paper scale (DeepLabV2, GTA5 -> Cityscapes): k = 2048 channels, a 1024x512 target image gives a
129x65 = 8385-pixel feature map, 19 classes spread like Cityscapes pixels, dict-size 2500 per
class (a full dictionary), T_cos = 0.6, float32, 2 threads.

What is measured (median over repeats after a warm-up):
1. cosine_loss forward + backward for each impl, divided by the BASELINE: one bare float32
   matrix product of the same total shape, y = x @ D.T with x (N, k) requiring grad and D
   (2500, k) constant, then y.backward(G) with a dense precomputed G (N, 2500): two products
   of N x k x 2500 multiply-adds, the least any exact implementation has to do. Baseline and
   loss are timed alternately (baseline, impl, baseline, impl, ...) so that other load on the
   machine hits both; the ratio is the median of the per-pair ratios, and "min/min" the ratio
   of the fastest run of each (the least disturbed one), and "quiet" the median over the pairs
   whose baseline ran within 10% of its fastest (their count in brackets). On a shared machine the loss suffers
   more than the baseline: it launches ~170 kernels against the baseline's 2, and every
   multi-threaded kernel waits when one of its threads is descheduled.
2. One FeatureDictionary.enqueue of a process-A sized batch (5000 rows) relative to the loss.
3. Peak extra memory of one forward + backward: in a fresh process, the kernel's peak RSS
   counter (VmHWM) is reset through /proc/self/clear_refs, the call runs, and the peak minus the
   RSS before the call is reported (torch's CPU allocator returns large blocks to the OS, so this
   sees every tensor the call allocates).
4. ThresholdEstimator.update throughput on 19-class probabilities at 1024x512, and its state size.
5. Loss magnitudes of the two readings of eq. 10 (reduction "sum" / "mean") on these features.

Results: a table on stdout and JSON in benchmarks/results/bench_method_cpu[_quick].json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cosuda.method import FeatureDictionary, cosine_loss, grouped_available  # noqa: E402
from cosuda.pseudo import ThresholdEstimator  # noqa: E402

# Share of each trainId among labelled Cityscapes train pixels (percent, approximate).
CITYSCAPES_FREQ = [32.6, 5.4, 20.2, 0.6, 0.8, 1.1, 0.2, 0.5, 14.1, 1.0, 3.6, 1.1, 0.1, 6.2,
                   0.2, 0.2, 0.2, 0.1, 0.4]
FULL = dict(n=129 * 65, k=2048, size=2500, classes=19, enqueue=5000, repeats=9)
QUICK = dict(n=1200, k=256, size=300, classes=19, enqueue=800, repeats=3)
THRESHOLD = 0.6


def make_problem(scale: dict, seed: int = 0):
    """Class-clustered, non-negative (post-ReLU-like) features whose cosines straddle T_cos.

    x = relu(a * mu_c + noise) with a per-vector strength a: strong vectors are close to their
    class direction, weak ones are not, so a fraction of the pairs exceeds the threshold.
    """
    g = torch.Generator().manual_seed(seed)
    n, k, size, C = scale["n"], scale["k"], scale["size"], scale["classes"]
    mu = torch.randn(C, k, generator=g)

    def features(classes):
        a = torch.empty(len(classes), 1).uniform_(0.3, 2.0, generator=g)
        return (mu[classes] * a + torch.randn(len(classes), k, generator=g)).relu_()

    classes = torch.multinomial(torch.tensor(CITYSCAPES_FREQ), n, replacement=True, generator=g)
    feats = features(classes)
    bank = FeatureDictionary(C, size, k)
    bank_classes = torch.arange(C).repeat_interleave(size)
    bank.enqueue(features(bank_classes), bank_classes)
    source = features(torch.multinomial(torch.tensor(CITYSCAPES_FREQ), scale["enqueue"], replacement=True,
                                        generator=g))
    source_classes = torch.multinomial(torch.tensor(CITYSCAPES_FREQ), scale["enqueue"], replacement=True,
                                       generator=g)
    return feats, classes, bank, source, source_classes


def baseline_step(x0, d, grad):
    x = x0.detach().requires_grad_(True)
    y = x @ d.T
    y.backward(grad)
    return x.grad


def loss_step(x0, classes, bank, impl):
    x = x0.detach().requires_grad_(True)
    cosine_loss(x, classes, bank, THRESHOLD, bank.num_classes, "mean", impl=impl).backward()
    return x.grad


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_ratios(feats, classes, bank, impls, repeats):
    d = torch.randn(bank.size, feats.shape[1])
    grad = torch.randn(feats.shape[0], bank.size)
    out = {}
    for impl in impls:
        baseline_step(feats, d, grad)  # warm-up
        loss_step(feats, classes, bank, impl)
        base, loss = [], []
        for _ in range(repeats):
            base.append(timed(lambda: baseline_step(feats, d, grad)))
            loss.append(timed(lambda: loss_step(feats, classes, bank, impl)))
        # pairs whose baseline ran within 10% of its fastest: the machine was quiet around them
        quiet = [l / b for l, b in zip(loss, base) if b <= 1.1 * min(base)]
        out[impl] = {"loss_s": statistics.median(loss), "baseline_s": statistics.median(base),
                     "ratio": statistics.median(l / b for l, b in zip(loss, base)),
                     "ratio_of_minimums": min(loss) / min(base),  # the least disturbed run of each
                     "ratio_quiet_pairs": statistics.median(quiet), "quiet_pairs": len(quiet),
                     "loss_all_s": loss, "baseline_all_s": base}
    return out


def measure_enqueue(bank, source, source_classes, repeats):
    bank.enqueue(source, source_classes)  # warm-up
    return statistics.median(timed(lambda: bank.enqueue(source, source_classes)) for _ in range(repeats))


# --- memory: one call in a fresh process ------------------------------------------------------
def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _peak_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child(what: str, quick: bool) -> None:
    torch.set_num_threads(2)
    scale = QUICK if quick else FULL
    feats, classes, bank, _, _ = make_problem(scale)
    d = torch.randn(bank.size, feats.shape[1])
    grad = torch.randn(feats.shape[0], bank.size)
    step = (lambda: baseline_step(feats, d, grad)) if what == "baseline" else \
        (lambda: loss_step(feats, classes, bank, what))
    step()  # warm-up: lazy initialisation is not part of the call
    before = _rss_kib()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS counter
    step()
    print(json.dumps({"extra_mib": (_peak_kib() - before) / 1024}))


def measure_memory(what: str, quick: bool) -> float | None:
    cmd = [sys.executable, __file__, "--memory-child", what] + (["--quick"] if quick else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])["extra_mib"]
    except (subprocess.CalledProcessError, OSError, KeyError, ValueError) as e:
        print(f"memory measurement of {what} failed: {e}", file=sys.stderr)
        return None


# --- thresholds ---------------------------------------------------------------------------------
def measure_thresholds(quick: bool, repeats: int):
    h, w = (128, 256) if quick else (512, 1024)
    probs = torch.randn(1, 19, h, w).softmax(dim=1)
    est = ThresholdEstimator(19)
    est.update(probs)
    seconds = statistics.median(timed(lambda: est.update(probs)) for _ in range(repeats))
    state = sum(t.numel() * t.element_size() for t in est.state_dict().values() if torch.is_tensor(t))
    return {"megapixels_per_s": h * w / seconds / 1e6, "update_s": seconds, "state_bytes": state,
            "image": f"{w}x{h}"}


# --- loss magnitudes ------------------------------------------------------------------------------
def magnitudes(feats, classes, bank):
    """Value and gradient norm of both readings of eq. 10, and lambda_cos times the value."""
    out = {}
    for t in (0.4, 0.6):
        row = {}
        for reduction in ("sum", "mean"):
            x = feats.clone().requires_grad_(True)
            loss = cosine_loss(x, classes, bank, t, bank.num_classes, reduction)
            loss.backward()
            row[reduction] = loss.item()
            row[f"{reduction}_grad_norm"] = x.grad.norm().item()
            for lam in (0.01, 0.001):
                row[f"{lam}*{reduction}"] = lam * loss.item()
        with torch.no_grad():  # every pair selected: the largest value the sum can take here
            row["sum_if_all_selected"] = cosine_loss(feats, classes, bank, -2.0, bank.num_classes, "sum").item()
        out[f"T={t}"] = row
    out["pairs_compared"] = sum(int((classes == c).sum()) * int(bank.counts[c]) for c in range(bank.num_classes))
    out["feature_norm_mean"] = feats.norm(dim=1).mean().item()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small scale (CI smoke test)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--impls", nargs="+", default=None, help="cosine_loss impls to time (default: all)")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.quick)

    torch.set_num_threads(2)
    scale = dict(QUICK if args.quick else FULL)
    repeats = args.repeats or scale["repeats"]
    load_before = os.getloadavg()
    feats, classes, bank, source, source_classes = make_problem(scale)
    impls = args.impls or ["reference", "sorted"] + (["grouped"] if grouped_available(feats) else [])

    ratios = measure_ratios(feats, classes, bank, impls, repeats)
    enqueue_s = measure_enqueue(bank, source, source_classes, repeats)
    _, _, bank, _, _ = make_problem(scale)  # the enqueue changed the dictionary
    memory = {what: measure_memory(what, args.quick) for what in ["baseline"] + impls}
    thresholds = measure_thresholds(args.quick, repeats)
    mags = magnitudes(feats, classes, bank)
    load_after = os.getloadavg()

    result = {
        "scale": scale, "threshold": THRESHOLD, "repeats": repeats, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or
        platform.machine(), "load_average_before_after": [load_before, load_after],
        "baseline": "x @ D.T with x (N, k) requiring grad, D (dict-size, k) constant, then "
                    "y.backward(G) with a dense G: fp32 forward + backward of the same total shape",
        "loss_vs_baseline": ratios,
        "enqueue": {"rows": scale["enqueue"], "seconds": enqueue_s,
                    "fraction_of_loss": enqueue_s / min(r["loss_s"] for r in ratios.values())},
        "peak_extra_memory_mib": memory,
        "memory_method": "fresh process; VmHWM reset via /proc/self/clear_refs; peak minus RSS before the call",
        "threshold_estimator": thresholds,
        "loss_magnitudes": mags,
    }
    name = "bench_method_cpu_quick.json" if args.quick else "bench_method_cpu.json"
    out = ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    print(f"cosine loss at N={scale['n']} k={scale['k']} dict-size={scale['size']} x {scale['classes']} "
          f"classes, T_cos={THRESHOLD}, fp32, {torch.get_num_threads()} threads "
          f"(load average {load_before[0]:.2f} -> {load_after[0]:.2f})")
    print(f"{'impl':<10} {'loss fwd+bwd':>13} {'baseline':>10} {'ratio':>7} {'min/min':>8} {'quiet':>13} "
          f"{'peak extra MiB':>15}")
    print(f"{'baseline':<10} {'':>13} {'':>10} {'':>7} {'':>8} {'':>13} {memory['baseline'] or float('nan'):>15.0f}")
    for impl, r in ratios.items():
        quiet = f"{r['ratio_quiet_pairs']:.2f}x ({r['quiet_pairs']})"
        print(f"{impl:<10} {r['loss_s']:>12.3f}s {r['baseline_s']:>9.3f}s {r['ratio']:>6.2f}x "
              f"{r['ratio_of_minimums']:>7.2f}x {quiet:>13} {memory[impl] or float('nan'):>15.0f}")
    print(f"enqueue of {scale['enqueue']} rows: {enqueue_s * 1e3:.1f} ms = "
          f"{100 * result['enqueue']['fraction_of_loss']:.1f}% of the fastest loss")
    print(f"ThresholdEstimator.update at {thresholds['image']}: {thresholds['megapixels_per_s']:.1f} "
          f"megapixels/s, state {thresholds['state_bytes'] / 1024:.0f} KiB (constant)")
    for key, m in mags.items():
        print(f"loss magnitudes {key}: " + (", ".join(f"{k} {v:.4g}" for k, v in m.items())
                                           if isinstance(m, dict) else f"{m:.4g}"))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
