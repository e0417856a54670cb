#!/usr/bin/env bash
# The GPU check in one command (see benchmarks/gpu_check.py):
#   bash benchmarks/gpu_check.sh --out DIR [--smoke] [--budget-s 450]
# Python: .venv/bin/python if there is one, else the first of python3 / python on PATH that
# imports torch (the GPU machines have no venv: torch and timm are installed system-wide).
# Installs nothing and needs no network.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=""
for candidate in "$repo/.venv/bin/python" python3 python; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" >/dev/null 2>&1; then
    py=$candidate
    break
  fi
done
if [ -z "$py" ]; then
  echo "gpu_check.sh: error: no Python that imports torch (tried .venv/bin/python, python3, python)" >&2
  exit 2
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cd "$repo"
exec "$py" benchmarks/gpu_check.py "$@"
