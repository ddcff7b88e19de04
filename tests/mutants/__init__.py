"""The catalogue of mistakes students really make, as mutations of the solution notebooks.

Each ``Mutant`` replaces ``old`` by ``new`` in the source of the solution cell ``grade_id`` of one
assignment's solution notebook (``old`` must occur exactly once). ``tests/test_mutants.py`` grades every
mutated copy: it must lose points, and the report must contain ``hint`` (the grader names the mistake).
The catalogue grows whenever a new mistake is seen in real submissions.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    id: str        # short, unique within the assignment: "no-scale"
    grade_id: str  # the nbgrader grade_id of the solution cell to mutate
    old: str       # exact text in that cell's source (occurs once)
    new: str       # what a student wrote instead
    hint: str      # text the grading report must contain for this mutant
