"""The student versions of the notebooks hold no reference solution, and keep everything else."""
from pathlib import Path

import nbformat

from cosuda.exercises.student import SOLUTION_TAG, student_notebook, write_student_versions

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_student_versions_contain_no_solutions(tmp_path):
    written = write_student_versions(tmp_path)
    assert len(written) == len(list(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
    with_exercises = 0
    for path in written:
        original = nbformat.read(NOTEBOOKS / path.name, as_version=4)
        student = nbformat.read(path, as_version=4)
        assert len(student.cells) == len(original.cells)
        solutions = [c for c in original.cells if SOLUTION_TAG in c.metadata.get("tags", [])]
        with_exercises += bool(solutions)
        for cell in student.cells:
            assert SOLUTION_TAG not in cell.metadata.get("tags", []), path.name
        student_code = "\n".join(c.source for c in student.cells)
        for sol in solutions:
            body = [l for l in sol.source.splitlines() if l.strip() and not l.lstrip().startswith("#")
                    and "=" in l and l.split("=", 1)[1].strip() not in ("...", "")]
            for line in body:  # the answer lines themselves are gone
                assert line not in student_code, f"{path.name}: solution line {line!r} left in"
    assert with_exercises >= 6  # datasets, pseudo-labels, processes, dictionary, cosine loss, adapt


def test_stub_keeps_the_answer_names():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("# count them\nanswer = len([1, 2, 3])\nother = 2",
                                          metadata={"tags": [SOLUTION_TAG]})]
    cell = student_notebook(nb).cells[0]
    assert "answer = ..." in cell.source and "other = ..." in cell.source
    assert "len([1, 2, 3])" not in cell.source and cell.outputs == []
