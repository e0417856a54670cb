"""Progress bars that read well wherever cosuda runs.

In JupyterLab a progress bar is a widget; in a notebook executed headlessly (papermill, nbval,
the runner) that widget is saved as it was when the cell started -- "0%| 0/40" for ever. With
`COSUDA_TEXT_PROGRESS=1` (set by the runner and the test command) or outside a kernel, bars are
plain text, which a saved notebook shows as its last line. Elsewhere: tqdm.auto's widget.
"""
from __future__ import annotations

import os
import sys


def text_only() -> bool:
    """True when bars should be text: asked for, or not inside an IPython kernel."""
    if os.environ.get("COSUDA_TEXT_PROGRESS", "").strip() not in ("", "0"):
        return True
    return "ipykernel" not in sys.modules


def tqdm(*args, **kwargs):
    """`tqdm.auto.tqdm` in a live notebook, `tqdm.std.tqdm` (text) otherwise; same arguments."""
    if text_only():
        from tqdm.std import tqdm as bar

        kwargs.setdefault("mininterval", float(os.environ.get("TQDM_MININTERVAL", 1.0)))
    else:
        from tqdm.auto import tqdm as bar
    return bar(*args, **kwargs)
