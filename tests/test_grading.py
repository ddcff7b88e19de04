"""The grader, end to end: solutions score full marks, releases zero, broken notebooks get a clear message
and a correct score while the batch goes on, regrading changes nothing, and the student versions are what
nbgrader generates from the solutions."""
from __future__ import annotations

import ast
import copy
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autograder.grade import grade_folder
from autograder.notebook import ASSIGNMENTS, load_assignment, source_of
from autograder.sandbox import Limits, bwrap
from grading_helpers import (REPO, tool_env, answer_cells, by_student, index_of, insert_after, mutate, release, solution,
                             graded_test_cells, write)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # one module-wide batch is graded in the first test
PY = sys.executable
BASE = "ex3_rope"  # the exercise the broken notebooks are made from (the quickest to run: about 2 s)
# Shorter than the default and still above the slowest honest cell: ex1.train trains twice, 8 s on a slow 2-core
# machine and more while the other worker runs (10 s was too little there).
LIMITS = Limits(cell_seconds=30, wall_seconds=120)
# BASE's batch (its solution, its release and every broken notebook): its slowest honest cell takes under 1 s, so
# the infinite loop is stopped sooner.
BASE_LIMITS = Limits(cell_seconds=10, wall_seconds=120)


# --------------------------------------------------------------------------------------------------
# Student versions
# --------------------------------------------------------------------------------------------------
def _nbgrader(*args, course: Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run([PY, "-m", "nbgrader", *args], cwd=cwd, env=tool_env(COURSE_DIR=str(course)), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _cells(nb: dict) -> list:
    return [(c["cell_type"], source_of(c), c.get("metadata", {}).get("nbgrader")) for c in nb["cells"]]


def test_student_versions_are_generated_from_the_solutions(tmp_path):
    """Regenerate every release into a temporary folder: it must equal exercises/ (nobody edits one and
    forgets the other), and it must contain no solution and no hidden test."""
    release_dir = tmp_path / "release"
    for a in ASSIGNMENTS:
        _nbgrader("generate_assignment", a, "--force", f"--CourseDirectory.release_directory={release_dir}",
                  course=tmp_path / "course")
        fresh = json.loads((release_dir / a / f"{a}.ipynb").read_text())
        committed = json.loads((REPO / "exercises" / a / f"{a}.ipynb").read_text())
        assert _cells(fresh) == _cells(committed), (
            f"exercises/{a} differs from what nbgrader generates from solutions/{a}; run "
            f"`nbgrader generate_assignment {a} --force` from the repository root and commit the result")
        text = json.dumps(committed)
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in text, f"exercises/{a} contains {marker}"
        # No line of a solution region survives (lines long enough to be specific).
        for cell in solution(a)["cells"]:
            for region in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", source_of(cell), re.S):
                for line in region.splitlines():
                    if len(line.strip()) > 30:
                        assert line.strip() not in text, f"exercises/{a} contains solution code: {line.strip()}"
        hidden = [c for c in load_assignment(a).parts.values() if c.hidden]
        assert hidden, f"{a} has no hidden tests"


def test_every_test_cell_is_parseable_and_worth_points():
    for a in ASSIGNMENTS:
        spec = load_assignment(a)
        assert spec.parts and all(p.points > 0 and p.calls for p in spec.parts.values()), a
        assert spec.written, f"{a} has no written (manually graded) answer"
        for part in spec.parts.values():
            for call in part.calls:
                assert call.name.startswith(a[:3] + "."), (a, call.name)


# --------------------------------------------------------------------------------------------------
# A class with good, empty and broken submissions, graded as one batch
# --------------------------------------------------------------------------------------------------
def _defined_name(source: str) -> str:
    return next(n.name for n in ast.parse(source).body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))


def _broken_notebooks(gradebook: Path) -> dict:
    """name -> (notebook or raw text, file name): the ways a submission goes wrong, made from BASE's solution."""
    nb = solution(BASE)
    answers, tests = answer_cells(nb), graded_test_cells(nb)
    first = answers[0]
    first_source = source_of(nb["cells"][index_of(nb, first)])
    fn = _defined_name(first_source)
    deleted = copy.deepcopy(nb)
    del deleted["cells"][index_of(deleted, tests[0])]
    duplicated = copy.deepcopy(nb)
    duplicated["cells"].insert(index_of(duplicated, tests[0]) + 1, copy.deepcopy(nb["cells"][index_of(nb, tests[0])]))
    kernel = copy.deepcopy(nb)
    kernel["metadata"]["kernelspec"] = {"name": "python3-custom-env", "display_name": "My env", "language": "python"}
    noisy = insert_after(nb, first, f"import sys, warnings\n_correct = {fn}\n"
                         f"def {fn}(*args, **kwargs):\n"
                         "    warnings.warn('a harmless warning from correct code')\n"
                         "    print('diagnostics on stderr', file=sys.stderr)\n"
                         "    return _correct(*args, **kwargs)\n")
    tamper = insert_after(release(BASE), first, (
        "import autograder.checks as _c, torch\n"
        "from autograder.checks.base import Check\n"
        "for _name, _chk in list(_c.REGISTRY.items()):\n"
        "    _c.REGISTRY[_name] = Check(_name, _chk.title, lambda *a, **k: {'x': torch.zeros(1)}, lambda *a, **k: [])\n"
        "open('events.jsonl', 'a').write('{\"event\": \"checked\", \"grade_id\": \"%s\", \"call\": 0}\\n')\n" % tests[0]))
    return {
        "syntax_error": (mutate(nb, first, f"def {fn}", f"def {fn}(("), None),
        "exception": (insert_after(nb, first, "1 / 0"), None),
        "infinite_loop": (insert_after(nb, first, "while True:\n    pass"), None),
        "memory_bomb": (insert_after(nb, first, "hog = bytearray(2**40)  # 1 TiB: fails at once under the memory limit"), None),
        "sys_exit": (insert_after(nb, first, "import sys\nsys.exit(1)"), None),
        "os_exit": (insert_after(nb, tests[-2], "import os\nos._exit(0)"), None),  # the last test never runs
        "output_flood": (insert_after(nb, first, "for i in range(300_000):\n    print('flood', i)"), None),
        "deleted_test_cell": (deleted, None),
        "duplicated_test_cell": (duplicated, None),
        "renamed": (nb, f"{BASE}-Copy1.ipynb"),
        "stderr_warning": (noisy, None),
        "wrong_kernel": (kernel, None),
        "not_json": ('{"cells": [ this is not json', None),
        "reads_hidden_tests": (insert_after(nb, first, (
            f"print(open({str(REPO / 'solutions' / BASE / (BASE + '.ipynb'))!r}).read()[:100])")), None),
        "reads_gradebook": (insert_after(nb, first, f"print(open({str(gradebook)!r}).read()[:100])"), None),
        "tampers_with_checks": (tamper, None),
        "opens_a_connection": (insert_after(nb, first, "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=5)"), None),
    }


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Every solution (student 'model') and every release ('empty'); BASE's and every broken notebook (made from
    BASE) are one batch, the other exercises' another, under limits that fit their slowest honest cell."""
    root = tmp_path_factory.mktemp("course")
    submitted, others, private = root / "submitted", root / "others", root / "private"
    private.mkdir()
    (private / "gradebook.db").write_text("grades")
    for a in ASSIGNMENTS:
        write(submitted if a == BASE else others, "model", a, solution(a))
        write(submitted if a == BASE else others, "empty", a, release(a))
    broken = _broken_notebooks(private / "gradebook.db")
    for name, (nb, filename) in broken.items():
        write(submitted, name, BASE, nb, filename or "")
    before = _hashes(submitted)
    results = grade_folder(submitted, jobs=2, limits=BASE_LIMITS) + grade_folder(others, jobs=2, limits=LIMITS)
    return {"results": results, "table": by_student(results), "submitted": submitted, "before": before,
            "broken": set(broken),
            "max": {a: load_assignment(a).auto_points for a in ASSIGNMENTS}, "private": private}


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _notices(result) -> str:
    return "\n".join(result.notices + [m for p in result.parts for m in p.messages])


def test_solutions_score_full_marks(course):
    for a in ASSIGNMENTS:
        r = course["table"]["model"][a]
        assert r.points == r.max_points == course["max"][a], _notices(r)


def test_releases_score_zero(course):
    for a in ASSIGNMENTS:
        r = course["table"]["empty"][a]
        assert r.points == 0, _notices(r)
        assert all(m.startswith("FAIL") for p in r.parts for m in p.messages)
        assert "NotImplementedError" in _notices(r) or "not defined" in _notices(r)


def test_batch_goes_on_and_loses_nothing(course):
    students = set(course["table"])
    assert course["broken"] | {"model", "empty"} <= students
    assert _hashes(course["submitted"]) == course["before"], "grading changed a submission"


def _full(course):
    return course["max"][BASE]


@pytest.mark.parametrize("name, points, says", [
    ("exception", "full", "ZeroDivisionError"),
    ("infinite_loop", "full", "was interrupted"),
    ("memory_bomb", "full", "MemoryError"),
    ("sys_exit", "full", "sys.exit(1)"),
    ("output_flood", "full", "dropped the rest"),
    ("deleted_test_cell", "full", "put it back"),
    ("duplicated_test_cell", "full", "appears more than once"),
    ("renamed", "full", "Copy1.ipynb"),
    ("stderr_warning", "full", None),
    ("wrong_kernel", "full", "python3-custom-env"),
    ("not_json", "zero", "not a valid notebook"),
    ("syntax_error", "partial", "SyntaxError"),
    ("os_exit", "partial", "grading stopped"),
    ("tampers_with_checks", "zero", None),
])
def test_broken_notebook(course, name, points, says):
    r = course["table"][name][BASE]
    text = _notices(r)
    if says:
        assert says in text, text
    if points == "full":
        assert r.points == _full(course), text
    elif points == "zero":
        assert r.points == 0 and r.parts, text
    else:
        assert 0 <= r.points < _full(course), text


def test_syntax_error_costs_only_its_part(course):
    r = course["table"]["syntax_error"][BASE]
    lost = [p for p in r.parts if p.points < p.max_points]
    assert lost and len(lost) < len(r.parts), _notices(r)


@pytest.mark.skipif(not bwrap(), reason="bubblewrap (bwrap) is not installed: student code can read every file "
                    "(install it with apt-get install bubblewrap); the limits are still tested")
def test_hidden_tests_gradebook_and_network_are_out_of_reach(course):
    for name in ("reads_hidden_tests", "reads_gradebook"):
        r = course["table"][name][BASE]
        assert r.points == _full(course)
        assert "FileNotFoundError" in _notices(r), _notices(r)
    r = course["table"]["opens_a_connection"][BASE]
    assert r.points == _full(course) and "Network is unreachable" in _notices(r), _notices(r)


def test_regrading_gives_the_same_scores(course, tmp_path):
    """Grade two students again through the command, twice: same table, nothing lost or changed."""
    folder = tmp_path / "again"
    for student in ("model", "exception"):
        src = course["submitted"] / student / BASE
        write(folder, student, BASE, json.loads((src / f"{BASE}.ipynb").read_text()))
    before = _hashes(folder)
    tables = []
    for out in (tmp_path / "out1", tmp_path / "out1"):
        proc = subprocess.run([PY, "-m", "autograder", "grade", str(folder), "--out", str(out)], cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        tables.append((out / "scores.csv").read_text())
        assert (out / "feedback" / "exception" / f"{BASE}.md").exists()
    assert tables[0] == tables[1]
    assert _hashes(folder) == before
    full = course["table"]["model"][BASE].points
    rows = {line.split(",")[0]: line for line in tables[0].splitlines()[1:]}
    assert rows["model"].endswith(f",{full:g},{full:g}")


def test_pytest_front_end_gives_one_test_per_part(tmp_path):
    """``pytest --grade --hidden-tests``: an instructor's CI; the solution passes every part (hidden tests
    included), the release fails each with the grader's explanation. Without ``--hidden-tests`` it is a
    student's self-check, which says that it runs the visible tests only."""
    a = "ex3_rope"
    good = write(tmp_path, "good", a, solution(a))
    empty = write(tmp_path, "empty", a, release(a))

    def pytest_grade(*args):
        return subprocess.run([PY, "-m", "pytest", "--grade", *args, "-q", "-p", "no:cacheprovider", "--rootdir",
                               str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=600).stdout

    out = pytest_grade("--hidden-tests", str(good), str(empty))
    parts = len(load_assignment(a).parts)
    assert f"{parts} failed, {parts} passed" in out, out[-3000:]
    assert "still raises NotImplementedError" in out and "(visible and hidden tests)" in out
    out = pytest_grade(str(empty))
    assert f"{parts} failed" in out and "visible tests only" in out, out[-3000:]
