"""The pre-norm / post-norm learning-rate sweep: what write_norm_study records (a tiny smoke run)."""
import json
import math

import torch

from transformer_course.baselines import byte_entropy_bits
from transformer_course.norm_study import PLACEMENTS, run_config, write_norm_study
from transformer_course.train import lr_at


def test_runs_have_no_warm_up_and_a_constant_learning_rate():
    cfg = run_config("post", 3e-3, steps=10)
    assert cfg.warmup_steps == 0 and cfg.model["norm_placement"] == "post"
    assert all(lr_at(s, cfg) == 3e-3 for s in range(10))


def test_the_sweep_records_every_run_its_curves_and_the_machine(tmp_path):
    torch.manual_seed(0)
    text = torch.randint(32, 127, (4000,), dtype=torch.uint8)
    data = {"train": text[:3000], "val": text[3000:]}
    model = dict(n_layer=2, n_embd=16, n_head=2, context_length=16)
    path = write_norm_study(out_dir=str(tmp_path), command="test", learning_rates=(1e-3, 1e3), steps=4,
                            model=model, data=data)
    out = json.loads(path.read_text())
    assert path.name == "norm_placement-cpu.json"
    assert out["command"] == "test" and out["machine"]["torch_threads"] == 1
    assert out["setup"]["model"]["n_layer"] == 2 and out["setup"]["warmup_steps"] == 0
    assert [(r["placement"], r["lr"]) for r in out["runs"]] == [(p, lr) for lr in (1e-3, 1e3) for p in PLACEMENTS]
    unigram = out["unigram_bits_per_byte"]
    assert math.isclose(unigram, byte_entropy_bits(data["train"]))
    for run in out["runs"]:
        assert len(run["train_bits_per_byte"]) == 4 and run["val_steps"][-1] == 4
        final = run["final_val_bits_per_byte"]
        assert run["failed"] == (not run["finite"] or final >= unigram)
    first = out["runs"][0]["train_bits_per_byte"][0]
    assert 7.5 < first < 8.5, "an untrained byte model starts near log2(256) = 8 bits per byte"
    assert any(r["failed"] for r in out["runs"] if r["lr"] == 1e3), "a learning rate of 1000 must break training"
