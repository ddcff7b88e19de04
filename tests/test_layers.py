"""Norms, FFNs and the mixture of experts against PyTorch's modules and their formulas."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transformer_course.layers import FeedForward, LayerNorm, RMSNorm, SwiGLU, layer_norm_explicit, rms_norm_explicit
from transformer_course.moe import MixtureOfExperts


def test_layernorm_matches_torch():
    x = torch.randn(3, 7, 32) * 5 + 2
    ours, ref = LayerNorm(32), nn.LayerNorm(32)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.normal_()
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer_norm_explicit(x, ours.weight, ours.bias, 1e-5), ref(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(LayerNorm(32, bias=False)(x), F.layer_norm(x, (32,)), atol=1e-5, rtol=1e-5)


def test_rmsnorm_matches_torch():
    x = torch.randn(3, 7, 32) * 5 + 2
    ours, ref = RMSNorm(32, eps=1e-6), nn.RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rms_norm_explicit(x, ours.weight, 1e-6), ref(x), atol=1e-5, rtol=1e-5)


def test_norms_compute_in_float32_and_return_input_dtype():
    x = (torch.randn(4, 64) * 300).bfloat16()
    for norm, ref in ((LayerNorm(64), nn.LayerNorm(64)), (RMSNorm(64), nn.RMSNorm(64, eps=1e-5))):
        out = norm(x)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), ref(x.float()), atol=1e-2, rtol=1e-2)


def test_layernorm_normalises_over_features_not_batch():
    x = torch.randn(5, 16) * 3 + 1
    y = LayerNorm(16)(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)
    torch.testing.assert_close(LayerNorm(16)(x[:1]), y[:1])  # one row alone: same result (no batch statistics)


@pytest.mark.parametrize("activation, fn", [("relu", F.relu), ("gelu", F.gelu),
                                            ("gelu_tanh", lambda t: F.gelu(t, approximate="tanh"))])
def test_feedforward_formula(activation, fn):
    ffn = FeedForward(8, 32, activation)
    x = torch.randn(2, 3, 8)
    expected = fn(x @ ffn.up.weight.T + ffn.up.bias) @ ffn.down.weight.T + ffn.down.bias
    torch.testing.assert_close(ffn(x), expected)


def test_swiglu_formula():
    ffn = SwiGLU(8, 24)
    x = torch.randn(2, 3, 8)
    gate, up = x @ ffn.gate.weight.T, x @ ffn.up.weight.T
    expected = (gate * torch.sigmoid(gate) * up) @ ffn.down.weight.T
    torch.testing.assert_close(ffn(x), expected)


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="activation"):
        FeedForward(8, 32, "tanh")


def test_moe_equals_dense_mixture_of_its_top_k_experts():
    moe = MixtureOfExperts(8, 16, n_expert=4, top_k=2)
    x = torch.randn(2, 5, 8)
    out = moe(x)
    flat = x.reshape(-1, 8)
    logits = flat @ moe.router.weight.T
    expected = torch.zeros_like(flat)
    for n in range(flat.shape[0]):
        top = logits[n].topk(2)
        w = torch.softmax(top.values, -1)
        for weight, e in zip(w, top.indices):
            expected[n] += weight * moe.experts[int(e)](flat[n])
    torch.testing.assert_close(out.reshape(-1, 8), expected, atol=1e-6, rtol=1e-5)


def test_moe_load_balancing_loss():
    moe = MixtureOfExperts(8, 16, n_expert=4, top_k=1)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0, 0] = 50.0  # every token with x[0] > 0 goes to expert 0
    x = torch.randn(64, 8).abs()  # all positive: routing collapses onto expert 0
    moe(x)
    probs = torch.softmax(x @ moe.router.weight.T, -1)
    fraction = torch.tensor([1.0, 0, 0, 0])
    torch.testing.assert_close(moe.aux_loss, 4 * (fraction * probs.mean(0)).sum())
    assert moe.aux_loss > 3.5  # collapsed routing: close to n_expert, far above the uniform value 1
    with torch.no_grad():
        moe.router.weight.zero_()  # all logits equal: probabilities uniform
    moe(x)
    # ties go to the lowest index, so f = (1, 0, 0, 0) again but P is uniform: loss = 4 * 1 * 1/4 = 1
    torch.testing.assert_close(moe.aux_loss, torch.tensor(1.0))
    moe.aux_loss.backward()  # differentiable through the router probabilities
    assert moe.router.weight.grad is not None
