"""nbgrader's ``autograde`` on the course's engine: the same sandboxed runner and judge as the command.

nbgrader runs a notebook in a Jupyter kernel on the instructor's machine, with the instructor's rights, and
scores a test cell by whether its output shows an error. Student code in that kernel could rewrite the
gradebook, other submissions or the checks. ``nbgrader_setup.configure`` therefore replaces two steps of
nbgrader's ``Autograde`` converter:

    Sanitize          first of the sanitizing steps: each cell's nbgrader metadata is the source's (a
                      student cannot add a grade cell, change points or the schema version, which would stop
                      the batch), and nbgrader's region markers in student cells are neutralised
    SandboxedExecute  instead of ``Execute``: the notebook is graded by ``autograder.grade.grade_submission``
                      (student code in the sandboxed child, verdicts computed here), and every test cell
                      gets the verdict as its output: the explanation on stdout when the part passes, an
                      error carrying the explanation when it fails. nbgrader's ``SaveAutoGrades`` then
                      scores exactly what the command scores, and feedback and the formgrader show the
                      command's messages.
"""
from __future__ import annotations

import copy
import os

from nbformat import NotebookNode, from_dict
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor

from .notebook import MARKERS, SOLUTIONS, grade_id, load_assignment, nbgrader
from .sandbox import Limits

FORCED = ("grade", "grade_id", "locked", "points", "schema_version", "solution", "task")  # taken from the source


class Sanitize(NbGraderPreprocessor):
    """Make a submission's nbgrader metadata the source's, before nbgrader reads any of it."""

    def preprocess(self, nb: NotebookNode, resources: dict):
        spec = load_assignment(resources["nbgrader"]["assignment"], SOLUTIONS)
        source = {grade_id(c): nbgrader(c) for c in spec.cells if grade_id(c)}
        seen = set()
        for cell in nb.cells:
            meta = cell.get("metadata", {})
            gid = grade_id(cell)
            if "nbgrader" in meta and (gid not in source or gid in seen):
                del meta["nbgrader"]  # a grade cell the source does not have, or a copy: an ordinary cell
                continue
            if gid in source:
                seen.add(gid)
                meta["nbgrader"] = dict(meta["nbgrader"], **{k: source[gid][k] for k in FORCED if k in source[gid]})
            if not (gid in source and source[gid].get("locked")):
                text = "".join(cell.source) if isinstance(cell.source, list) else cell.source
                for marker in MARKERS:
                    text = text.replace(marker, marker.replace(" ", "-"))
                cell.source = text
        return nb, resources


class SandboxedExecute(NbGraderPreprocessor):
    """Grade the notebook with the course's engine and write each test cell's verdict into its outputs."""

    def preprocess(self, nb: NotebookNode, resources: dict):
        from .grade import NotebookResult, grade_submission, refuse  # imports torch: only when grading

        info = resources["nbgrader"]
        result = NotebookResult(info["student"], info["assignment"], info["notebook"])
        coursedir = CourseDirectory(config=self.config)
        submitted = os.path.join(coursedir.format_path(coursedir.submitted_directory, info["student"],
                                                       info["assignment"]), f"{info['notebook']}.ipynb")
        if os.path.islink(submitted):  # nbgrader read through the link: what it points at is not the student's
            result.notices.append("the submission is a symbolic link, not a notebook; hand in the .ipynb file itself")
            refuse(result, load_assignment(info["assignment"], SOLUTIONS), "the submission could not be read")
        else:
            result = grade_submission(copy.deepcopy(dict(nb)), result, Limits(), source=SOLUTIONS)
        verdicts = {p.grade_id: p for p in result.parts}
        for n, cell in enumerate(nb.cells, start=1):
            if cell.cell_type != "code":
                continue
            part = verdicts.get(grade_id(cell))
            if part is not None:
                text = "\n".join(part.messages + ([] if part.points else [f"notice: {x}" for x in result.notices]))
                cell.outputs = [_stdout(text)] if part.points == part.max_points else [_error("CheckFailed", text)]
            elif n in result.cell_errors:
                cell.outputs = [_error("Error", result.cell_errors[n])]
            else:
                cell.outputs = []
        resources.setdefault("autograder", {})["result"] = result
        return nb, resources


def _stdout(text: str) -> NotebookNode:
    return from_dict({"output_type": "stream", "name": "stdout", "text": text + "\n"})


def _error(name: str, text: str) -> NotebookNode:
    return from_dict({"output_type": "error", "ename": name, "evalue": text, "traceback": text.splitlines()})
