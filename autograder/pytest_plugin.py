"""pytest front end: ``pytest --grade path/to/ex1_transformer.ipynb`` (one test per graded part).

A student's self-check, or an instructor's CI. Each notebook is graded once by the same code as
``python -m autograder grade`` (sandboxed child, judged outside it), so both give the same points;
every part becomes a test item whose failure message is the grader's explanation.
Loaded automatically (a ``pytest11`` entry point); without ``--grade`` it does nothing.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--grade", action="store_true",
                     help="collect the .ipynb files given on the command line as graded submissions")


def pytest_collect_file(file_path: Path, parent):
    if parent.config.getoption("grade") and file_path.suffix == ".ipynb":
        return GradedNotebook.from_parent(parent, path=file_path)
    return None


@lru_cache(maxsize=None)
def _graded(path: str):
    from .grade import grade_notebook

    return grade_notebook(Path(path))


class GradedNotebook(pytest.File):
    def collect(self):
        result = _graded(str(self.path))
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
