#!/usr/bin/env python3
"""The project's single entry point: every target makes (or reuses) its own virtual environment.

    python tasks.py book     set up .venv and build the book into _build/html
    python tasks.py test     set up .venv and run the whole test suite (pytest arguments may follow)
    python tasks.py bench    set up .venv and run the benchmarks (model and grading), writing results/*.json

Needs only Python 3.10+ and pip. The environment is reinstalled when pyproject.toml or constraints.txt
change (a hash of both is kept in .venv/installed.txt).
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


def _stamp() -> str:
    digest = hashlib.sha256()
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
    print("[tasks] installing the course package and its tools (first run only)", flush=True)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", str(ROOT / "constraints.txt")]
    subprocess.run(pip + ["torch==2.13.0"], check=True, cwd=ROOT)  # the CPU build, before anything asks for torch
    subprocess.run(pip + ["-e", ".[dev]"], check=True, cwd=ROOT)
    marker.write_text(_stamp() + "\n")


def run(*cmd: str) -> int:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("book", "test", "bench"):
        print(__doc__)
        return 2
    target, rest = argv[0], argv[1:]
    ensure_venv()
    if target == "test":
        return run(PY, "-m", "pytest", *rest)
    if target == "bench":
        return run(PY, "-m", "transformer_course", "bench", *rest) or run(PY, "-m", "autograder", "bench")
    return run(BIN / "jupyter-book", "build", ".", "-W", "--keep-going", *rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
