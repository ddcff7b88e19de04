"""The long-context study runs end to end (tiny settings) and writes what the book reads."""
import json

import pytest

from transformer_course.long_context import FINE_TUNED, ZERO_SHOT, write_study


@pytest.mark.slow
def test_study_writes_results_and_plot(tmp_path):
    path = write_study(out_dir=str(tmp_path), multiples=(1, 2), fine_tune_steps=2, passkey_trials=1, max_docs=2)
    results = json.loads(path.read_text())
    assert path.with_suffix(".png").stat().st_size > 10_000
    assert results["lengths"] == [256, 512] and len(results["documents"]) == 2
    assert {r["method"] for r in results["zero_shot"]} == set(ZERO_SHOT)
    assert {r["method"] for r in results["fine_tuned"]} == set(FINE_TUNED)
    # at the training length every zero-shot method is the unscaled model (factor 1 means no scaling)
    at_1x = {r["bits_per_byte"] for r in results["zero_shot"] if r["length"] == 256}
    assert max(at_1x) - min(at_1x) < 1e-6
    assert all(len(curve) == 512 for curve in results["loss_by_position"].values())
    assert {"machine", "passkey", "fine_tune_runs"} <= set(results)
