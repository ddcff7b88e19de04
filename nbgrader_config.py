"""nbgrader configuration for this course (nbgrader 0.9.6). Run nbgrader from the repository root.

The source notebooks are solutions/<assignment>/ and the student versions exercises/<assignment>/ (both
committed). Class data - submissions, autograded copies, feedback, the gradebook - lives in the course
folder, ``course/`` here unless COURSE_DIR names another; it is never committed. The exchange is
COURSE_EXCHANGE, or ``exchange/`` in the course folder. Nothing here changes the environment of the
kernels JupyterLab starts (it loads this file for the formgrader): autograding runs on the course's
sandboxed engine (autograder/nbgrader_engine.py), not in a kernel.
"""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # so that the autograder package is importable even without installing it
from autograder.nbgrader_setup import configure  # noqa: E402

configure(get_config(), HERE, Path(os.environ.get("COURSE_DIR", HERE / "course")))  # noqa: F821
