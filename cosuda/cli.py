"""What the command-line front ends share: the program name their --help shows.

Installed with pip, each command is also a console script (`cosuda-train`, ... in
pyproject.toml); run as one, its usage line must name that script, not `python -m cosuda.train`,
or a user copies a command that their shell may not run the same way.
"""
from __future__ import annotations

import os
import sys


def prog(module: str) -> str:
    """The name for `argparse.ArgumentParser(prog=...)`: the console script's own name when
    the process was started as one (sys.argv[0] is .../bin/cosuda-train), else
    `python -m <module>` (started with -m, from a test, or from a notebook)."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return invoked if invoked.startswith("cosuda-") else f"python -m {module}"
