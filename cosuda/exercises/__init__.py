"""Exercises that check themselves, one module per lesson (``cosuda.exercises.<lesson>``).

A lesson notebook ends with two or three exercises. The student writes an answer in a code
cell and runs the check cell, which calls a ``check_*`` function of the lesson's module:

    from cosuda.exercises import cosine_loss as ex
    ex.check_selected_count(answer)        # -> "Right: ..." or "Not yet: <hint>"

Reference solutions sit in notebook cells tagged ``solution``; ``python -m cosuda.exercises.student``
writes the student versions of all notebooks with those cells replaced by answer stubs and the
outputs of the check cells and of every cell from the first solution on cleared (no answer shown).
Tests run every reference solution through its checker (must pass) and a wrong answer (must fail).
A module's ``ANSWERS`` maps each check to the function that computes the answer it expects from
the check's other arguments; the student check looks for those answers in what students see.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Result:
    """The verdict of a check: `ok` and a message (a hint when wrong). Truthy when right."""
    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return ("Right: " if self.ok else "Not yet: ") + self.message

    def _repr_markdown_(self) -> str:
        return ("**Right.** " if self.ok else "**Not yet.** ") + self.message


def right(message: str = "well done.") -> Result:
    return Result(True, message)


def wrong(hint: str) -> Result:
    return Result(False, hint)


def missing(answer) -> Result | None:
    """A 'not answered yet' verdict for None / Ellipsis answers, else None."""
    if answer is None or answer is Ellipsis:
        return wrong("no answer yet: replace the `...` / None in the answer cell and run it again.")
    return None
