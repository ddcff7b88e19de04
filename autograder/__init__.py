"""The course's grader: one set of checks, run by nbgrader's test cells and by ``python -m autograder``.

In a notebook (a student checking their work, or nbgrader grading it), a test cell reads::

    from autograder import check
    check("ex1.attention", globals())            # visible test
    check("ex1.attention", globals(), seed=7)    # hidden tests: other parameters, never other code

``check`` runs the student's side and the judge in this process and raises ``CheckFailed`` with an
explanation when the part is wrong. ``python -m autograder`` runs the same checks with the student's code
in a sandboxed process and the judge outside it (see ``autograder/grade.py``).
"""
from __future__ import annotations

__all__ = ["check", "CheckFailed", "StudentError", "REGISTRY"]


def __getattr__(name: str):
    """The checks (and torch) load on first use, so that nbgrader's configuration and the pytest plugin,
    which import this package, start quickly."""
    if name in ("REGISTRY", "CheckFailed", "StudentError"):
        from . import checks

        return getattr(checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check(name: str, namespace: dict, **params) -> None:
    """Grade one part in this process; raises CheckFailed (an AssertionError) with the explanation."""
    __tracebackhide__ = True  # pytest and IPython hide this frame: the message is what matters
    from .checks import REGISTRY, CheckFailed, run_student_side
    from .checks.base import judge_outputs

    if name not in REGISTRY:
        raise ValueError(f"unknown check {name!r}; known: {', '.join(sorted(REGISTRY))}")
    got, error = run_student_side(name, namespace, params)
    verdict = judge_outputs(name, got, error, params)
    if not verdict.passed:
        raise CheckFailed(verdict.message())
    print(verdict.message())
