"""Where cosuda reads and writes by default: one policy, used by every module.

`HOME` is `$COSUDA_HOME` if set; else the repository when cosuda runs from a clone (the
package sits next to its pyproject.toml); else the current directory (an installed package
never writes into site-packages). Under it: `data/synthetic/` (the generated benchmark) and
`runs/`. A relative path given to a notebook or command is taken relative to `HOME`.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _home() -> Path:
    if os.environ.get("COSUDA_HOME"):
        return Path(os.environ["COSUDA_HOME"]).expanduser().resolve()
    clone = PACKAGE_DIR.parent
    if (clone / "pyproject.toml").is_file() and "site-packages" not in clone.parts:
        return clone
    return Path.cwd().resolve()


HOME = _home()
SYNTHETIC_ROOT = HOME / "data" / "synthetic"
RUNS_ROOT = HOME / "runs"


def resolve_path(path: str | Path) -> Path:
    """A path parameter of a notebook or command: absolute, or relative to `HOME` (so that a
    notebook run from notebooks/ and a command run from the root agree)."""
    return Path(path) if Path(path).is_absolute() else HOME / path
