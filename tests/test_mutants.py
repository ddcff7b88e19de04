"""The grader's own test: every known student mistake (tests/mutants/) loses points and is named.

Each mutant is a copy of a solution notebook with one realistic mistake. All of them are graded as one
class by ``grade_folder`` (the command's code path: sandboxed child, verdict outside it)."""
from __future__ import annotations

import importlib

import pytest

from autograder.grade import grade_folder
from autograder.notebook import ASSIGNMENTS
from autograder.report import notebook_report
from grading_helpers import mutate, solution, write

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # one module-wide batch is graded in the first test
CATALOGUE = {a: importlib.import_module(f"tests.mutants.{a}").MUTANTS for a in ASSIGNMENTS}
CASES = [(a, m) for a, mutants in CATALOGUE.items() for m in mutants]


def test_catalogue_is_substantial():
    for a, mutants in CATALOGUE.items():
        assert len(mutants) >= 6, f"{a}: only {len(mutants)} mutants"
        ids = [m.id for m in mutants]
        assert len(ids) == len(set(ids)), f"{a}: duplicate mutant ids"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mutants")
    for a, m in CASES:
        write(folder, f"{a}--{m.id}", a, mutate(solution(a), m.grade_id, m.old, m.new))
    return {(r.student, r.assignment): r for r in grade_folder(folder, jobs=2)}


@pytest.mark.parametrize("assignment, mutant", CASES, ids=[f"{a}-{m.id}" for a, m in CASES])
def test_mutant_loses_points_and_is_named(graded, assignment, mutant):
    result = graded[(f"{assignment}--{mutant.id}", assignment)]
    report = notebook_report(result)
    assert result.points < result.max_points, f"mutant {mutant.id} was not caught:\n{report}"
    assert mutant.hint in report, f"the report does not name the mistake ({mutant.hint!r}):\n{report}"
