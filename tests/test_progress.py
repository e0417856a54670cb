"""Progress bars: text where a notebook is executed headlessly, tqdm.auto in a live kernel."""
import sys

import tqdm.std

from cosuda import progress


def test_text_bars_when_asked_or_outside_a_kernel(monkeypatch):
    monkeypatch.setenv("COSUDA_TEXT_PROGRESS", "1")
    assert progress.text_only()
    bar = progress.tqdm(range(3), disable=True)
    assert type(bar) is tqdm.std.tqdm
    monkeypatch.setenv("COSUDA_TEXT_PROGRESS", "0")
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert progress.text_only()  # no kernel: a terminal


def test_live_kernels_keep_the_widget(monkeypatch):
    monkeypatch.delenv("COSUDA_TEXT_PROGRESS", raising=False)
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    assert not progress.text_only()
