#!/usr/bin/env python3
"""The project's single entry point: every target makes (or reuses) its own virtual environment.

    python3 tasks.py setup                 set up .venv only (the package, JupyterLab, pytest --grade, nbgrader)
    python3 tasks.py book                  set up .venv and build the book into _build/html
    python3 tasks.py test                  set up .venv and run the whole test suite on two cores at most (pytest
                                           arguments may follow, e.g. -m "not slow" or -n 0)
    python3 tasks.py bench                 set up .venv and run the benchmarks (model and grading), writing results/*.json
    python3 tasks.py catalogue [EX ...]    grade the catalogue of student mistakes (tests/mutants/) and print how many
                                           each part catches, names and only locates
    python3 tasks.py student-edition DIR   write what students receive into DIR (no solutions, no hidden tests)
    python3 tasks.py setup-cells           put the set-up cell first in every chapter and exercise source

Needs only Python 3.10+ and pip. The environment is reinstalled when pyproject.toml or constraints.txt
change (a hash of both is kept in .venv/installed.txt). In the student edition (no tests/ folder) `setup`
installs the student's tools only, and the instructor's targets say that they are not there.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STUDENT_EDITION = not (ROOT / "tests").is_dir()
EXTRAS = "student" if STUDENT_EDITION else "dev"
TARGETS = ("setup", "book", "test", "bench", "catalogue", "student-edition", "setup-cells")
UNINSTALL = ("rfc3987-syntax",)  # installed by a dependency, removed after the install (see ensure_venv)
INSTRUCTOR_ONLY = ("book", "test", "bench", "catalogue", "student-edition", "setup-cells")


def _stamp() -> str:
    digest = hashlib.sha256(f"{EXTRAS} without {UNINSTALL}".encode())
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    marker = VENV / "installed.txt"
    if marker.exists() and marker.read_text().strip() == _stamp():
        return
    if not PY.exists():
        print(f"[tasks] creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(f"[tasks] installing the course package and its tools ({EXTRAS}; first run only)", flush=True)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", str(ROOT / "constraints.txt")]
    subprocess.run(pip + ["torch==2.13.0"], check=True, cwd=ROOT)  # the CPU build, before anything asks for torch
    subprocess.run(pip + ["-e", f".[{EXTRAS}]"], check=True, cwd=ROOT)
    # jsonschema's optional "iri" format checker (rfc3987-syntax, pulled in by jupyter-events) builds about 25
    # Earley parsers when jsonschema is imported: 1.7 s in every process that reads a notebook (each nbgrader
    # command, JupyterLab, the book build, the grader), for a format no Jupyter schema uses (jsonschema issues
    # #1392 and #1428). Without it jsonschema skips that one format; `pip check` stays clean.
    subprocess.run([str(PY), "-m", "pip", "uninstall", "-y", "-q", *UNINSTALL], check=True, cwd=ROOT)
    marker.write_text(_stamp() + "\n")


def run(*cmd: str) -> int:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TARGETS:
        print(__doc__)
        return 2
    target, rest = argv[0], argv[1:]
    if STUDENT_EDITION and target in INSTRUCTOR_ONLY:
        print(f"`{target}` needs the instructor's repository; this is the student edition. Use "
              "`python3 tasks.py setup`, then `.venv/bin/jupyter lab` and `.venv/bin/pytest --grade NOTEBOOK`.")
        return 2
    if target == "student-edition":
        if len(rest) != 1:
            print("usage: python3 tasks.py student-edition DIR")
            return 2
        from tools.student_edition import build

        print(f"[tasks] wrote the student edition into {build(Path(rest[0]))}")
        return 0
    if target == "setup-cells":
        from tools.student_edition import write_setup_cells

        changed = write_setup_cells()
        print("\n".join(f"[tasks] set-up cell written into {p.relative_to(ROOT)}" for p in changed) or "[tasks] all set")
        if any("solutions" in p.parts for p in changed):
            print("[tasks] regenerate the releases: nbgrader generate_assignment <assignment> --force")
        return 0
    ensure_venv()
    if target == "setup":
        print(f"[tasks] ready: `source {BIN / 'activate'}`, then `jupyter lab` or `pytest --grade NOTEBOOK`")
        return 0
    if target == "test":
        workers = min(2, os.cpu_count() or 1)
        # loadscope, as tests/conftest.py defines it: the files with costly fixtures whole, the rest test by test
        parallel = ["-n", str(workers), "--dist", "loadscope"] if workers > 1 else []
        return run(PY, "-m", "pytest", *parallel, *rest)
    if target == "catalogue":
        return run(PY, "-m", "tests.mutants", *rest)
    if target == "bench":
        return run(PY, "-m", "transformer_course", "bench", *rest) or run(PY, "-m", "autograder", "bench")
    return run(BIN / "jupyter-book", "build", ".", "-W", "--keep-going", *rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
