"""The long-context study runs end to end (tiny settings) and writes what the book reads."""
import json

import pytest

from transformer_course.config import RopeScaling
from transformer_course.long_context import (DEPTHS, DYNAMIC_LENGTH_FACTOR, FINE_TUNED, MIXES, ZERO_SHOT,
                                             scaling_for, write_study)


def test_each_method_is_set_up_for_the_length_it_reads():
    assert scaling_for("none", 4, 256) is None and scaling_for("linear", 1, 256) is None
    assert scaling_for("yarn", 4, 256) == RopeScaling("yarn", 4, original_context_length=256)
    # dynamic NTK as deployed: one configuration for every length, the base following the current length
    assert scaling_for("dynamic_ntk", 1, 256) == scaling_for("dynamic_ntk", 8, 256) == RopeScaling("dynamic_ntk", 1.0, 256)
    assert scaling_for(DYNAMIC_LENGTH_FACTOR, 8, 256) == RopeScaling("dynamic_ntk", 8, original_context_length=256)


def test_training_tokens_add_up_every_stage():
    from transformer_course import pretrained

    assert pretrained.training_tokens("course-llama") == sum(c["steps"] * c["batch_size"] * c["seq_len"]
                                                  for c, _ in pretrained.stages("course-llama"))
    assert len(pretrained.stages("course-llama")) == 2, "language modelling, then the retrieval fine-tune"


@pytest.mark.slow
def test_study_writes_results_and_plot(tmp_path):
    path = write_study(out_dir=str(tmp_path), multiples=(1, 2), fine_tune_factor=2, fine_tune_steps=2,
                       passkey_trials=1, max_docs=2, command="test")
    results = json.loads(path.read_text())
    assert path.with_suffix(".png").stat().st_size > 10_000
    assert results["lengths"] == [256, 512] and len(results["documents"]) == 2 and results["command"] == "test"
    assert {r["method"] for r in results["zero_shot"]} == set(ZERO_SHOT)
    assert {r["method"] for r in results["zero_shot_variants"]} == {DYNAMIC_LENGTH_FACTOR}
    assert {(r["method"], r["mix"]) for r in results["fine_tuned"]} == {(k, m) for k in FINE_TUNED for m in MIXES}
    # at the training length every zero-shot method is the unscaled model (factor 1 means no scaling)
    at_1x = {r["bits_per_byte"] for r in results["zero_shot"] if r["length"] == 256}
    assert max(at_1x) - min(at_1x) < 1e-6
    assert all(r["bits_per_byte_past_L"] is None for r in results["zero_shot"] if r["length"] == 256)
    assert all(r["bits_per_byte_past_L"] > 0 for r in results["zero_shot"] if r["length"] == 512)
    assert all(len(curve) == 512 for curve in results["loss_by_position"].values())
    cells = {(r["model"], r["length"], r["depth"]) for r in results["passkey"]}
    assert len(cells) == len(results["passkey"]) == (len(ZERO_SHOT) + len(FINE_TUNED) * len(MIXES)) * 2 * len(DEPTHS)
    assert {r["passkey_fraction"] for r in results["fine_tune_runs"]} == set(MIXES.values())
    for run in results["fine_tune_runs"]:
        assert run["tokens"] == 2 * run["batch_size"] * run["seq_len"]
        assert run["share_of_training_tokens"] == pytest.approx(run["tokens"] / results["training_tokens"])
