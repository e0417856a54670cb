"""Every console script of pyproject.toml names itself in its --help (issue 21, item 7): a user who
typed `cosuda-train --help` is shown `usage: cosuda-train ...`, not `python -m cosuda.train`,
while `python -m cosuda.train --help` keeps its own spelling.

Run in this process with sys.argv[0] set as a console script sets it (.../bin/cosuda-train);
tests/test_install.py runs the installed scripts themselves.
"""
import importlib
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def _help(script: str, argv0: str, args: list[str], monkeypatch, capsys) -> str:
    module, func = SCRIPTS[script].split(":")
    monkeypatch.setattr(sys, "argv", [argv0, *args])
    with pytest.raises(SystemExit) as done:
        getattr(importlib.import_module(module), func)(args)
    assert done.value.code == 0
    return capsys.readouterr().out


def test_pyproject_declares_the_five_commands():
    assert set(SCRIPTS) == {"cosuda-train", "cosuda-evaluate", "cosuda-predict", "cosuda-runner", "cosuda-synthetic"}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_of_a_console_script_shows_its_own_name(script, monkeypatch, capsys):
    out = _help(script, f"/some/venv/bin/{script}", ["--help"], monkeypatch, capsys)
    assert out.startswith(f"usage: {script} "), out[:200]
    assert "python -m" not in out.split("\n\n")[0]


def test_the_runner_subcommands_show_the_script_name_too(monkeypatch, capsys):
    out = _help("cosuda-runner", "/some/venv/bin/cosuda-runner", ["main", "--help"], monkeypatch, capsys)
    assert out.startswith("usage: cosuda-runner main "), out[:200]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_under_python_m_keeps_python_m(script, monkeypatch, capsys):
    module = SCRIPTS[script].split(":")[0]
    argv0 = str(REPO / Path(*module.split("."))) + ".py"  # what `python -m cosuda.train` puts in sys.argv[0]
    out = _help(script, argv0, ["--help"], monkeypatch, capsys)
    assert out.startswith(f"usage: python -m {module} "), out[:200]
