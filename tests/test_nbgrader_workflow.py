"""The instructor's workflow with nbgrader, start to end, as the README describes it:

    release_assignment -> (students fetch_assignment, submit) -> collect -> autograde -> generate_feedback
    -> export

and the same submissions graded by ``python -m autograder``: both paths give the same points."""
from __future__ import annotations

import csv
import html
import json
import re
import subprocess
import sys

import pytest

from autograder.grade import grade_folder
from autograder.notebook import ASSIGNMENTS, source_of
from grading_helpers import REPO, answer_cells, by_student, insert_after, solution, tool_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # one module-wide batch is graded in the first test
PY = sys.executable
STUDENTS = ("alice", "bob", "carol")  # alice hands in the solutions, bob the untouched release, carol a noisy ex1


def nbgrader(*args, env, cwd=REPO, check=True):
    proc = subprocess.run([PY, "-m", "nbgrader", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workflow")
    course, exchange = tmp / "course", tmp / "exchange"
    env = tool_env(COURSE_DIR=str(course))
    ex = [f"--Exchange.root={exchange}"]
    release_dir = [f"--CourseDirectory.release_directory={tmp / 'release'}"]
    for a in ASSIGNMENTS:
        nbgrader("generate_assignment", a, "--force", *release_dir, env=env)
        nbgrader("release_assignment", a, "--force", *release_dir, *ex, env=env)
    for student in STUDENTS:
        home = tmp / "home" / student
        home.mkdir(parents=True)
        senv = tool_env(HOME=str(home))
        for a in ASSIGNMENTS:
            nbgrader("fetch_assignment", a, "--course=transformer-course", *ex, env=senv, cwd=home)
            nb_path = home / a / f"{a}.ipynb"
            if student == "alice":
                nb_path.write_text(json.dumps(solution(a)))
            if student == "carol" and a == ASSIGNMENTS[0]:
                nb = solution(a)
                nb = insert_after(nb, answer_cells(nb)[0], "import warnings\nwarnings.warn('a warning from correct code')")
                nb_path.write_text(json.dumps(nb))
            nbgrader("submit", a, "--course=transformer-course", f"--student={student}", *ex, env=senv, cwd=home)
    for a in ASSIGNMENTS:
        nbgrader("collect", a, "--ExchangeCollect.check_owner=False", *ex, env=env)
        nbgrader("autograde", a, "--force", env=env)
        nbgrader("generate_feedback", a, "--force", env=env)
    export = tmp / "grades.csv"
    nbgrader("export", f"--to={export}", env=env)
    ours = by_student(grade_folder(course / "submitted", jobs=2))
    return {"course": course, "export": list(csv.DictReader(export.open())), "ours": ours}


def test_collected_submissions_are_where_nbgrader_puts_them(workflow):
    for student in STUDENTS:
        for a in ASSIGNMENTS:
            assert (workflow["course"] / "submitted" / student / a / f"{a}.ipynb").exists()


def test_export_has_full_marks_for_solutions_and_zero_for_releases(workflow):
    rows = {(r["student_id"], r["assignment"]): r for r in workflow["export"]}
    for a in ASSIGNMENTS:
        alice, bob = rows[("alice", a)], rows[("bob", a)]
        # max_score includes the written answers, which nobody has graded by hand yet.
        assert float(alice["raw_score"]) > 0 and float(bob["raw_score"]) == 0, (alice, bob)


def test_both_paths_give_the_same_points(workflow):
    rows = {(r["student_id"], r["assignment"]): float(r["raw_score"]) for r in workflow["export"]}
    for student in STUDENTS:
        for a in ASSIGNMENTS:
            ours = workflow["ours"][student][a]
            assert ours.points == pytest.approx(rows[(student, a)]), (student, a, ours.notices)
    assert workflow["ours"]["alice"][ASSIGNMENTS[0]].points == workflow["ours"]["alice"][ASSIGNMENTS[0]].max_points


def test_feedback_does_not_reveal_hidden_tests(workflow):
    hidden = set()
    for a in ASSIGNMENTS:
        for cell in solution(a)["cells"]:
            for region in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", source_of(cell), re.S):
                hidden |= {line.strip() for line in region.splitlines() if line.strip()}
    pages = list((workflow["course"] / "feedback").rglob("*.html"))
    assert hidden and len(pages) == len(STUDENTS) * len(ASSIGNMENTS)
    for page in pages:
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))  # the page as a reader sees it
        assert "BEGIN HIDDEN TESTS" not in text, page
        leaked = [line for line in hidden if line in text]
        assert not leaked, (page, leaked)
