"""Write the student versions of the lesson notebooks: solution cells replaced by answer stubs.

    python -m cosuda.exercises.student [--out student/]

A cell tagged ``solution`` holds a reference answer; in the student version it becomes a code
cell with the first line of the solution if it is a comment (the task), then ``...`` lines
for the student to fill in, and no outputs. Everything else is kept, outputs included.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from ..config import REPO_ROOT

SOLUTION_TAG = "solution"
STUB = "# Your answer here (then run the check cell below).\n"


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of `nb` with every solution cell replaced by an empty answer cell."""
    out = nbformat.from_dict(nb)
    for i, cell in enumerate(out.cells):
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            answer_names = [line.split("=")[0].strip() for line in cell.source.splitlines()
                            if line and not line.startswith((" ", "#", "\t")) and "=" in line
                            and line.split("=")[0].strip().isidentifier()]
            body = STUB + "".join(f"{name} = ...\n" for name in dict.fromkeys(answer_names))
            out.cells[i] = nbformat.v4.new_code_cell(body.rstrip("\n"), metadata={"tags": ["answer"]})
    return out


def write_student_versions(out_dir: Path, notebooks_dir: Path = REPO_ROOT / "notebooks") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        target = out_dir / path.name
        nbformat.write(student_notebook(nb), target)
        written.append(target)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosuda.exercises.student", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "student")
    args = parser.parse_args(argv)
    written = write_student_versions(args.out)
    print(f"wrote {len(written)} student notebooks to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
