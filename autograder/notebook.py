"""Reading notebooks: the trusted source (solutions/) and an untrusted submission.

The source notebook defines the assignment: its graded parts (nbgrader test cells, with points and the
check calls they make) and its locked cells. A submission contributes only the code of its own cells; its
test cells and locked cells are replaced by the source's, as ``nbgrader autograde`` does.
"""
from __future__ import annotations

import ast
import functools
import json
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from .sandbox import REPO

SOLUTIONS = REPO / "solutions"  # the instructor's sources: visible and hidden tests (not in the student edition)
RELEASE = REPO / "exercises"     # what students have: the visible tests only
ASSIGNMENTS = ("ex1_transformer", "ex2_gqa", "ex3_rope", "ex4_kv_cache", "ex5_context_extension")
MAX_NOTEBOOK_BYTES = 20 * 2**20
PYTHON_CELL_MAGICS = ("time", "timeit", "capture", "prun")  # cell magics that run their body as Python
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")  # nbgrader's regions


_AST_LOCK = threading.Lock()


def parse_python(source: str) -> ast.Module:
    """``ast.parse``, one thread at a time. The grader judges notebooks in threads (``grade_folder(jobs=...)``),
    and CPython 3.11's syntax-tree constructor keeps its recursion depth in state that the threads share: a
    thread switch inside it (a finaliser run by the garbage collector) raises a spurious "SystemError: AST
    constructor recursion depth mismatch" (reproduced by tests/test_review.py on Python 3.11.7)."""
    with _AST_LOCK:
        return ast.parse(source)


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
    for node in parse_python(source).body:
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
    """A notebook file as a dict, read and validated by nbformat, or a NotebookError that says what is wrong."""
    import nbformat  # here, not at the top: the student-edition tool imports this module with the stdlib only

    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            raise NotebookError(f"{path.name} is {size / 2**20:.0f} MiB; clear its outputs (Edit > Clear Outputs of "
                                "All Cells), save, and submit again")
        text = path.read_text(encoding="utf-8")
        major = json.loads(text).get("nbformat") if text.lstrip().startswith("{") else None
    except UnicodeDecodeError:
        raise NotebookError(f"{path.name} is not a text file; submit the .ipynb notebook itself") from None
    except json.JSONDecodeError as err:
        raise NotebookError(f"{path.name} is not a valid notebook (JSON error at line {err.lineno}: {err.msg}). "
                            "Open it in JupyterLab; if it does not open, restore it from a checkpoint or "
                            "re-download the exercise and copy your answers in.") from None
    if major is None:
        raise NotebookError(f"{path.name} is JSON but not a notebook (no nbformat version)")
    if major != 4:
        raise NotebookError(f"{path.name} has notebook format {major!r}; save it with a current JupyterLab (format 4)")
    try:
        with warnings.catch_warnings():  # cells without ids (older JupyterLab), or with repeated ones (nbformat
            # renames the copies): valid; the grader finds cells by their nbgrader grade_id, never by cell id
            warnings.simplefilter("ignore", nbformat.warnings.MissingIDFieldWarning)
            warnings.simplefilter("ignore", nbformat.warnings.DuplicateCellId)
            nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
            nbformat.validate(nb)
    except (nbformat.ValidationError, nbformat.reader.NotJSONError, AttributeError, KeyError, TypeError) as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise NotebookError(f"{path.name} is not a valid notebook ({reason}). Open it in JupyterLab and save it "
                            "again; if it does not open, re-download the exercise and copy your answers in.") from None
    return nbformat.from_dict(nb)


def python_source(source: str) -> str:
    """A code cell as the Python a kernel runs: IPython's own input transformer turns magics (``%time``),
    shell escapes (``!ls``) and help (``x?``) into calls on ``get_ipython()``, line for line; the grader's
    runner answers them with ``runner.GradingShell``, which runs none of them. A cell magic whose body is
    Python (``%%time``, ``%%capture``: ``PYTHON_CELL_MAGICS``) becomes that body, so that its definitions
    exist as in a kernel. The runner executes exactly this code and the review reads exactly this code."""
    from IPython.core.inputtransformer2 import TransformerManager

    magic = re.match(r"\s*%%(\w+)[^\n]*(\n|$)", source)
    if magic and magic.group(1) in PYTHON_CELL_MAGICS:
        return "\n" * magic.group(0).count("\n") + python_source(source[magic.end():])
    lead = re.match(r"(?:[ \t\r]*\n)*", source).group(0)
    body, blank = source[len(lead):], lead.count("\n")  # IPython drops leading blank lines: keep the line numbers
    try:
        return "\n" * blank + TransformerManager().transform_cell(body)
    except Exception:  # noqa: BLE001 (input it cannot tokenise: compile() then reports the error to the student)
        return source


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
