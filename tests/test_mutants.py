"""The grader's own test: every known student mistake (tests/mutants/) loses points and is named, and every
correct answer written differently from the solutions (tests/mutants/alternatives.py) keeps full marks.

Each mutant is a copy of a solution notebook with one realistic mistake, graded in this process (the fast
tier: the same steps, checks and verdicts as ``python -m autograder grade``, without the sandbox, which
``test_grading.py`` and ``test_hostile.py`` test on whole batches)."""
from __future__ import annotations

import pytest

from grading_helpers import grade_here, mutate, solution
from tests.mutants import ALTERNATIVES, CATALOGUE, own_parts
from autograder.report import notebook_report

CASES = [(a, m) for a, mutants in CATALOGUE.items() for m in mutants]
CORRECT = [(a, m) for a, alternatives in ALTERNATIVES.items() for m in alternatives]


def test_catalogue_is_substantial():
    for a, mutants in CATALOGUE.items():
        assert len(mutants) >= 6, f"{a}: only {len(mutants)} mutants"
        ids = [m.id for m in mutants + ALTERNATIVES.get(a, [])]
        assert len(ids) == len(set(ids)), f"{a}: duplicate mutant ids"


@pytest.mark.parametrize("assignment", sorted(CATALOGUE))
def test_the_solution_scores_full_marks_in_process(assignment):
    result = grade_here(assignment, solution(assignment))
    assert result.points == result.max_points, notebook_report(result)


@pytest.mark.parametrize("assignment, mutant", CASES, ids=[f"{a}-{m.id}" for a, m in CASES])
def test_mutant_loses_points_in_its_own_part_and_is_named(assignment, mutant):
    result = grade_here(assignment, mutate(solution(assignment), mutant.grade_id, mutant.old, mutant.new))
    report = notebook_report(result)
    lost = {p.grade_id for p in result.parts if p.points < p.max_points}
    own = own_parts(assignment, mutant)
    assert lost & own, f"mutant {mutant.id} was not caught by its own part {sorted(own)}:\n{report}"
    assert lost <= own | set(mutant.also), f"mutant {mutant.id} also cost {sorted(lost - own)}:\n{report}"
    assert mutant.hint in report, f"the report does not name the mistake ({mutant.hint!r}):\n{report}"


@pytest.mark.parametrize("assignment, answer", CORRECT, ids=[f"{a}-{m.id}" for a, m in CORRECT])
def test_a_correct_answer_written_differently_gets_full_marks(assignment, answer):
    result = grade_here(assignment, mutate(solution(assignment), answer.grade_id, answer.old, answer.new))
    assert result.points == result.max_points, notebook_report(result)
