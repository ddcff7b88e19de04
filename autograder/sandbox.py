"""Run untrusted student code in a separate, limited process.

Every student notebook runs in its own child process (``python -m autograder.runner JOB``) with:

    limits, always      CPU seconds, address space (memory), file size (output), no core dumps (rlimits);
                        wall time (the parent kills the whole process group); a cell that outlives its limit
                        (one that ignores the runner's alarm) stops the notebook; process count (a pids
                        cgroup where one can be created, else RLIMIT_NPROC); a clean environment (none of
                        the grader's variables, only those of ``CHILD_ENV``)
    a private user      where the grader is root, the child drops to an unprivileged uid of its own (root
                        ignores process limits), chosen per notebook so that two students never share one
    isolation, where    bubblewrap (Debian package ``bubblewrap``): no network, its own PID and IPC
    bwrap exists        namespaces, and a file system built from nothing: the system's programs and
                        libraries, the Python it runs, and of this repository only ``src/``, ``autograder/``
                        and ``results/`` (what the student edition holds); a size-capped private /tmp; the job
                        folder, the only writable place. Not visible: solutions/, tests/, .git, the gradebook,
                        the exchange, other submissions, other checkouts, the grader's home.

Without bubblewrap the limits and the private user still hold, but the student's code can read every file
that is readable to all users (the solutions of a world-readable checkout included) and use the network:
``isolation()`` says so, and the command prints it as a warning on every run.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
VISIBLE = ("src", "autograder", "results")  # of this repository, what student code may see (the student edition's)
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf", "localtime", "alternatives",
       "mime.types", "fonts")
# Variables the child gets from the grader's environment (everything else is dropped); grade.py adds its own.
CHILD_ENV = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
             "MKL_NUM_THREADS")
UIDS = itertools.count(random.randrange(61000, 64000))  # private uids for student code when the grader is root


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 240           # whole notebook, CPU time (RLIMIT_CPU)
    wall_seconds: int = 300          # whole notebook, wall clock (the parent kills the process group)
    cell_seconds: int = 60           # one cell (SIGALRM in the runner; nbgrader's Execute.timeout matches)
    memory_bytes: int = 4 * 2**30    # address space (RLIMIT_AS); torch alone maps about 1 GiB
    tmp_bytes: int = 256 * 2**20     # the private /tmp (a tmpfs in memory, under bubblewrap)
    output_bytes: int = 2 * 2**20    # what a notebook may print; more is dropped (RLIMIT_FSIZE backs it up)
    file_bytes: int = 64 * 2**20     # any file the child writes, outputs included (RLIMIT_FSIZE)
    processes: int = 64              # tasks (processes and threads) in the child's pids cgroup


@dataclass
class Outcome:
    returncode: Optional[int]
    seconds: float
    timed_out: bool
    stuck_cell: Optional[int] = None  # a cell that ran past its limit and ignored the interrupt

    def describe(self, limits: Limits) -> Optional[str]:
        """Why the process ended abnormally, in words; None for a normal exit."""
        if self.stuck_cell is not None:
            return (f"cell {self.stuck_cell} ran longer than {limits.cell_seconds} s and did not stop when "
                    "interrupted, so the notebook was stopped there")
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
        lines.append("bubblewrap: no network, private PID namespace, a size-capped private /tmp; of the machine only "
                     "the system, the Python and the student edition's src/, autograder/ and results/ are visible")
    else:
        lines.append("WARNING: bubblewrap (bwrap) is not installed: student code can read every file readable to all "
                     "users (a world-readable checkout's solutions and hidden tests included) and use the network. "
                     "Install it (apt-get install bubblewrap) before grading untrusted work.")
    if os.geteuid() == 0:
        if bwrap() or _readable_to_all(Path(sys.prefix)) and _readable_to_all(Path(sys.base_prefix)):
            lines.append("private user: student code runs as an unprivileged uid of its own, not as root")
        else:
            lines.append(f"WARNING: the grader runs as root and its Python ({sys.base_prefix}) is not readable to other "
                         "users, so without bubblewrap student code runs as root")
    if _pids_cgroup_root():
        lines.append("process count: a pids cgroup per notebook")
    elif os.geteuid() != 0:
        lines.append("process count: RLIMIT_NPROC")
    else:
        lines.append("WARNING: running as root without a writable pids cgroup: the process-count limit is not "
                     "enforced (a fork bomb is stopped only by the CPU and wall-time limits).")
    return lines


def command(job: Path, limits: Limits, env: Dict[str, str], uid: Optional[int]) -> List[str]:
    """The child's command line: the runner, inside bubblewrap when it is installed."""
    runner = [sys.executable, "-m", "autograder.runner", str(job)]
    if not bwrap():
        return runner
    args = [bwrap(), "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid", "--unshare-net",
            "--unshare-uts", "--unshare-cgroup-try", "--dev", "/dev", "--proc", "/proc",
            "--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    if os.geteuid() != 0:
        args.append("--unshare-user")  # an unprivileged grader's bubblewrap needs a user namespace
    elif uid is not None:
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]  # the runner drops to ``uid`` at once
    for path in SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in ETC:
        if os.path.exists(f"/etc/{name}"):
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    made = {Path("/"), Path("/tmp")}
    for path in [*_visible(), job]:  # bubblewrap would make the folders above a mount point private (0700)
        for parent in reversed(path.parents):
            if parent not in made:
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        args += ["--bind" if path == job else "--ro-bind", str(path), str(path)]
    args += ["--chdir", str(job), "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args + runner


def _visible() -> List[Path]:
    """What the child sees of the machine besides the system: the Python it runs and the student edition's
    part of this repository (the package, the checks and the runner, the results files)."""
    paths = [Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()]
    paths += [REPO / name for name in VISIBLE if (REPO / name).is_dir()]
    return sorted({p for p in paths if p.exists() and not any(str(p).startswith(s + "/") for s in SYSTEM)})


def _readable_to_all(path: Path) -> bool:
    """Every folder from / to ``path`` may be entered by any user (so a dropped uid can run this Python)."""
    path = path.resolve()
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [path, *path.parents])


def private_uid() -> Optional[int]:
    """The uid student code runs as: a fresh unprivileged one where the grader is root and can hand it the
    Python, else None (the grader's own uid, already unprivileged, or a warned root)."""
    if os.geteuid() != 0:
        return None
    if bwrap() or _readable_to_all(Path(sys.prefix)) and _readable_to_all(Path(sys.base_prefix)):
        return next(UIDS)
    return None


def run(job: Path, limits: Limits, env: Dict[str, str]) -> Outcome:
    """Run the runner on ``job`` under ``limits`` with exactly the environment ``env``; stdout and stderr go
    to ``job/console.txt``. The parent watches the runner's events: a cell that outlives its limit by
    ``STUCK_GRACE`` seconds (it ignored the alarm) stops the notebook."""
    cgroup = _make_cgroup(limits.processes)
    uid = private_uid()
    if uid is not None:
        for path in [job, *(p for p in job.iterdir() if p.is_dir())]:  # the job folder and its tmp/ are the child's
            os.chown(path, uid, uid)
        spec = json.loads((job / "job.json").read_text())
        (job / "job.json").write_text(json.dumps(dict(spec, uid=uid)))

    def limit_child() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))  # counts once not root
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))
        if uid is not None and not bwrap():  # bubblewrap's runner drops it inside, after building the view
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    start = time.monotonic()
    watch = _CellWatch(job / "events.jsonl", limits.cell_seconds + STUCK_GRACE)
    timed_out = False
    with open(job / "console.txt", "wb") as console:
        proc = subprocess.Popen(command(job, limits, env, uid), stdin=subprocess.DEVNULL, stdout=console,
                                stderr=console, cwd=job, env=env, preexec_fn=limit_child, start_new_session=True)
        try:
            while proc.poll() is None:
                if time.monotonic() - start > limits.wall_seconds:
                    timed_out = True
                    break
                if watch.stuck() is not None:
                    break
                time.sleep(0.2)
        finally:
            _kill_group(proc)
            if cgroup is not None:
                _remove_cgroup(cgroup)
    return Outcome(proc.returncode, time.monotonic() - start, timed_out, watch.stuck())


STUCK_GRACE = 10  # seconds past the cell limit before the parent stops a notebook whose cell ignores the alarm


class _CellWatch:
    """Follows ``events.jsonl``: which cell (or check) is running, and since when (the parent's clock)."""

    def __init__(self, path: Path, limit: float):
        self.path, self.limit, self.offset = path, limit, 0
        self.running: Optional[int] = None
        self.since = 0.0
        self.stuck_cell: Optional[int] = None

    def stuck(self) -> Optional[int]:
        if self.stuck_cell is None:
            self._read()
            if self.running is not None and time.monotonic() - self.since > self.limit:
                self.stuck_cell = self.running
        return self.stuck_cell

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(1 << 20)
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        for line in chunk[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            if event.get("event") in ("start", "check"):
                cell = event.get("cell")
                self.running, self.since = (cell if isinstance(cell, int) else -1), time.monotonic()
            elif event.get("event") in ("end", "checked", "done"):
                self.running = None


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
