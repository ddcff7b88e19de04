"""Tests for transformer_course.evaluate on a tiny random RoPE model.

Oracles: ``F.cross_entropy`` on the model's own logits for the losses (same float32 forward, so atol
1e-6 covers the different reduction order); RoPE tables computed at fractional positions p / s for
position interpolation (atol 1e-5: the angle p * (theta / s) vs (p / s) * theta rounds differently in
float32); a fake model that reads the key from its context for passkey retrieval.
"""
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transformer_course.config import ModelConfig
from transformer_course.data import PASSKEY_QUESTION
from transformer_course.evaluate import (
    context_extension,
    loss_by_position,
    passkey_accuracy,
    perplexity_by_length,
    standard_scalings,
    token_losses,
    with_rope_scaling,
)
from transformer_course.model import TransformerLM
from transformer_course.positions import RopeScaling, rope_cos_sin, rope_inv_freq

ATOL = 1e-6  # same float32 forward pass, different reductions


def tiny_model(**overrides) -> TransformerLM:
    """1 layer, width 32, random weights scaled up so that the logits are far from uniform."""
    cfg = dict(vocab_size=256, context_length=32, n_layer=1, n_embd=32, n_head=4, position="rope",
               activation="swiglu", norm="rmsnorm", bias=False, tie_embeddings=False)
    model = TransformerLM(ModelConfig(**{**cfg, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    return model


def direct_losses(model, ids):
    """(B, T + 1) -> (B, T): cross-entropy of the model's logits for ids[:, :-1] against ids[:, 1:]."""
    with torch.no_grad():
        logits = model.eval()(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, 256), ids[:, 1:].reshape(-1), reduction="none").view(ids.shape[0], -1)


@pytest.fixture
def docs():
    g = torch.Generator().manual_seed(0)
    lengths = {"a.py": 100, "b.py": 70, "short.py": 30}
    return [(name, torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8)) for name, n in lengths.items()]


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------
def test_token_losses_are_cross_entropy_per_position():
    model = tiny_model().train()
    ids = torch.randint(0, 256, (3, 41))  # longer than context_length: RoPE extrapolates
    got = token_losses(model, ids)
    assert model.training, "token_losses must restore the model's training mode"
    assert got.shape == (3, 40) and not got.requires_grad
    torch.testing.assert_close(got, direct_losses(model, ids), atol=ATOL, rtol=0)
    assert got.std() > 0.5, "test model too close to uniform to tell positions apart"
    torch.testing.assert_close(token_losses(model, ids.to(torch.uint8)), got, atol=0, rtol=0)


def test_token_losses_rejects_bad_input():
    model = tiny_model()
    with pytest.raises(ValueError, match="B, T"):
        token_losses(model, torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        token_losses(model, torch.zeros(1, 5))


def test_token_losses_need_no_guard_against_a_cache():
    """Positions are explicit, so a model with a KV cache set up gives the same losses as without one."""
    model = tiny_model()
    ids = torch.randint(0, 256, (1, 12))
    expected = token_losses(model, ids)
    model.setup_cache(1, 16)
    model(ids[:, :5], 0)  # something left in the cache
    torch.testing.assert_close(token_losses(model, ids), expected, atol=1e-6, rtol=1e-5)


def test_perplexity_by_length_uses_the_same_documents_for_every_length(docs):
    model = tiny_model()
    rows = perplexity_by_length(model, docs, [8, 20, 50], batch_size=1)  # short.py (30 bytes) is too short for 50
    assert [r["length"] for r in rows] == [8, 20, 50]
    for row in rows:
        L = row["length"]
        windows = torch.stack([doc[: L + 1].long() for name, doc in docs if name != "short.py"])
        expected = direct_losses(model, windows).mean().item()
        assert row["documents"] == 2 and row["tokens"] == 2 * L
        assert row["loss"] == pytest.approx(expected, abs=ATOL)
        assert row["bits_per_byte"] == pytest.approx(row["loss"] / math.log(2), rel=1e-12)
        assert row["perplexity"] == pytest.approx(math.exp(row["loss"]), rel=1e-12)


def test_perplexity_by_length_names_the_needed_length(docs):
    with pytest.raises(ValueError, match="201"):
        perplexity_by_length(tiny_model(), docs, [8, 200])
    with pytest.raises(ValueError, match="positive"):
        perplexity_by_length(tiny_model(), docs, [])


def test_loss_by_position_is_the_mean_over_documents(docs):
    model = tiny_model()
    got = loss_by_position(model, docs, 60)
    windows = torch.stack([docs[0][1][:61].long(), docs[1][1][:61].long()])  # a.py and b.py have 61 tokens
    assert got.shape == (60,)
    torch.testing.assert_close(got, direct_losses(model, windows).mean(dim=0), atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------------------
# RoPE scaling
# --------------------------------------------------------------------------------------------------
def test_with_rope_scaling_none_is_the_same_model():
    model = tiny_model()
    copy = with_rope_scaling(model, None, context_length=64)
    assert copy is not model and copy.config.context_length == 64 and model.config.context_length == 32
    ids = torch.randint(0, 256, (2, 48))
    with torch.no_grad():
        torch.testing.assert_close(copy(ids), model(ids), atol=0, rtol=0)
    with torch.no_grad():
        copy.lm_head.weight.add_(1.0)
    assert not torch.equal(copy.lm_head.weight, model.lm_head.weight), "the copy must own its weights"


def test_with_rope_scaling_sets_the_config_and_leaves_the_original_alone():
    model = tiny_model()
    for name, scaling in standard_scalings(4, 32).items():
        scaled = with_rope_scaling(model, scaling)
        assert scaled.config.rope_scaling == scaling, name
        assert scaled.rope.scaling == scaling, f"{name}: the model's RotaryEmbedding ignored the config"
        if scaling is not None and scaling.kind != "dynamic_ntk":
            expected, _ = rope_inv_freq(model.config.head_dim, model.config.rope_base, scaling)
            torch.testing.assert_close(scaled.rope.inv_freq, expected, atol=0, rtol=0)
    assert model.config.rope_scaling is None
    with pytest.raises(ValueError, match="RoPE"):
        with_rope_scaling(tiny_model(position="learned"), RopeScaling("linear", 2, 32))


def test_linear_scaling_is_rope_at_positions_divided_by_s():
    """Position interpolation: the scaled model at position p behaves as the original at p / s."""
    s = 4
    model = tiny_model()
    scaled = with_rope_scaling(model, RopeScaling("linear", s, 32))

    class FractionalRope(nn.Module):  # the original's frequencies, fed positions p / s
        def __init__(self, rope):
            super().__init__()
            self.rope = rope

        def forward(self, positions):
            return rope_cos_sin(positions / s, self.rope.inv_freq, layout=self.rope.layout)

        def span(self, start, end):  # the model asks for contiguous positions this way
            return self(torch.arange(start, end))

    reference = with_rope_scaling(model, None)
    reference.rope = FractionalRope(reference.rope)
    ids = torch.randint(0, 256, (2, 96))
    with torch.no_grad():
        torch.testing.assert_close(scaled(ids), reference(ids), atol=1e-5, rtol=0)
        assert not torch.allclose(scaled(ids), model(ids), atol=1e-2), "scaling changed nothing"
    k = torch.arange(0, 24)
    cos_s, sin_s = scaled.rope(s * k)  # integer positions that are multiples of s ...
    cos_1, sin_1 = model.rope(k)  # ... equal the original at p / s
    torch.testing.assert_close(cos_s, cos_1, atol=1e-6, rtol=0)
    torch.testing.assert_close(sin_s, sin_1, atol=1e-6, rtol=0)


def test_context_extension_runs_each_method_on_the_same_windows(docs):
    model = tiny_model()
    methods = standard_scalings(2, 32)
    rows = context_extension(model, docs, [16, 60], methods)
    assert [(r["method"], r["length"]) for r in rows] == [(m, L) for m in methods for L in (16, 60)]
    for name, scaling in methods.items():
        expected = perplexity_by_length(with_rope_scaling(model, scaling), docs, [16, 60])
        assert [{k: v for k, v in r.items() if k != "method"} for r in rows if r["method"] == name] == expected
    none = [r["loss"] for r in rows if r["method"] == "none"]
    assert none == [r["loss"] for r in perplexity_by_length(model, docs, [16, 60])]
    # factor 1 changes nothing for linear, ntk and yarn
    same = {k: RopeScaling(k, 1.0, 32) for k in ("linear", "ntk", "yarn")}
    for r in context_extension(model, docs, [60], same):
        assert r["loss"] == pytest.approx(none[1], abs=ATOL), r["method"]


# --------------------------------------------------------------------------------------------------
# Passkey retrieval
# --------------------------------------------------------------------------------------------------
class PasskeyOracle(nn.Module):
    """A fake model that reads the pass key from its context: greedy decoding returns the key.

    It follows generate's cache protocol (setup_cache, then only new tokens at their start_pos), so it sees
    the whole sequence either way. ``wrong_after`` digits in, it answers "x" instead: a broken retriever.
    """

    def __init__(self, wrong_after=None):
        super().__init__()
        self.wrong_after, self.cached, self.seen, self.prompts = wrong_after, False, None, []

    def setup_cache(self, batch_size, max_len=None):
        self.cached, self.seen = True, None

    def remove_cache(self):
        self.cached, self.seen = False, None

    def forward(self, idx, start_pos=0):
        if start_pos == 0:
            self.prompts.append(idx.clone())
        self.seen = torch.cat([self.seen[:, :start_pos], idx], dim=1) if self.cached and start_pos else idx
        logits = torch.zeros(idx.shape[0], idx.shape[1], 256)  # (B, T, vocab)
        for b, row in enumerate(self.seen.tolist()):
            text = bytes(row).decode("ascii")
            key = re.search(r"The pass key is (\d+)\.", text).group(1)
            done = len(text) - text.rindex(PASSKEY_QUESTION) - len(PASSKEY_QUESTION)  # digits answered so far
            wrong = self.wrong_after is not None and done >= self.wrong_after
            logits[b, -1, ord("x") if wrong else ord(key[done])] = 1.0
        return logits


def test_passkey_oracle_scores_one_and_every_cell_has_a_row():
    lengths, depths = [260, 400], [0.0, 0.5, 1.0]
    rows = passkey_accuracy(PasskeyOracle(), lengths, depths, trials=4)
    assert [(r["length"], r["depth"]) for r in rows] == [(L, d) for L in lengths for d in depths]
    assert all(r["accuracy"] == 1.0 and r["digit_accuracy"] == 1.0 for r in rows), rows


def test_passkey_partly_wrong_answers_are_counted():
    rows = passkey_accuracy(PasskeyOracle(wrong_after=3), [300], [0.25], trials=5)
    assert rows[0]["accuracy"] == 0.0 and rows[0]["digit_accuracy"] == pytest.approx(3 / 5)


def test_passkey_prompts_are_seeded():
    def prompts(seed):
        oracle = PasskeyOracle()
        passkey_accuracy(oracle, [300], [0.5], trials=6, seed=seed)
        return torch.cat(oracle.prompts)  # (6, 300)

    first = prompts(0)
    assert first.shape == (6, 300)
    assert torch.equal(first, prompts(0)), "the same seed must give the same prompts"
    assert not torch.equal(first, prompts(1)), "another seed must give other keys"
    assert len({tuple(p.tolist()) for p in first}) == 6, "the trials of one cell must hide different keys"


def test_passkey_on_a_real_model():
    model = tiny_model()
    rows = passkey_accuracy(model, [256], [0.0, 1.0], trials=3)
    assert len(rows) == 2 and all(0.0 <= r["accuracy"] <= r["digit_accuracy"] <= 1.0 for r in rows)
    assert rows == passkey_accuracy(model, [256], [0.0, 1.0], trials=3)
    with pytest.raises(ValueError, match="trials"):
        passkey_accuracy(model, [256], [0.5], trials=0)


def test_split_bits_per_byte_scores_every_token_once():
    from transformer_course.evaluate import split_bits_per_byte

    torch.manual_seed(0)
    model = TransformerLM(ModelConfig(vocab_size=256, context_length=32, n_layer=1, n_embd=32, n_head=4,
                                      position="rope")).eval()
    data = torch.randint(0, 256, (3 * 16 + 5,), dtype=torch.uint8)
    with torch.no_grad():
        direct = []
        for s in (0, 16, 32):  # three full windows of 16; the 4-token tail is left out
            ids = data[s:s + 17].long()
            direct.append(F.cross_entropy(model(ids[None, :-1])[0], ids[1:], reduction="sum"))
    expected = torch.stack(direct).sum().item() / 48 / math.log(2)
    assert split_bits_per_byte(model, data, 16, batch_size=2) == pytest.approx(expected, rel=1e-6)
