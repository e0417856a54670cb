#!/usr/bin/env bash
# Builds the course site into _site/ (open _site/index.html, or serve it with
# `python -m http.server -d _site`): every notebook rendered from its stored outputs, the
# paper <-> notebook <-> module map, and the API reference. Offline; nothing is executed.
# Arguments go to `python -m cosuda.site` (e.g. --out DIR).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
stamp=.venv/.cosuda-docs-installed
if [ ! -f "$stamp" ] || [ requirements-docs.txt -nt "$stamp" ]; then
  echo "[site] installing the documentation tools (requirements-docs.txt)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-docs.txt
  touch "$stamp"
fi
export MPLBACKEND=Agg
.venv/bin/python -m cosuda.site "$@"
