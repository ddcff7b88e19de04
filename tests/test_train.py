"""Training: loss goes down, resume is bit-for-bit, checkpoints round-trip, the shipped model is what it says."""
import json

import pytest
import torch

from transformer_course import pretrained
from transformer_course.checkpoint import load_checkpoint, save_checkpoint
from transformer_course.train import TrainConfig, evaluate, lr_at, train

TINY = dict(n_layer=2, n_embd=32, n_head=4, n_kv_head=2, ffn_hidden=64, context_length=32)


@pytest.fixture(scope="module")
def small_data():
    # real text, small: the first 200 KB of one standard-library module family
    from transformer_course.data import load_split
    train_data, val_data = load_split("train"), load_split("val")
    return {"train": train_data[:200_000], "val": val_data[:50_000]}


def config(tmp_path=None, **kw):
    base = dict(preset="tiny-llama", model=TINY, steps=30, batch_size=8, seq_len=32, lr=3e-3, warmup_steps=5,
                eval_interval=10, eval_batches=2, out_dir=None if tmp_path is None else str(tmp_path))
    return TrainConfig(**{**base, **kw})


def test_a_few_steps_lower_the_loss(small_data):
    cfg = config()
    before = evaluate(train(config(steps=1, lr=0.0, min_lr=0.0, warmup_steps=1), progress=False, data=small_data).model,
                      small_data["val"], 32, 4)
    after = train(cfg, progress=False, data=small_data)
    assert after.val_loss < before - 0.3, (before, after.val_loss)
    assert [r["step"] for r in after.history] == list(range(1, 31))
    assert all("val_loss" in r and r["tokens_per_second"] > 0 for r in after.history if r["step"] % 10 == 0)


@pytest.mark.slow
def test_resume_continues_bit_for_bit(small_data, tmp_path):
    full = train(config(tmp_path / "full"), progress=False, data=small_data)
    first = config(tmp_path / "resumed", steps=30, save_interval=12)
    # run 12 steps of the same 30-step schedule, then resume from the checkpoint saved at step 12
    _interrupt_after(first, 12, small_data)
    resumed = train(first, resume=True, progress=False, data=small_data)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]


def _interrupt_after(cfg, steps, data):
    """Train with cfg but stop (as if killed) right after the checkpoint of step ``steps``."""
    import transformer_course.train as t

    real_save = t.save_checkpoint

    class Stop(Exception):
        pass

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        if kwargs.get("step") == steps:
            raise Stop

    t.save_checkpoint = save_then_stop
    try:
        with pytest.raises(Stop):
            train(cfg, progress=False, data=data)
    finally:
        t.save_checkpoint = real_save


def test_checkpoint_round_trip(tmp_path):
    from transformer_course import ModelConfig, TransformerLM

    for tie in (True, False):
        model = TransformerLM(ModelConfig.from_name("tiny-llama", tie_embeddings=tie, **TINY))
        save_checkpoint(tmp_path / str(tie), model)
        loaded = load_checkpoint(tmp_path / str(tie))
        assert loaded.config == model.config
        x = torch.randint(0, 256, (1, 16))
        assert torch.equal(loaded(x), model(x))
        assert (loaded.lm_head.weight is loaded.tok_emb.weight) == tie
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        load_checkpoint(tmp_path)


def test_bad_training_arguments():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-3, min_lr=1e-2)
    with pytest.raises(FileNotFoundError, match="resume"):
        train(config(out_dir="/nonexistent/run"), resume=True, progress=False, data={"train": torch.zeros(100), "val": torch.zeros(100)})


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(100, cfg) == pytest.approx(0.1)
