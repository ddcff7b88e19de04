"""The classes the course's nbgrader configuration plugs into nbgrader 0.9.6 (see ``nbgrader_setup.py``).

    PointsPerDayLate        the late policy: a fixed number of points off per started day late
    LmsCsvExport            ``nbgrader export``: one row per student, one final grade per assignment, for an LMS
    ShortenHiddenTracebacks feedback shows an error's message, not the hidden tests' code it would quote

Autograding itself runs on the course's engine (``nbgrader_engine.py``).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import List

from nbconvert.preprocessors import Preprocessor
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins import ExportPlugin, LateSubmissionPlugin
from traitlets import Bool, Float

SECONDS_PER_DAY = 24 * 60 * 60


class PointsPerDayLate(LateSubmissionPlugin):
    """The late policy: ``points_per_day`` points off a notebook for every started day (24 hours) after the
    due date, never more than the notebook's score. Autograde applies it once, to the automatic score;
    points given by hand later are not reduced further."""

    points_per_day = Float(1.0, help="Points taken off per started day late").tag(config=True)

    def late_submission_penalty(self, student_id: str, score: float, total_seconds_late: float) -> float:
        days_late = math.ceil(total_seconds_late / SECONDS_PER_DAY)
        return min(score, self.points_per_day * days_late)


class LmsCsvExport(ExportPlugin):
    """Grades as a learning platform imports them: one row per student, with the columns

        student_id, last_name, first_name, email,
        <assignment> ... (its final grade), total,
        <assignment>_max ... (what it is out of), total_max

    The final grade of an assignment is nbgrader's score: automatic points + points given by hand - the
    late penalty (never below 0); it is out of the automatic + written points. A student with no submission
    gets 0. ``--to`` names the file (the configuration points it into the course folder)."""

    def export(self, gradebook: Gradebook) -> None:
        assignments = sorted(a.name for a in gradebook.assignments if self._wanted(a.name, self.assignment))
        students = sorted((s for s in gradebook.students if self._wanted(s.id, self.student)), key=lambda s: s.id)
        maxima = [gradebook.find_assignment(a).max_score for a in assignments]
        dest = Path(self.to or "grades.csv")
        self.log.info("Exporting the grades of %d students in %d assignments to %s", len(students), len(assignments), dest)
        with dest.open("w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["student_id", "last_name", "first_name", "email", *assignments, "total",
                          *[f"{a}_max" for a in assignments], "total_max"])
            for s in students:
                grades = [final_grade(gradebook, a, s.id) for a in assignments]
                out.writerow([s.id, s.last_name or "", s.first_name or "", s.email or "",
                              *map(_number, grades), _number(sum(grades)), *map(_number, maxima), _number(sum(maxima))])

    @staticmethod
    def _wanted(name: str, selection: List[str]) -> bool:
        return not selection or name in [str(x) for x in selection]


def final_grade(gradebook: Gradebook, assignment: str, student: str) -> float:
    """Automatic + manual points - late penalty, never below 0; 0 for no submission."""
    try:
        submission = gradebook.find_submission(assignment, student)
    except MissingEntry:
        return 0.0
    return max(0.0, submission.score - (submission.late_submission_penalty or 0.0))


def _number(x: float) -> str:
    return f"{x:.2f}"


class ShortenHiddenTracebacks(Preprocessor):
    """In feedback, an error in a cell with hidden tests shows only its message (our checks explain the
    mistake there): the traceback would quote the hidden tests' code, which ClearHiddenTests leaves in."""

    enabled = Bool(True)  # nbconvert's preprocessors do nothing unless enabled

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and "BEGIN HIDDEN TESTS" in cell.source:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename')}: {output.get('evalue')}"]
        return cell, resources
