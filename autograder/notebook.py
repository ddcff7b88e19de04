"""Reading notebooks: the trusted source (solutions/) and an untrusted submission.

The source notebook defines the assignment: its graded parts (nbgrader test cells, with points and the
check calls they make) and its locked cells. A submission contributes only the code of its own cells; its
test cells and locked cells are replaced by the source's, as ``nbgrader autograde`` does.
"""
from __future__ import annotations

import ast
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from .sandbox import REPO

SOLUTIONS = REPO / "solutions"  # the instructor's sources: visible and hidden tests (not in the student edition)
RELEASE = REPO / "exercises"     # what students have: the visible tests only
ASSIGNMENTS = ("ex1_transformer", "ex2_gqa", "ex3_rope", "ex4_kv_cache", "ex5_context_extension")
MAX_NOTEBOOK_BYTES = 20 * 2**20
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")  # nbgrader's regions


class NotebookError(Exception):
    """The file cannot be graded at all; the message tells its author what to do."""


@dataclass(frozen=True)
class Call:
    name: str
    params: Dict[str, object]


@dataclass(frozen=True)
class Part:
    grade_id: str
    points: float
    calls: List[Call]
    hidden: bool  # has calls inside ### BEGIN HIDDEN TESTS


@dataclass
class Assignment:
    name: str
    cells: List[dict]                        # the source notebook's cells
    parts: Dict[str, Part] = field(default_factory=dict)
    written: Dict[str, float] = field(default_factory=dict)  # manually graded cells: grade_id -> points

    @property
    def auto_points(self) -> float:
        return sum(p.points for p in self.parts.values())


def nbgrader(cell: dict) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def grade_id(cell: object) -> Optional[str]:
    """The cell's nbgrader grade_id, or None (also for malformed metadata in a submission)."""
    gid = nbgrader(cell).get("grade_id") if isinstance(cell, dict) else None
    return gid if isinstance(gid, str) else None


def source_of(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def parse_test_cell(source: str, where: str) -> List[Call]:
    """The check calls of a test cell. Only ``from autograder import check`` and ``check("name",
    globals(), key=literal, ...)`` are allowed, so that the command can run them without running the cell."""
    calls = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and node.module == "autograder":
            continue
        ok = (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
              and isinstance(node.value.func, ast.Name) and node.value.func.id == "check"
              and len(node.value.args) == 2 and isinstance(node.value.args[0], ast.Constant)
              and ast.unparse(node.value.args[1]) == "globals()")
        if not ok:
            raise ValueError(f"{where}: a test cell may only import and call check(\"name\", globals(), ...); "
                             f"found `{ast.unparse(node)}`")
        params = {kw.arg: ast.literal_eval(kw.value) for kw in node.value.keywords}
        calls.append(Call(node.value.args[0].value, params))
    return calls


def load_json(path: Path) -> dict:
    """A notebook file as a dict, or a NotebookError that says what is wrong with it."""
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            raise NotebookError(f"{path.name} is {size / 2**20:.0f} MiB; clear its outputs (Edit > Clear Outputs of "
                                "All Cells), save, and submit again")
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise NotebookError(f"{path.name} is not a text file; submit the .ipynb notebook itself") from None
    except json.JSONDecodeError as err:
        raise NotebookError(f"{path.name} is not a valid notebook (JSON error at line {err.lineno}: {err.msg}). "
                            "Open it in JupyterLab; if it does not open, restore it from a checkpoint or "
                            "re-download the exercise and copy your answers in.") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise NotebookError(f"{path.name} is JSON but not a notebook (no list of cells)")
    if data.get("nbformat") != 4:
        raise NotebookError(f"{path.name} has notebook format {data.get('nbformat')!r}; save it with a current "
                            "JupyterLab (format 4)")
    return data


@functools.lru_cache(maxsize=None)
def load_assignment(name: str, root: Path = SOLUTIONS) -> Assignment:
    """The trusted definition of an assignment, from its source notebook (read once per process)."""
    path = root / name / f"{name}.ipynb"
    cells = load_json(path)["cells"]
    assignment = Assignment(name, cells)
    for i, cell in enumerate(cells):
        meta = nbgrader(cell)
        if not meta.get("grade"):
            continue
        gid = meta["grade_id"]
        if cell["cell_type"] == "code" and not meta.get("solution"):
            source = source_of(cell)
            assignment.parts[gid] = Part(gid, float(meta.get("points", 0)), parse_test_cell(source, f"{path}:{gid}"),
                                         MARKERS[2] in source)
        else:
            assignment.written[gid] = float(meta.get("points", 0))
    return assignment


def tests_source(hidden: bool) -> Path:
    """Where the assignments' tests come from: the sources (visible and hidden tests) or the releases
    (visible tests only). Hidden tests need the instructor's repository."""
    if hidden and not SOLUTIONS.is_dir():
        raise NotebookError(f"the hidden tests are only in the instructor's repository ({SOLUTIONS} does not exist); "
                            "this is the student edition, which checks the visible tests only")
    return SOLUTIONS if hidden else RELEASE


def identify(data: dict) -> Optional[str]:
    """Which assignment a submission is, from its cells' grade_ids (file names get changed). The releases
    carry the same grade_ids as the sources, and students have them."""
    ids = {grade_id(c) for c in data.get("cells", [])}
    best, overlap = None, 0
    for name in ASSIGNMENTS:
        path = RELEASE / name / f"{name}.ipynb"
        if not path.exists():
            continue
        mine = {grade_id(c) for c in load_assignment(name, RELEASE).cells} - {None}
        if len(ids & mine) > overlap:
            best, overlap = name, len(ids & mine)
    return best
