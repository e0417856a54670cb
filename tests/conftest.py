"""Shared fixtures: a tiny synthetic benchmark in the real on-disk formats, made once per session;
headless Chromium for the browser tests (the course site, JupyterLab)."""

import os

import pytest
import torch

from cosuda.labels import CLASS_NAMES

torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_SETS = ["--set", "source_size=32x18", "--set", "target_size=32x16", "--set", "eval_size=32x16",
             "--set", "dict_size=20", "--set", "num_workers=0", "--set", "progress=false"]


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory):
    from cosuda.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("tiny_benchmark")
    generate(root, seed=0, config=SyntheticConfig(
        gta5_count=6, synthia_count=4, cityscapes_train_count=6, cityscapes_val_count=3, cityscapes_dev_count=3,
        gta5_size=(64, 36), synthia_size=(64, 38), cityscapes_size=(64, 32)), progress=False)
    return root


CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by scripts/install_browser.sh
# Playwright adds --headless and a fresh temporary --user-data-dir itself. Without the
# background-networking flags Chromium hangs on this offline machine.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Playwright; COSUDA_SKIP_BROWSER=1 skips the tests that need it,
    a missing driver or browser fails them with the command that installs it."""
    if os.environ.get("COSUDA_SKIP_BROWSER") == "1":
        pytest.skip("COSUDA_SKIP_BROWSER=1: the browser tests are skipped")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Playwright driver is not installed: run `bash scripts/install_browser.sh` "
                    "(or set COSUDA_SKIP_BROWSER=1 to skip the browser tests)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/install_browser.sh` "
                    "(or set COSUDA_SKIP_BROWSER=1 to skip the browser tests)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


# --- made-up runs for the results tables and figures (test_results.py, test_results_plots.py) ---
ITS = (150, 300, 450, 600)


def fake_config(seed=0, **settings):
    """A config.json as a run writes it: resolved settings, inputs and provenance."""
    return {"preset": "synthetic-ours", "seed": seed, "iterations": 600, "t_cos": 0.6, "dict_size": 200,
            "lambda_cos": 1.0, "weights": "imagenet", "pseudo_root": "", "backbone": "efficientnet_lite0",
            "provenance": {"commit": "abc123", "torch": "2.4.0", "cpu": "test cpu", "threads": 1, "seconds": 12.5},
            **settings}


def fake_metrics(final, seed=0, cos=None, nn=50.0, per_class=None, config=True, **settings):
    """A metrics.json of the layout (mIoU rising linearly to `final`), its config.json under "config"."""
    history = []
    for k, it in enumerate(ITS):
        losses = {"seg_s": 0.5 - 0.05 * k, "seg_t": 0.4 - 0.05 * k}
        if cos is not None:
            losses["cos"] = cos
        losses["total"] = losses["seg_s"] + losses["seg_t"] + losses.get("cos", 0.0)
        history.append({"iteration": it, "miou19": final - 3 + k, "miou16": final - 2 + k, "miou13": final - 1 + k,
                        "losses": losses, "alignment": {"nn_accuracy": nn + k, "cos_same": 0.3 + 0.01 * k,
                                                        "cos_other": 0.1, "cos_gap": 0.2 + 0.01 * k}})
    per_class = per_class if per_class is not None else [final] * len(CLASS_NAMES)
    return {"preset": "synthetic-ours", "seed": seed, "finished": True, "iteration": ITS[-1], "miou19": final,
            "miou16": final + 1, "miou13": final + 2, "per_class_iou": per_class, "history": history,
            "alignment": history[-1]["alignment"], "best": {"iteration": ITS[-1], "miou19": final + 0.5},
            "config": fake_config(seed, **settings) if config else None}


@pytest.fixture
def runs():
    """A made-up grid: {variant: {seed: metrics}} as cosuda.results.load gives it."""
    return {"source-only": {s: fake_metrics(30 + s, s, nn=55) for s in (0, 1, 2)},
            "only-ssl": {s: fake_metrics(35 + s, s) for s in (0, 1, 2)},
            "ours": {s: fake_metrics(35.5 + s + 0.1 * s, s, cos=0.2) for s in (0, 1, 2)},
            "ours11": {s: fake_metrics(31 + s, s, cos=0.3) for s in (0, 1)},
            "adversarial": {0: fake_metrics(30.5, 0)},
            "oracle": {s: fake_metrics(50, s, per_class=[40.0, None] + [50.0] * 17) for s in (0, 1, 2)}}
