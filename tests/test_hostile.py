"""Hostile students, graded beside honest ones through both paths (``python -m autograder grade`` and
``nbgrader autograde``): no higher score than honest work, no solution or hidden-test line read, nothing
that another student's grading reads changed, every batch complete, and afterwards an untouched release
still scores zero. Each notebook is one attack: score inflation, reading the answers, persistence into
later grading, damage to others, resource abuse, report injection."""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path

import pytest

from autograder.grade import grade_folder
from autograder.notebook import load_assignment
from autograder.report import class_report, score_table, write_all
from grading_helpers import (REPO, by_student, hidden_blocks, insert_after, mutate, release, run_nbgrader, solution,
                             tool_env, write)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
A = "ex2_gqa"  # quick to grade
SECRET = "instructor-token-4a1f"  # set in the grader's environment: no report may show it
SOLUTION_FILE = REPO / "solutions" / A / f"{A}.ipynb"


def _after_first_answer(nb: dict, code: str) -> dict:
    return insert_after(nb, "repeat_kv", code)


def hostile_notebooks(course: Path) -> dict:
    """student -> (notebook, the most it may score, what its feedback must say).

    The most: 'zero', 'honest' (no more than the solution it is built on), or a set of parts that must
    score zero. Attacks built on the release would score nothing anyway: what they must show is that the
    grader names them."""
    sol, rel = solution(A), release(A)
    victim = course / "submitted" / "honest" / A / f"{A}.ipynb"
    wrapper = mutate(sol, "gqa_attention", "    n_head, n_kv_head = q.shape[1], k.shape[1]\n",
                     "    return package_attention(q, repeat_kv(k, q.shape[1] // k.shape[1]), "
                     "repeat_kv(v, q.shape[1] // k.shape[1]), causal=causal)\n")
    return {
        # score inflation: steering the harness, or the course package's answer behind a thin wrapper
        "registry": (_after_first_answer(rel, (
            "import autograder.checks as c\nfrom autograder.checks.base import Student\n"
            "from transformer_course.accounting import kv_cache_bytes as ref\n"
            "Student.get = lambda self, name, signature='': ref")), "zero", "autograder"),
        "patch_torch": (_after_first_answer(rel, "import torch\ntorch.allclose = lambda *a, **k: True"), "zero", "torch.allclose"),
        "dynamic_import": (_after_first_answer(rel, "m = __import__('auto' + 'grader')\nm.check = print"), "zero", "__import__"),
        "wrapper": (wrapper, {"test_gqa_attention"}, "package_attention"),
        # reading the answers and the grader's secrets
        "reads_solution": (_after_first_answer(rel, f"raise RuntimeError(open({str(SOLUTION_FILE)!r}).read()[:20000])"),
                           "zero", "No such file"),
        "reads_environment": (_after_first_answer(sol, "import os\nraise RuntimeError(str(dict(os.environ)))"), "honest", "COURSE_GRADING"),
        "lists_the_checkout": (_after_first_answer(sol, f"import os\nraise RuntimeError(str(sorted(os.listdir({str(REPO)!r}))))"),
                               "honest", "'src'"),
        # damage to others, persistence into later grading
        "overwrites_a_victim": (_after_first_answer(sol, f"open({str(victim)!r}, 'w').write('{{}}')"), "honest", "Error"),
        "plants_a_pth": (_after_first_answer(sol, f"open({str(Path(sys.prefix) / 'lib' / 'zz.pth')!r}, 'w').write('import os')"),
                         "honest", "Error"),
        "rewrites_the_checks": (_after_first_answer(sol, f"open({str(REPO / 'autograder' / 'checks' / 'ex2_gqa.py')!r}, 'a').write('#')"),
                                "zero", "refers to the grader"),
        "rewrites_the_package": (_after_first_answer(sol, f"open({str(REPO / 'src' / 'transformer_course' / 'attention.py')!r}, 'a').write('#')"),
                                 "honest", "Error"),
        # resource abuse
        "fills_tmp": (_after_first_answer(sol, "f = open('/tmp/x', 'wb')\nfor _ in range(2000):\n    f.write(b'x' * 2**20)"),
                      "honest", "Error"),
        # report injection
        "html": (_after_first_answer(sol, "raise RuntimeError('<script>alert(1)</script> <img src=x onerror=alert(2)>')"),
                 "honest", "script"),
        "fence": (_after_first_answer(rel, "raise RuntimeError('```\\n# forged heading\\n```')"), "zero", "forged"),
    }


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    course = tmp_path_factory.mktemp("hostile")
    submitted = course / "submitted"
    write(submitted, "honest", A, solution(A))
    write(submitted, "untouched", A, release(A))
    attacks = hostile_notebooks(course)
    for student, (nb, _, _) in attacks.items():
        write(submitted, student, A, nb)
    link = submitted / "linker" / A / f"{A}.ipynb"
    link.parent.mkdir(parents=True)
    link.symlink_to(SOLUTION_FILE)
    for odd in ("=HYPERLINK(\"http://x\",\"y\")", ".dotted", "new\nline"):
        write(submitted, odd, A, solution(A))
    before = {p: p.read_bytes() for p in [*submitted.rglob("*.ipynb"), *(REPO / "autograder").rglob("*.py"), *(REPO / "src").rglob("*.py")] if not p.is_symlink()}
    os.environ["GRADER_TOKEN"] = SECRET
    try:
        results = grade_folder(submitted, jobs=2)
    finally:
        del os.environ["GRADER_TOKEN"]
    out = course / "graded"
    write_all(results, out)
    probe = grade_folder(_fresh(course / "probe", "late", release(A)), jobs=1)  # after everything above
    return {"results": results, "table": by_student(results), "attacks": attacks, "before": before, "out": out,
            "probe": probe, "full": load_assignment(A).auto_points}


def _fresh(folder: Path, student: str, nb: dict) -> Path:
    write(folder, student, A, nb)
    return folder


def _text(result) -> str:
    return "\n".join(result.notices + [m for p in result.parts for m in p.messages])


def test_every_submission_gets_a_row(batch):
    students = {r.student for r in batch["results"]}
    assert set(batch["attacks"]) | {"honest", "untouched", "linker", ".dotted", "new\nline"} <= students, students
    assert any(s.startswith("=HYPERLINK") for s in students)


def test_honest_work_keeps_full_marks_and_the_untouched_release_scores_zero(batch):
    assert batch["table"]["honest"][A].points == batch["full"], _text(batch["table"]["honest"][A])
    assert batch["table"]["untouched"][A].points == 0
    assert batch["probe"][0].points == 0, "after the hostile batch, an untouched release scored points"


@pytest.mark.parametrize("student", ["registry", "patch_torch", "dynamic_import", "wrapper", "reads_solution",
                                     "reads_environment", "lists_the_checkout", "overwrites_a_victim", "plants_a_pth",
                                     "rewrites_the_checks", "rewrites_the_package", "fills_tmp", "html", "fence"])
def test_no_attack_scores_more_than_honest_work_and_each_is_named(batch, student):
    result = batch["table"][student][A]
    _, limit, says = batch["attacks"][student]
    text = _text(result)
    assert says in text, text
    if limit == "zero":
        assert result.points == 0, text
    elif limit == "honest":
        assert result.points <= batch["full"], text
    else:  # the parts it cheated on score zero, with a message saying why
        lost = {p.grade_id for p in result.parts if p.points == 0}
        assert limit <= lost, (lost, text)


def test_a_symlinked_submission_is_refused(batch):
    result = batch["table"]["linker"][A]
    assert result.points == 0 and "symbolic link" in _text(result)


def test_odd_student_ids_are_refused_with_a_reason(batch):
    for student, row in batch["table"].items():
        if student.startswith(("=", ".", "new")):
            assert row[A].points == 0 and "cannot be a student id" in _text(row[A]), student


def test_nothing_of_the_answers_or_the_grader_reaches_a_report(batch):
    reports = "\n".join(p.read_text() for p in batch["out"].rglob("*") if p.is_file())
    assert SECRET not in reports
    for kind, lines in hidden_blocks():
        if kind == "HIDDEN TESTS":
            assert not [line for line in lines if line in reports]
    listed = _text(batch["table"]["lists_the_checkout"][A])
    assert "'solutions'" not in listed and "'.git'" not in listed and "'tests'" not in listed, listed


def test_nothing_another_students_grading_reads_was_changed(batch):
    for path, content in batch["before"].items():
        assert path.read_bytes() == content, f"{path} was changed by a student"
    assert not (Path(sys.prefix) / "lib" / "zz.pth").exists()


def test_reports_are_safe_to_open(batch):
    report = (batch["out"] / "report.md").read_text()
    assert "<script>" not in report and "<img" not in report and "&lt;script&gt;" in report
    assert "\n# forged heading" not in report
    rows = list(csv.reader(io.StringIO((batch["out"] / "scores.csv").read_text())))
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row), rows
    assert score_table(batch["results"]) == (batch["out"] / "scores.csv").read_text()
    assert class_report(batch["results"]) == report


# The attacks that write (files, the Python path, the grader's own modules) or patch what a later grading may
# read: the ones that could make a second grading differ from the first. The others read or print.
PERSISTENT = ("registry", "patch_torch", "dynamic_import", "overwrites_a_victim", "plants_a_pth", "rewrites_the_checks",
              "rewrites_the_package", "fills_tmp")


def test_grading_the_same_notebooks_again_gives_the_same_scores(batch, tmp_path):
    """Honest work, the untouched release and every attack that could leave something behind, graded again
    after the whole batch: the same points, part by part."""
    students = ("honest", "untouched", *PERSISTENT)
    for student in students:
        src = batch["out"].parent / "submitted" / student / A / f"{A}.ipynb"
        write(tmp_path, student, A, json.loads(src.read_text()))
    again = by_student(grade_folder(tmp_path, jobs=2))
    for student in students:
        first, second = batch["table"][student][A], again[student][A]
        assert [(p.grade_id, p.points) for p in second.parts] == [(p.grade_id, p.points) for p in first.parts], \
            (student, _text(second))


# --------------------------------------------------------------------------------------------------
# The same corpus through nbgrader autograde, plus what attacks nbgrader itself
# --------------------------------------------------------------------------------------------------
def nbgrader_attacks() -> dict:
    """student -> notebook: attacks on nbgrader's own machinery (metadata, markers), built on the solution."""
    sol = solution(A)
    extra = insert_after(sol, "repeat_kv", "pass")
    cell = extra["cells"][[c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in extra["cells"]].index("repeat_kv") + 1]
    cell["metadata"]["nbgrader"] = {"grade": True, "grade_id": "bonus", "points": 100, "locked": False,
                                    "solution": False, "schema_version": 3, "task": False}
    schema = json.loads(json.dumps(sol))
    for c in schema["cells"]:
        if c.get("metadata", {}).get("nbgrader"):
            c["metadata"]["nbgrader"]["schema_version"] = 99
    points = json.loads(json.dumps(sol))
    for c in points["cells"]:
        if c.get("metadata", {}).get("nbgrader", {}).get("grade"):
            c["metadata"]["nbgrader"]["points"] = 1000
    return {"extra_grade_cell": extra, "schema_version": schema, "inflated_points": points,
            "hidden_marker": _after_first_answer(sol, "# ### BEGIN HIDDEN TESTS\nx = 1"),
            "ipython_hook": _after_first_answer(sol, "get_ipython().events.register('post_run_cell', lambda r: None)")}


# The command's corpus above is graded by the same grade_submission inside nbgrader; through nbgrader these
# attacks run again: the ones on state that outlives a notebook (the checks' registry, torch, files the next
# notebook reads, the Python path) and on the report. nbgrader's own machinery gets the attacks below.
NBGRADER_ATTACKS = ("registry", "patch_torch", "rewrites_the_checks", "plants_a_pth", "overwrites_a_victim", "fence")
# Graded a second time: honest work, the attacks that write or patch, and those on the gradebook's metadata.
NBGRADER_REGRADED = ("honest", "registry", "patch_torch", "rewrites_the_checks", "plants_a_pth", "overwrites_a_victim",
                     "extra_grade_cell", "schema_version", "inflated_points")


@pytest.fixture(scope="module")
def nbgrader_batch(tmp_path_factory, batch):
    course = tmp_path_factory.mktemp("nbgrader-hostile")
    env = tool_env(COURSE_DIR=str(course))
    release_dir = f"--CourseDirectory.release_directory={course / 'release'}"
    run_nbgrader("generate_assignment", A, "--force", release_dir, env=env, timeout=1200)
    submitted = course / "submitted"
    students = ["honest", "untouched", *NBGRADER_ATTACKS]
    for student in students:
        src = batch["out"].parent / "submitted" / student / A / f"{A}.ipynb"
        write(submitted, student, A, json.loads(src.read_text()))
    for student, nb in nbgrader_attacks().items():
        write(submitted, student, A, nb)
    link = submitted / "linker" / A / f"{A}.ipynb"
    link.parent.mkdir(parents=True)
    link.symlink_to(SOLUTION_FILE)
    from nbgrader.api import Gradebook

    def automatic_points() -> dict:
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
            return {s.student.id: s.code_score for s in gb.find_assignment(A).submissions}

    log = run_nbgrader("autograde", A, "--force", env=env, check=False, timeout=1200)
    first = automatic_points()
    between = time.time()
    write(submitted, "late", A, release(A))  # the probe: graded after everything above
    # Again, the probe included: everyone but the notebooks that only read or print (their second grading
    # could not differ); those keep their first rows, which must survive the second batch too.
    skip = ",".join(s for s in [*students, *nbgrader_attacks(), "linker"] if s not in NBGRADER_REGRADED)
    run_nbgrader("autograde", A, "--force", f"--CourseDirectory.student_id_exclude={skip}", env=env, check=False,
                 timeout=1200)
    autograded = {p.parts[-3]: p.stat().st_mtime for p in (course / "autograded").glob(f"*/{A}/{A}.ipynb")}
    return {"log": log, "first": first, "auto": automatic_points(), "course": course,
            "regraded": {s for s, when in autograded.items() if when > between}}


def test_nbgrader_grades_every_submission_and_the_batch_goes_on(nbgrader_batch, batch):
    expected = {"honest", "untouched", "linker", "late", *NBGRADER_ATTACKS, *nbgrader_attacks()}
    assert expected <= set(nbgrader_batch["auto"]), (expected - set(nbgrader_batch["auto"]), nbgrader_batch["log"][-3000:])


def test_nbgrader_gives_the_commands_points_to_the_same_notebooks(nbgrader_batch, batch):
    for student in ["honest", "untouched", *NBGRADER_ATTACKS]:
        assert nbgrader_batch["auto"][student] == pytest.approx(batch["table"][student][A].points), student


def test_nbgrader_attacks_score_no_more_than_honest_work(nbgrader_batch, batch):
    full = batch["full"]
    for student in nbgrader_attacks():
        assert nbgrader_batch["auto"][student] <= full, (student, nbgrader_batch["auto"][student])
    assert nbgrader_batch["auto"]["honest"] == full
    assert nbgrader_batch["auto"]["linker"] == 0
    assert nbgrader_batch["auto"]["late"] == 0, "after the hostile batch, an untouched release scored points"


def test_nbgrader_grading_the_same_folder_again_gives_the_same_scores(nbgrader_batch):
    assert nbgrader_batch["regraded"] == {*NBGRADER_REGRADED, "late"}, nbgrader_batch["regraded"]
    again = {s: v for s, v in nbgrader_batch["auto"].items() if s != "late"}
    assert again == nbgrader_batch["first"]
