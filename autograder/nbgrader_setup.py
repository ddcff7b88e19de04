"""The settings ``nbgrader_config.py`` applies, kept here so that tests and the command share them."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

from .sandbox import Limits

KERNEL = "course-grader"


def configure(c, repo: Path, course: Path) -> None:
    course.mkdir(parents=True, exist_ok=True)
    c.CourseDirectory.course_id = "transformer-course"
    c.CourseDirectory.root = str(repo)
    c.CourseDirectory.source_directory = "solutions"
    c.CourseDirectory.release_directory = "exercises"
    c.CourseDirectory.submitted_directory = str(course / "submitted")
    c.CourseDirectory.autograded_directory = str(course / "autograded")
    c.CourseDirectory.feedback_directory = str(course / "feedback")
    c.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
    # Autograding: every notebook runs in our kernel (whatever kernel name it was saved with), under the
    # command's memory and output limits, with a per-cell timeout equal to the command's.
    c.Execute.kernel_name = KERNEL
    c.Execute.timeout = Limits().cell_seconds
    c.Execute.interrupt_on_timeout = True
    c.LimitOutput.max_lines = 1000
    c.OverwriteCells.add_missing_cells = True  # a deleted test cell is put back instead of "needs manual grade"
    # Feedback must not reveal hidden tests (nbgrader shows them unless told).
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import ClearHiddenTests, GetGrades

    c.GenerateFeedback.preprocessors = [ShortenHiddenTracebacks, ClearHiddenTests, GetGrades, CSSHTMLHeaderPreprocessor]
    os.environ["COURSE_GRADING"] = "1"  # experiments in the notebooks run shortened, as under the command
    os.environ["MPLBACKEND"] = "Agg"
    kernels = course / "kernels"
    install_kernel(kernels)
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(course)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p])


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


def install_kernel(kernels: Path) -> None:
    """A kernelspec that starts ipykernel through ``autograder.kernel`` (which applies the limits)."""
    spec = kernels / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "autograder.kernel", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps(
        {"argv": argv, "display_name": "Python 3 (course grader)", "language": "python"}, indent=1))
