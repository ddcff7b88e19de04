"""The student edition, tried as a student would: what it holds (and never holds), the self-check from it
alone, the chapters and exercises run from it with their figures, and the set-up cell that installs the
package in a fresh environment (Colab stands in for a virtual environment without the package, and the
edition's folder for the network)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from autograder.notebook import ASSIGNMENTS, grade_id, load_assignment, nbgrader, source_of
from grading_helpers import REPO, hidden_blocks, leaks, release, solution, tool_env
from tools.student_edition import BRANCH, SETUP_CELL, build, has_setup_cell, notebooks_with_setup

pytestmark = [pytest.mark.slow]
EXERCISE = "ex3_rope"
CHAPTER = "book/02_self_attention.ipynb"


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("edition") / "transformer-course")


def edition_env(edition: Path, **extra: str) -> dict:
    """Python sees the edition's package and grader first (not the instructor's checkout it was made from)."""
    path = os.pathsep.join([str(edition), str(edition / "src")])
    return tool_env(PYTHONPATH=path, COURSE_RESULTS=str(edition / "results"), **extra)


def solved(assignment: str) -> dict:
    """The release with the solution's code in every answer cell: a student's correct notebook."""
    answers = {grade_id(c): re.sub(r"[ \t]*### (BEGIN|END) SOLUTION\n", "", source_of(c))
               for c in solution(assignment)["cells"] if c["cell_type"] == "code" and nbgrader(c).get("solution")}
    nb = release(assignment)
    for cell in nb["cells"]:
        if grade_id(cell) in answers:
            cell["source"] = answers[grade_id(cell)]
    return nb


# --- what it holds ----------------------------------------------------------------------------------------

def test_it_holds_what_students_need_and_nothing_of_the_instructors(edition):
    top = {p.name for p in edition.iterdir()}
    assert {"src", "autograder", "book", "exercises", "results", "binder", "README.md", "pyproject.toml",
            "tasks.py"} <= top, top
    for private in ("solutions", "tests", "nbgrader_config.py", "_config.yml", "course", ".ci", ".github", "tools"):
        assert private not in top, f"{private} is in the student edition"
    files = [p.relative_to(edition).as_posix() for p in edition.rglob("*") if p.is_file()]
    for instructor_only in ("autograder/nbgrader_setup.py", "autograder/nbgrader_plugins.py", "autograder/nbgrader_engine.py",
                            "autograder/bench.py"):
        assert instructor_only not in files
    assert not [f for f in files if f.endswith((".db", ".pt")) or "__pycache__" in f or "gradebook" in f], files
    for a in ASSIGNMENTS:
        assert (edition / "exercises" / a / f"{a}.ipynb").read_bytes() == (REPO / "exercises" / a / f"{a}.ipynb").read_bytes()
    assert len(list((edition / "book").glob("[0-9][0-9]_*.ipynb"))) == 11
    assert sorted(p.name for p in (edition / "results").iterdir()) == sorted(p.name for p in (REPO / "results").iterdir())
    assert (edition / "src/transformer_course/pretrained/course-llama/model.safetensors").exists()
    assert "student edition" in (edition / "README.md").read_text()


def test_no_solution_hidden_test_or_hidden_parameter_is_in_it(edition):
    """The site's leak oracle: every hidden-test line (the check calls with their hidden parameters) and
    most of any solution block, taken from solutions/ itself, must be absent from every text file."""
    blocks = hidden_blocks()
    assert sum(kind == "HIDDEN TESTS" and bool(lines) for kind, lines in blocks) > 20
    assert leaks(edition, blocks, markers_in=(".ipynb", ".md", ".html")) == []
    hidden_calls = {(call.name, json.dumps(call.params, sort_keys=True))
                    for a in ASSIGNMENTS for part in load_assignment(a).parts.values() if part.hidden
                    for call in part.calls} - {(call.name, json.dumps(call.params, sort_keys=True))
                                               for a in ASSIGNMENTS for part in load_assignment(a, REPO / "exercises").parts.values()
                                               for call in part.calls}
    assert len(hidden_calls) > 20
    texts = "\n".join(p.read_text(errors="ignore") for p in edition.rglob("*") if p.suffix in (".ipynb", ".py", ".md"))
    for name, params in hidden_calls:  # e.g. check("ex1.attention", globals(), seed=7, T=13)
        literal = ", ".join(f"{k}={v!r}" for k, v in json.loads(params).items())
        assert not (literal and f'check("{name}", globals(), {literal})' in texts), (name, literal)


def test_the_instructors_commands_say_they_are_not_there(edition):
    done = subprocess.run([sys.executable, "tasks.py", "test"], cwd=edition, capture_output=True, text=True)
    assert done.returncode == 2 and "student edition" in done.stdout, done.stdout


# --- the self-check, from the edition alone --------------------------------------------------------------

def self_check(edition: Path, notebook: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "--grade", *extra, "-p", "no:cacheprovider", "-o", "addopts=", "-rA",
           str(notebook)]
    return subprocess.run(cmd, cwd=edition, capture_output=True, text=True, env=edition_env(edition), timeout=600)


def test_the_edition_imports_its_own_package_and_grader(edition):
    code = "import autograder, transformer_course; print(autograder.__file__); print(transformer_course.__file__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=edition, capture_output=True, text=True, env=edition_env(edition))
    assert done.returncode == 0, done.stderr
    assert all(line.startswith(str(edition)) for line in done.stdout.split()), done.stdout


def test_self_check_gives_points_per_part_for_the_visible_tests(edition, tmp_path):
    work = edition / "my work"  # a student's own folder, and a renamed copy
    work.mkdir(exist_ok=True)
    notebook = work / f"{EXERCISE} (copy).ipynb"
    notebook.write_text(json.dumps(solved(EXERCISE)))
    done = self_check(edition, notebook)
    parts = load_assignment(EXERCISE, REPO / "exercises").parts
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "visible tests only" in done.stdout
    assert re.search(rf"\b{len(parts)} passed", done.stdout), done.stdout[-2000:]
    total = sum(p.points for p in parts.values())
    assert f"{EXERCISE}: {total:g} / {total:g} points (visible tests only)" in done.stdout, done.stdout[-2000:]
    for gid, part in parts.items():  # points per part, in the summary
        assert re.search(rf"{gid}\s+{part.points:g} / {part.points:g}", done.stdout), gid


def test_self_check_of_the_untouched_release_fails_every_part_and_says_why(edition):
    done = self_check(edition, edition / "exercises" / EXERCISE / f"{EXERCISE}.ipynb")
    parts = load_assignment(EXERCISE, REPO / "exercises").parts
    assert done.returncode == 1, done.stdout[-3000:]
    assert re.search(rf"\b{len(parts)} failed", done.stdout), done.stdout[-2000:]
    assert "NotImplementedError" in done.stdout and "not one of the course's exercises" not in done.stdout


def test_hidden_tests_are_refused_in_the_edition(edition):
    done = self_check(edition, edition / "exercises" / EXERCISE / f"{EXERCISE}.ipynb", "--hidden-tests")
    assert done.returncode != 0 and "instructor's repository" in done.stdout + done.stderr


# --- notebooks run from the edition, figures included ---------------------------------------------------

def execute(notebook: dict, cwd: Path, env: dict) -> dict:
    """Run every cell in a fresh kernel started from ``cwd``, as JupyterLab started there would."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.reads(json.dumps(notebook), as_version=4)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


def figures(nb: dict) -> int:
    return sum("image/png" in out.get("data", {}) for c in nb["cells"] if c["cell_type"] == "code" for out in c["outputs"])


@pytest.mark.timeout(900)
def test_a_chapter_and_an_exercise_run_from_the_edition_with_their_figures(edition):
    env = edition_env(edition)
    env.pop("MPLBACKEND", None)
    chapter = execute(json.loads((edition / CHAPTER).read_text()), edition / "book", env)
    assert figures(chapter) >= 3
    exercise = execute(solved(EXERCISE), edition / "exercises" / EXERCISE, env)
    assert figures(exercise) >= 1


# --- the set-up cell --------------------------------------------------------------------------------------

def test_every_chapter_and_exercise_starts_with_the_set_up_cell():
    paths = notebooks_with_setup() + sorted((REPO / "exercises").glob("*/*.ipynb"))
    assert len(paths) == 11 + 2 * len(ASSIGNMENTS)
    missing = [str(p.relative_to(REPO)) for p in paths if not has_setup_cell(json.loads(p.read_text()))]
    assert not missing, f"run `python3 tasks.py setup-cells` and regenerate the releases: {missing}"


@pytest.mark.timeout(600)
def test_set_up_cell_installs_the_package_in_a_fresh_environment(edition, tmp_path):
    """A virtual environment without the course package (its other packages borrowed from this one, so
    that nothing is downloaded) runs an exercise's first cells: the set-up cell installs the package from
    the edition's folder (where it would have cloned it), and the exercise's imports then work. Run again,
    the cell does nothing."""
    fresh = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(fresh)
    python = fresh / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # no .pth of ours runs there
    nb = release(EXERCISE)
    first = [source_of(c) for c in nb["cells"] if c["cell_type"] == "code"][:2]
    assert first[0] == SETUP_CELL
    script = (
        "import importlib.util, json, sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "assert importlib.util.find_spec('transformer_course') is None, 'the fresh environment has the package'\n"
        "shell = InteractiveShell.instance()\n"
        "for source in json.loads(sys.argv[1]) + [json.loads(sys.argv[1])[0]]:\n"
        "    result = shell.run_cell(source)\n"
        "    assert result.success, result.error_in_exec or result.error_before_exec\n"
        "import transformer_course; print('PACKAGE', transformer_course.__file__)\n"
    )
    (tmp_path / "transformer-course").symlink_to(edition)  # where the cell would clone it, so it need not
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0",
               PIP_DISABLE_PIP_VERSION_CHECK="1", MPLBACKEND="Agg")
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(python), "-c", script, json.dumps(first)], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    installed = re.search(r"PACKAGE (\S+)", done.stdout).group(1)
    assert installed.startswith(str(fresh)), installed


def test_the_publish_workflow_and_the_launch_buttons_use_the_edition():
    workflow = (REPO / ".github" / "workflows" / "book.yml").read_text()
    assert "python3 tasks.py student-edition _build/student-edition" in workflow
    assert re.search(rf"git push .* {BRANCH}\b", workflow)
    assert re.search(rf"^\s+branch:\s*{BRANCH}\s*$", (REPO / "_config.yml").read_text(), re.M)
