"""The grader's own test: every known student mistake (tests/mutants/) loses points in its own part and is
named, and every correct answer written differently from the solutions keeps full marks.

Each mutant is a copy of a solution notebook with one realistic mistake, graded in this process (the fast
tier: the same steps, checks and verdicts as ``python -m autograder grade``, without the sandbox, which
``test_grading.py`` and ``test_hostile.py`` test on whole batches). Exercise 1's mutants are in
``test_mutants_ex1.py``. Each test is handed to whichever worker is free (tests/conftest.py)."""
from __future__ import annotations

import pytest

from grading_helpers import assert_full_marks, assert_mutant_caught, mutate, solution
from tests.mutants import ALTERNATIVES, CATALOGUE

HERE = sorted(a for a in CATALOGUE if a != "ex1_transformer")
CASES = [(a, m) for a in HERE for m in CATALOGUE[a]]
CORRECT = [(a, m) for a in sorted(ALTERNATIVES) for m in ALTERNATIVES[a]]


def test_catalogue_is_substantial():
    for a, mutants in CATALOGUE.items():
        assert len(mutants) >= 6, f"{a}: only {len(mutants)} mutants"
        ids = [m.id for m in mutants + ALTERNATIVES.get(a, [])]
        assert len(ids) == len(set(ids)), f"{a}: duplicate mutant ids"
        assert ALTERNATIVES.get(a), f"{a}: no correct alternative"


@pytest.mark.parametrize("assignment", sorted(CATALOGUE))
def test_the_solution_scores_full_marks_in_process(assignment):
    assert_full_marks(assignment, solution(assignment))


@pytest.mark.parametrize("assignment, mutant", CASES, ids=[f"{a}-{m.id}" for a, m in CASES])
def test_mutant_loses_points_in_its_own_part_and_is_named(assignment, mutant):
    assert_mutant_caught(assignment, mutant)


@pytest.mark.parametrize("assignment, answer", CORRECT, ids=[f"{a}-{m.id}" for a, m in CORRECT])
def test_a_correct_answer_written_differently_gets_full_marks(assignment, answer):
    assert_full_marks(assignment, mutate(solution(assignment), answer.grade_id, answer.old, answer.new))


def _notebook(source: str) -> dict:
    namespace = {"__name__": "__main__"}
    exec(source, namespace)
    return namespace


HELPERS = "import math\nSCALE = 2\ndef helper(x):\n    return x * SCALE\n"
MODEL = "class Model:\n    size = 3\n    def forward(self, x, k=1):\n        return helper(x) + k\n"


@pytest.mark.parametrize("changed, same", [
    (HELPERS + MODEL, True),
    (HELPERS + MODEL + "def unrelated():\n    return 1\n", True),
    (HELPERS + MODEL.replace("+ k", "- k"), False),                   # the code
    (HELPERS + MODEL.replace("k=1", "k=2"), False),                   # a default
    (HELPERS + MODEL.replace("size = 3", "size = 4"), False),         # a class attribute
    (HELPERS.replace("x * SCALE", "x + SCALE") + MODEL, False),       # a notebook function it calls
    (HELPERS.replace("SCALE = 2", "SCALE = 3") + MODEL, False),       # a global that function reads
])
def test_the_tests_reuse_a_costly_run_only_for_the_same_code(changed, same):
    """The fast tier reuses ex1.train's and ex5.passkey_accuracy's runs between mutants (grading_helpers): only
    when the answer's code, and the notebook code it calls, is the same."""
    from grading_helpers import code_digest

    before, after = _notebook(HELPERS + MODEL), _notebook(changed)
    assert (code_digest(before["Model"], before) == code_digest(after["Model"], after)) is same


def test_a_name_the_check_substitutes_is_left_out_of_the_digest():
    from grading_helpers import code_digest

    before, after = _notebook(HELPERS + MODEL), _notebook(HELPERS.replace("x * SCALE", "x + SCALE") + MODEL)
    assert code_digest(before["Model"], before, skip=("helper",)) == code_digest(after["Model"], after,
                                                                                 skip=("helper",))
