"""pytest front end: ``pytest --grade path/to/ex1_transformer.ipynb`` (one test per graded part).

A student's self-check: the visible tests only (the release's test cells), which work in the student
edition. ``--hidden-tests`` adds the hidden tests (the sources in ``solutions/``): an instructor's CI.
Each notebook is graded once by the same code as ``python -m autograder grade`` (sandboxed child, judged
outside it), so both give the same points; every part becomes a test item whose failure message is the
grader's explanation. Loaded automatically (a ``pytest11`` entry point); without ``--grade`` it does nothing.
"""
from __future__ import annotations

from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--grade", action="store_true",
                     help="collect the .ipynb files given on the command line as graded submissions "
                          "(visible tests only)")
    parser.addoption("--hidden-tests", action="store_true",
                     help="with --grade: run the hidden tests too (needs the instructor's solutions/)")


def pytest_report_header(config):
    if config.getoption("grade"):
        if config.getoption("hidden_tests"):
            return "grading with the visible and the hidden tests (solutions/)"
        return "self-check: visible tests only (the instructor's grading adds hidden tests)"
    return None


def pytest_collect_file(file_path: Path, parent):
    if parent.config.getoption("grade") and file_path.suffix == ".ipynb":
        return GradedNotebook.from_parent(parent, path=file_path)
    return None


class _Graded(dict):
    """Each notebook graded once per session: (path, hidden) -> NotebookResult, in the order graded."""

    def __call__(self, path: str, hidden: bool):
        if (path, hidden) not in self:
            from .grade import grade_notebook
            from .notebook import tests_source

            self[(path, hidden)] = grade_notebook(Path(path), source=tests_source(hidden))
        return self[(path, hidden)]

    def cache_items(self):
        return self.items()


_graded = _Graded()


def pytest_terminal_summary(terminalreporter, config):
    """Points per part for every graded notebook, as the report gives them."""
    if not config.getoption("grade"):
        return
    for (path, _), result in _graded.cache_items():
        scope = "visible tests only" if result.visible_only else "visible and hidden tests"
        terminalreporter.section(f"{result.assignment}: {result.points:g} / {result.max_points:g} points ({scope})")
        for part in result.parts:
            terminalreporter.line(f"  {part.grade_id:<28} {part.points:g} / {part.max_points:g}")
        if result.written_points:
            terminalreporter.line(f"  written answers, graded by hand: {result.written_points:g} points")


class GradedNotebook(pytest.File):
    def collect(self):
        result = _graded(str(self.path), self.config.getoption("hidden_tests"))
        if not result.parts:
            yield GradedPart.from_parent(self, name="notebook", part=None, result=result)
        for part in result.parts:
            yield GradedPart.from_parent(self, name=part.grade_id, part=part, result=result)


class GradedPart(pytest.Item):
    def __init__(self, *, part, result, **kwargs):
        super().__init__(**kwargs)
        self.part, self.result = part, result

    def runtest(self):
        if self.part is None:
            raise PartFailed("\n".join(self.result.notices) or "nothing could be graded")
        if self.part.points < self.part.max_points:
            raise PartFailed("\n".join(self.part.messages + [f"notice: {n}" for n in self.result.notices]))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, PartFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        points = f"{self.part.max_points:g} points" if self.part else ""
        return self.path, None, f"{self.result.assignment}::{self.name} {points}"


class PartFailed(Exception):
    pass
