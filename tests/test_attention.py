"""attention(): the three implementations against PyTorch's SDPA and against each other."""
import math

import pytest
import torch
import torch.nn.functional as F

from transformer_course.attention import (BackendUnavailableError, OnlineSoftmax, attention, attention_probs,
                                          build_mask, padding_mask)
from transformer_course.positions import alibi_slopes

IMPLS = ["naive", "tiled", "sdpa"]
# float32 round-off: different summation orders of ~S products of O(1) terms; 1e-5 is ~100 ulps at 1.0.
ATOL = 1e-5


def qkv(B=2, n_head=4, n_kv_head=4, T=19, S=None, D=16, dtype=torch.float32):
    S = T if S is None else S
    return (torch.randn(B, n_head, T, D, dtype=dtype), torch.randn(B, n_kv_head, S, D, dtype=dtype),
            torch.randn(B, n_kv_head, S, D, dtype=dtype))


def sdpa_oracle(q, k, v, **kw):
    group = q.shape[1] // k.shape[1]  # PyTorch's GQA layout: query head h reads k/v head h // group
    return F.scaled_dot_product_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), **kw)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n_kv_head", [4, 2, 1])  # MHA, GQA, MQA
@pytest.mark.parametrize("causal", [False, True])
def test_matches_sdpa(impl, n_kv_head, causal):
    q, k, v = qkv(n_kv_head=n_kv_head)
    out = attention(q, k, v, causal=causal, impl=impl, block_size=8)
    torch.testing.assert_close(out, sdpa_oracle(q, k, v, is_causal=causal), atol=ATOL, rtol=0)


def test_naive_is_the_textbook_formula():
    q, k, v = qkv(B=1, n_head=1, n_kv_head=1)
    expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v
    torch.testing.assert_close(attention(q, k, v, impl="naive"), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_explicit_mask_and_padding(impl):
    q, k, v = qkv(T=11, S=17)
    lengths = torch.tensor([17, 9])
    mask = padding_mask(lengths, 17)  # (B, 1, 1, S)
    out = attention(q, k, v, mask=mask, impl=impl, block_size=4)
    torch.testing.assert_close(out, sdpa_oracle(q, k, v, attn_mask=mask), atol=ATOL, rtol=0)
    # padding keys are really ignored: changing them changes nothing
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 9:], v2[1, :, 9:] = 100.0, -100.0
    torch.testing.assert_close(attention(q, k2, v2, mask=mask, impl=impl, block_size=4), out, atol=ATOL, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_causal_with_query_offset_is_the_tail_of_full_causal(impl):
    """Decoding with a cache: the last T queries against all S keys equal the last rows of full causal attention."""
    q, k, v = qkv(T=24, n_kv_head=2)
    full = attention(q, k, v, causal=True, impl="naive")
    tail = attention(q[:, :, -5:], k, v, causal=True, impl=impl, block_size=4)  # q_offset defaults to S - T
    torch.testing.assert_close(tail, full[:, :, -5:], atol=ATOL, rtol=0)
    one = attention(q[:, :, -1:], k, v, causal=True, impl=impl)
    torch.testing.assert_close(one, full[:, :, -1:], atol=ATOL, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_future_keys_do_not_leak(impl):
    q, k, v = qkv(T=16)
    out = attention(q, k, v, causal=True, impl=impl, block_size=4)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 10:] += 3.0
    v2[:, :, 10:] -= 5.0
    out2 = attention(q, k2, v2, causal=True, impl=impl, block_size=4)
    torch.testing.assert_close(out2[:, :, :10], out[:, :, :10], atol=ATOL, rtol=0)
    assert not torch.allclose(out2[:, :, 10:], out[:, :, 10:])


@pytest.mark.parametrize("window", [1, 3, 8])
def test_sliding_window_mask_is_exact(window):
    T = 12
    mask = build_mask(T, T, causal=True, window=window)
    for i in range(T):
        for j in range(T):
            assert bool(mask[i, j]) == (i - window < j <= i), (i, j)
    sym = build_mask(T, T, window=window)
    assert all(bool(sym[i, j]) == (abs(i - j) < window) for i in range(T) for j in range(T))


@pytest.mark.parametrize("impl", IMPLS)
def test_sliding_window_sees_nothing_past_the_window(impl):
    window = 5
    q, k, v = qkv(T=30, n_kv_head=2)
    out = attention(q, k, v, causal=True, window=window, impl=impl, block_size=4)
    torch.testing.assert_close(out, sdpa_oracle(q, k, v, attn_mask=build_mask(30, 30, causal=True, window=window)),
                               atol=ATOL, rtol=0)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, :10], v2[:, :, :10] = -7.0, 7.0  # keys 0..9 lie outside the window of queries 14 and later
    out2 = attention(q, k2, v2, causal=True, window=window, impl=impl, block_size=4)
    torch.testing.assert_close(out2[:, :, 14:], out[:, :, 14:], atol=ATOL, rtol=0)
    assert not torch.allclose(out2[:, :, :14], out[:, :, :14])


@pytest.mark.parametrize("impl", IMPLS)
def test_alibi_matches_explicit_bias(impl):
    q, k, v = qkv(n_head=4, n_kv_head=2, T=13)
    slopes = alibi_slopes(4)
    i = torch.arange(13)
    bias = -slopes.view(-1, 1, 1) * (i.view(-1, 1) - i.view(1, -1)).abs()  # (n_head, T, S)
    bias = bias.masked_fill(~torch.ones(13, 13, dtype=torch.bool).tril(), float("-inf"))
    expected = sdpa_oracle(q, k, v, attn_mask=bias)
    out = attention(q, k, v, causal=True, alibi_slopes=slopes, impl=impl, block_size=4)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("impl", ["naive", "tiled"])
def test_fully_masked_rows_give_zeros(impl):
    q, k, v = qkv(T=6)
    mask = torch.ones(1, 1, 6, 6, dtype=torch.bool)
    mask[..., 2, :] = False
    out = attention(q, k, v, mask=mask, impl=impl, block_size=4)
    assert torch.isfinite(out).all()
    assert (out[:, :, 2] == 0).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_match_sdpa(impl):
    q, k, v = (t.requires_grad_() for t in qkv(n_kv_head=2, T=10))
    attention(q, k, v, causal=True, impl=impl, block_size=4).square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    sdpa_oracle(q, k, v, is_causal=True).square().sum().backward()
    for g, t in zip(grads, (q, k, v)):
        torch.testing.assert_close(g, t.grad, atol=1e-4, rtol=1e-4)


def test_tiled_block_size_does_not_change_the_result():
    q, k, v = qkv(T=37, S=37)
    ref = attention(q, k, v, causal=True, impl="naive")
    for block in (1, 5, 16, 37, 64):
        torch.testing.assert_close(attention(q, k, v, causal=True, impl="tiled", block_size=block), ref,
                                   atol=ATOL, rtol=0)


def test_online_softmax_equals_softmax_over_all_keys():
    scores, v = torch.randn(3, 7, 40), torch.randn(3, 40, 5)
    acc = OnlineSoftmax()
    for j in range(0, 40, 6):
        acc.update(scores[..., j:j + 6], v[..., j:j + 6, :])
    torch.testing.assert_close(acc.result(), torch.softmax(scores, -1) @ v, atol=ATOL, rtol=0)


def test_attention_probs_rows_sum_to_one_and_respect_the_mask():
    q, k, _ = qkv(T=9)
    p = attention_probs(q, k, causal=True)
    torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
    assert (p.triu(diagonal=1) == 0).all()


def test_low_precision_inputs_keep_their_dtype():
    q, k, v = qkv(dtype=torch.bfloat16)
    ref = sdpa_oracle(q.float(), k.float(), v.float(), is_causal=True)
    for impl in IMPLS:
        out = attention(q, k, v, causal=True, impl=impl)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)  # bf16 has 8 significant bits


@pytest.mark.parametrize("bad, match", [
    (dict(q=torch.randn(2, 3, 5, 8), k=torch.randn(2, 2, 5, 8)), "multiple of n_kv_head"),
    (dict(q=torch.randn(2, 4, 5, 8), k=torch.randn(2, 4, 5, 6)), "head_dim"),
    (dict(q=torch.randn(4, 5, 8), k=torch.randn(4, 5, 8)), "4-D"),
])
def test_bad_shapes_raise_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        attention(bad["q"], bad["k"], bad["k"].clone())


def test_bad_arguments_say_what_to_do():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="impl"):
        attention(q, k, v, impl="fast")
    with pytest.raises(TypeError, match="boolean"):
        attention(q, k, v, mask=torch.zeros(19, 19))
    with pytest.raises(ValueError, match="broadcast"):
        attention(q, k, v, mask=torch.ones(3, 19, dtype=torch.bool))
    with pytest.raises(ValueError, match="q_offset"):
        attention(q, k[:, :, :5], v[:, :, :5], causal=True)
    with pytest.raises(ValueError, match="backend"):
        attention(q, k, v, backend="flash", impl="naive")
    with pytest.raises(ValueError, match="one of"):
        attention(q, k, v, backend="turbo")


def test_forced_backend_that_cannot_run_raises_instead_of_falling_back():
    q, k, v = qkv()
    with pytest.raises(BackendUnavailableError, match="cannot run these inputs"):
        attention(q, k, v, backend="cudnn")
    with pytest.raises(BackendUnavailableError, match="To run anyway"):
        attention(q, k, v, backend="efficient")


@pytest.mark.parametrize("backend", ["math", "flash"])  # PyTorch's CPU "flash" kernel takes float32 and masks
def test_forced_backends_that_can_run_match(backend):
    q, k, v = qkv(n_kv_head=2)
    torch.testing.assert_close(attention(q, k, v, causal=True, backend=backend), sdpa_oracle(q, k, v, is_causal=True),
                               atol=ATOL, rtol=0)
    mask = build_mask(19, 19, causal=True, window=4)
    torch.testing.assert_close(attention(q, k, v, causal=True, window=4, backend=backend),
                               sdpa_oracle(q, k, v, attn_mask=mask), atol=ATOL, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_float64_inputs_keep_float64_precision(impl):
    """Scores are not rounded to float32 when the inputs are float64 (the book checks identities in float64)."""
    torch.manual_seed(0)
    q, k, v = qkv(n_kv_head=2, T=37, dtype=torch.float64)
    out = attention(q, k, v, causal=True, impl=impl)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, sdpa_oracle(q, k, v, is_causal=True), rtol=0, atol=1e-12)
