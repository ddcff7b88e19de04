"""transformer_course.results: the book reads every measured figure through it."""
import json

import pytest

from transformer_course import results


def test_every_results_file_names_its_machine():
    names = results.available()
    assert {"bench-cpu", "long_context-cpu", "grading-cpu"} <= set(names)
    for name in names:
        data = results.load(name)
        line = results.machine(data)
        assert data["machine"]["torch"] in line and data["machine"]["date"][:10] in line


def test_a_gpu_file_names_the_gpu(tmp_path, monkeypatch):
    cpu = results.load("bench-cpu")
    gpu = dict(cpu, machine=dict(cpu["machine"], device="cuda", gpu="NVIDIA H100 80GB HBM3"))
    (tmp_path / "bench-cuda.json").write_text(json.dumps(gpu))
    monkeypatch.setenv("COURSE_RESULTS", str(tmp_path))
    assert results.available() == ["bench-cuda"]
    assert results.machine(results.load("bench-cuda.json")).startswith("NVIDIA H100")


def test_a_missing_file_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_RESULTS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="tasks.py bench"):
        results.load("bench-cuda")
