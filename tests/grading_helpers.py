"""Building submissions for the grader's tests: copies of the solution and the release, mutated or broken."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import html
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Dict, Iterable, List

from autograder.notebook import ASSIGNMENTS, MARKERS, load_json, nbgrader, source_of

REPO = Path(__file__).resolve().parent.parent


def tool_env(**extra: str) -> dict:
    """The environment for nbgrader subprocesses: this Python's scripts first on PATH (nbgrader runs
    ``alembic`` by name when it creates a gradebook), plus ``extra``."""
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), **extra)


def run_nbgrader(*args: str, env: dict, cwd: Path = REPO, check: bool = True, timeout: int = 600) -> str:
    """``nbgrader ARGS`` with this Python; its log, and (with ``check``) an assertion that it succeeded."""
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    log = proc.stdout + proc.stderr
    assert not check or proc.returncode == 0, f"`nbgrader {' '.join(args)}` failed:\n{log[-4000:]}"
    return log


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


# --------------------------------------------------------------------------------------------------
# The leak oracle: what students must never receive (the site and the student edition are checked with it)
# --------------------------------------------------------------------------------------------------
def page_text(path: Path) -> str:
    """What a reader can see or download from ``path``: HTML without its tags, other files as they are."""
    text = path.read_text(errors="replace")
    if path.suffix == ".html":
        text = html.unescape(re.sub(r"<[^>]+>", "", text))
    elif path.suffix == ".ipynb":  # the cells' text, not their JSON-escaped form
        text += "\n".join(source_of(cell) for cell in json.loads(text)["cells"])
    return text


def hidden_blocks() -> list:
    """The contents of nbgrader's solution and hidden-test blocks in ``solutions/`` (model answers to the
    written questions included), as (kind, lines): the lines long enough to be specific and absent from
    every student version."""
    released = "".join(p.read_text() for p in (REPO / "exercises").glob("*/*.ipynb"))
    blocks = []
    for source in sorted((REPO / "solutions").glob("*/*.ipynb")):
        for cell in load_json(source)["cells"]:
            text = source_of(cell)
            if cell["cell_type"] == "markdown" and nbgrader(cell).get("solution"):
                regions = [("SOLUTION", text)]  # a model answer to a written question
            else:
                regions = re.findall(r"### BEGIN (SOLUTION|HIDDEN TESTS)\n(.*?)### END \1", text, re.S)
            for kind, body in regions:
                lines = [line.strip() for line in body.splitlines()]
                blocks.append((kind, [line for line in lines
                                      if len(line) >= 20 and json.dumps(line)[1:-1] not in released]))
    return blocks


def leaks(root: Path, blocks: list, markers_in: tuple = (".html", ".ipynb", ".md", ".txt", ".py", ".js", ".json")) -> list:
    """Text files under ``root`` that show nbgrader's markers (in files with a suffix of ``markers_in``), any
    line of a hidden test, or most of a solution.

    A chapter may teach the same idea as an exercise, so one generic line in common with a solution
    (``return weights @ v``) is not a leak; half or more of a solution block's specific lines are."""
    problems = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.relative_to(root).parts):
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:  # images, weights: no text to leak
            continue
        text, name = page_text(path), path.relative_to(root)
        if path.suffix in markers_in:  # the grader's own code names the markers it looks for
            problems += [f"{name}: marker {m!r}" for m in MARKERS if m in text]
        for kind, lines in blocks:
            shown = [line for line in lines if line in text]
            if shown and (kind == "HIDDEN TESTS" or (len(lines) >= 3 and 2 * len(shown) >= len(lines))):
                problems.append(f"{name}: {len(shown)} of {len(lines)} lines of a {kind.lower()} block, e.g. {shown[0][:70]!r}")
    return problems


__all__ = ["ASSIGNMENTS", "REPO", "tool_env", "solution", "release", "mutate", "insert_after", "write", "by_student",
           "index_of", "answer_cells", "graded_test_cells", "code_cell", "hidden_blocks", "leaks", "page_text", "MARKERS", "run_nbgrader"]


# --------------------------------------------------------------------------------------------------
# The fast tier: grading in this process (trusted code only: the solutions, the catalogue's mutants)
# --------------------------------------------------------------------------------------------------
def grade_here(assignment: str, nb: dict):
    """Grade ``nb`` as ``assignment`` with the hidden tests, in this process (no sandbox, no limits): the
    same checks and verdicts as ``python -m autograder grade``, in about a second a notebook, without the
    demonstrations no verdict reads (``autograder.grade.graded_steps``). The two costliest runs are reused
    when the code they run is unchanged (``reusing_costly_runs``)."""
    from autograder.grade import NotebookResult, grade_submission

    with reusing_costly_runs():
        return grade_submission(nb, NotebookResult("-", assignment, ""), sandboxed=False, demonstrations=False)


# --- reusing the costliest student-side runs across the catalogue -----------------------------------------
# ex1.train trains the student's TransformerLM (around the reference Block) twice, and ex5.passkey_accuracy
# decodes the shipped model with the student's function: three quarters of the catalogue's time. Both runs are
# seeded and deterministic, and they execute only the code of one answer (and the notebook functions it names),
# so a mutant of another cell gets exactly the solution's outputs. ``code_digest`` identifies that code; a
# changed answer runs afresh. Only the tests do this: the grader itself never carries anything from one
# submission to the next.
COSTLY_RUNS = {  # check -> (the student's name it runs, the names the check substitutes while it runs)
    "ex1.train": ("TransformerLM", ("Block",)),
    "ex5.passkey_accuracy": ("passkey_accuracy", ()),
}
_REUSED: dict = {}


def code_digest(obj, namespace: dict, skip: Iterable[str] = ()) -> str:
    """A digest of the code ``obj`` runs: the bytecode, constants, names and defaults of its functions (a class's
    methods, nested functions), and those of the notebook's own functions and classes that it names, except
    ``skip``, and the values of the globals they read. Two objects with the same digest execute the same
    instructions on the same inputs."""
    digest, seen = hashlib.sha256(), set(skip)

    def code(c: types.CodeType):
        digest.update(c.co_code)
        digest.update(repr((c.co_names, c.co_varnames, c.co_freevars)).encode())
        for const in c.co_consts:
            code(const) if isinstance(const, types.CodeType) else digest.update(repr(const).encode())
        for name in c.co_names:
            if name in seen or name not in namespace or isinstance(namespace[name], types.ModuleType):
                continue
            seen.add(name)
            value = namespace[name]
            if not isinstance(value, (type, types.FunctionType)):
                digest.update(repr((name, value)).encode())  # a global value: SCALE = 2
            elif value.__module__ == namespace.get("__name__"):  # the notebook's own function or class
                thing(value)

    def thing(x):
        if isinstance(x, type):
            digest.update(repr((x.__name__, [b.__qualname__ for b in x.__mro__])).encode())
            for key, value in vars(x).items():
                function = getattr(value, "__func__", value)
                if isinstance(function, types.FunctionType):
                    digest.update(key.encode())
                    thing(function)
                elif not key.startswith("__"):
                    digest.update(repr((key, value)).encode())
        elif isinstance(x, types.FunctionType):
            digest.update(repr((x.__defaults__, x.__kwdefaults__)).encode())
            code(x.__code__)
        else:
            digest.update(repr(x).encode())

    thing(obj)
    return digest.hexdigest()


@contextlib.contextmanager
def reusing_costly_runs():
    """While it lasts, the run halves of ``COSTLY_RUNS`` return a copy of an earlier run's outputs when the code
    they would run (``code_digest``) and the parameters are the same."""
    from autograder.checks import REGISTRY

    saved = {name: REGISTRY[name] for name in COSTLY_RUNS}

    def reuse(name, check):
        def run(student, **params):
            target, skip = COSTLY_RUNS[name]
            obj = student.namespace.get(target)
            if obj is None:
                return check.run(student, **params)
            key = (name, repr(sorted(params.items())), code_digest(obj, student.namespace, skip))
            if key not in _REUSED:
                _REUSED[key] = check.run(student, **params)
            return {k: v.clone() for k, v in _REUSED[key].items()}
        return dataclasses.replace(check, run=run)

    try:
        REGISTRY.update({name: reuse(name, check) for name, check in saved.items()})
        yield
    finally:
        REGISTRY.update(saved)


def assert_mutant_caught(assignment: str, mutant) -> None:
    """A mutant of the catalogue (``tests/mutants``) loses points in its own part, in no other part unless it
    says so, and the report names the mistake."""
    from autograder.report import notebook_report
    from tests.mutants import own_parts

    result = grade_here(assignment, mutate(solution(assignment), mutant.grade_id, mutant.old, mutant.new))
    report = notebook_report(result)
    lost = {p.grade_id for p in result.parts if p.points < p.max_points}
    own = own_parts(assignment, mutant)
    assert lost & own, f"mutant {mutant.id} was not caught by its own part {sorted(own)}:\n{report}"
    assert lost <= own | set(mutant.also), f"mutant {mutant.id} also cost {sorted(lost - own)}:\n{report}"
    assert mutant.hint in report, f"the report does not name the mistake ({mutant.hint!r}):\n{report}"


def assert_full_marks(assignment: str, nb: dict) -> None:
    from autograder.report import notebook_report

    result = grade_here(assignment, nb)
    assert result.points == result.max_points, notebook_report(result)
