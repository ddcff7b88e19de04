"""Run untrusted student code in a separate, limited process.

Every student notebook runs in its own child process (``python -m autograder.runner JOB``) with:

    limits, always      CPU seconds, address space (memory), file size (output), no core dumps (rlimits);
                        wall time (the parent kills the whole process group); process count (a pids cgroup
                        where one can be created, else RLIMIT_NPROC, which root and user namespaces ignore)
    isolation, where    bubblewrap (Debian package ``bubblewrap``): no network, its own PID namespace, a
    bwrap exists        read-only view of the machine in which ``solutions/``, ``tests/``, the instructor's
                        course folder (gradebook, other students' work) and /tmp are empty, and only the
                        job folder is writable

Without bubblewrap the limits still hold, but the student's code can read anything the grader can and use
the network: ``isolation()`` says so, and the command prints it as a warning on every run.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
PRIVATE = ("solutions", "tests")  # inside the repository: never visible to student code


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 240           # whole notebook, CPU time (RLIMIT_CPU)
    wall_seconds: int = 300          # whole notebook, wall clock (the parent kills the process group)
    cell_seconds: int = 60           # one cell (SIGALRM in the runner; nbgrader's Execute.timeout matches)
    memory_bytes: int = 4 * 2**30    # address space (RLIMIT_AS); torch alone maps about 1 GiB
    output_bytes: int = 2 * 2**20    # what a notebook may print; more is dropped (RLIMIT_FSIZE backs it up)
    file_bytes: int = 64 * 2**20     # any file the child writes, outputs included (RLIMIT_FSIZE)
    processes: int = 64              # tasks (processes and threads) in the child's pids cgroup


@dataclass
class Outcome:
    returncode: Optional[int]
    seconds: float
    timed_out: bool

    def describe(self, limits: Limits) -> Optional[str]:
        """Why the process ended abnormally, in words; None for a normal exit."""
        if self.timed_out:
            return f"the notebook ran longer than {limits.wall_seconds} s and was stopped (an infinite loop?)"
        rc = self.returncode
        if rc == 0 or rc is None:
            return None
        if rc < 0:
            sig = -rc
            if sig == signal.SIGXCPU:
                return f"the notebook used more than {limits.cpu_seconds} s of CPU time and was stopped"
            if sig == signal.SIGXFSZ:
                return f"the notebook wrote a file larger than {limits.file_bytes // 2**20} MiB and was stopped"
            if sig == signal.SIGKILL:
                return "the notebook's process was killed (out of memory or over a limit)"
            return f"the notebook's process died with signal {signal.Signals(sig).name}"
        return f"the notebook's process exited with status {rc} (os._exit or a crash) before grading finished"


def bwrap() -> Optional[str]:
    return shutil.which("bwrap")


def _pids_cgroup_root() -> Optional[Path]:
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
            if root.name == "pids" or "pids" in (root / "cgroup.subtree_control").read_text(errors="ignore"):
                return root
    return None


def isolation() -> List[str]:
    """What protects the grader on this machine, one line each; lines starting with WARNING are gaps."""
    lines = ["limits: CPU time, wall time, memory, output size (rlimits and a watchdog)"]
    if bwrap():
        lines.append("bubblewrap: no network, private /tmp; solutions/, tests/, the graded folder and --hide folders hidden")
    else:
        lines.append("WARNING: bubblewrap (bwrap) is not installed: student code can read every file the grader "
                     "can (solutions, hidden tests, the gradebook) and use the network. Install it "
                     "(apt-get install bubblewrap) before grading untrusted work.")
    if _pids_cgroup_root():
        lines.append("process count: a pids cgroup per notebook")
    elif os.geteuid() != 0:
        lines.append("process count: RLIMIT_NPROC")
    else:
        lines.append("WARNING: running as root without a writable pids cgroup: the process-count limit is not "
                     "enforced (a fork bomb is stopped only by the CPU and wall-time limits).")
    return lines


def command(job: Path, hide: Sequence[Path] = ()) -> List[str]:
    """The child's command line: the runner, inside bubblewrap when it is installed."""
    runner = [sys.executable, "-m", "autograder.runner", str(job)]
    if not bwrap():
        return runner
    args = [bwrap(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--unshare-all", "--die-with-parent", "--new-session"]
    for path in _needed():  # a checkout or a Python that lives under /tmp stays visible, read-only
        if Path("/tmp") in path.parents:
            args += ["--ro-bind", str(path), str(path)]
    for path in [REPO / p for p in PRIVATE] + [Path(p).resolve() for p in hide]:
        if path.exists() and _hideable(path):
            args += ["--tmpfs", str(path.resolve())]
    args += ["--bind", str(job), str(job), "--chdir", str(job)]
    return args + runner


def _needed() -> List[Path]:
    """What the child must see: this repository (the package and the checks) and the Python it runs."""
    return [REPO, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]


def _hideable(path: Path) -> bool:
    """A folder can be hidden unless the child needs what is inside it."""
    return not any(n == path or path in n.parents for n in _needed())


def run(job: Path, limits: Limits, hide: Sequence[Path] = (), env: Optional[dict] = None) -> Outcome:
    """Run the runner on ``job`` under ``limits``; stdout and stderr go to ``job/console.txt``."""
    cgroup = _make_cgroup(limits.processes)

    def limit_child() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))
        elif os.geteuid() != 0:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))

    start = time.monotonic()
    with open(job / "console.txt", "wb") as console:
        proc = subprocess.Popen(command(job, hide), stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                                cwd=job, env=env, preexec_fn=limit_child, start_new_session=True)
        try:
            proc.wait(timeout=limits.wall_seconds)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc)
            if cgroup is not None:
                _remove_cgroup(cgroup)
    return Outcome(proc.returncode, time.monotonic() - start, timed_out)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _make_cgroup(max_tasks: int) -> Optional[Path]:
    root = _pids_cgroup_root()
    if root is None:
        return None
    try:
        group = root / f"autograder-{uuid.uuid4().hex[:12]}"
        group.mkdir()
        (group / "pids.max").write_text(str(max_tasks))
        return group
    except OSError:
        return None


def _remove_cgroup(group: Path) -> None:
    for _ in range(50):  # the killed tasks leave the group asynchronously
        try:
            for pid in (group / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            group.rmdir()
            return
        except OSError:
            time.sleep(0.05)
