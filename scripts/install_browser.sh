#!/usr/bin/env bash
# Installs what the browser test (tests/test_site.py) needs: Debian's Chromium, and into .venv
# the Playwright driver and the tools that build the site (requirements-docs.txt).
# Playwright's own browser download (`playwright install`) is never used: it fails offline;
# the test launches /usr/bin/chromium. Safe to re-run: a fast no-op once all is there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
if [ ! -x /usr/bin/chromium ]; then
  echo "[install_browser] installing Debian's chromium (apt-get, ~1 min)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "[install_browser] /usr/bin/chromium is still missing after apt-get install chromium" >&2
  exit 1
fi
if ! .venv/bin/python -c "import playwright, sphinx, myst_nb" 2>/dev/null; then
  echo "[install_browser] installing Playwright and the site's tools (requirements-docs.txt)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-docs.txt
fi
