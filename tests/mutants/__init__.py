"""The catalogue of mistakes students really make, as mutations of the solution notebooks.

Each ``Mutant`` replaces ``old`` by ``new`` in the source of the solution cell ``grade_id`` of one
assignment's solution notebook (``old`` must occur exactly once). ``tests/test_mutants.py`` grades every
mutated copy: it must lose points in its own part (the test cells that follow the answer cell), in no other
part unless ``also`` lists it, and the report must contain ``hint`` (the grader names the mistake).
``ALTERNATIVES`` are correct answers written another way, as the same kind of mutation: each must keep full
marks. The catalogue grows whenever a new mistake is seen in real submissions.

``python -m tests.mutants`` prints the report on the catalogue: per part, how many mutants lose points there,
how many the grader names and how many it only locates.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Dict, List, Set, Tuple

from autograder.notebook import ASSIGNMENTS


@dataclass(frozen=True)
class Mutant:
    id: str        # short, unique within the assignment: "no-scale"
    grade_id: str  # the nbgrader grade_id of the solution cell to mutate
    old: str       # exact text in that cell's source (occurs once)
    new: str       # what a student wrote instead
    hint: str = ""  # text the grading report must contain for this mutant (empty for a correct alternative)
    also: Tuple[str, ...] = ()  # other parts this mistake may cost, where it is not local (a shared function)


def _load(attribute: str) -> Dict[str, List[Mutant]]:
    table = {}
    for a in ASSIGNMENTS:
        module = importlib.import_module(f"tests.mutants.{a}")
        table[a] = list(getattr(module, attribute, []))
    return table


CATALOGUE: Dict[str, List[Mutant]] = _load("MUTANTS")
ALTERNATIVES: Dict[str, List[Mutant]] = _load("ALTERNATIVES")


@functools.lru_cache(maxsize=None)
def _parts_after_answers(assignment: str) -> Dict[str, frozenset]:
    """answer cell -> the graded test cells between it and the next answer cell, in the solution notebook."""
    from autograder.notebook import SOLUTIONS, load_json, nbgrader

    cells = load_json(SOLUTIONS / assignment / f"{assignment}.ipynb")["cells"]
    table: Dict[str, Set[str]] = {}
    current = None
    for cell in cells:
        meta = nbgrader(cell)
        if cell["cell_type"] != "code":
            continue
        if meta.get("solution"):
            current = meta["grade_id"]
            table.setdefault(current, set())
        elif meta.get("grade") and current:
            table[current].add(meta["grade_id"])
    return {k: frozenset(v) for k, v in table.items()}


def own_parts(assignment: str, mutant: Mutant) -> Set[str]:
    """The parts that grade the answer cell ``mutant`` changes."""
    return set(_parts_after_answers(assignment)[mutant.grade_id])
