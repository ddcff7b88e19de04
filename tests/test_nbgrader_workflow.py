"""The instructor's journey with nbgrader, from an empty course folder, as book/instructor-guide.md tells it:

    nbgrader db student import, db assignment add --duedate -> generate_assignment, release_assignment
    -> students fetch_assignment and submit from their own home (one of them late)
    -> zip_collect (a learning platform's download) -> collect -> autograde -> manual grading
    -> generate_feedback -> regrading one student -> export

checked against ``python -m autograder``'s automatic points; then JupyterLab started from the repository
root, as an instructor starts it for the formgrader: its kernels keep their own environment (the grading
settings apply only inside grading commands) and the formgrader lists the released assignments.

To stay fast, the whole journey is walked with one assignment (JOURNEY) and the late submission with
another (LATE); all five are released.
"""
from __future__ import annotations

import csv
import datetime as dt
import html
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from traitlets.config import Config

from autograder.grade import grade_folder
from autograder.nbgrader_plugins import PointsPerDayLate
from autograder.nbgrader_setup import COURSE_ID, configure
from autograder.notebook import ASSIGNMENTS, load_assignment, source_of
from autograder.sandbox import Limits
from grading_helpers import REPO, by_student, insert_after, mutate, solution, tool_env
from grading_helpers import run_nbgrader as nbgrader

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
PY = sys.executable
JOURNEY = "ex3_rope"    # the assignment every step is walked with (among the fastest to grade)
LATE = "ex4_kv_cache"   # its due date is in the past: alice hands it in late
DAYS_LATE = 3           # alice's LATE submission: 2 days and 1 hour after the due date, so 3 started days
STUDENTS = [  # the class list the instructor imports (nbgrader db student import)
    {"id": "alice", "last_name": "Archer", "first_name": "Alice", "email": "alice@example.org"},  # the solutions
    {"id": "bob", "last_name": "Baker", "first_name": "Bob", "email": "bob@example.org"},          # the release
    {"id": "carol", "last_name": "Clark", "first_name": "Carol", "email": "carol@example.org"},    # a mistake
    {"id": "dave", "last_name": "Dunn", "first_name": "Dave", "email": "dave@example.org"},        # via the LMS
]
# What carol adds to her notebook: it fails unless her code is graded in the grading environment.
PROBE = ("import os, resource\n"
         "seen = (os.environ.get('COURSE_GRADING'), os.environ.get('MPLBACKEND'), resource.getrlimit(resource.RLIMIT_AS)[0])\n"
         f"assert seen == ('1', 'Agg', {Limits().memory_bytes}), f'grading environment: {{seen}}'")
CAROLS_MISTAKE = ("return x * angles.cos() + rotated_half * angles.sin()",   # in her apply_rope: cos and sin
                  "return x * angles.sin() + rotated_half * angles.cos()")   # swapped
KERNEL_PROBE = ("import json, os, matplotlib\n"
                "print(json.dumps({k: os.environ.get(k) for k in ('COURSE_GRADING', 'MPLBACKEND', 'JUPYTER_PATH')}"
                " | {'backend': matplotlib.get_backend()}))")
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
SOURCE_CODE = (".py", ".md", ".toml", ".yml", ".yaml", ".cfg")  # what people edit; nbgrader never writes these


def working_tree() -> set:
    """What git reports in the repository (ignored paths too, which is where class data would hide), less
    the caches that any import or test run writes."""
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    noise = ("__pycache__/", ".pytest_cache/", "test-artifacts/", "_build/", ".venv/")
    return {line for line in out.splitlines() if not any(n in line for n in noise)}


def utc(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def written_points(assignment: str, fraction: float) -> dict:
    """Points for every written answer of ``assignment``: ``fraction`` of each one's maximum."""
    return {gid: fraction * points for gid, points in load_assignment(assignment).written.items()}


def max_points(assignment: str) -> float:
    """What an assignment is out of: its test cells' and written answers' points, from the source notebook."""
    spec = load_assignment(assignment)
    return sum(p.points for p in spec.parts.values()) + sum(spec.written.values())


# Manual grading: the points the instructor gives written answers (in the formgrader; here through its API).
MANUAL = {("alice", JOURNEY): written_points(JOURNEY, 1.0), ("alice", LATE): written_points(LATE, 1.0),
          ("carol", JOURNEY): written_points(JOURNEY, 0.5)}


# --------------------------------------------------------------------------------------------------
# The configuration alone
# --------------------------------------------------------------------------------------------------
def test_configuration_changes_no_environment_and_installs_no_kernel(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_EXCHANGE", raising=False)
    before = dict(os.environ)
    c = Config()
    configure(c, REPO, tmp_path / "course")
    assert dict(os.environ) == before, "configure() must not change the environment: JupyterLab's kernels inherit it"
    assert not (tmp_path / "course" / "kernels").exists(), "configure() must not install a kernelspec"
    assert c.Exchange.root == str(tmp_path / "course" / "exchange") and Path(c.Exchange.root).is_dir()
    monkeypatch.setenv("COURSE_EXCHANGE", str(tmp_path / "hub-exchange"))
    configure(c, REPO, tmp_path / "course")
    assert c.Exchange.root == str(tmp_path / "hub-exchange") and Path(c.Exchange.root).is_dir()


@pytest.mark.parametrize("name,student,file_id", [
    ("dave_4242_987654_ex3_rope.ipynb", "dave", "ex3_rope"),
    ("smithjohn_late_17_99_ex3_rope.ipynb", "smithjohn", "ex3_rope"),         # Canvas marks late hand-ins
    ("smithjohn_LATE_17_99_ex3_rope-2.ipynb", "smithjohn", "ex3_rope"),       # and numbers resubmissions
])
def test_the_lms_file_name_pattern_reads_canvas_downloads(tmp_path, name, student, file_id):
    from nbgrader.plugins import FileNameCollectorPlugin

    c = Config()
    configure(c, REPO, tmp_path / "course")
    collector = FileNameCollectorPlugin(config=c)
    path = tmp_path / "course" / "downloaded" / JOURNEY / "extracted" / "submissions" / name  # as zip_collect passes it
    info = collector.collect(str(path))
    assert info and (info["student_id"], info["file_id"]) == (student, file_id), info
    assert collector.collect(str(path.with_name(JOURNEY + ".ipynb"))) is None  # not a Canvas name: skipped


def test_the_late_policy_takes_points_per_started_day_and_never_more_than_the_score():
    policy = PointsPerDayLate(points_per_day=1.0)
    day = 24 * 3600
    assert policy.late_submission_penalty("x", 8.0, 60) == 1.0
    assert policy.late_submission_penalty("x", 8.0, 2 * day + 3600) == 3.0
    assert policy.late_submission_penalty("x", 2.0, 10 * day) == 2.0


# --------------------------------------------------------------------------------------------------
# The journey
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    tree_before = working_tree()
    tmp = tmp_path_factory.mktemp("journey")
    course = tmp / "course"  # empty: the configuration creates it, and the exchange in it
    env = tool_env(COURSE_DIR=str(course), HOME=str(tmp / "instructor"))
    env.pop("COURSE_EXCHANGE", None)
    # The releases go to a temporary folder: the instructor's own go to exercises/ (committed), which a test
    # must not rewrite.
    release = f"--CourseDirectory.release_directory={tmp / 'release'}"

    # The class list and the due dates.
    students_csv = tmp / "students.csv"
    with students_csv.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(STUDENTS[0]))
        writer.writeheader()
        writer.writerows(STUDENTS)
    nbgrader("db", "student", "import", str(students_csv), env=env)
    now = dt.datetime.now(dt.timezone.utc)
    due_dates = tmp / "assignments.csv"
    due_dates.write_text("name,duedate\n" + "".join(
        f"{a},{utc(now - dt.timedelta(days=DAYS_LATE - 1, hours=1) if a == LATE else now + dt.timedelta(days=30))}\n"
        for a in ASSIGNMENTS))
    nbgrader("db", "assignment", "import", str(due_dates), env=env)

    # Release every assignment to the exchange the configuration names (<course>/exchange here).
    for a in ASSIGNMENTS:
        nbgrader("generate_assignment", a, "--force", release, env=env)
        nbgrader("release_assignment", a, release, env=env)
    exchange = course / "exchange"

    # Students fetch and submit from their own home folders, with their own nbgrader_config.py.
    hand_ins = {"alice": {JOURNEY: solution(JOURNEY), LATE: solution(LATE)},
                "bob": {JOURNEY: None},  # the release, untouched
                "carol": {JOURNEY: insert_after(mutate(solution(JOURNEY), "apply_rope", *CAROLS_MISTAKE), "apply_rope", PROBE)}}
    def hand_in(student: str) -> None:
        home = tmp / "home" / student
        (home / ".jupyter").mkdir(parents=True)
        (home / ".jupyter" / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.CourseDirectory.course_id = {COURSE_ID!r}\nc.Exchange.root = {str(exchange)!r}\n")
        senv = tool_env(HOME=str(home))
        for var in ("COURSE_DIR", "COURSE_EXCHANGE", "JUPYTER_CONFIG_DIR"):
            senv.pop(var, None)
        for a, nb in hand_ins[student].items():
            nbgrader("fetch_assignment", a, env=senv, cwd=home)
            if nb is not None:
                (home / a / f"{a}.ipynb").write_text(json.dumps(nb))
            # On a JupyterHub the student id is the login name; here every student is the same Unix user.
            nbgrader("submit", a, f"--student={student}", env=senv, cwd=home)

    with ThreadPoolExecutor(max_workers=len(hand_ins)) as pool:  # students work at the same time
        list(pool.map(hand_in, hand_ins))

    # Dave handed in through the learning platform: its download, as Canvas names the files.
    archive = course / "downloaded" / JOURNEY / "archive"
    archive.mkdir(parents=True)
    with zipfile.ZipFile(archive / "submissions.zip", "w") as zf:
        zf.writestr(f"dave_4242_987654_{JOURNEY}.ipynb", json.dumps(solution(JOURNEY)))
    zip_log = nbgrader("zip_collect", JOURNEY, release, env=env)

    for a in (JOURNEY, LATE):
        nbgrader("collect", a, env=env)
        nbgrader("autograde", a, env=env)

    from nbgrader.api import Gradebook
    db_url = f"sqlite:///{course / 'gradebook.db'}"
    with Gradebook(db_url) as gb:  # as the formgrader does when the instructor enters points
        for (student, a), points in MANUAL.items():
            for grade_id, score in points.items():
                grade = gb.find_grade(grade_id, a, a, student)
                grade.manual_score = score
                grade.needs_manual_grade = False
        gb.db.commit()

    for a in (JOURNEY, LATE):
        nbgrader("generate_feedback", a, env=env)

    # Carol sends the corrected notebook; the instructor replaces hers and grades only her again.
    def auto_scores() -> dict:
        with Gradebook(db_url) as gb:
            return {s.student.id: s.code_score for s in gb.find_assignment(JOURNEY).submissions}

    before_regrade = auto_scores()
    carols = course / "submitted" / "carol" / JOURNEY / f"{JOURNEY}.ipynb"
    carols.unlink()
    carols.write_text(json.dumps(insert_after(solution(JOURNEY), "apply_rope", PROBE)))
    nbgrader("autograde", JOURNEY, "--force", "--student=carol", env=env)
    nbgrader("generate_feedback", JOURNEY, "--force", "--student=carol", env=env)
    after_regrade = auto_scores()

    nbgrader("export", env=env)
    with Gradebook(db_url) as gb:
        submissions = {(s.student.id, a): {"auto": s.code_score, "manual": s.written_score,
                                           "penalty": s.late_submission_penalty, "score": s.score,
                                           "seconds_late": s.total_seconds_late}
                       for a in (JOURNEY, LATE) for s in gb.find_assignment(a).submissions}
    ours = by_student(grade_folder(course / "submitted", jobs=2))
    return {"tmp": tmp, "course": course, "zip_log": zip_log,
            "before_regrade": before_regrade, "after_regrade": after_regrade, "submissions": submissions,
            "export": list(csv.DictReader((course / "grades.csv").open())), "ours": ours,
            "tree_before": tree_before, "tree_after": working_tree()}


def test_every_hand_in_reaches_the_course_folder(journey):
    submitted = journey["course"] / "submitted"
    found = {p.relative_to(submitted).as_posix() for p in submitted.glob("*/*/*.ipynb")}
    assert found == {f"{s}/{JOURNEY}/{JOURNEY}.ipynb" for s in ("alice", "bob", "carol", "dave")} | {f"alice/{LATE}/{LATE}.ipynb"}
    assert "dave" in journey["zip_log"] and "did not match" not in journey["zip_log"], journey["zip_log"][-2000:]


def test_solutions_score_full_marks_releases_zero_and_mistakes_lose_points(journey):
    auto = journey["before_regrade"]
    full = sum(p.points for p in load_assignment(JOURNEY).parts.values())
    assert auto["alice"] == auto["dave"] == full and auto["bob"] == 0, auto
    assert 0 < auto["carol"] < full, auto


def test_grading_runs_under_the_limits_with_the_grading_environment(journey):
    """nbgrader runs carol's code on the course's engine: her probe cell runs, and raises nothing."""
    nb = json.loads((journey["course"] / "autograded" / "carol" / JOURNEY / f"{JOURNEY}.ipynb").read_text())
    probe = [c for c in nb["cells"] if c["cell_type"] == "code" and "grading environment" in "".join(c["source"])]
    assert len(probe) == 1
    assert not probe[0]["outputs"], probe[0]["outputs"]  # the engine writes an error here when a cell raises
    tests = [c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade") and c["cell_type"] == "code"]
    assert all(c["outputs"] for c in tests), "every test cell carries the engine's verdict"


def test_the_late_submission_gets_the_stated_penalty(journey):
    late = journey["submissions"][("alice", LATE)]
    assert (DAYS_LATE - 1) * 86400 < late["seconds_late"] < DAYS_LATE * 86400, late
    assert late["penalty"] == pytest.approx(DAYS_LATE * PointsPerDayLate().points_per_day), late
    on_time = [v for (s, a), v in journey["submissions"].items() if a == JOURNEY]
    assert all(v["seconds_late"] == 0 and not v["penalty"] for v in on_time), on_time


def test_regrading_one_student_changes_only_their_score(journey):
    before, after = journey["before_regrade"], journey["after_regrade"]
    assert after["carol"] > before["carol"] and after["carol"] == after["alice"], (before, after)
    assert {s: v for s, v in after.items() if s != "carol"} == {s: v for s, v in before.items() if s != "carol"}
    assert journey["submissions"][("carol", JOURNEY)]["manual"] == pytest.approx(sum(MANUAL[("carol", JOURNEY)].values())), \
        "regrading must keep the points given by hand"


def test_export_is_one_row_per_student_with_the_final_grades(journey):
    rows = journey["export"]
    assignments = sorted(ASSIGNMENTS)
    assert list(rows[0]) == ["student_id", "last_name", "first_name", "email", *assignments, "total",
                             *[f"{a}_max" for a in assignments], "total_max"]
    assert [r["student_id"] for r in rows] == [s["id"] for s in STUDENTS]
    for student, row in zip(STUDENTS, rows):
        assert [row[k] for k in ("last_name", "first_name", "email")] == [student[k] for k in ("last_name", "first_name", "email")]
        total = 0.0
        for a in assignments:
            sub = journey["submissions"].get((student["id"], a))
            expected = 0.0  # nothing handed in
            if sub is not None:  # the one documented final grade: automatic + manual - late penalty
                manual = sum(MANUAL.get((student["id"], a), {}).values())
                expected = max(0.0, sub["auto"] + manual - (sub["penalty"] or 0.0))
                assert sub["manual"] == pytest.approx(manual) and expected == pytest.approx(sub["score"] - (sub["penalty"] or 0.0))
            assert float(row[a]) == pytest.approx(expected), (student["id"], a, row)
            assert float(row[f"{a}_max"]) == pytest.approx(max_points(a)), (a, row)
            total += expected
        assert float(row["total"]) == pytest.approx(total), row
        assert float(row["total_max"]) == pytest.approx(sum(max_points(a) for a in assignments)), row
    alice = rows[0]
    assert float(alice[LATE]) == pytest.approx(max_points(LATE) - DAYS_LATE), alice  # full marks, less 3 days


def test_both_paths_give_the_same_automatic_points(journey):
    """The command gives every student a row per assignment anyone handed in; nothing handed in is 0."""
    graded = {(s, a) for s, by_a in journey["ours"].items() for a in by_a}
    assert graded >= set(journey["submissions"]), graded
    for student, a in graded:
        ours = journey["ours"][student][a]
        nbgrader_points = journey["submissions"].get((student, a), {"auto": 0.0})["auto"]
        assert ours.points == pytest.approx(nbgrader_points), (student, a, ours.notices)


def test_feedback_does_not_reveal_hidden_tests(journey):
    hidden = set()
    for a in (JOURNEY, LATE):
        for cell in solution(a)["cells"]:
            for region in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", source_of(cell), re.S):
                hidden |= {line.strip() for line in region.splitlines() if line.strip()}
    pages = list((journey["course"] / "feedback").rglob("*.html"))
    assert hidden and len(pages) == len(journey["submissions"]), pages
    for page in pages:
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))  # the page as a reader sees it
        assert "BEGIN HIDDEN TESTS" not in text, page
        leaked = [line for line in hidden if line in text]
        assert not leaked, (page, leaked)


def test_nothing_lands_in_the_working_tree(journey):
    """No new or changed file, ignored or not. Source code that appears or changes meanwhile is somebody
    working in this checkout while the test runs: nbgrader writes notebooks, class data and folders."""
    new = journey["tree_after"] - journey["tree_before"]
    written = [line for line in new if not line[3:].endswith(SOURCE_CODE) or line[3:].startswith(("exercises/", "solutions/"))]
    assert not written, f"the journey wrote into the repository (or someone else did meanwhile: rerun): {sorted(written)}"


# --------------------------------------------------------------------------------------------------
# JupyterLab, as the instructor (and a student) starts it
# --------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, url: str, token: str, runtime: Path, env: dict):
        self.url, self.token, self.runtime, self.env = url, token, runtime, env

    def api(self, path: str, method: str = "GET", body: dict = None):
        request = urllib.request.Request(f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"},
                                         data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        return json.loads(text) if text else None


@contextmanager
def jupyter_lab(root: Path, tmp: Path, **extra_env: str):
    """``jupyter lab`` started from ``root`` on 127.0.0.1 with its own home, configuration and runtime folders."""
    tmp.mkdir(parents=True)
    port, token = free_port(), "journey-" + os.urandom(8).hex()
    env = tool_env(HOME=str(tmp / "home"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_CONFIG_DIR=str(tmp / "config"),
                   JUPYTER_PATH=str(tmp / "jupyter-path"), **extra_env)
    for var in ("COURSE_GRADING", "MPLBACKEND", "COURSE_EXCHANGE"):
        env.pop(var, None)
    log = (tmp / "lab.log").open("w")
    proc = subprocess.Popen([PY, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                             *(["--allow-root"] if os.geteuid() == 0 else [])],  # containers and CI run as root
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    lab = Lab(f"http://127.0.0.1:{port}", token, tmp / "runtime", env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"jupyter lab exited with {proc.returncode}:\n{(tmp / 'lab.log').read_text()[-3000:]}"
            try:
                lab.api("/api/status")
                break
            except OSError:
                assert time.monotonic() < deadline, f"jupyter lab did not answer:\n{(tmp / 'lab.log').read_text()[-3000:]}"
                time.sleep(0.5)
        yield lab
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def kernel_environment(lab: Lab) -> dict:
    """Start a kernel the way JupyterLab's launcher does and ask it for its environment."""
    from jupyter_client import BlockingKernelClient

    kernel = lab.api("/api/kernels", "POST", {"name": "python3"})
    connection = lab.runtime / f"kernel-{kernel['id']}.json"
    client = BlockingKernelClient(connection_file=str(connection))
    client.load_connection_file()
    client.start_channels()
    printed = []
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(KERNEL_PROBE, timeout=60, output_hook=lambda msg: printed.append(
            msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()
        lab.api(f"/api/kernels/{kernel['id']}", "DELETE")
    return json.loads("".join(printed))


def assert_untouched_kernels(lab: Lab) -> None:
    seen = kernel_environment(lab)
    assert seen["COURSE_GRADING"] is None, f"a JupyterLab kernel runs with the grading settings: {seen}"
    assert seen["MPLBACKEND"] != "Agg" and seen["backend"] == INLINE_BACKEND, f"figures would not show: {seen}"
    assert seen["JUPYTER_PATH"] == lab.env["JUPYTER_PATH"], f"JUPYTER_PATH was changed: {seen}"
    specs = lab.api("/api/kernelspecs")["kernelspecs"]
    offered = {name: spec["spec"]["display_name"] for name, spec in specs.items()}
    assert not [n for n, d in offered.items() if "grader" in (n + d).lower()], f"the launcher offers a grading kernel: {offered}"


@pytest.fixture(scope="module")
def instructors_lab(journey):
    with jupyter_lab(REPO, journey["tmp"] / "lab", COURSE_DIR=str(journey["course"])) as lab:
        yield lab


def test_kernels_in_the_instructors_jupyterlab_keep_their_environment(journey, instructors_lab):
    assert_untouched_kernels(instructors_lab)
    assert not (journey["course"] / "kernels").exists() and not (REPO / "course" / "kernels").exists()


def test_the_formgrader_lists_the_released_assignments(instructors_lab):
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no Chromium on this machine: `apt-get install chromium` for the formgrader's browser check")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    lab = instructors_lab
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(lab.url) else route.abort())
            page.goto(f"{lab.url}/formgrader/manage_assignments?token={lab.token}")
            for a in ASSIGNMENTS:
                page.get_by_role("link", name=a, exact=True).first.wait_for(timeout=30_000)
                row = page.locator("tr", has=page.get_by_role("link", name=a, exact=True)).first.inner_text()
                assert "released" in row, f"{a} is not shown as released: {row!r}"
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "formgrader.png"), full_page=True)
            text = page.inner_text("body")
            assert page.locator("#warning-exchange").count() == 0 and "does not exist" not in text, text
            assert page.locator(".alert-warning").count() == 0, page.locator(".alert-warning").all_inner_texts()
        finally:
            browser.close()


def test_kernels_in_a_student_editions_jupyterlab_keep_their_environment(tmp_path):
    tool = REPO / "tools" / "student_edition.py"
    if not tool.exists():
        pytest.skip("tools/student_edition.py does not exist yet")
    spec = importlib.util.spec_from_file_location("student_edition", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    edition = module.build(tmp_path / "edition")
    assert not (edition / "nbgrader_config.py").exists() and not (edition / "solutions").exists()
    with jupyter_lab(edition, tmp_path / "lab") as lab:
        assert_untouched_kernels(lab)
