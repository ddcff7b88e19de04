"""The report on the catalogue: ``python -m tests.mutants [ASSIGNMENT ...]`` (or ``python3 tasks.py catalogue``).

Grades every mutant and every correct alternative in this process (the grader's fast tier) and prints, per
part, how many mutants lose points there, how many of those the report names (its hint appears) and how many
it only locates (the part fails, the report says where to look but not what the mistake is); then the
mutants that cost another part, and the alternatives that did not keep full marks. The exit status is 1 when
any mutant keeps full marks or any alternative loses points.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for grading_helpers

from autograder.report import notebook_report  # noqa: E402
from grading_helpers import grade_here, mutate, solution  # noqa: E402
from tests.mutants import ALTERNATIVES, CATALOGUE, own_parts  # noqa: E402


def main(argv) -> int:
    assignments = argv or sorted(CATALOGUE)
    unknown = sorted(set(assignments) - set(CATALOGUE))
    if unknown:
        print(f"unknown assignment {', '.join(unknown)}; choose from {', '.join(sorted(CATALOGUE))}", file=sys.stderr)
        return 2
    bad = 0
    totals = Counter()
    for a in assignments:
        lost_in, named_in = Counter(), Counter()
        escaped, spread = [], []
        for m in CATALOGUE[a]:
            result = grade_here(a, mutate(solution(a), m.grade_id, m.old, m.new))
            lost = {p.grade_id for p in result.parts if p.points < p.max_points}
            named = bool(m.hint) and m.hint in notebook_report(result)
            if not lost:
                escaped.append(m.id)
            for part in lost & own_parts(a, m):
                lost_in[part] += 1
                named_in[part] += named
            if lost - own_parts(a, m) - set(m.also):
                spread.append(f"{m.id} (also {', '.join(sorted(lost - own_parts(a, m)))})")
            totals.update(mutants=1, caught=bool(lost), named=bool(lost) and named)
        refused = []
        for m in ALTERNATIVES[a]:
            result = grade_here(a, mutate(solution(a), m.grade_id, m.old, m.new))
            if result.points < result.max_points:
                refused.append(f"{m.id} ({result.points:g}/{result.max_points:g})")
            totals.update(alternatives=1, refused=result.points < result.max_points)
        print(f"\n{a}: {len(CATALOGUE[a])} mutants, {len(ALTERNATIVES[a])} correct alternatives")
        print(f"  {'part':<28}{'lose points':>12}{'named':>8}{'located only':>14}")
        for part in sorted(lost_in):
            print(f"  {part:<28}{lost_in[part]:>12}{named_in[part]:>8}{lost_in[part] - named_in[part]:>14}")
        for title, items in (("keep full marks (not caught)", escaped), ("cost another part", spread),
                             ("correct alternatives refused", refused)):
            if items:
                print(f"  {title}: {', '.join(items)}")
        bad += len(escaped) + len(refused)
    print(f"\nall: {totals['mutants']} mutants, {totals['caught']} lose points, {totals['named']} named, "
          f"{totals['caught'] - totals['named']} located only; {totals['alternatives']} correct alternatives, "
          f"{totals['refused']} refused")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
