"""Building submissions for the grader's tests: copies of the solution and the release, mutated or broken."""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Dict, Iterable, List

from autograder.notebook import ASSIGNMENTS, load_json, nbgrader, source_of

REPO = Path(__file__).resolve().parent.parent


def tool_env(**extra: str) -> dict:
    """The environment for nbgrader subprocesses: this Python's scripts first on PATH (nbgrader runs
    ``alembic`` by name when it creates a gradebook), plus ``extra``."""
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), **extra)


def solution(assignment: str) -> dict:
    return load_json(REPO / "solutions" / assignment / f"{assignment}.ipynb")


def release(assignment: str) -> dict:
    return load_json(REPO / "exercises" / assignment / f"{assignment}.ipynb")


def index_of(nb: dict, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb["cells"]) if nbgrader(c).get("grade_id") == grade_id)


def answer_cells(nb: dict) -> List[str]:
    return [nbgrader(c)["grade_id"] for c in nb["cells"]
            if c["cell_type"] == "code" and nbgrader(c).get("solution")]


def graded_test_cells(nb: dict) -> List[str]:
    return [nbgrader(c)["grade_id"] for c in nb["cells"] if c["cell_type"] == "code" and nbgrader(c).get("grade")]


def mutate(nb: dict, grade_id: str, old: str, new: str) -> dict:
    """A copy of ``nb`` with ``old`` replaced by ``new`` (exactly once) in the cell ``grade_id``."""
    nb = copy.deepcopy(nb)
    cell = nb["cells"][index_of(nb, grade_id)]
    source = source_of(cell)
    if source.count(old) != 1:
        raise ValueError(f"{grade_id}: {old!r} occurs {source.count(old)} times, not once")
    cell["source"] = source.replace(old, new)
    return nb


def code_cell(source: str) -> dict:
    return {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}


def insert_after(nb: dict, grade_id: str, source: str) -> dict:
    nb = copy.deepcopy(nb)
    nb["cells"].insert(index_of(nb, grade_id) + 1, code_cell(source))
    return nb


def write(folder: Path, student: str, assignment: str, nb, name: str = "") -> Path:
    """Write a submission as nbgrader's submitted/ layout has it; ``nb`` may be raw text (a broken file)."""
    path = folder / student / assignment / (name or f"{assignment}.ipynb")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nb if isinstance(nb, str) else json.dumps(nb, indent=1), encoding="utf-8")
    return path


def by_student(results: Iterable) -> Dict[str, Dict[str, object]]:
    table: Dict[str, Dict[str, object]] = {}
    for r in results:
        table.setdefault(r.student, {})[r.assignment] = r
    return table


__all__ = ["ASSIGNMENTS", "REPO", "tool_env", "solution", "release", "mutate", "insert_after", "write", "by_student",
           "index_of", "answer_cells", "graded_test_cells", "code_cell"]
