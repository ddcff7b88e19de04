"""The sandbox itself, below the grader: student code run by ``autograder.runner`` under ``sandbox.run``
sees only what a student may see, cannot keep running past its limits, and changes nothing outside its
job folder. Each test runs a few code cells directly (no review of the code, which would refuse most of
them) and reads what they could observe from a file they write in the job folder."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from autograder.grade import _child_env
from autograder.sandbox import REPO, Limits, bwrap, run
from grading_helpers import hidden_blocks, leaks

pytestmark = [pytest.mark.slow]
needs_bwrap = pytest.mark.skipif(not bwrap(), reason="bubblewrap (bwrap) is not installed (apt-get install bubblewrap)")
LIMITS = Limits(cell_seconds=5, wall_seconds=60)


def run_cells(tmp_path: Path, *sources: str, limits: Limits = LIMITS):
    job = tmp_path / "job"
    job.mkdir()
    steps = [{"kind": "code", "cell": i, "source": s} for i, s in enumerate(sources, start=1)]
    (job / "job.json").write_text(json.dumps({"cell_seconds": limits.cell_seconds,
                                              "output_bytes": limits.output_bytes, "steps": steps}))
    outcome = run(job, limits, _child_env(job, 1))  # the environment the grader gives every notebook
    events = [json.loads(line) for line in (job / "events.jsonl").read_text().splitlines()] if (job / "events.jsonl").exists() else []
    probe = json.loads((job / "probe.json").read_text()) if (job / "probe.json").exists() else None
    return outcome, events, probe


PROBE = "import json, os\ndef probe(**seen):\n    json.dump(seen, open('probe.json', 'w'))\n"


@needs_bwrap
def test_the_child_sees_the_student_edition_only(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADER_SECRET", "s3cret")  # an instructor's token, say
    checkout_parent = REPO.parent
    code = PROBE + (
        "def ls(p):\n    try:\n        return sorted(os.listdir(p))\n    except OSError as e:\n        return str(e)\n"
        "def read(p):\n    try:\n        return open(p).read()\n    except OSError as e:\n        return 'ERROR ' + type(e).__name__\n"
        f"probe(repo=ls({str(REPO)!r}), parent=ls({str(checkout_parent)!r}), root=ls('/'), home=ls(os.path.expanduser('~root')),\n"
        f"      solution=read({str(REPO / 'solutions/ex1_transformer/ex1_transformer.ipynb')!r}),\n"
        f"      git=read({str(REPO / '.git/HEAD')!r}), tests=ls({str(REPO / 'tests')!r}), uid=os.getuid(),\n"
        "      env=dict(os.environ), tmp=ls('/tmp'))"
    )
    outcome, events, probe = run_cells(tmp_path, code)
    assert probe is not None, events
    assert set(probe["repo"]) <= {"src", "autograder", "results", ".venv"} and "src" in probe["repo"], probe["repo"]
    assert isinstance(probe["home"], str) or set(probe["home"]) <= {".pyenv"}, probe["home"]  # the grader's home
    job_path = {p.name for p in (tmp_path / "job").parents}  # the job folder may sit beside the checkout (/tmp)
    assert set(probe["parent"]) - job_path == {REPO.name}, probe["parent"]  # no other checkout beside this one
    assert probe["solution"].startswith("ERROR") and probe["git"].startswith("ERROR"), probe
    assert isinstance(probe["tests"], str), probe["tests"]  # no such folder
    assert "GRADER_SECRET" not in probe["env"] and not any(k.startswith(("JPY", "JUPYTER")) for k in probe["env"])
    assert probe["env"]["COURSE_GRADING"] == "1"
    if os.geteuid() == 0:
        assert probe["uid"] not in (0, os.geteuid()), probe["uid"]


def test_temporary_files_work(tmp_path):
    code = PROBE + "import tempfile\nwith tempfile.NamedTemporaryFile() as f:\n    f.write(b'x')\n    probe(name=f.name)"
    outcome, events, probe = run_cells(tmp_path, code)
    assert probe and probe["name"].startswith(str(tmp_path / "job")), (probe, events)


@needs_bwrap
def test_nothing_outside_the_job_folder_can_be_written(tmp_path):
    targets = [REPO / "autograder" / "planted.py", Path(sys.prefix) / "lib" / "planted.pth", REPO / "src" / "x",
               tmp_path / "outside.txt"]
    code = PROBE + "results = {}\n" + "".join(
        f"try:\n    open({str(t)!r}, 'w').write('x')\n    results[{str(t)!r}] = 'written'\n"
        f"except OSError as e:\n    results[{str(t)!r}] = type(e).__name__\n" for t in targets) + "probe(**results)"
    outcome, events, probe = run_cells(tmp_path, code)
    assert probe and all(v != "written" for v in probe.values()), probe
    assert not any(t.exists() for t in targets)


@needs_bwrap
def test_tmp_is_private_and_capped(tmp_path):
    limits = Limits(cell_seconds=20, wall_seconds=60, tmp_bytes=32 * 2**20)
    marker = Path("/tmp") / f"sandbox-test-{os.getpid()}"
    code = PROBE + (
        "written = 0\n"
        "try:\n"
        "    with open('/tmp/fill', 'wb') as f:\n"
        "        for _ in range(100):\n"
        "            f.write(b'x' * 2**20); f.flush(); written += 1\n"
        "    error = None\n"
        "except OSError as e:\n"
        "    error = e.errno\n"
        f"open({str(marker)!r}, 'w').write('x')\n"
        "probe(written=written, error=error)"
    )
    outcome, events, probe = run_cells(tmp_path, code, limits=limits)
    assert probe and probe["error"] is not None and probe["written"] <= 32, probe
    assert not marker.exists(), "the sandbox's /tmp is the machine's"


def test_a_cell_that_ignores_the_alarm_is_stopped_by_the_parent(tmp_path):
    code = ("import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
            "while True:\n    time.sleep(0.1)\n")
    started = time.monotonic()
    outcome, events, probe = run_cells(tmp_path, code, "open('probe.json', 'w').write('{}')")
    assert outcome.stuck_cell == 1, outcome
    assert time.monotonic() - started < LIMITS.cell_seconds + 15 + 10
    assert probe is None  # the notebook was stopped: later cells did not run
    assert "did not stop when interrupted" in outcome.describe(LIMITS)


def test_a_cell_that_swallows_the_interrupt_is_stopped_too(tmp_path):
    code = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n"
    outcome, events, probe = run_cells(tmp_path, code)
    assert outcome.stuck_cell == 1 or outcome.timed_out, outcome


@needs_bwrap
def test_no_process_outlives_the_notebook(tmp_path):
    flag = tmp_path / "job" / "daemon-was-here"
    code = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    time.sleep(3)\n"
            f"    open({str(flag)!r}, 'w').write('alive')\n"
            "    os._exit(0)\n")
    outcome, events, probe = run_cells(tmp_path, code)
    time.sleep(5)
    assert not flag.exists(), "a process forked by student code outlived the notebook"


def test_the_solutions_are_not_in_what_the_child_prints(tmp_path):
    """Whatever the child could read ends up in its console; no hidden-test line may be there."""
    code = (f"for p in [{str(REPO / 'solutions')!r}]:\n"
            "    import os\n"
            "    for root, dirs, files in os.walk(p):\n"
            "        for f in files:\n"
            "            print(open(os.path.join(root, f)).read())\n")
    outcome, events, probe = run_cells(tmp_path, code)
    console = tmp_path / "job"
    if bwrap():
        assert leaks(console, hidden_blocks(), markers_in=()) == []
