"""Shared fixtures: a tiny synthetic benchmark in the real on-disk formats, made once per session;
headless Chromium for the browser tests (the course site, JupyterLab)."""

import os

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_SETS = ["--set", "source_size=32x18", "--set", "target_size=32x16", "--set", "eval_size=32x16",
             "--set", "dict_size=20", "--set", "num_workers=0", "--set", "progress=false"]


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory):
    from cosuda.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("tiny_benchmark")
    generate(root, seed=0, config=SyntheticConfig(
        gta5_count=6, synthia_count=4, cityscapes_train_count=6, cityscapes_val_count=3,
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
