"""The student edition: what students receive, and the set-up cell every notebook starts with.

    python3 tasks.py student-edition DIR     write the student edition into DIR
    python3 tasks.py setup-cells             put SETUP_CELL first in every chapter and exercise source

The student edition holds the package (``src/``), the grader's student side (``autograder/`` without the
modules that only nbgrader and the instructor use), the chapters (``book/NN_*.ipynb``), the released
exercises (``exercises/``), the results files (``results/``), the Binder environment and a README for
students. It never holds ``solutions/`` (model answers and hidden tests), nbgrader's configuration, a
gradebook, class data or the test suite: students, and student code while it is graded, see only this.

Standard library only: ``tasks.py`` runs it before any virtual environment exists.
"""
from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, List

from autograder.notebook import MARKERS  # standard library only, like this module

ROOT = Path(__file__).resolve().parent.parent
BRANCH = "student-edition"  # where the publish workflow pushes it; the book's launch buttons open it
URL = "https://github.com/transformer-course/transformer-course"  # _config.yml's repository.url

# Repository paths (fnmatch patterns) that students receive ...
INCLUDE = (
    "src/*", "autograder/*", "book/[0-9][0-9]_*.ipynb", "exercises/*", "results/*", "binder/*",
    "pyproject.toml", "constraints.txt", "tasks.py", ".gitignore",
)
# ... except these: the instructor's side of the grader (nbgrader's settings, kernel and plugins; the
# benchmark, which grades the solutions) and files no student needs.
EXCLUDE = (
    "autograder/nbgrader_setup.py", "autograder/nbgrader_plugins.py", "autograder/nbgrader_engine.py", "autograder/bench.py",
    "*/__pycache__/*", "*.pyc", "*/.ipynb_checkpoints/*", "src/transformer_course/pretrained/*/train_state.pt",
)
README = Path(__file__).with_name("student-README.md")

SETUP_CELL = f'''\
# Set-up. On Colab, or anywhere the course package is not installed, this installs it from the course's
# student edition (git clone, then pip). Where the package is installed already it does nothing.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("transformer_course") is None:
    edition = os.environ.get("COURSE_EDITION", "transformer-course")  # a folder, or where to clone it
    if not os.path.isdir(edition):
        subprocess.run(["git", "clone", "-q", "--depth=1", "--branch={BRANCH}",
                        "{URL}", edition], check=True)
    edition = os.path.abspath(edition)  # a path, so that pip does not look for a package of that name
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", edition + "[notebooks]"], check=True)
    os.environ.setdefault("COURSE_RESULTS", os.path.join(edition, "results"))
    importlib.invalidate_caches()'''
SETUP_CELL_ID = "course-setup"


def repository_files(root: Path = ROOT) -> List[str]:
    """Paths (relative, with /) of the files the repository holds: git's tracked and untracked-but-not-
    ignored files in a checkout, every file otherwise (an unpacked archive)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout.decode()
        return sorted(p for p in out.split("\0") if p and (root / p).is_file())
    except (OSError, subprocess.CalledProcessError):
        return sorted(str(p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file()
                      and ".git" not in p.relative_to(root).parts and ".venv" not in p.relative_to(root).parts)


def selected(paths: Iterable[str]) -> List[str]:
    return [p for p in paths if any(fnmatch.fnmatch(p, pat) for pat in INCLUDE)
            and not any(fnmatch.fnmatch(p, pat) for pat in EXCLUDE)]


def build(dest: Path, root: Path = ROOT) -> Path:
    """Write the student edition of ``root`` into ``dest`` (created, or emptied if it is an earlier edition)."""
    dest = Path(dest).resolve()
    if dest == root or root in dest.parents and not dest.is_relative_to(root / "_build"):
        raise ValueError(f"{dest} is inside the repository; write the student edition elsewhere (or under _build/)")
    if dest.exists() and any(dest.iterdir()):
        if not (dest / "exercises").is_dir() or (dest / "solutions").exists():
            raise ValueError(f"{dest} is not empty and is not a student edition; choose a new folder")
        for child in dest.iterdir():
            if child.name != ".git":  # keep the history of a student-edition repository
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    files = selected(repository_files(root))
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    shutil.copy2(README, dest / "README.md")
    problems = [f"{rel}: {m}" for rel in files if rel.endswith(".ipynb")
                for m in MARKERS if m in (dest / rel).read_text(encoding="utf-8")]
    if problems or not any(p.startswith("exercises/") for p in files):
        shutil.rmtree(dest)
        raise RuntimeError("the student edition would contain nbgrader's solution or hidden-test markers "
                           f"({problems[:3]}) or no exercises; regenerate exercises/ with "
                           "`nbgrader generate_assignment <assignment> --force`")
    return dest


# --------------------------------------------------------------------------------------------------
# The set-up cell, first in every chapter and in every exercise's source
# --------------------------------------------------------------------------------------------------
def notebooks_with_setup(root: Path = ROOT) -> List[Path]:
    """The chapters and the exercises' nbgrader sources (the releases are generated from them)."""
    return sorted((root / "book").glob("[0-9][0-9]_*.ipynb")) + sorted((root / "solutions").glob("*/*.ipynb"))


def setup_cell(nbgrader: bool) -> dict:
    metadata: dict = {"tags": ["remove-cell"]}  # plumbing: the published book does not show it
    if nbgrader:
        metadata.update(deletable=False, editable=False, nbgrader={
            "grade": False, "grade_id": "course_setup", "locked": True, "schema_version": 3, "solution": False,
            "task": False})
    return {"cell_type": "code", "execution_count": None, "id": SETUP_CELL_ID, "metadata": metadata, "outputs": [],
            "source": SETUP_CELL.splitlines(keepends=True)}


def has_setup_cell(nb: dict) -> bool:
    first = nb["cells"][0] if nb.get("cells") else {}
    source = first.get("source", "")
    return first.get("cell_type") == "code" and ("".join(source) if isinstance(source, list) else source) == SETUP_CELL


def write_setup_cells(root: Path = ROOT) -> List[Path]:
    """Put (or update) the set-up cell first in every notebook of ``notebooks_with_setup``; the changed paths."""
    changed = []
    for path in notebooks_with_setup(root):
        nb = json.loads(path.read_text(encoding="utf-8"))
        if has_setup_cell(nb):
            continue
        if nb["cells"] and nb["cells"][0].get("id") == SETUP_CELL_ID:
            nb["cells"].pop(0)
        nb["cells"].insert(0, setup_cell(nbgrader="solutions" in path.parts))
        path.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        changed.append(path)
    return changed
