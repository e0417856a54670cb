"""The student versions of the notebooks hold no reference solution and show no answer, open in
JupyterLab unchanged (no jupytext pair, normalised), and `python -m cosuda.workshop check` tells
when they are missing or stale and when the kernel cannot import cosuda."""
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

from cosuda import workshop
from cosuda.exercises.student import (ANSWER_TAG, MANIFEST, SOLUTION_TAG, answer_leaks, answer_stub,
                                      expected_answers, normalised, shows_answer, stale_student_versions,
                                      student_answer_leaks, student_notebook, write_student_versions)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHECK_CALL = re.compile(r"\bex\.check_\w+\(")  # how the lessons' check cells are written


def _solution_indices(nb):
    return [i for i, c in enumerate(nb.cells) if SOLUTION_TAG in c.metadata.get("tags", [])]


def _solution_lines(source):
    """The lines of a solution that must not reach the student: all but comments, `def` lines and
    `answer = function` lines (the stub keeps those, see cosuda.exercises.student)."""
    functions = re.findall(r"^def (\w+)\(", source, re.MULTILINE)
    return [line.strip() for line in source.splitlines()
            if line.strip() and not line.lstrip().startswith(("#", "def ", "@"))
            and not re.fullmatch(rf"\w+ = ({'|'.join(functions) or '(?!)'})", line.strip())]


def _output_text(cell):
    return json.dumps(cell.get("outputs", []))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    return out, write_student_versions(out)


def test_student_versions_contain_no_solutions(written):
    out, paths = written
    assert len(paths) == len(list(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
    with_exercises = 0
    for path in paths:
        original = nbformat.read(NOTEBOOKS / path.name, as_version=4)
        student = nbformat.read(path, as_version=4)
        assert len(student.cells) == len(original.cells)
        solutions = [original.cells[i] for i in _solution_indices(original)]
        with_exercises += bool(solutions)
        for cell in student.cells:
            assert SOLUTION_TAG not in cell.metadata.get("tags", []), path.name
        student_lines = {line.strip() for c in student.cells for line in c.source.splitlines()}
        for sol in solutions:
            for line in _solution_lines(sol.source):  # the answer lines themselves are gone
                assert line not in student_lines, f"{path.name}: solution line {line!r} left in"
    assert with_exercises >= 7  # datasets, pseudo-labels, processes, dictionary, cosine loss, adapt, ablations


def test_student_versions_show_no_answer(written):
    """No "Right" anywhere, no output on check cells or after the first solution, the teaching
    outputs before it kept."""
    out, paths = written
    checks_seen = 0
    for path in paths:
        original = nbformat.read(NOTEBOOKS / path.name, as_version=4)
        student = nbformat.read(path, as_version=4)
        solutions = _solution_indices(original)
        first = solutions[0] if solutions else len(original.cells)
        for i, (orig, cell) in enumerate(zip(original.cells, student.cells)):
            text = _output_text(cell)
            assert "Right:" not in text and "**Right.**" not in text, f"{path.name} cell {i} shows a verdict"
            if cell.cell_type != "code":
                continue
            if CHECK_CALL.search(orig.source):
                checks_seen += 1
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} check cell {i} has outputs"
            if i >= first:
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {i} (exercises) has outputs"
                assert "execution" not in cell.metadata
            else:  # the lesson's figures and tables stay
                assert cell.outputs == orig.outputs and cell.execution_count == orig.execution_count, \
                    f"{path.name} cell {i}: a teaching output was cleared"
    assert checks_seen >= 17


def test_student_versions_show_no_expected_answer_in_outputs_or_metadata(written):
    """The student versions as written from notebooks/ (and as the check makes them) pass the check,
    and the check is not empty: it knows the answers of 07's and 08's exercises."""
    out, paths = written
    for path in paths:
        answers = expected_answers(nbformat.read(NOTEBOOKS / path.name, as_version=4))
        assert answer_leaks(nbformat.read(path, as_version=4), answers, path.stem) == []
    assert student_answer_leaks(NOTEBOOKS) == []
    found = {path.stem: [a.value for a in expected_answers(nbformat.read(NOTEBOOKS / path.name, as_version=4))]
             for path in paths}
    assert (0.4, 0.5, 0.6) in found["07_adapt"] and {"seg_s", "seg_t", "adv"} in found["07_adapt"]
    assert {"wo-dict": "cos", "wo-split": "cos", "with-adv": "adversarial"} in found["08_ablations"]
    assert {("ours", "only-ssl"), ("only-ssl", "ssl-adv")} in found["08_ablations"]
    assert [3, 5, 7, 8] in found["05_feature_dictionary"]


def _lesson_with_a_leak(shown="gta5-fcn8s-ours: T_cos 0.4 -> (fc7, pool4, pool3) thresholds (0.4, 0.5, 0.6)"):
    """A lesson whose teaching cell (before the exercises, so its output is kept) prints `shown`,
    with exercise 3 of lesson 07 after it."""
    teaching = nbformat.v4.new_code_cell("print(thresholds)")
    teaching.outputs = [nbformat.v4.new_output("stream", name="stdout", text=shown)]
    nb = nbformat.v4.new_notebook()
    nb.cells = [teaching, nbformat.v4.new_markdown_cell("**3.** Which thresholds for T_cos = 0.4?"),
                nbformat.v4.new_code_cell("answer_thresholds = (0.4, 0.5, 0.6)", metadata={"tags": [SOLUTION_TAG]}),
                nbformat.v4.new_code_cell("from cosuda.exercises import adapt as ex\n\n"
                                          "ex.check_fcn_thresholds(answer_thresholds, t_cos=0.4)")]
    return nb


def test_an_output_that_shows_an_answer_is_reported_with_notebook_cell_and_answer():
    nb = _lesson_with_a_leak()
    answers = expected_answers(nb)
    assert [(a.cell, a.value) for a in answers] == [(2, (0.4, 0.5, 0.6)), (3, (0.4, 0.5, 0.6))]
    student = student_notebook(nb)
    assert student.cells[0].outputs, "a teaching output is kept by the writer"
    [leak] = answer_leaks(student, answers, "07_adapt")  # one line, though the solution and the check both know it
    assert leak.startswith("07_adapt: cell 0's output shows the answer (0.4, 0.5, 0.6)"), leak
    assert "answer_thresholds" in leak and "cell 2" in leak
    # from the check alone (a solution that computes its answer), through a constant set in an earlier cell
    nb.cells[2].source = "answer_thresholds = layer_thresholds(asked, 3)"
    nb.cells.insert(1, nbformat.v4.new_code_cell("asked = 0.4"))
    nb.cells[4].source = nb.cells[4].source.replace("t_cos=0.4", "t_cos=asked")
    [leak] = answer_leaks(student_notebook(nb), expected_answers(nb), "07_adapt")
    assert "ex.check_fcn_thresholds(answer_thresholds, t_cos=asked)" in leak and "cell 4" in leak
    # in the metadata
    nb = _lesson_with_a_leak("nothing to see")
    assert answer_leaks(student_notebook(nb), expected_answers(nb)) == []
    nb.cells[0].metadata["note"] = "thresholds [0.4, 0.5, 0.6]"
    assert "cell 0's metadata" in answer_leaks(student_notebook(nb), expected_answers(nb))[0]
    nb.metadata["summary"] = "0.4 / 0.5 / 0.6"
    assert "the notebook metadata" in answer_leaks(student_notebook(nb), expected_answers(nb))[0]


@pytest.mark.parametrize("output", [
    nbformat.v4.new_output("execute_result", {"text/plain": "array([0.4, 0.5, 0.6])"}, execution_count=1),
    nbformat.v4.new_output("display_data", {"text/markdown": "| fc7 | pool4 | pool3 |\n|---|---|---|\n"
                                                              "| **0.40** | 0.50 | 0.60 |"}),
    nbformat.v4.new_output("display_data", {"text/html": "<td>0.4</td><td>0.5</td><td>0.6</td>",
                                            "text/plain": "<IPython.core.display.HTML object>"}),
    nbformat.v4.new_output("error", ename="ValueError", evalue="bad thresholds (0.4, 0.5, 0.6)", traceback=[]),
])
def test_every_kind_of_output_is_read(output):
    nb = _lesson_with_a_leak()
    nb.cells[0].outputs = [output]
    assert len(answer_leaks(student_notebook(nb), expected_answers(nb))) == 1


def test_answers_are_compared_as_tokens():
    assert shows_answer("thresholds (0.4, 0.5, 0.6), dict-size 2000", (0.4, 0.5, 0.6))
    assert not shows_answer("T_cos 0.4 for fc7 (pool4 and pool3: exercise 3)", (0.4, 0.5, 0.6))
    assert not shows_answer("synthia: thresholds (0.2, 0.3, 0.4)", (0.4, 0.5, 0.6))
    assert not shows_answer("0.4, 0.5, 0.65", (0.4, 0.5, 0.6))
    # a set in any order, a dict as its items, numbers as rounded to the decimals shown
    assert shows_answer("ssl-adv: adv + seg_s + seg_t", {"seg_s", "seg_t", "adv"})
    assert shows_answer("{'with-adv': 'adversarial', 'wo-dict': 'cos', 'wo-split': 'cos'}",
                        {"wo-dict": "cos", "wo-split": "cos", "with-adv": "adversarial"})
    assert shows_answer("Ours − only SSL: +0.50 [−0.16, +1.16]", (0.5, -0.1573, 1.1573))
    assert not shows_answer("Ours − only SSL: +0.50 [+0.16, +1.16]", (0.5, -0.1573, 1.1573))
    # a lone number counts when shown with 3 significant digits; a lone word or small count never
    assert shows_answer("194.6 MB in float16", 194.56) and not shows_answer("about 190 MB", 194.56)
    assert not shows_answer("road 37.2", "road") and not shows_answer("seeds 0, 1, 2", [0, 1])


def test_workshop_check_reports_a_student_version_that_shows_an_answer(tmp_path):
    notebooks = _copy_notebooks(tmp_path, ("07_adapt",))
    student = tmp_path / "student"
    write_student_versions(student, notebooks)
    assert workshop.student_problems(student, notebooks) == []
    # lesson 07 as it was: its FCN-8s cell printed the thresholds exercise 3 asks for
    path = notebooks / "07_adapt.ipynb"
    text = path.read_text(encoding="utf-8")
    assert "T_cos 0.4 for fc7 (pool4 and pool3: exercise 3)" in text
    path.write_text(text.replace("T_cos 0.4 for fc7 (pool4 and pool3: exercise 3)",
                                 "T_cos 0.4 -> (fc7, pool4, pool3) thresholds (0.4, 0.5, 0.6)"), encoding="utf-8")
    write_student_versions(student, notebooks)
    [problem] = workshop.student_problems(student, notebooks)
    assert "07_adapt" in problem and "(0.4, 0.5, 0.6)" in problem and "answer_thresholds" in problem
    cell = next(i for i, c in enumerate(nbformat.read(path, as_version=4).cells) if "asked_t_cos" in c.source)
    assert f"cell {cell}'s output" in problem


def test_student_versions_have_no_jupytext_pairing_and_are_normalised(written):
    out, paths = written
    for path in paths:
        text = path.read_text(encoding="utf-8")
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
        assert "jupytext" not in nb.metadata, path.name
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
        assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
        ids = [c.get("id") for c in nb.cells]
        assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: cell ids missing or repeated"
        assert not any("lines_to_next_cell" in c.metadata for c in nb.cells)
        assert text.endswith("\n")
        again = nbformat.writes(nbformat.reads(text, as_version=4))
        assert again + ("" if again.endswith("\n") else "\n") == text, f"{path.name}: nbformat would rewrite it"
    original_ids = [c.id for c in nbformat.read(NOTEBOOKS / paths[0].name, as_version=4).cells]
    assert [c.id for c in nbformat.read(paths[0], as_version=4).cells] == original_ids  # stable ids
    assert not list(out.glob("*.py"))


def test_jupyterlab_opens_and_saves_a_student_notebook_unchanged(written):
    out, paths = written
    manager = jupytext.TextFileContentsManager(root_dir=str(out))
    for path in paths[:4]:
        before = path.read_bytes()
        model = manager.get(path.name)
        assert model["type"] == "notebook"
        manager.save(model, path.name)
        assert path.read_bytes() == before, f"{path.name} changed on open + save"
    assert not list(out.glob("*.py")), "jupytext wrote a paired text file beside a student notebook"


def _copy_notebooks(tmp_path, stems=("01_datasets", "04_processes_a_b")):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for stem in stems:
        shutil.copy(NOTEBOOKS / f"{stem}.ipynb", notebooks)
    return notebooks


def test_rewrite_after_a_student_saved_leaves_notebooks_jupyterlab_opens(tmp_path):
    notebooks = _copy_notebooks(tmp_path)
    out = tmp_path / "student"
    write_student_versions(out, notebooks)
    fresh = tmp_path / "fresh"
    write_student_versions(fresh, notebooks)
    # A student worked in 04 with an earlier version that paired the notebooks: the saved .ipynb has
    # an answer and jupytext's pairing, and JupyterLab wrote 04_processes_a_b.py beside it.
    target = out / "04_processes_a_b.ipynb"
    nb = nbformat.read(target, as_version=4)
    answer = next(c for c in nb.cells if ANSWER_TAG in c.metadata.get("tags", []))
    answer.source = answer.source.replace("    ...", "    return None, None")
    nb.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    nbformat.write(nb, target)
    jupytext.write(nb, out / "04_processes_a_b.py", fmt="py:percent")
    (out / "notes.py").write_text("# the student's own file\n")
    past = time.time() - 120
    os.utime(out / "04_processes_a_b.py", (past, past))
    os.utime(target, (past, past))

    write_student_versions(out, notebooks)

    assert not (out / "04_processes_a_b.py").exists(), "the stale paired .py was left beside the notebook"
    assert (out / "notes.py").exists(), "a file that is no notebook's pair was deleted"
    for name in ("01_datasets.ipynb", "04_processes_a_b.ipynb"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name
    manager = jupytext.TextFileContentsManager(root_dir=str(out))
    model = manager.get("04_processes_a_b.ipynb")  # raised "... is more recent than ....py" before
    assert "jupytext" not in model["content"]["metadata"]


def test_stub_keeps_the_answer_names():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("# count them\nanswer = len([1, 2, 3])\nother = 2",
                                          metadata={"tags": [SOLUTION_TAG]})]
    cell = student_notebook(nb).cells[0]
    assert "answer = ..." in cell.source and "other = ..." in cell.source
    assert "# count them" in cell.source  # the task
    assert "len([1, 2, 3])" not in cell.source and cell.outputs == []


def test_stub_of_a_function_keeps_its_signature_and_the_name_the_check_reads():
    source = ('def mine(features, logits, labels=None):\n    """Eq. 6."""\n    rows = features * 2\n'
              '    return rows, labels\n\n\nanswer = mine\ntotal = sum(x for x in range(3))\n')
    stub = answer_stub(source)
    assert "def mine(features, logits, labels=None):" in stub and '"""Eq. 6."""' in stub
    assert "answer = mine" in stub and "total = ..." in stub
    assert "rows" not in stub and "return" not in stub and "x =" not in stub
    namespace = {}
    exec(stub, namespace)
    assert namespace["answer"](1, 2) is None and namespace["total"] is Ellipsis


def test_which_outputs_are_cleared():
    """Check cells anywhere (however the exercise module is imported, magics included) and every
    code cell from the first solution on; other cells keep their outputs."""
    def cell(source, output="shown", tags=()):
        c = nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)} if tags else {})
        c.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": output}, execution_count=1)]
        c.execution_count = 1
        return c

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        cell("import cosuda.exercises.datasets as quiz\nfrom cosuda.exercises.adapt import check_terms"),
        cell("data.check_sizes(x)"),                                  # 1: not an exercise check
        cell("quiz.check_absent_classes(a, b)", "Right: early"),      # 2: a check before any solution
        cell("%time check_terms(t, 'ssl')", "Right: magic"),          # 3: a directly imported check
        cell("figure()"),                                             # 4: teaching output
        cell("a = 1", tags=[SOLUTION_TAG]),                           # 5
        cell("print(a + 1)", "2"),                                    # 6: depends on the answer
        cell("independent()", "after"),                               # 7: after the first solution
    ]
    nb.cells.insert(5, nbformat.v4.new_markdown_cell("## Exercises"))
    student = student_notebook(nb)
    kept = [i for i, c in enumerate(student.cells) if c.cell_type == "code" and c.outputs]
    assert kept == [0, 1, 4]
    assert all(c.get("execution_count") is None for c in student.cells[6:])
    assert student.cells[6].metadata["tags"] == [ANSWER_TAG]


def test_normalised_adds_missing_ids_and_upgrades():
    nb = nbformat.v4.new_notebook()
    nb.nbformat_minor = 4
    nb.cells = [nbformat.from_dict({"cell_type": "markdown", "metadata": {}, "source": "x"})]
    text = normalised(nb)
    back = nbformat.reads(text, as_version=4)
    assert back.nbformat_minor >= 5 and back.cells[0].get("id") and text.endswith("\n")


# ---------------------------------------------------------------- python -m cosuda.workshop check

def test_workshop_check_reports_missing_and_stale_student_notebooks(tmp_path):
    notebooks = _copy_notebooks(tmp_path)
    student = tmp_path / "student"
    [problem] = workshop.student_problems(student, notebooks)
    assert "not written" in problem and "python -m cosuda.workshop prepare" in problem

    write_student_versions(student, notebooks)
    assert workshop.student_problems(student, notebooks) == []
    # a student's answers do not make the folder stale ...
    path = student / "01_datasets.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[-1].source += "\n# my notes"
    nbformat.write(nb, path)
    assert workshop.student_problems(student, notebooks) == []
    # ... a changed lesson notebook does
    lesson = nbformat.read(notebooks / "04_processes_a_b.ipynb", as_version=4)
    lesson.cells[0].source += "\nA new sentence."
    nbformat.write(lesson, notebooks / "04_processes_a_b.ipynb")
    [problem] = workshop.student_problems(student, notebooks)
    assert "out of date" in problem and "04_processes_a_b" in problem and "01_datasets" not in problem
    assert "python -m cosuda.exercises.student" in problem
    # a new lesson notebook without a student version, and a folder written without a manifest
    shutil.copy(NOTEBOOKS / "05_feature_dictionary.ipynb", notebooks)
    assert stale_student_versions(student, notebooks) == ["04_processes_a_b.ipynb", "05_feature_dictionary.ipynb"]
    write_student_versions(student, notebooks)
    assert workshop.student_problems(student, notebooks) == []
    (student / MANIFEST).unlink()
    assert len(stale_student_versions(student, notebooks)) == 3


def test_workshop_check_includes_the_student_folder(tmp_path, monkeypatch):
    problems = workshop.check(student_dir=tmp_path / "student", notebooks_dir=_copy_notebooks(tmp_path), kernel=None)
    assert any("student notebooks" in p and "not written" in p for p in problems)
    monkeypatch.setattr(workshop, "check", lambda: ["student notebooks (x) not written: run `python -m ...`"])
    assert workshop.main(["check"]) == 1


def _fake_kernel(monkeypatch, argv, env=None):
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    spec = KernelSpec(argv=argv, env=env or {}, display_name="Python 3", language="python")
    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", lambda self, name: spec)


def test_kernel_check_passes_for_the_project_python(tmp_path, monkeypatch):
    assert workshop.kernel_problem(cwd=tmp_path) is None  # the kernel this machine's JupyterLab starts
    _fake_kernel(monkeypatch, ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    assert workshop.kernel_command()[0][0] == sys.executable  # as jupyter_client resolves it
    assert workshop.kernel_problem(cwd=tmp_path) is None


def test_kernel_check_reports_a_kernel_that_cannot_import_cosuda(tmp_path, monkeypatch):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "cosuda.py").write_text("raise ImportError('not the project environment')\n")
    _fake_kernel(monkeypatch, [sys.executable, "-m", "ipykernel_launcher"], env={"PYTHONPATH": str(shadow)})
    problem = workshop.kernel_problem(cwd=tmp_path)
    assert "cannot import cosuda" in problem and "not the project environment" in problem
    assert f"{sys.executable} -m ipykernel install --user --name python3" in problem

    _fake_kernel(monkeypatch, [str(tmp_path / "no-such-python"), "-m", "ipykernel_launcher"])
    problem = workshop.kernel_problem(cwd=tmp_path)
    assert "does not run" in problem and "ipykernel install --user" in problem


def test_kernel_check_reports_a_missing_kernel(monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def missing(self, name):
        raise NoSuchKernel(name)

    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", missing)
    problem = workshop.kernel_problem()
    assert "no kernel 'python3'" in problem and "ipykernel install --user --name python3" in problem
    problems = workshop.check(student_dir=Path("/nonexistent/student"), notebooks_dir=NOTEBOOKS)
    assert any("no kernel" in p for p in problems)


def test_prepare_trains_the_lesson_model_and_its_pseudo_labels_through_the_executors(tmp_path, monkeypatch, capsys):
    """`workshop prepare` plans its two slow steps as jobs (the source-only lesson model, then its
    pseudo-labels) and runs them through the executors in this process, then writes prepare.json."""
    from cosuda import executors

    ran = []

    def fake_run(plan, executor="local", **kw):
        ran.append((executor, [(j.name, j.kind, j.out) for j in plan]))
        return {j.name: executors.JobResult(j.name, True, 0.0, None) for j in plan}

    monkeypatch.setattr(executors, "run", fake_run)
    monkeypatch.setattr("cosuda.synthetic.ensure", lambda root, progress=True: None)
    monkeypatch.setattr("cosuda.exercises.student.write_student_versions", lambda *a: None)
    monkeypatch.setattr(workshop, "LESSONS", tmp_path)
    timings = workshop.prepare(iterations=7, progress=False)
    assert ran == [("inline", [("lessons/source-only", "train", workshop.SOURCE_RUN)]),
                   ("inline", [("lessons/pseudo_labels", "pseudo", workshop.PSEUDO_ROOT)])]
    assert "train the source-only lesson model (7 iterations)" in timings
    assert json.loads((tmp_path / "prepare.json").read_text()) == timings
    # how long it took, in all, on which machine (measured, not typed)
    steps = {k: v for k, v in timings.items() if k not in ("total", "machine")}
    assert len(steps) == 4 and all(isinstance(v, float) for v in steps.values())
    assert isinstance(timings["total"], float) and timings["total"] >= max(steps.values())
    import torch

    from cosuda.provenance import cpu_model
    assert timings["machine"] == {"cpu": cpu_model(), "threads": torch.get_num_threads()}
    assert f"[prepare] total: {timings['total']} s on {cpu_model()}, {torch.get_num_threads()} threads" \
        in capsys.readouterr().out
    monkeypatch.setattr(executors, "run", lambda plan, executor="local", **kw: {
        j.name: executors.JobResult(j.name, False, 0.0, None, error="boom") for j in plan})
    with pytest.raises(RuntimeError, match="lessons/source-only failed"):
        workshop.prepare(iterations=7, progress=False)
