#!/usr/bin/env bash
# The whole test suite: unit tests (tests/) and every notebook executed headlessly with its
# small default parameters (nbval). Does all set-up on a fresh machine first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export OMP_WAIT_POLICY=PASSIVE  # see cosuda/__init__.py
bash scripts/install_browser.sh   # Debian's chromium + Playwright, for the course-site test
export PYTHONHASHSEED=0
export COSUDA_TEXT_PROGRESS=1  # notebooks executed headlessly keep text progress bars (cosuda/progress.py)
.venv/bin/python -m pytest "$@"
