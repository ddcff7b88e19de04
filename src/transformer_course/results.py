"""Reading the results files that the repository's benchmarks wrote (``results/*.json``).

The book never types a measured figure in by hand: a chapter loads the file a benchmark wrote and says
on which machine it was measured::

    from transformer_course import results
    bench = results.load("bench-cpu")
    print(results.machine(bench))        # "AMD EPYC, 2 cores, torch 2.13.0+cpu, 2026-11-22"
"""
from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def directory() -> Path:
    """``$COURSE_RESULTS`` if set, else the ``results/`` folder of the checkout the package runs from."""
    return Path(os.environ.get("COURSE_RESULTS", ROOT / "results"))


def load(name: str) -> dict:
    """The results file ``name`` (``"bench-cpu"`` or ``"bench-cpu.json"``) as a dict."""
    path = directory() / (name if name.endswith(".json") else f"{name}.json")
    if not path.exists():
        have = sorted(p.stem for p in directory().glob("*.json"))
        raise FileNotFoundError(
            f"no results file {path}. Available: {have or 'none'}. "
            "Run `python3 tasks.py bench` (or `python -m transformer_course long-context`) to write it."
        )
    return json.loads(path.read_text())


def write(record: dict, name: str, out_dir="results") -> Path:
    """Write ``record`` as ``<out_dir>/<name>.json`` (the folder made if need be); returns the path."""
    path = Path(out_dir) / (name if name.endswith(".json") else f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def available() -> list:
    return sorted(p.stem for p in directory().glob("*.json"))


def machine_info(device: str = "cpu") -> dict:
    """Where a benchmark runs: date, platform, Python, torch, CPU (and GPU), threads. Every results file holds one."""
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def machine(results: dict) -> str:
    """One line naming where the figures of ``results`` were measured."""
    m = results["machine"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cpu_count']} cores"
    return f"{where}, torch {m['torch']}, {m['date'][:10]}"
