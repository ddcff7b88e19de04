"""The settings ``nbgrader_config.py`` applies, kept here so that tests and the command share them.

``configure`` only fills in nbgrader's configuration object (and creates the course and exchange folders).
It must not change ``os.environ`` or install kernelspecs: JupyterLab loads ``nbgrader_config.py`` for the
formgrader, and everything set here in the process would reach every kernel opened in JupyterLab. What
grading needs in its kernel travels in the grading kernel's own description (``nbgrader_plugins.py``).
"""
from __future__ import annotations

import os
from pathlib import Path

from .nbgrader_engine import SandboxedExecute, Sanitize
from .nbgrader_plugins import LmsCsvExport, PointsPerDayLate, ShortenHiddenTracebacks
from .sandbox import Limits

COURSE_ID = "transformer-course"
# zip_collect: the file names of Canvas's "Download Submissions" archive,
#     <studentlogin>[_late]_<userid>_<submissionid>_<file name as uploaded, "-1" etc. for resubmissions>
# matched against the absolute path of each extracted file. The student id is the login part.
CANVAS_FILE_NAME = (r".*/(?P<student_id>[^/_]+)(?:_(?i:late))?_(?P<user_id>\d+)_(?P<submission_id>\d+)_"
                    r"(?P<file_id>[^/]+?)(?:-\d+)?\.ipynb$")


def exchange_root(course: Path) -> Path:
    """The exchange: $COURSE_EXCHANGE (a JupyterHub's shared folder) if set, else <course>/exchange."""
    return Path(os.environ.get("COURSE_EXCHANGE") or course / "exchange")


def configure(c, repo: Path, course: Path) -> None:
    course.mkdir(parents=True, exist_ok=True)
    c.CourseDirectory.course_id = COURSE_ID
    c.CourseDirectory.root = str(repo)
    c.CourseDirectory.source_directory = "solutions"
    c.CourseDirectory.release_directory = "exercises"
    c.CourseDirectory.submitted_directory = str(course / "submitted")
    c.CourseDirectory.autograded_directory = str(course / "autograded")
    c.CourseDirectory.feedback_directory = str(course / "feedback")
    c.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"

    exchange = exchange_root(course)
    exchange.mkdir(parents=True, exist_ok=True)
    c.Exchange.root = str(exchange)

    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

    # Autograding runs on the course's engine (nbgrader_engine.py): the student's code in the command's sandbox,
    # verdicts computed in this process and written into the test cells' outputs, which nbgrader then scores.
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearOutput, DeduplicateIds,
                                        IgnorePattern, LimitOutput, OverwriteCells, OverwriteKernelspec,
                                        SaveAutoGrades)

    c.Autograde.sanitize_preprocessors = [Sanitize, ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells,
                                          CheckCellMetadata]  # nbgrader's, with Sanitize first
    c.Autograde.autograde_preprocessors = [SandboxedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                           SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]  # Execute replaced
    c.Execute.timeout = Limits().cell_seconds
    c.Execute.interrupt_on_timeout = True
    c.LimitOutput.max_lines = 1000
    c.OverwriteCells.add_missing_cells = True  # a deleted test cell is put back instead of "needs manual grade"
    c.AssignLatePenalties.plugin_class = PointsPerDayLate
    c.PointsPerDayLate.points_per_day = 1.0

    # Feedback must not reveal hidden tests (nbgrader shows them unless told).
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import ClearHiddenTests, GetGrades

    c.GenerateFeedback.preprocessors = [ShortenHiddenTracebacks, ClearHiddenTests, GetGrades, CSSHTMLHeaderPreprocessor]

    # zip_collect reads <course>/downloaded/<assignment>/archive/ (nbgrader joins the structure onto
    # CourseDirectory.root, which an absolute path replaces).
    c.ZipCollectApp.collect_directory_structure = os.path.join(_literal(course), "{downloaded}", "{assignment_id}", "{collect_step}")
    c.ZipCollectApp.downloaded_directory = "downloaded"
    c.FileNameCollectorPlugin.named_regexp = CANVAS_FILE_NAME

    # export: the LMS table, into the course folder unless --to names another file.
    c.ExportApp.plugin_class = LmsCsvExport
    c.ExportPlugin.to = str(course / "grades.csv")


def _literal(path: Path) -> str:
    """``path`` as it must appear in a str.format template."""
    return str(path).replace("{", "{{").replace("}", "}}")
