"""Exercise 1's mutants (see ``test_mutants.py``): each trains the student's model in ex1.train, so they have a
file, and a worker, of their own."""
from __future__ import annotations

import pytest

from grading_helpers import assert_mutant_caught
from tests.mutants import CATALOGUE

A = "ex1_transformer"


@pytest.mark.parametrize("mutant", CATALOGUE[A], ids=[m.id for m in CATALOGUE[A]])
def test_mutant_loses_points_in_its_own_part_and_is_named(mutant):
    assert_mutant_caught(A, mutant)
