"""Write the student versions of the lesson notebooks: no reference solution, no answer shown.

    python -m cosuda.exercises.student [--out student/]

For every ``notebooks/NN_*.ipynb`` it writes ``<out>/NN_*.ipynb`` (and ``<out>/.cosuda-student.json``,
which records what each was written from, for ``python -m cosuda.workshop check``):

* **Solutions become stubs.** A cell tagged ``solution`` holds a reference answer; it becomes a code
  cell tagged ``answer`` with the solution's leading comment lines (the task, if it starts with
  one), then one stub per thing the check cell reads: ``name = ...`` for every name the solution
  assigns, ``def f(<same signature>):`` with a ``...`` body for every function it defines, and an
  assignment of such a function to a name (``answer_a = process_a_mine``) kept as it is, so that
  the stub names exactly what the check expects.
* **Which outputs are cleared.** Every code cell *from the first solution cell of the notebook on*
  loses its outputs and execution count: the answer cells, the check cells (which would show the
  teacher's "Right: ..."), and any cell between or after them, whose output may depend on an
  answer. So does every *check cell* anywhere: a code cell that calls a ``check_*`` function of a
  ``cosuda.exercises`` module (``ex.check_...(...)`` after ``from cosuda.exercises import x as ex``,
  or a ``check_*`` imported from such a module); a cell that is not valid Python is a check cell
  when it contains ``check_<name>(``. Cells before the first solution keep their outputs: they are
  the lesson's figures and tables, and, run top to bottom, they run before any answer exists.
* **No answer in what they show.** ``student_answer_leaks`` (run by ``python -m cosuda.workshop
  check``) looks for every exercise's expected answer in the outputs (streams, text/plain,
  text/markdown, text/html, text/latex, errors) and the notebook and cell metadata of the student
  versions: a lesson cell before the exercises must not print what an exercise asks. The answers
  are those known without running the lesson (``expected_answers``): the constants a solution cell
  assigns, and what a check expects (its module's ``ANSWERS``) when its other arguments are
  constants. Text and answer are compared as tokens (words; numbers as rounded to the decimals
  shown), so ``(0.4, 0.5, 0.6)`` is found in "thresholds 0.4, 0.5, 0.6" and a set in any order.
* **No jupytext pairing.** ``metadata.jupytext`` (``formats: ipynb,py:percent``) and jupytext's
  cell metadata are dropped, so JupyterLab does not write ``<out>/NN_*.py`` beside the notebooks;
  a ``<out>/NN_*.py`` left from an earlier version (with the stem of a notebook written now) is
  deleted, so a re-write never leaves JupyterLab a "... is more recent than ....py" pair to refuse.
* **Normalised.** nbformat 4.5 with a cell id on every cell (the original ids, kept), validated,
  written byte for byte as an nbformat read/write round trip would write it, so opening and
  saving a student notebook unchanged does not change the file.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import itertools
import json
import operator
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..config import REPO_ROOT

SOLUTION_TAG = "solution"
ANSWER_TAG = "answer"
STUB = "# Your answer here (then run the check cell below).\n"
MANIFEST = ".cosuda-student.json"
WRITER_VERSION = 2  # bump when the student versions change for reasons other than the notebooks
JUPYTEXT_CELL_METADATA = ("lines_to_next_cell", "lines_to_end_of_cell_marker", "cell_marker")
_CHECK_TEXT = re.compile(r"\bcheck_\w+\s*\(")


_LINE_MAGIC = re.compile(r"^(\s*)%\w+\s?")


def _parse(source: str) -> ast.Module | None:
    """The cell as Python: `%%cell` magic and `!shell` lines blanked, `%line magic` lines read as the
    code they run (`%time f(x)` as `f(x)`); None if it is not Python."""
    lines = ["" if line.lstrip().startswith(("%%", "!")) else _LINE_MAGIC.sub(r"\1", line)
             for line in source.splitlines()]
    text = "\n".join(lines)
    try:
        return ast.parse(text)
    except SyntaxError:
        return None


def exercise_bindings(cells) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """({name: the module it is bound to} for names bound to cosuda (or a module of it) that lead
    to a cosuda.exercises module, {name: (module, check_* function)} for check functions imported
    by name), from the import statements of all code cells."""
    modules, functions = {}, {}
    for cell in cells:
        tree = _parse(cell.source) if cell.cell_type == "code" else None
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "cosuda.exercises" or alias.name.startswith("cosuda.exercises."):
                        if alias.asname:
                            modules[alias.asname] = alias.name
                        else:
                            modules[alias.name.split(".")[0]] = alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "cosuda":
                    modules.update({a.asname or a.name: "cosuda.exercises"
                                    for a in node.names if a.name == "exercises"})
                elif node.module == "cosuda.exercises" or node.module.startswith("cosuda.exercises."):
                    for alias in node.names:
                        if alias.name.startswith("check_"):
                            functions[alias.asname or alias.name] = (node.module, alias.name)
                        else:
                            modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return modules, functions


def exercise_names(cells) -> tuple[set[str], set[str]]:
    """(names bound to a cosuda.exercises module, names bound to a check_* function of one),
    from the import statements of all code cells."""
    modules, functions = exercise_bindings(cells)
    return set(modules), set(functions)


def is_check_cell(cell, modules: set[str], functions: set[str]) -> bool:
    """Whether a code cell calls a check_* function of a cosuda.exercises module."""
    if cell.cell_type != "code":
        return False
    tree = _parse(cell.source)
    if tree is None:
        return bool(_CHECK_TEXT.search(cell.source))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in functions:
            return True
        if isinstance(func, ast.Attribute) and func.attr.startswith("check_"):
            root = func.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in modules:
                return True
    return False


def _assigned_names(tree: ast.Module) -> list[str]:
    """Names the cell assigns at its top level (in compound statements too, not in functions,
    classes, lambdas or comprehensions), in order."""
    names: list[str] = []

    def targets(node):
        if isinstance(node, ast.Name):
            names.append(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                targets(elt)
        elif isinstance(node, ast.Starred):
            targets(node.value)

    def visit(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
                             ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            return
        if isinstance(node, ast.Assign):
            for t in node.targets:
                targets(t)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets(node.target)
        elif isinstance(node, ast.NamedExpr):
            targets(node.target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for statement in tree.body:
        visit(statement)
    return names


def _definition_stub(node) -> str:
    """`def f(<signature>):` (or `class C(<bases>):`) with its docstring, if any, and a `...` body."""
    head = "\n".join(f"@{ast.unparse(d)}" for d in node.decorator_list)
    head = head + "\n" if head else ""
    if isinstance(node, ast.ClassDef):
        bases = ", ".join([ast.unparse(b) for b in node.bases] + [ast.unparse(k) for k in node.keywords])
        head += f"class {node.name}({bases}):" if bases else f"class {node.name}:"
    else:
        returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
        prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
        head += f"{prefix} {node.name}({ast.unparse(node.args)}){returns}:"
    doc = ast.get_docstring(node, clean=False)
    if doc is None:
        body = "    ..."
    elif '"""' in doc or doc.endswith("\\"):
        body = f"    {ast.unparse(node.body[0])}\n    ..."
    else:
        body = f'    """{doc}"""\n    ...'
    return f"{head}\n{body}"


def answer_stub(source: str) -> str:
    """The student's cell for a solution cell's source (see the module docstring)."""
    task = []
    for line in source.splitlines():
        if line.strip().startswith("#"):
            task.append(line.strip())
        elif line.strip() or task:
            break
    tree = _parse(source)
    if tree is None:  # not Python: stub the `name = value` lines
        names = [line.split("=")[0].strip() for line in source.splitlines()
                 if line and not line.startswith((" ", "#", "\t")) and "=" in line
                 and line.split("=")[0].strip().isidentifier()]
        body = "".join(f"{name} = ...\n" for name in dict.fromkeys(names))
    else:
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        parts, stubbed = [], set()
        for statement in tree.body:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                parts.append(_definition_stub(statement) + "\n\n\n")
                stubbed.add(statement.name)
            elif (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                  and isinstance(statement.targets[0], ast.Name) and isinstance(statement.value, ast.Name)
                  and statement.value.id in defined):  # answer_a = process_a_mine: the student's function
                parts.append(f"{statement.targets[0].id} = {statement.value.id}\n")
                stubbed.add(statement.targets[0].id)
            else:
                for name in _assigned_names(ast.Module(body=[statement], type_ignores=[])):
                    if name not in stubbed:
                        parts.append(f"{name} = ...\n")
                        stubbed.add(name)
        body = "".join(parts)
    return (STUB + "".join(line + "\n" for line in task) + body).rstrip("\n")


KERNEL_NAME = "python3"


def installed_kernel_display_name(name: str = KERNEL_NAME) -> str:
    """The display name of the kernel JupyterLab will start ("Python 3 (ipykernel)" by default)."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        return KernelSpecManager().get_kernel_spec(name).display_name
    except Exception:  # no Jupyter here: ipykernel's own default
        return "Python 3 (ipykernel)"


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of `nb` without solutions, answers or jupytext pairing (see the module docstring)."""
    out = nbformat.from_dict(nb)
    out.metadata.pop("jupytext", None)
    # JupyterLab rewrites the display name to the installed kernel's when the kernel starts, which
    # marks the notebook modified (autosave then writes it back): write that name already.
    out.metadata["kernelspec"] = dict(out.metadata.get("kernelspec", {}), name=KERNEL_NAME,
                                      display_name=installed_kernel_display_name(), language="python")
    modules, functions = exercise_names(out.cells)
    solutions = [i for i, c in enumerate(out.cells) if SOLUTION_TAG in c.get("metadata", {}).get("tags", [])]
    first = solutions[0] if solutions else len(out.cells)
    for i, cell in enumerate(out.cells):
        for key in JUPYTEXT_CELL_METADATA:
            cell.metadata.pop(key, None)
        if i in solutions:
            stub = nbformat.v4.new_code_cell(answer_stub(cell.source), metadata={"tags": [ANSWER_TAG]})
            if "id" in cell:
                stub["id"] = cell["id"]
            out.cells[i] = stub
        elif cell.cell_type == "code" and (i >= first or is_check_cell(cell, modules, functions)):
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    return out


def normalised(nb: nbformat.NotebookNode) -> str:
    """The text nbformat writes for `nb` as v4.5 with cell ids, validated; a read/write round trip
    of that text gives the same text."""
    nb = nbformat.from_dict(nb)
    nb.nbformat, nb.nbformat_minor = 4, max(5, nb.get("nbformat_minor", 0))
    seen = set()
    for cell in nb.cells:
        if not cell.get("id") or cell["id"] in seen:
            cell["id"] = nbformat.v4.nbbase.random_cell_id()
        seen.add(cell["id"])
    nbformat.validate(nb)
    text = nbformat.writes(nb, version=4)
    text = text if text.endswith("\n") else text + "\n"
    again = nbformat.writes(nbformat.reads(text, as_version=4), version=4)
    if (again if again.endswith("\n") else again + "\n") != text:
        raise RuntimeError("nbformat would rewrite the student notebook on a load/save round trip")
    return text


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_student_versions(out_dir: Path, notebooks_dir: Path = REPO_ROOT / "notebooks") -> list[Path]:
    """Writes the student version of every notebooks_dir/NN_*.ipynb to out_dir (overwriting), deletes
    out_dir/NN_*.py files of the same stems (stale jupytext pairs), records the sources in MANIFEST."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, sources = [], {}
    for path in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb")):
        text = normalised(student_notebook(nbformat.read(path, as_version=4)))
        target = out_dir / path.name
        stale_pair = target.with_suffix(".py")
        if stale_pair.is_file():
            stale_pair.unlink()
        target.write_text(text, encoding="utf-8")
        written.append(target)
        sources[path.name] = source_digest(path)
    (out_dir / MANIFEST).write_text(json.dumps({"writer_version": WRITER_VERSION, "sources": sources},
                                               indent=1, sort_keys=True) + "\n")
    return written


def stale_student_versions(out_dir: Path, notebooks_dir: Path = REPO_ROOT / "notebooks") -> list[str]:
    """Names of the notebooks whose student version in out_dir is missing or was not written from
    the current notebooks_dir/NN_*.ipynb by this writer (empty: up to date). Students' own edits
    of the student notebooks do not count: the manifest records what they were written from."""
    names = [p.name for p in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))]
    try:
        manifest = json.loads((Path(out_dir) / MANIFEST).read_text())
        recorded = manifest["sources"] if manifest.get("writer_version") == WRITER_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        recorded = {}
    return [name for name in names if not (Path(out_dir) / name).is_file()
            or recorded.get(name) != source_digest(Path(notebooks_dir) / name)]


# --- no answer shown: the expected answers, looked for in what a student notebook shows ----------
@dataclass(frozen=True)
class Answer:
    """An exercise's expected answer as far as the reference notebook tells it without running:
    `cell` is the solution or check cell it comes from, `what` says which."""
    cell: int
    what: str
    value: object


class _NotConstant(Exception):
    pass


_UNKNOWN = object()  # the value of an expression that only running the notebook would tell


_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
               ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


def _constant(node, env: dict):
    """The value of an expression made only of literals, arithmetic and names of `env`."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [_constant(e, env) for e in node.elts]
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_constant(k, env): _constant(v, env) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _constant(node.operand, env)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _constant(node.left, env), _constant(node.right, env)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:  # a literal is never that big a power
            raise _NotConstant
        return _ARITHMETIC[type(node.op)](left, right)
    raise _NotConstant


def _evaluate(node, env: dict):
    try:
        return _constant(node, env)
    except (_NotConstant, TypeError, ValueError, ArithmeticError):
        return _UNKNOWN


def _bound_names(statement) -> list[str]:
    """The names a top-level statement binds (assignments, loops, definitions, imports)."""
    names = _assigned_names(ast.Module(body=[statement], type_ignores=[]))
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names.append(statement.name)
    elif isinstance(statement, (ast.Import, ast.ImportFrom)):
        names += [(a.asname or a.name).split(".")[0] for a in statement.names]
    return names


def _checker_answer(call: ast.Call, env: dict, modules: dict, functions: dict):
    """What the check `call` expects, from the ANSWERS of its exercise module (see
    cosuda.exercises.adapt) and the call's other arguments when they are constants; else _UNKNOWN."""
    func = call.func
    if isinstance(func, ast.Name) and func.id in functions:
        module, name = functions[func.id]
    elif isinstance(func, ast.Attribute) and func.attr.startswith("check_"):
        path, root = [], func.value
        while isinstance(root, ast.Attribute):
            path.insert(0, root.attr)
            root = root.value
        if not (isinstance(root, ast.Name) and root.id in modules):
            return _UNKNOWN
        module, name = ".".join([modules[root.id], *path]), func.attr
    else:
        return _UNKNOWN
    try:
        expected = getattr(importlib.import_module(module), "ANSWERS", {})[name]
    except (ImportError, KeyError):
        return _UNKNOWN
    args = [_evaluate(a, env) for a in call.args[1:]]
    kwargs = {k.arg: _evaluate(k.value, env) for k in call.keywords}
    if _UNKNOWN in args or _UNKNOWN in kwargs.values() or None in kwargs:
        return _UNKNOWN
    try:
        return expected(*args, **kwargs)
    except (TypeError, ValueError, KeyError):  # the check cell itself would say what is wrong
        return _UNKNOWN


def expected_answers(nb: nbformat.NotebookNode) -> list[Answer]:
    """The answers the exercises of a reference notebook expect, as far as they are known without
    running it: the constant values its solution cells assign (`answer = (0.4, 0.5, 0.6)`, also
    through names that earlier cells set to constants), and what each check call expects when
    its other arguments are such constants (the exercise module's ANSWERS). Answers computed
    from a lesson's run (a loss, a count) are only known when it runs: they are not here."""
    modules, functions = exercise_bindings(nb.cells)
    env, answers = {}, []
    for i, cell in enumerate(nb.cells):
        tree = _parse(cell.source) if cell.cell_type == "code" else None
        if tree is None:
            continue
        solution = SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])
        for node in ast.walk(tree) if not solution else ():
            if isinstance(node, ast.Call):
                value = _checker_answer(node, env, modules, functions)
                if value is not _UNKNOWN:
                    answers.append(Answer(i, f"`{ast.unparse(node)}`", value))
        for statement in tree.body:
            value = _UNKNOWN
            if isinstance(statement, ast.Assign) and all(isinstance(t, ast.Name) for t in statement.targets):
                value = _evaluate(statement.value, env)
            elif isinstance(statement, ast.AnnAssign) and statement.value and isinstance(statement.target, ast.Name):
                value = _evaluate(statement.value, env)  # a parameter: `t_cos: float = 0.4`
            for name in _bound_names(statement):
                env.pop(name, None)
                if value is not _UNKNOWN:
                    env[name] = value
                    if solution:
                        answers.append(Answer(i, f"`{name}` of the solution", value))
    return answers


_SHOWN_MIME = ("text/plain", "text/markdown", "text/html", "text/latex")
_MARKUP = re.compile(r"<[^>]*>|\x1b\[[0-9;]*[A-Za-z]")  # HTML tags, terminal colours
_TOKEN = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?|[a-z_][a-z0-9_-]*")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_MAX_ORDERS = 120


def shown_texts(nb: nbformat.NotebookNode):
    """(where, text) for everything a notebook shows besides its sources: the text of every output
    (streams, text/plain, text/markdown, text/html, text/latex, errors) and the metadata."""
    yield "the notebook metadata", json.dumps(nb.get("metadata", {}))
    for i, cell in enumerate(nb.cells):
        if cell.get("metadata"):
            yield f"cell {i}'s metadata", json.dumps(cell.metadata)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            parts = [output.get("text", ""), *(data.get(m, "") for m in _SHOWN_MIME), output.get("evalue", ""),
                     "\n".join(output.get("traceback", [])), json.dumps(output.get("metadata", {}))]
            yield f"cell {i}'s output", "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(_MARKUP.sub(" ", text).lower().replace("\u2212", "-"))


def _spellings(value) -> list[list]:
    """The ways an answer reads as a sequence of tokens (words as strings, numbers as floats): a
    set's or dict's items in every order (up to _MAX_ORDERS), a sequence's in its own."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, bool) or value is None:
        return [[str(value).lower()]]
    if isinstance(value, (int, float)):
        return [[float(value)]]
    if isinstance(value, str):
        return [_tokens(value)]
    if isinstance(value, dict):
        items, ordered = [(k, v) for k, v in value.items()], False
    elif isinstance(value, (set, frozenset)):
        items, ordered = sorted(value, key=repr), False
    elif isinstance(value, (list, tuple)):
        items, ordered = list(value), True
    else:
        return [_tokens(str(value))]
    orders = [items] if ordered else list(itertools.islice(itertools.permutations(items), _MAX_ORDERS))
    spelled = []
    for order in orders:
        sequences = [[]]
        for item in order:
            parts = _spellings(item[0]) if isinstance(value, dict) else [[]]
            tails = _spellings(item[1] if isinstance(value, dict) else item)
            sequences = [s + p + t for s in sequences for p in parts for t in tails][:_MAX_ORDERS]
        spelled += sequences
    return spelled[:_MAX_ORDERS]


def _reads_as(want, token: str, lone: bool) -> bool:
    """Whether a text token shows `want` (a word, or a number as rounded to the token's decimals;
    a lone number only counts when the token shows at least 3 significant digits)."""
    if isinstance(want, str):
        return want == token
    if not _NUMBER.fullmatch(token):
        return False
    decimals = len(token.split(".")[1]) if "." in token else 0
    if decimals == 0 and not float(want).is_integer():
        return False
    if lone and len(token.lstrip("+-0.").replace(".", "")) < 3:
        return False
    return abs(float(token) - want) <= 0.5 * 10 ** -decimals + 1e-9 * max(1.0, abs(want))


def _telling(sequence: list) -> bool:
    """Whether a spelling says enough to be told from a coincidence: two or more tokens (three when
    they are all whole numbers), or one number that is not whole. A lone word or small count is in
    every lesson's tables."""
    if len(sequence) == 1:
        return isinstance(sequence[0], float) and not sequence[0].is_integer()
    whole = all(isinstance(t, float) and t.is_integer() for t in sequence)
    return len(sequence) >= (3 if whole else 2)


def _shows(tokens: list[str], spellings: list[list]) -> bool:
    for sequence in spellings:
        if not sequence or not _telling(sequence):
            continue
        lone, n = len(sequence) == 1, len(sequence)
        for start in range(len(tokens) - n + 1):
            if all(_reads_as(w, t, lone) for w, t in zip(sequence, tokens[start:start + n])):
                return True
    return False


def shows_answer(text: str, value) -> bool:
    """Whether `text` states the answer `value` (in any spelling of `_spellings`)."""
    return _shows(_tokens(text), _spellings(value))


def answer_leaks(student: nbformat.NotebookNode, answers: list[Answer], name: str = "notebook") -> list[str]:
    """One line per output or metadata of the student notebook that shows one of `answers`
    (`expected_answers` of its reference notebook), naming the notebook, the cell and the answer."""
    leaks, seen = [], set()
    spellings = [_spellings(answer.value) for answer in answers]
    for where, text in shown_texts(student):
        tokens = _tokens(text)
        for answer, spelled in zip(answers, spellings):
            if (where, repr(answer.value)) not in seen and _shows(tokens, spelled):
                seen.add((where, repr(answer.value)))  # a solution and its check expect the same answer
                leaks.append(f"{name}: {where} shows the answer {answer.value!r} ({answer.what}, cell {answer.cell})")
    return leaks


def student_answer_leaks(notebooks_dir: Path = REPO_ROOT / "notebooks") -> list[str]:
    """`answer_leaks` of the student version of every notebooks_dir/NN_*.ipynb, as the writer makes
    it from the current notebook: what a student opens. (The notebooks in the student folder are
    not read: once students run them, their own answers and "Right: ..." are there, as they should.)"""
    leaks = []
    for path in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        leaks += answer_leaks(student_notebook(nb), expected_answers(nb), path.stem)
    return leaks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosuda.exercises.student", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "student")
    args = parser.parse_args(argv)
    written = write_student_versions(args.out)
    print(f"wrote {len(written)} student notebooks to {args.out}")
    for leak in student_answer_leaks():
        print(f"warning: {leak}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
