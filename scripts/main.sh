#!/usr/bin/env bash
# The main job on the embedded synthetic benchmark: generate data -> source-only ->
# pseudo-labels -> adaptation -> evaluation -> table and figures (under runs/main/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export OMP_WAIT_POLICY=PASSIVE  # see cosuda/__init__.py
.venv/bin/python -m cosuda.runner main "$@"
