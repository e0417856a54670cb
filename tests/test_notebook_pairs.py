"""Every notebook is a jupytext pair whose .py and .ipynb hold the same cells, and every
notebook can be driven by papermill (one `parameters` cell of plain literals)."""
import ast
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PY = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_notebooks():
    assert PY, "no notebooks found"


@pytest.mark.parametrize("py", PY, ids=lambda p: p.stem)
def test_pair_exists_and_is_in_sync(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `jupytext --to ipynb notebooks/{py.name}` and execute it"
    a, b = _cells(jupytext.read(py)), _cells(jupytext.read(ipynb))
    assert a == b, (f"{py.name} and {ipynb.name} differ: edit the .py, then "
                    f"`jupytext --to ipynb --update notebooks/{py.name}` and re-execute")


@pytest.mark.parametrize("py", PY, ids=lambda p: p.stem)
def test_parameters_cell_holds_only_literals(py):
    nb = jupytext.read(py)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{py.name}: needs exactly one cell tagged 'parameters'"
    tree = ast.parse(tagged[0].source)
    for node in tree.body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), f"{py.name}: parameters cell has a non-assignment"
        ast.literal_eval(node.value)  # raises for computed values, which papermill would not recompute


@pytest.mark.parametrize("py", PY, ids=lambda p: p.stem)
def test_stored_notebook_was_executed_in_order(py):
    nb = jupytext.read(py.with_suffix(".ipynb"))
    counts = [c.get("execution_count") for c in nb.cells if c.cell_type == "code"]
    assert all(counts), f"{py.stem}.ipynb has unexecuted cells: re-execute it so readers see its outputs"
    assert counts == sorted(counts), f"{py.stem}.ipynb was executed out of order"


@pytest.mark.parametrize("py", PY, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_with_its_comment(py):
    """papermill's own parser (used by `papermill --help-notebook` and the runner's logs) must
    understand every line, comment included: it silently skips a line it cannot parse."""
    import nbformat
    from papermill.translators import PythonTranslator

    cell = next(c for c in jupytext.read(py).cells if "parameters" in c.metadata.get("tags", []))
    names = [p.name for p in PythonTranslator.inspect(nbformat.v4.new_code_cell(cell.source))]
    assigned = [n.target.id if isinstance(n, ast.AnnAssign) else n.targets[0].id for n in ast.parse(cell.source).body]
    assert names == assigned, f"{py.name}: papermill could not parse {sorted(set(assigned) - set(names))}"


@pytest.mark.parametrize("py", PY, ids=lambda p: p.stem)
def test_cosuda_is_imported_before_torch(py):
    # OpenMP reads OMP_WAIT_POLICY once, when torch loads it; cosuda sets it to PASSIVE. A lesson
    # that imports torch first spins its threads and crawls as soon as anything else uses the cores
    # (lesson 07 took 7 min instead of about 1 under load 4 in JupyterLab, which sets no such variable).
    imports = [line.split()[1].split(".")[0] for line in py.read_text().splitlines()
               if line.startswith(("import ", "from ")) and line.split()[1].split(".")[0] in {"cosuda", "torch"}]
    assert imports and imports[0] == "cosuda", (f"{py.name}: put `import cosuda` before the first torch import "
                                                "(it sets OMP_WAIT_POLICY before OpenMP starts)")
