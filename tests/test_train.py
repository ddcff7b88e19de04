"""Training: loss goes down, resume is bit-for-bit, checkpoints round-trip, the shipped model is what it says."""
import json

import pytest
import torch

from transformer_course import pretrained
from transformer_course.checkpoint import load_checkpoint, save_checkpoint
from transformer_course.data import PASSKEY_QUESTION, ByteTokenizer, passkey_training_length
from transformer_course.train import IGNORE, TrainConfig, batch_at, evaluate, lr_at, train, training_loss

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
    with pytest.raises(ValueError, match="too short for passkey rows"):
        TrainConfig(seq_len=passkey_training_length() - 1, passkey_fraction=0.5)
    with pytest.raises(FileNotFoundError, match="resume"):
        train(config(out_dir="/nonexistent/run"), resume=True, progress=False, data={"train": torch.zeros(100), "val": torch.zeros(100)})


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(100, cfg) == pytest.approx(0.1)


@pytest.mark.parametrize("seq_len", [256, 1024])
def test_passkey_rows_end_in_a_prompt_and_train_text_and_answer_only(small_data, seq_len):
    import re

    cfg = TrainConfig(batch_size=16, seq_len=seq_len, passkey_fraction=0.5, seed=3)
    x, y, answer = batch_at(7, cfg, small_data["train"])
    assert x.shape == y.shape == answer.shape == (16, seq_len)
    text_rows = slice(8, 16)
    assert not answer[text_rows].any() and (y[text_rows] != IGNORE).all(), "the other rows are plain text"
    tok, lengths = ByteTokenizer(), set()
    for i in range(8):
        trained = y[i] != IGNORE
        assert torch.equal(x[i, 1:][trained[:-1]], y[i, :-1][trained[:-1]]), "targets are the next inputs"
        assert re.fullmatch(r"\d{5}\.\n", tok.decode(y[i][answer[i]])), "the answer: 5 digits, then .\\n"
        assert answer[i, -7:].all() and answer[i].sum() == 7
        prompt = tok.decode(x[i])
        start = prompt.index("A pass key is hidden")
        key = re.search(r"The pass key is (\d{5})\. Remember it", prompt).group(1)
        assert prompt.endswith(PASSKEY_QUESTION + key + ".") and tok.decode(y[i][answer[i]]) == key + ".\n"
        n = seq_len - start
        assert max(passkey_training_length(), seq_len // 2) <= n <= seq_len, "the prompt is half the row or more"
        assert trained[:max(0, start - 1)].all() and not trained[max(0, start - 1):-7].any(), \
            "the window's text is trained, the prompt (and the seam before it) is not"
        lengths.add(n)
    assert len(lengths) > 1 and seq_len in lengths, "prompt lengths vary; some fill the whole row"
    again = batch_at(7, cfg, small_data["train"])
    assert all(torch.equal(a, b) for a, b in zip((x, y, answer), again)), "a batch is a function of (seed, step)"
    assert not torch.equal(batch_at(8, cfg, small_data["train"])[0], x)


def test_training_loss_is_the_text_mean_plus_the_answer_mean():
    import torch.nn.functional as F
    from transformer_course import ModelConfig, TransformerLM

    torch.manual_seed(0)
    model = TransformerLM(ModelConfig.from_name("tiny-llama", **TINY))
    x, y = torch.randint(0, 256, (2, 16)), torch.randint(0, 256, (2, 16))
    plain, none = training_loss(model, x, y, torch.zeros_like(y, dtype=torch.bool))
    logits = model(x)
    assert none is None and torch.allclose(plain, F.cross_entropy(logits.flatten(0, 1), y.flatten()))
    answer = torch.zeros_like(y, dtype=torch.bool)
    answer[0, -3:] = True
    y_masked = y.clone()
    y_masked[0, 5:13] = IGNORE
    loss, answer_loss = training_loss(model, x, y_masked, answer)
    text = (y_masked != IGNORE) & ~answer
    expect_text = F.cross_entropy(logits[text], y[text])
    expect_answer = F.cross_entropy(logits[answer], y[answer])
    assert torch.allclose(answer_loss, expect_answer) and torch.allclose(loss, expect_text + expect_answer)
