"""The record of the training runs tried for retrieval: what the command writes, measured as the card measures."""
import json

from transformer_course import pretrained
from transformer_course.passkey_training import DEPTHS, SHORTER, TRIALS, write_runs


def test_each_run_is_recorded_with_its_config_and_passkey_accuracy(tmp_path):
    path = write_runs(["course-llama"], out_dir=str(tmp_path), command="test")
    written = json.loads(path.read_text())
    assert written["command"] == "test" and "cpu" in written["machine"]
    (run,) = written["runs"]
    config, summary = pretrained.stages("course-llama")[-1]
    assert run["folder"] == "course-llama" and run["train_config"] == config
    assert run["val_bits_per_byte"] == summary["val_bits_per_byte"]
    assert [r["depth"] for r in run["passkey_at_L"]] == list(DEPTHS)
    assert {r["length"] for r in run["passkey_shorter"]} == set(SHORTER)
    assert run["accuracy_at_L"] == sum(r["accuracy"] for r in run["passkey_at_L"]) / len(DEPTHS)
    assert TRIALS * len(DEPTHS) == 100, "the card states accuracy over 100 prompts"
