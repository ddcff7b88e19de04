"""Grade submissions: build each notebook's job, run it sandboxed, judge its outputs here.

The verdict is computed in this process from tensors the child saved; nothing the student's code does
in the child can change how they are judged, only what they are.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

from safetensors import SafetensorError
from safetensors.torch import load_file

from .checks.base import judge_outputs
from .notebook import (ASSIGNMENTS, RELEASE, SOLUTIONS, Assignment, NotebookError, grade_id, identify, load_assignment,
                       load_json, nbgrader, source_of)
from .review import review
from .runner import CappedStream, execute
from .sandbox import CHILD_ENV, Limits, run

MAX_EVENTS_BYTES = 4 * 2**20
GRADING_ENV = {"COURSE_GRADING": "1", "MPLBACKEND": "Agg"}  # the notebooks shorten their experiments when graded
VISIBLE_ONLY = ("visible tests only: this self-check runs the tests you can see in the notebook; your instructor's "
                "grading adds hidden tests on other inputs (other seeds, shapes and head counts)")


@dataclass
class PartResult:
    grade_id: str
    points: float
    max_points: float
    hidden: bool
    messages: List[str] = field(default_factory=list)


@dataclass
class NotebookResult:
    student: str
    assignment: str
    path: str
    parts: List[PartResult] = field(default_factory=list)
    notices: List[str] = field(default_factory=list)   # what the student should know beyond the parts
    max_points: float = 0.0
    written_points: float = 0.0                          # graded by hand in nbgrader, not here
    visible_only: bool = False                           # graded with the release's tests (a self-check)
    cell_errors: Dict[int, str] = field(default_factory=dict)  # cell number -> the error it raised
    seconds: float = 0.0

    @property
    def points(self) -> float:
        return sum(p.points for p in self.parts)


# --------------------------------------------------------------------------------------------------
# Building the job: the student's code, the source's tests
# --------------------------------------------------------------------------------------------------
def build_steps(assignment: Assignment, data: dict) -> Tuple[List[dict], List[str]]:
    """The runner's steps for a submission, and notices about cells that were deleted, copied or edited.

    Student cells run as written, except cells the source locks (tests, instructions, imports), which are
    taken from the source; a deleted locked cell is put back where the source has it; a copy is dropped."""
    source_cells = {grade_id(c): (i, c) for i, c in enumerate(assignment.cells) if grade_id(c)}
    locked_order = [gid for gid, (i, c) in sorted(source_cells.items(), key=lambda kv: kv[1][0])
                    if nbgrader(c).get("locked") and c.get("cell_type") == "code"]
    steps: List[dict] = []
    notices: List[str] = []
    seen: set = set()

    def emit_source(gid: str, position: int, restored: bool = False) -> None:
        cell = source_cells[gid][1]
        if restored:
            notices.append(f"the locked cell `{gid}` was missing; the grader put it back")
        if gid in assignment.parts:
            steps.append({"kind": "test", "cell": position, "grade_id": gid,
                          "calls": [{"name": c.name, "params": c.params} for c in assignment.parts[gid].calls]})
        else:
            steps.append({"kind": "code", "cell": position, "source": source_of(cell), "locked": True})
        seen.add(gid)

    def restore_before(gid: Optional[str], position: int) -> None:
        """Put back the locked cells the student deleted that come before ``gid`` in the source."""
        limit = source_cells[gid][0] if gid in source_cells else -1
        for other in locked_order:
            if other not in seen and source_cells[other][0] < limit:
                emit_source(other, position, restored=True)

    for n, cell in enumerate(data["cells"], start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        gid = grade_id(cell)
        restore_before(gid, n)
        locked = gid in source_cells and nbgrader(source_cells[gid][1]).get("locked")
        if gid in seen:
            if locked:
                notices.append(f"the cell `{gid}` appears more than once; the copy in cell {n} was not run")
                continue
            notices.append(f"the answer cell `{gid}` appears more than once; both copies ran, in order")
        if locked:
            emit_source(gid, n)
            continue
        if gid:
            seen.add(gid)
        steps.append({"kind": "code", "cell": n, "source": source_of(cell)})
    for gid in locked_order:
        if gid not in seen:
            emit_source(gid, len(data["cells"]) + 1, restored=True)
    missing = [gid for gid, (i, c) in source_cells.items()
               if nbgrader(c).get("solution") and c.get("cell_type") == "code" and gid not in seen]
    for gid in missing:
        notices.append(f"the answer cell `{gid}` is missing; the parts that use it cannot pass. Copy it back from "
                       "the released exercise and fill it in")
    return steps, notices


def graded_steps(steps: List[dict]) -> List[dict]:
    """The steps without the notebook's demonstrations: the locked cells between the parts (plots, timings,
    comparisons) and the code after the last test (the closing experiment). Verdicts never read them."""
    tests = [i for i, s in enumerate(steps) if s["kind"] == "test"]
    if not tests:
        return steps
    return [s for i, s in enumerate(steps)
            if s["kind"] == "test" or (i < tests[-1] and not (s.get("locked") and i > tests[0]))]


# --------------------------------------------------------------------------------------------------
# One notebook
# --------------------------------------------------------------------------------------------------
def _events(job: Path) -> List[dict]:
    path = job / "events.jsonl"
    if not path.exists():
        return []
    events = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f.read(MAX_EVENTS_BYTES).splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
    return events


def _last_line(console: Path) -> str:
    """The last line the crashed process printed (often the reason), shortened."""
    try:
        with open(console, "rb") as f:
            f.seek(max(console.stat().st_size - 2000, 0))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return f"; its last words: {lines[-1][:300]!r}" if lines else ""


def _outputs(path: Path, limit: int) -> Tuple[Optional[dict], Optional[str]]:
    if not path.exists():
        return None, None
    if path.stat().st_size > limit:
        return None, "the outputs of this check were too large to judge"
    try:
        return load_file(str(path)), None
    except (SafetensorError, OSError, ValueError) as err:
        return None, f"the outputs of this check could not be read ({err})"


def grade_notebook(path: Path, *, student: str = "-", assignment: Optional[str] = None,
                   limits: Limits = Limits(), threads: int = 0,
                   source: Path = SOLUTIONS) -> NotebookResult:
    """Grade one notebook. Never raises for a bad submission: problems become notices and zero points."""
    try:
        return _grade_notebook(Path(path), student, assignment, limits, threads, source)
    except Exception as err:  # a grader bug must cost one notebook, never the batch
        result = NotebookResult(student, assignment or "?", str(path))
        result.notices.append(f"the grader failed on this notebook ({type(err).__name__}: {err}); it was given "
                              "zero points: please report it to the course maintainers")
        if assignment:
            refuse(result, load_assignment(assignment, source), "the grader failed on this notebook")
        return result


def _grade_notebook(path: Path, student: str, assignment: Optional[str], limits: Limits, threads: int,
                    source: Path) -> NotebookResult:
    started = time.monotonic()
    result = NotebookResult(student, assignment or "?", str(path))
    try:
        if path.is_symlink():  # a link could point at anything the grader can read (the solutions)
            raise NotebookError(f"{path.name} is a symbolic link, not a notebook; hand in the .ipynb file itself")
        data = load_json(path)
    except NotebookError as err:
        result.notices.append(str(err))
        if assignment:
            refuse(result, load_assignment(assignment, source), "the notebook could not be read")
        return result
    found = identify(data)
    if assignment is None:
        if found is None:
            result.notices.append(f"{path.name} is not one of the course's exercises ({', '.join(ASSIGNMENTS)}): "
                                  "its cells carry none of their grade ids. Submit the released notebook.")
            return result
        assignment = found
    result.assignment = assignment
    if path.stem != assignment:
        result.notices.append(f"the notebook is named {path.name}; it was graded as {assignment} (keep the name "
                              f"{assignment}.ipynb: nbgrader skips renamed notebooks)")
    kernel = data.get("metadata", {}).get("kernelspec", {}).get("name")
    if kernel not in (None, "python3"):
        result.notices.append(f"the notebook asks for the kernel {kernel!r}; it was run with Python 3 (select the "
                              "'Python 3' kernel and save, or nbgrader cannot run it)")
    return grade_submission(data, result, limits, threads, source, started)


def grade_submission(data: dict, result: NotebookResult, limits: Limits = Limits(), threads: int = 0,
                     source: Path = SOLUTIONS, started: Optional[float] = None, *,
                     sandboxed: bool = True, demonstrations: bool = True) -> NotebookResult:
    """Grade a submission already read (``data``, a notebook as a dict) as ``result.assignment``, filling in
    ``result``: review the student's code, run it sandboxed, judge the outputs here. nbgrader's autograde
    calls this too (``autograder.nbgrader_engine``), so both paths give the same points.

    ``sandboxed=False`` runs the code in this process, with no limits: only for code as trusted as the
    grader's own (the course's catalogue of mistakes, graded in seconds by the grader's tests).
    ``demonstrations=False`` skips what no verdict reads (see ``graded_steps``), for the same tests."""
    started = time.monotonic() if started is None else started
    spec = load_assignment(result.assignment, source)
    result.written_points = sum(spec.written.values())
    result.max_points = spec.auto_points
    if Path(source).resolve() == RELEASE.resolve():
        result.visible_only = True
        result.notices.append(VISIBLE_ONLY)
    steps, notices = build_steps(spec, data)
    result.notices += notices
    if not demonstrations:
        steps = graded_steps(steps)
    code = [s for s in steps if s["kind"] == "code"]
    findings = review(result.assignment, [(s["cell"], s["source"]) for s in code if not s.get("locked")],
                      [s["source"] for s in code if s.get("locked")])
    refused = [f"cell {f.cell}, line {f.line}: {f.message}" for f in findings if not f.parts]
    if refused:  # tampering: nothing of this notebook runs
        result.notices += refused
        refuse(result, spec, "the grader did not run this notebook: its code reaches into the grader or the Python "
                             "runtime (see the notices); remove that code and submit again")
        result.seconds = round(time.monotonic() - started, 2)
        return result

    with tempfile.TemporaryDirectory(prefix="autograder-") as tmp:
        ran = _run_sandboxed(Path(tmp), steps, limits, threads) if sandboxed else _run_here(steps, limits)
        events = ran.events
        _cell_notices(result, events, ran.ended)
        result.cell_errors = {e["cell"]: str(e["error"])[:2000] for e in events
                              if e.get("event") == "end" and e.get("error") and isinstance(e.get("cell"), int)}
        checked = {(e.get("grade_id"), e.get("call")): e for e in events if e.get("event") == "checked"}
        stopped = ran.stopped or "the notebook stopped before this test ran"
        for gid, part in spec.parts.items():
            pr = PartResult(gid, 0.0, part.points, part.hidden)
            passed = True
            for i, call in enumerate(part.calls):
                event = checked.get((gid, i))
                if event is None:
                    if f"FAIL  {call.name}: {stopped}" not in pr.messages:
                        pr.messages.append(f"FAIL  {call.name}: {stopped}")
                    passed = False
                    continue
                got, read_error = ran.output(gid, i)
                error = event.get("error") if isinstance(event.get("error"), str) else None
                verdict = judge_outputs(call.name, got, error or read_error, call.params)
                passed &= verdict.passed
                message = verdict.message()
                if (not verdict.passed or not pr.messages) and message not in pr.messages:  # once per part
                    pr.messages.append(message)
            forbidden = [f"FAIL  cell {f.cell}, line {f.line}: {f.message}" for f in findings if gid in f.parts]
            pr.messages += [m for m in forbidden if m not in pr.messages]
            pr.points = part.points if passed and not forbidden else 0.0
            result.parts.append(pr)
    result.seconds = round(time.monotonic() - started, 2)
    return result


class Ran(NamedTuple):
    """What running a notebook's steps left: its events, a reader of each check's outputs ((gid, i) ->
    (tensors, error)), how the process ended ('' if normally) with its last words, and without them."""
    events: List[dict]
    output: Callable[[str, int], Tuple[Optional[dict], Optional[str]]]
    ended: str
    stopped: str


def _run_sandboxed(job: Path, steps: List[dict], limits: Limits, threads: int) -> Ran:
    """The steps run in a sandboxed child; the verdicts read only the tensors it saved."""
    (job / "job.json").write_text(json.dumps({
        "cell_seconds": limits.cell_seconds, "output_bytes": limits.output_bytes, "steps": steps}))
    outcome = run(job, limits, _child_env(job, threads))
    events = _events(job)
    stopped = ended = outcome.describe(limits) or ""
    if ended and not outcome.timed_out and not any(e.get("event") == "check" for e in events):
        ended += _last_line(job / "console.txt")  # only before a check: then it could show a hidden test's inputs
    return Ran(events, lambda gid, i: _outputs(job / "out" / f"{gid}.{i}.safetensors", limits.file_bytes),
               ended, stopped)


def _run_here(steps: List[dict], limits: Limits) -> Ran:
    """The steps run in this process (trusted code only): the same runner, events and outputs in memory."""
    events: List[dict] = []
    saved: Dict[Tuple[str, int], dict] = {}
    stream = CappedStream(io.StringIO(), limits.output_bytes)
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream), _torch_state_kept():
        execute(steps, 0, lambda **event: events.append(event), lambda gid, i, got: saved.__setitem__((gid, i), got))
    events.append({"event": "done", "output_bytes": stream.written + stream.dropped, "dropped_bytes": stream.dropped})
    return Ran(events, lambda gid, i: (saved.get((gid, i)), None), "", "")


@contextlib.contextmanager
def _torch_state_kept():
    """In-process grading: the child's grading settings for the notebook, and what one notebook may change in
    torch's global state put back for the next."""
    import torch

    dtype, grad, threads, rng = torch.get_default_dtype(), torch.is_grad_enabled(), torch.get_num_threads(), \
        torch.random.get_rng_state()
    environ = dict(os.environ)
    os.environ.update(GRADING_ENV)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environ)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)
        torch.random.set_rng_state(rng)


def refuse(result: NotebookResult, spec: Assignment, why: str) -> None:
    """Every part of ``spec`` scores zero in ``result``, with ``why`` as the message."""
    result.parts = [PartResult(gid, 0.0, p.points, p.hidden, [f"FAIL  {why}"]) for gid, p in spec.parts.items()]
    result.max_points = spec.auto_points
    result.written_points = sum(spec.written.values())


def _cell_notices(result: NotebookResult, events: List[dict], ended: Optional[str]) -> None:
    errors = [e for e in events if e.get("event") == "end" and e.get("error")]
    for e in errors[:10]:
        result.notices.append(f"cell {e.get('cell')}: {str(e.get('error'))[:500]}")
    if len(errors) > 10:
        result.notices.append(f"... and {len(errors) - 10} more cells raised errors")
    done = next((e for e in events if e.get("event") == "done"), None)
    if done and done.get("dropped_bytes"):
        result.notices.append(f"the notebook printed {done['output_bytes'] / 2**20:.1f} MiB; the grader kept the "
                              "first part and dropped the rest (print less inside loops)")
    if done is None:
        starts = [e for e in events if e.get("event") in ("start", "check")]
        last = starts[-1].get("cell") if starts else None
        where = f" in cell {last}" if last is not None else ""
        result.notices.append(f"grading stopped{where}: {ended or 'the notebook process ended early'}; "
                              "later parts were not graded")


def _child_env(job: Path, threads: int) -> Dict[str, str]:
    """The child's whole environment: a few of the grader's variables (``sandbox.CHILD_ENV``), never its
    tokens or paths, plus the grading settings; home and temporary files in the job folder."""
    env = {k: os.environ[k] for k in CHILD_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    (job / "tmp").mkdir()
    env.update(GRADING_ENV, PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0", HOME=str(job), TMPDIR=str(job / "tmp"), MPLCONFIGDIR=str(job / "tmp"))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


# --------------------------------------------------------------------------------------------------
# A folder of submissions
# --------------------------------------------------------------------------------------------------
STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}")  # a folder name nbgrader and spreadsheets accept


def find_submissions(folder: Path) -> List[Tuple[str, Path]]:
    """(student, notebook) pairs under ``folder``: ``folder/<student>/**/<name>.ipynb`` (nbgrader's
    ``submitted/<student>/<assignment>/`` layout included), or notebooks directly in ``folder`` (student '-').
    Hidden folders below a student's (.ipynb_checkpoints) are skipped; links are not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):  # os.walk does not descend into linked folders
        rel_dir = Path(dirpath).relative_to(folder)
        dirnames[:] = sorted(d for d in dirnames if not (rel_dir.parts and d.startswith(".")))
        for name in sorted(filenames):
            if name.endswith(".ipynb") and not (rel_dir.parts and name.startswith(".")):
                rel = rel_dir / name
                found.append((rel.parts[0] if len(rel.parts) > 1 else "-", Path(dirpath) / name))
    return sorted(found, key=lambda pair: str(pair[1]))


def _invalid_student(student: str, nb: Path) -> Optional[NotebookResult]:
    """A result that says why ``student`` cannot be a student id, or None for a valid one."""
    if student == "-" or STUDENT_ID.fullmatch(student):
        return None
    result = NotebookResult(student, nb.stem if nb.stem in ASSIGNMENTS else "?", str(nb))
    result.notices.append(f"the folder name {student!r} cannot be a student id (letters, digits and _ . @ + -, "
                          "starting with a letter or digit); it was not graded. Rename the folder to the "
                          "student's id and grade it again")
    return result


def grade_folder(folder: Path, *, jobs: int = 2, limits: Limits = Limits(), source: Path = SOLUTIONS,
                 progress=None) -> List[NotebookResult]:
    """Grade every submission under ``folder``, ``jobs`` at a time. One result per (student, assignment);
    an assignment a student did not hand in (but others did) gets a zero row that says so, and a folder
    that cannot be a student id gets a row that says why."""
    pairs = find_submissions(folder)
    threads = max(1, (os.cpu_count() or 2) // max(jobs, 1))

    def one(pair):
        student, nb = pair
        name = nb.stem if nb.stem in ASSIGNMENTS else None
        result = _invalid_student(student, nb) or grade_notebook(
            nb, student=student, assignment=name, limits=limits, threads=threads, source=source)
        if progress:
            progress(result)
        return result

    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        results = list(pool.map(one, pairs))
    return _one_per_assignment(results, source)


def _one_per_assignment(results: List[NotebookResult], source: Path) -> List[NotebookResult]:
    by_key: Dict[Tuple[str, str], NotebookResult] = {}
    for r in results:
        key = (r.student, r.assignment)
        kept = by_key.get(key)
        if kept is None:
            by_key[key] = r
            continue
        # Two notebooks for one assignment: keep the one with the assignment's own name, note the other.
        first, second = (kept, r) if Path(kept.path).stem == r.assignment else (r, kept)
        first.notices.append(f"also found {Path(second.path).name} for the same exercise; it was not counted")
        by_key[key] = first
    students = sorted({s for s, _ in by_key})
    assignments = sorted({a for _, a in by_key if a in ASSIGNMENTS})
    for s in students:
        for a in assignments:
            if (s, a) not in by_key:
                missing = NotebookResult(s, a, "")
                missing.notices.append(f"no notebook for {a} was found in this student's folder")
                refuse(missing, load_assignment(a, source), "not submitted")
                by_key[(s, a)] = missing
    return [by_key[k] for k in sorted(by_key)]


def to_json(results: Iterable[NotebookResult]) -> list:
    return [dict(asdict(r), points=r.points) for r in results]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "_"


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
