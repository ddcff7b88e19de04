"""The child process: executes one student notebook and runs the student half of its checks.

    python -m autograder.runner JOB

``JOB/job.json`` lists the steps (written by ``autograder.grade``)::

    {"cell_seconds": 60, "output_bytes": 2097152,
     "steps": [{"kind": "code", "cell": 3, "source": "..."},
               {"kind": "test", "cell": 4, "grade_id": "test_attention",
                "calls": [{"name": "ex1.attention", "params": {"seed": 0}}]}]}

Code cells run in one namespace, in order, like a kernel: an exception (or ``sys.exit``) ends the cell,
not the notebook, and a cell that runs longer than ``cell_seconds`` is interrupted. At a test step the
runner calls each check's ``run`` and saves what it returns to ``JOB/out/<grade_id>.<i>.safetensors``;
the verdict is computed by the parent, which trusts nothing written here beyond those tensors.
Progress goes to ``JOB/events.jsonl``, one line per event, flushed at once, so the parent knows how far a
notebook got even when it kills the process.
"""
from __future__ import annotations

import json
import linecache
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from autograder.notebook import python_source



class CellTimeout(BaseException):
    """Raised by the alarm inside a cell that runs too long (BaseException: `except Exception` misses it)."""


class CappedStream:
    """stdout/stderr for student code: keeps the first ``limit`` bytes, drops the rest, counts them."""

    def __init__(self, target, limit: int):
        self.target, self.limit, self.written, self.dropped = target, limit, 0, 0

    def write(self, text: str) -> int:
        room = max(self.limit - self.written, 0)
        if room:
            self.target.write(text[:room])
        self.written += min(len(text), room)
        self.dropped += len(text) - min(len(text), room)
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return False


class Events:
    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")

    def __call__(self, **event) -> None:
        self.file.write(json.dumps(event) + "\n")
        self.file.flush()


class GradingShell:
    """What ``get_ipython()`` is while a notebook is graded. IPython's input transformer (``python_source``)
    turns magics and shell escapes into calls on it; none of them runs here: no shell commands, no
    extensions, no kernel hooks (the body of a Python cell magic is plain code by then)."""

    def run_line_magic(self, name, line, *args):
        return None

    def run_cell_magic(self, name, line, body):
        return None

    def system(self, command):
        return None

    getoutput = system


def error_text(err: BaseException, cell: int) -> str:
    """The exception as a student reads it: type, message, and the line of their cell."""
    line = ""
    for frame in traceback.extract_tb(err.__traceback__):
        if frame.filename == f"<cell {cell}>":
            line = f" (line {frame.lineno}: {frame.line.strip() if frame.line else ''})"
    message = f": {err}" if str(err) else ""
    return f"{type(err).__name__}{message}{line}"


def _alarm(seconds: int) -> None:
    signal.setitimer(signal.ITIMER_REAL, seconds)


def drop_privileges(uid: int) -> None:
    """Become ``uid`` (group too, no supplementary groups) for good; the grader asks for it when it is root."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SystemExit("the runner could not drop root privileges")


def execute(steps: list, cell_seconds: int, events, save) -> None:
    """Run the steps in one fresh namespace, in order, like a kernel; ``events(**event)`` records progress and
    ``save(grade_id, i, outputs)`` keeps what a check's student half returned (it may raise to refuse them).
    ``cell_seconds`` 0 sets no alarm (in-process, where the caller's own timeout rules).

    The child process calls this on a submission; the grader's own tests call it in-process on the course's
    mutants (``autograder.grade.grade_submission(..., sandboxed=False)``), which are trusted code."""
    from IPython.display import display  # noqa: F401  (notebooks call display() without importing it)

    from autograder.checks import run_student_side

    alarm = _alarm if cell_seconds else (lambda seconds: None)
    namespace = {"__name__": "__main__", "display": display}
    for step in steps:
        cell = step["cell"]
        if step["kind"] == "code":
            events(event="start", cell=cell)
            started = time.monotonic()
            error = None
            try:
                source = python_source(step["source"])
                namespace["get_ipython"] = GradingShell
                linecache.cache[f"<cell {cell}>"] = (len(source), None, source.splitlines(True), f"<cell {cell}>")
                code = compile(source, f"<cell {cell}>", "exec")
                alarm(cell_seconds)
                try:
                    exec(code, namespace)
                finally:
                    alarm(0)
            except CellTimeout:
                error = f"the cell ran longer than {cell_seconds} s and was interrupted (an infinite loop?)"
            except SystemExit as err:
                error = f"the cell called sys.exit({err.code!r}); the grader ignores it and goes on, as a kernel does"
            except SyntaxError as err:
                error = f"SyntaxError: {err.msg} (line {err.lineno}: {(err.text or '').strip()})"
            except BaseException as err:  # noqa: BLE001 (a student's KeyboardInterrupt is an error too)
                error = error_text(err, cell)
            events(event="end", cell=cell, error=error, seconds=round(time.monotonic() - started, 3))
            continue
        for i, call in enumerate(step["calls"]):
            events(event="check", cell=cell, grade_id=step["grade_id"], call=i)
            try:
                alarm(cell_seconds)
                try:
                    got, error = run_student_side(call["name"], namespace, call["params"])
                finally:
                    alarm(0)
            except CellTimeout:
                got, error = None, f"your code ran longer than {cell_seconds} s in this check and was interrupted"
            except BaseException as err:  # noqa: BLE001 (sys.exit or KeyboardInterrupt inside a graded function)
                got, error = None, f"your code raised {type(err).__name__} during the check: {err}"
            if got is not None:
                try:
                    save(step["grade_id"], i, got)
                except Exception as err:  # over the file-size limit, or tensors safetensors refuses
                    got, error = None, f"the outputs of your code could not be saved ({err})"
            events(event="checked", cell=cell, grade_id=step["grade_id"], call=i, error=error)


def main(job: Path) -> int:
    spec = json.loads((job / "job.json").read_text())
    (job / "job.json").unlink(missing_ok=True)  # the hidden tests' parameters: not left for student code to read
    if spec.get("uid") is not None and os.geteuid() == 0:
        drop_privileges(int(spec["uid"]))
    # Imports resolve to the installed grader and package only: not to files in the job folder (the working
    # directory), which student code can write.
    sys.path[:] = [p for p in sys.path if p not in ("", ".", str(job), os.getcwd())]
    out = job / "out"
    out.mkdir(exist_ok=True)
    events = Events(job / "events.jsonl")
    stream = CappedStream(sys.stdout, spec["output_bytes"])  # kept here: student code may replace sys.stdout
    sys.stdout = sys.stderr = stream

    def on_alarm(signum, frame):
        raise CellTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    # Imported before student code runs, so that a student cannot shadow the grader's own modules.
    from safetensors.torch import save_file

    def save(grade_id: str, i: int, got: dict) -> None:
        save_file(got, str(out / f"{grade_id}.{i}.safetensors"))

    execute(spec["steps"], spec["cell_seconds"], events, save)
    events(event="done", output_bytes=stream.written + stream.dropped, dropped_bytes=stream.dropped)
    os._exit(0)  # skip interpreter teardown: student objects' __del__ must not change the exit status


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))
