"""Exercise 1's mutants (see ``test_mutants.py``), in a file of their own: ex1.train trains the student's model,
and only the mutants of the TransformerLM cell train it afresh (``grading_helpers.reusing_costly_runs``)."""
from __future__ import annotations

import pytest

from grading_helpers import assert_mutant_caught
from tests.mutants import CATALOGUE

A = "ex1_transformer"


@pytest.mark.parametrize("mutant", CATALOGUE[A], ids=[m.id for m in CATALOGUE[A]])
def test_mutant_loses_points_in_its_own_part_and_is_named(mutant):
    assert_mutant_caught(A, mutant)
