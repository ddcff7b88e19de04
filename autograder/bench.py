"""How long grading takes: one student's five exercises, and a simulated class, on this machine.

    python -m autograder bench [--students 6] [--jobs 2]

Every simulated student hands in the five solution notebooks (the slowest honest case: every check runs
to the end). Targets (issue 4): at most 2 minutes for one student, a class of 100 within an hour.
Writes ``results/grading-cpu.json`` with the machine it ran on.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from transformer_course.results import machine_info

from .grade import grade_folder
from .notebook import ASSIGNMENTS, SOLUTIONS
from .sandbox import REPO, isolation

TARGET_STUDENT_S = 120
TARGET_CLASS_S = 3600


def _class(folder: Path, students: int) -> None:
    for s in range(students):
        for a in ASSIGNMENTS:
            dest = folder / f"student{s:03d}" / a
            dest.mkdir(parents=True)
            shutil.copy(SOLUTIONS / a / f"{a}.ipynb", dest / f"{a}.ipynb")


def _timed(students: int, jobs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        _class(Path(tmp), students)
        start = time.monotonic()
        results = grade_folder(Path(tmp), jobs=jobs)
        seconds = time.monotonic() - start
    full = all(r.points == r.max_points for r in results)
    per_notebook = {a: round(sum(r.seconds for r in results if r.assignment == a) / students, 2) for a in ASSIGNMENTS}
    return {"students": students, "jobs": jobs, "seconds": round(seconds, 1), "all_full_marks": full,
            "seconds_per_notebook": per_notebook}


def run(students: int = 6, jobs: int = 2, out: Path = REPO / "results") -> dict:
    one = _timed(1, jobs)
    cls = _timed(students, jobs)
    per_student = cls["seconds"] / students
    result = {
        "machine": machine_info(), "isolation": isolation(),
        "one_student": one, "class": cls,
        "class_of_100_estimate_s": round(per_student * 100, 0),
        "targets": {"one_student_s": TARGET_STUDENT_S, "class_of_100_s": TARGET_CLASS_S,
                    "one_student_met": one["seconds"] <= TARGET_STUDENT_S,
                    "class_met": per_student * 100 <= TARGET_CLASS_S},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "grading-cpu.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def format_result(r: dict) -> str:
    return (f"one student, five notebooks: {r['one_student']['seconds']} s (target {TARGET_STUDENT_S} s)\n"
            f"class of {r['class']['students']} with {r['class']['jobs']} at a time: {r['class']['seconds']} s, "
            f"so about {r['class_of_100_estimate_s'] / 60:.0f} min for 100 students (target {TARGET_CLASS_S // 60} min)\n"
            f"per notebook (s): {r['class']['seconds_per_notebook']}")
