"""The RoPE-scaling study (YaRN's temperature, Llama 3.1's scaling): a tiny run, checked for what it records."""
import json
import math

import pytest

from transformer_course import rope_study
from transformer_course.positions import rope_inv_freq


def test_variants_differ_only_where_they_should():
    yarn, cold = rope_study.scaling("yarn", 4.0, 256), rope_study.scaling("yarn, no temperature", 4.0, 256)
    f_yarn, t_yarn = rope_inv_freq(32, 10000.0, yarn)
    f_cold, t_cold = rope_inv_freq(32, 10000.0, cold)
    assert f_yarn.equal(f_cold), "the ablation keeps YaRN's frequencies"
    assert math.isclose(t_yarn, 0.1 * math.log(4) + 1) and t_cold == 1.0
    _, t_llama3 = rope_inv_freq(32, 10000.0, rope_study.scaling("llama3", 4.0, 256))
    assert t_llama3 == 1.0
    with pytest.raises(ValueError, match="not one of"):
        rope_study.scaling("ntk", 4.0, 256)


def test_write_records_machine_command_and_one_row_per_variant(tmp_path):
    path = rope_study.write_rope_study(out_dir=str(tmp_path), command="test", multiples=(2,), max_docs=1)
    study = json.loads(path.read_text())
    assert path.name == "rope_study-cpu.json"
    assert study["command"] == "test" and "cpu" in study["machine"] and len(study["documents"]) == 1
    rows = {r["variant"]: r for r in study["rows"]}
    assert set(rows) == set(rope_study.VARIANTS)
    L = study["training_length"]
    for r in rows.values():
        assert r["length"] == 2 * L and 0 < r["bits_per_byte_past_L"] < 8
    # the temperature changes the logits, so the loss must change (if only a little)
    assert rows["yarn"]["bits_per_byte"] != rows["yarn, no temperature"]["bits_per_byte"]
