#!/usr/bin/env bash
# Installs what the browser test (tests/test_site.py) needs: Debian's Chromium and the
# Playwright Python driver. Playwright's own browser download (`playwright install`) is never
# used: it fails offline, and the test launches /usr/bin/chromium instead. Safe to re-run: a
# fast no-op when both are already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x /usr/bin/chromium ]; then
  echo "[install_browser] installing Debian's chromium (apt-get, ~1 min)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "[install_browser] /usr/bin/chromium is still missing after apt-get install chromium" >&2
  exit 1
fi
if ! .venv/bin/python -c "import playwright" 2>/dev/null; then
  echo "[install_browser] installing the Playwright Python driver (requirements-docs.txt)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-docs.txt
fi
