"""Tests for transformer_course.positions, each against an independent oracle.

Oracles: Python's math module element by element, the explicit rotation matrix of the RoFormer paper,
the complex-number code of Meta's original Llama, and the formulas of the papers written out per dimension.
Tolerances: float32 angles of a few hundred radians carry ~1e-5 absolute error, hence atol 1e-4 where
large positions are involved and 1e-5 / 1e-6 elsewhere.
"""
import math

import pytest
import torch

from transformer_course.positions import (
    RopeScaling,
    RotaryEmbedding,
    alibi_slopes,
    apply_rope,
    half_to_interleaved,
    interleaved_to_half,
    rope_cos_sin,
    rope_inv_freq,
    rope_matrix,
    rotate_half,
    sinusoidal_table,
)

LAYOUTS = ("half", "interleaved")


def _rope(x, positions, layout, head_dim=None, **kw):
    """Apply unscaled RoPE to x (..., T, head_dim) at the given positions (T,)."""
    head_dim = x.shape[-1] if head_dim is None else head_dim
    inv_freq, factor = rope_inv_freq(head_dim, **kw)
    cos, sin = rope_cos_sin(positions, inv_freq, attention_factor=factor, layout=layout)
    return apply_rope(x, cos, sin, layout)


# --------------------------------------------------------------------------------------------------
# Sinusoidal table
# --------------------------------------------------------------------------------------------------
def test_sinusoidal_table_matches_the_formula_element_by_element():
    n_pos, dim, base = 7, 8, 10000.0
    table = sinusoidal_table(n_pos, dim, base)
    assert table.shape == (n_pos, dim) and table.dtype == torch.float32
    for pos in range(n_pos):
        for i in range(dim // 2):
            angle = pos / base ** (2 * i / dim)
            assert math.isclose(table[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-6), (
                f"PE[{pos}, {2 * i}] should be sin({pos} / base^({2 * i}/{dim}))"
            )
            assert math.isclose(table[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6), (
                f"PE[{pos}, {2 * i + 1}] should be cos({pos} / base^({2 * i}/{dim}))"
            )


def test_sinusoidal_table_dtype_and_odd_dim():
    assert sinusoidal_table(3, 4, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="even"):
        sinusoidal_table(3, 5)


# --------------------------------------------------------------------------------------------------
# RoPE: properties
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_rope_preserves_norms(layout):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 50, 16)  # (B, n_head, T, head_dim)
    out = _rope(x, torch.arange(50) * 37, layout)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-5,
                               msg="RoPE is a rotation: it must not change the length of q or k")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rope_scores_depend_only_on_relative_position(layout):
    torch.manual_seed(1)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        qm = _rope(q[None], torch.tensor([m]), layout)[0]
        kn = _rope(k[None], torch.tensor([n]), layout)[0]
        return (qm @ kn).item()

    same_offset = [score(3, 1), score(10, 8), score(102, 100), score(1000, 998)]
    for s in same_offset[1:]:
        assert math.isclose(s, same_offset[0], abs_tol=1e-4), f"q_m·k_n must depend on m - n only: {same_offset}"
    assert abs(score(5, 1) - same_offset[0]) > 1e-2, "a different offset m - n should give a different score"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_position_zero_is_the_identity(layout):
    torch.manual_seed(2)
    x = torch.randn(2, 4, 3, 8)
    cos, sin = RotaryEmbedding(8, layout=layout)(torch.zeros(3, dtype=torch.long))
    assert torch.equal(apply_rope(x, cos, sin, layout), x)


def test_interleaved_equals_the_explicit_rotation_matrix():
    torch.manual_seed(3)
    head_dim, positions = 8, [0, 1, 5, 77]
    x = torch.randn(len(positions), head_dim)
    inv_freq, _ = rope_inv_freq(head_dim)
    out = _rope(x, torch.tensor(positions), "interleaved")
    for t, p in enumerate(positions):
        R = rope_matrix(p, inv_freq)
        assert R.shape == (head_dim, head_dim)
        torch.testing.assert_close(out[t], R @ x[t], rtol=1e-5, atol=1e-5)
    # R_m^T R_n = R_(n-m): the algebra behind the relative-position property
    torch.testing.assert_close(rope_matrix(3, inv_freq).T @ rope_matrix(10, inv_freq), rope_matrix(7, inv_freq),
                               rtol=1e-5, atol=1e-5)


def test_interleaved_equals_metas_complex_number_code():
    torch.manual_seed(4)
    B, T, n_head, head_dim = 2, 6, 3, 16
    x = torch.randn(B, T, n_head, head_dim)  # Meta's code works on (B, T, n_head, head_dim)
    # llama/model.py (Meta, 2023): precompute_freqs_cis + apply_rotary_emb
    freqs = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    freqs_cis = torch.polar(torch.ones(T, head_dim // 2), torch.outer(torch.arange(T).float(), freqs))
    x_c = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (B, T, n_head, head_dim // 2)
    expected = torch.view_as_real(x_c * freqs_cis[None, :, None, :]).flatten(3)

    cos, sin = RotaryEmbedding(head_dim, layout="interleaved")(torch.arange(T))
    ours = apply_rope(x.transpose(1, 2), cos, sin, "interleaved").transpose(1, 2)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_half_layout_uses_rotate_half():
    x = torch.arange(6.0)
    assert rotate_half(x).tolist() == [-3.0, -4.0, -5.0, 0.0, 1.0, 2.0]


def test_layout_permutations_are_inverses_and_convert_layouts():
    torch.manual_seed(5)
    x = torch.randn(2, 3, 7, 8)
    assert interleaved_to_half(torch.arange(8)).tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert torch.equal(half_to_interleaved(interleaved_to_half(x)), x)
    assert torch.equal(interleaved_to_half(half_to_interleaved(x)), x)

    positions = torch.arange(7) * 11
    half = _rope(interleaved_to_half(x), positions, "half")
    interleaved = _rope(x, positions, "interleaved")
    torch.testing.assert_close(half, interleaved_to_half(interleaved), rtol=1e-6, atol=1e-6,
                               msg="interleaved_to_half must carry pair (2i, 2i+1) to (i, i + head_dim/2)")


def test_apply_rope_keeps_dtype_and_computes_in_float32():
    torch.manual_seed(6)
    x = torch.randn(1, 2, 5, 8)
    cos, sin = RotaryEmbedding(8)(torch.arange(5))
    x16 = x.to(torch.bfloat16)
    out = apply_rope(x16, cos, sin)
    assert out.dtype == torch.bfloat16
    # rotating in float32 and rounding once gives exactly this; rotating in bfloat16 would round twice
    torch.testing.assert_close(out, apply_rope(x16.float(), cos, sin).to(torch.bfloat16), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# Scaling
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_linear_scaling_is_position_interpolation(layout):
    torch.manual_seed(7)
    s, head_dim = 4.0, 16
    x = torch.randn(2, 10, head_dim)
    positions = torch.tensor([0, 1, 3, 7, 100, 513, 2047, 4095, 6000, 8191])
    rope = RotaryEmbedding(head_dim, context_length=8192, layout=layout,
                           scaling=RopeScaling("linear", s, original_context_length=2048))
    scaled = apply_rope(x, *rope(positions), layout)
    inv_freq, _ = rope_inv_freq(head_dim)
    fractional = apply_rope(x, *rope_cos_sin(positions.double() / s, inv_freq, layout=layout), layout)
    torch.testing.assert_close(scaled, fractional, rtol=1e-4, atol=1e-4,
                               msg="linear scaling at position p must equal unscaled RoPE at p / s")


def test_ntk_keeps_the_highest_frequency_and_divides_the_lowest_by_s():
    head_dim, s = 64, 8.0
    plain, _ = rope_inv_freq(head_dim)
    ntk, factor = rope_inv_freq(head_dim, scaling=RopeScaling("ntk", s, 4096))
    assert factor == 1.0
    assert ntk[0].item() == plain[0].item() == 1.0
    assert math.isclose(ntk[-1].item(), plain[-1].item() / s, rel_tol=1e-5)
    ratio = plain / ntk
    assert torch.all(ratio[1:] > ratio[:-1]), "NTK scaling should interpolate lower frequencies more"
    # the formula: base' = base * s^(d / (d - 2))
    base_new = 10000.0 * s ** (head_dim / (head_dim - 2))
    expected = torch.tensor([base_new ** (-2 * i / head_dim) for i in range(head_dim // 2)])
    torch.testing.assert_close(ntk, expected, rtol=1e-5, atol=0)


def test_dynamic_ntk_is_unscaled_up_to_L_then_follows_the_formula():
    head_dim, s, L, base = 32, 4.0, 1024, 10000.0
    scaling = RopeScaling("dynamic_ntk", s, L)
    plain, _ = rope_inv_freq(head_dim, base)
    for seq_len in (1, 500, L):
        inv_freq, factor = rope_inv_freq(head_dim, base, scaling, seq_len)
        assert torch.equal(inv_freq, plain) and factor == 1.0, f"seq_len={seq_len} <= L must be unscaled"
    for seq_len in (L + 1, 3000, 4 * L, 10 * L):
        inv_freq, _ = rope_inv_freq(head_dim, base, scaling, seq_len)
        base_new = base * ((s * seq_len / L) - (s - 1)) ** (head_dim / (head_dim - 2))
        expected = torch.tensor([base_new ** (-2 * i / head_dim) for i in range(head_dim // 2)])
        torch.testing.assert_close(inv_freq, expected, rtol=1e-5, atol=0)
    # with s = 1 the dynamic factor is l / L: the same as static NTK with factor l / L (Peng et al., 2023)
    dyn, _ = rope_inv_freq(head_dim, base, RopeScaling("dynamic_ntk", 1.0, L), seq_len=3 * L)
    static, _ = rope_inv_freq(head_dim, base, RopeScaling("ntk", 3.0, L))
    torch.testing.assert_close(dyn, static, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="seq_len"):
        rope_inv_freq(head_dim, base, scaling)


def _yarn_paper(head_dim, base, s, L, alpha, beta):
    """YaRN's NTK-by-parts, Peng et al. (2023, arXiv:2309.00071), one dimension at a time in the paper's notation."""
    out = []
    for d in range(head_dim // 2):
        theta = base ** (-2 * d / head_dim)
        wavelength = 2 * math.pi / theta  # lambda_d
        r = L / wavelength
        gamma = 0.0 if r < alpha else 1.0 if r > beta else (r - alpha) / (beta - alpha)
        out.append((1 - gamma) * theta / s + gamma * theta)
    return torch.tensor(out)


def test_yarn_matches_the_paper_per_dimension():
    head_dim, base, s, L = 64, 10000.0, 4.0, 2048
    scaling = RopeScaling("yarn", s, L)  # beta_fast=32, beta_slow=1
    inv_freq, factor = rope_inv_freq(head_dim, base, scaling)
    plain, _ = rope_inv_freq(head_dim, base)
    r = L * plain.double() / (2 * math.pi)
    fast, slow = r > scaling.beta_fast, r < scaling.beta_slow
    ramp = ~fast & ~slow
    assert fast.any() and slow.any() and ramp.sum() >= 3, "choose L, base so that all three regions exist"
    assert torch.equal(inv_freq[fast], plain[fast]), "pairs turning > beta_fast times over L must be untouched"
    torch.testing.assert_close(inv_freq[slow], plain[slow] / s, rtol=1e-6, atol=0,
                               msg="pairs turning < beta_slow times over L must be interpolated by s")
    assert torch.all((inv_freq[ramp] < plain[ramp]) & (inv_freq[ramp] > plain[ramp] / s))
    torch.testing.assert_close(inv_freq, _yarn_paper(head_dim, base, s, L, 1.0, 32.0), rtol=1e-5, atol=0)
    assert math.isclose(factor, 0.1 * math.log(s) + 1, rel_tol=1e-12)

    # other ramp bounds, to catch swapped alpha/beta
    odd = RopeScaling("yarn", 8.0, 512, beta_fast=16.0, beta_slow=2.0)
    torch.testing.assert_close(rope_inv_freq(32, 500000.0, odd)[0], _yarn_paper(32, 500000.0, 8.0, 512, 2.0, 16.0),
                               rtol=1e-5, atol=0)


def test_yarn_attention_factor_scales_the_tables():
    scaling = RopeScaling("yarn", 16.0, 256)
    cos, sin = RotaryEmbedding(16, context_length=64, scaling=scaling)(torch.arange(100))
    expected = (0.1 * math.log(16.0) + 1) ** 2
    torch.testing.assert_close(cos**2 + sin**2, torch.full_like(cos, expected), rtol=1e-5, atol=0)


@pytest.mark.parametrize("kind", ["linear", "ntk", "dynamic_ntk", "yarn", "llama3"])
def test_factor_one_changes_nothing(kind):
    plain, _ = rope_inv_freq(32)
    inv_freq, factor = rope_inv_freq(32, scaling=RopeScaling(kind, 1.0, 128), seq_len=128)
    torch.testing.assert_close(inv_freq, plain, rtol=1e-7, atol=0)
    assert factor == 1.0


def test_llama3_is_the_paper_ramp_in_rotations_between_its_two_factors():
    """Llama 3.1's rule (Grattafiori et al., 2024) per pair: r = L / wavelength turns over L; divide by s below
    low_freq_factor turns, keep above high_freq_factor, ramp linearly in r between: YaRN's paper ramp."""
    head_dim, base, s, L = 128, 500000.0, 8.0, 8192  # Llama 3.1's own values
    inv_freq, factor = rope_inv_freq(head_dim, base, RopeScaling("llama3", s, L))
    assert factor == 1.0
    torch.testing.assert_close(inv_freq, _yarn_paper(head_dim, base, s, L, 1.0, 4.0), rtol=1e-5, atol=0)
    as_yarn, _ = rope_inv_freq(head_dim, base, RopeScaling("yarn", s, L, beta_fast=4.0, beta_slow=1.0))
    torch.testing.assert_close(inv_freq, as_yarn, rtol=1e-5, atol=0)


def test_yarn_hf_ramp_is_linear_in_the_dimension_index():
    head_dim, base, s, L = 64, 10000.0, 4.0, 2048
    paper, _ = rope_inv_freq(head_dim, base, RopeScaling("yarn", s, L))
    hf, _ = rope_inv_freq(head_dim, base, RopeScaling("yarn", s, L, ramp="hf", truncate=False))
    plain, _ = rope_inv_freq(head_dim, base)
    # d(beta) = head_dim ln(L / (2 pi beta)) / (2 ln base): the pair index that turns beta times over L
    low, high = (head_dim * math.log(L / (2 * math.pi * b)) / (2 * math.log(base)) for b in (32.0, 1.0))
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    gamma = 1 - ((i - low) / (high - low)).clamp(0, 1)
    torch.testing.assert_close(hf.double(), (1 - gamma) * plain.double() / s + gamma * plain.double(), rtol=1e-6, atol=0)
    outside = (i < low) | (i > high)
    torch.testing.assert_close(hf[outside], paper[outside], rtol=1e-6, atol=0)  # same outside the ramp ...
    assert not torch.allclose(hf[~outside], paper[~outside], rtol=1e-3)  # ... not inside it


HF_ROPE_CASES = [  # (rope dict as in a Hugging Face config, head_dim, rope_theta, max_position_embeddings, seq_len)
    (dict(rope_type="linear", factor=4.0), 64, 10000.0, 4096, None),
    (dict(rope_type="dynamic", factor=4.0), 64, 10000.0, 1024, 3000),
    (dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
          original_max_position_embeddings=8192), 128, 500000.0, 131072, None),
    (dict(rope_type="llama3", factor=4.0, low_freq_factor=2.0, high_freq_factor=8.0,
          original_max_position_embeddings=512), 64, 10000.0, 4096, None),
    (dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=2048), 64, 10000.0, 8192, None),
    (dict(rope_type="yarn", factor=8.0, original_max_position_embeddings=4096, beta_fast=16, beta_slow=2,
          truncate=False), 128, 1000000.0, 32768, None),
    (dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=2048, attention_factor=1.3), 64, 10000.0,
     8192, None),
    (dict(rope_type="yarn", factor=40.0, original_max_position_embeddings=4096, mscale=1.0, mscale_all_dim=0.5),
     64, 10000.0, 163840, None),
]


@pytest.mark.parametrize("rope, head_dim, base, max_pos, seq_len", HF_ROPE_CASES,
                         ids=lambda v: v["rope_type"] if isinstance(v, dict) else None)
def test_scaling_from_hf_matches_transformers_rope_init_functions(rope, head_dim, base, max_pos, seq_len):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = transformers.LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, max_position_embeddings=max_pos,
                                      rope_parameters=dict(rope_theta=base, **rope))
    expected, expected_factor = ROPE_INIT_FUNCTIONS[rope["rope_type"]](config, "cpu", seq_len=seq_len)
    scaling = RopeScaling.from_hf(dict(rope), max_pos)
    inv_freq, factor = rope_inv_freq(head_dim, base, scaling, seq_len=seq_len)
    torch.testing.assert_close(inv_freq, expected, rtol=1.2e-7, atol=0)  # float32, same operations
    assert math.isclose(factor, expected_factor, rel_tol=1e-7)


def test_scaling_from_hf_maps_the_types_and_refuses_the_rest():
    assert RopeScaling.from_hf({"rope_type": "default", "rope_theta": 1e4}, 4096) is None
    assert RopeScaling.from_hf({"type": "linear", "factor": 2.0}, 4096) == RopeScaling("linear", 2.0, 4096)
    yarn = RopeScaling.from_hf({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}, 4096)
    assert (yarn.kind, yarn.ramp, yarn.original_context_length, yarn.truncate) == ("yarn", "hf", 1024, True)
    with pytest.raises(ValueError, match="'longrope' is not supported.*'yarn'"):
        RopeScaling.from_hf({"rope_type": "longrope", "factor": 2.0}, 4096)
    with pytest.raises(ValueError, match="low_freq_factor"):
        RopeScaling.from_hf({"rope_type": "llama3", "factor": 8.0}, 4096)
    for scaling in (yarn, RopeScaling("llama3", 8.0, 8192), RopeScaling("linear", 2.0, 16384)):  # linear: L unused
        assert RopeScaling.from_hf(scaling.to_hf(16384), 16384) == scaling
    with pytest.raises(ValueError, match="ramp='hf'"):
        RopeScaling("yarn", 4.0, 1024).to_hf(4096)
    with pytest.raises(ValueError, match="no rope type"):
        RopeScaling("ntk", 4.0, 1024).to_hf(4096)


# --------------------------------------------------------------------------------------------------
# RotaryEmbedding
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("scaling", [None, RopeScaling("linear", 2.0, 16), RopeScaling("yarn", 4.0, 16)])
def test_rotary_embedding_cache_and_on_the_fly_agree(layout, scaling):
    small = RotaryEmbedding(8, context_length=16, scaling=scaling, layout=layout)
    large = RotaryEmbedding(8, context_length=64, scaling=scaling, layout=layout)
    inside, beyond = torch.arange(3, 16), torch.arange(10, 40)
    cos, sin = small(inside)  # from the cache
    assert cos.shape == sin.shape == (13, 8) and cos.dtype == sin.dtype == torch.float32
    cos_fly, sin_fly = small(beyond)  # past context_length: computed on the fly
    assert cos_fly.shape == (30, 8) and cos_fly.dtype == torch.float32
    cos_big, sin_big = large(beyond)  # all from the larger cache
    torch.testing.assert_close(cos_fly, cos_big, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin_fly, sin_big, rtol=0, atol=1e-6)
    torch.testing.assert_close(cos_fly[:6], cos[-6:], rtol=0, atol=1e-6)  # positions 10..15 both ways
    torch.testing.assert_close(sin_fly[:6], sin[-6:], rtol=0, atol=1e-6)
    edge = torch.tensor([15, 16])  # the last cached position and the first one past the cache
    torch.testing.assert_close(small(edge), large(edge), rtol=0, atol=1e-6)
    assert not any(k.endswith("cached") or k == "inv_freq" for k in small.state_dict()), "tables are not weights"


def test_rotary_embedding_dynamic_ntk_depends_on_the_longest_position():
    L, head_dim = 32, 8
    rope = RotaryEmbedding(head_dim, context_length=128, scaling=RopeScaling("dynamic_ntk", 2.0, L))
    plain = RotaryEmbedding(head_dim, context_length=128)
    short = torch.arange(L)
    torch.testing.assert_close(rope(short), plain(short), rtol=0, atol=0)
    longer = torch.arange(100)
    inv_freq, _ = rope_inv_freq(head_dim, scaling=RopeScaling("dynamic_ntk", 2.0, L), seq_len=100)
    torch.testing.assert_close(rope(longer), rope_cos_sin(longer, inv_freq), rtol=0, atol=1e-6)
    assert not torch.allclose(rope(longer)[0][:L], plain(short)[0]), "beyond L the frequencies must change"


def test_rotary_embedding_survives_half_precision_cast():
    rope = RotaryEmbedding(8, context_length=64).half()
    cos, _ = rope(torch.arange(64))
    assert cos.dtype == torch.float32
    torch.testing.assert_close(cos, RotaryEmbedding(8, context_length=64)(torch.arange(64))[0], rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# ALiBi
# --------------------------------------------------------------------------------------------------
def _alibi_official(n):
    """The slope rule of the ALiBi authors' code (ofirpress/attention_with_linear_biases)."""
    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]
    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + _alibi_official(2 * closest)[0::2][: n - closest]


def test_alibi_slopes():
    assert alibi_slopes(8).tolist() == [1 / 2**h for h in range(1, 9)]
    assert alibi_slopes(8).dtype == torch.float32
    twelve = [2 ** (-8 * h / 8) for h in range(1, 9)] + [2 ** (-8 * h / 16) for h in (1, 3, 5, 7)]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(twelve), rtol=1e-7, atol=0)
    for n in range(1, 40):
        slopes = alibi_slopes(n)
        assert slopes.shape == (n,)
        torch.testing.assert_close(slopes, torch.tensor(_alibi_official(n), dtype=torch.float32), rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------------------
def test_bad_arguments_raise_informative_errors():
    with pytest.raises(ValueError, match="head_dim=7 must be a positive even number"):
        RotaryEmbedding(7)
    with pytest.raises(ValueError, match="even"):
        rope_inv_freq(5)
    with pytest.raises(ValueError, match="kind='cubic' is not one of"):
        RopeScaling("cubic", 2.0, 128)
    with pytest.raises(ValueError, match="factor=0.5 must be >= 1"):
        RopeScaling("linear", 0.5, 128)
    with pytest.raises(ValueError, match="original_context_length"):
        RopeScaling("linear", 2.0, 0)
    with pytest.raises(ValueError, match="beta_fast > beta_slow"):
        RopeScaling("yarn", 2.0, 128, beta_fast=1.0, beta_slow=32.0)
    with pytest.raises(ValueError, match="ramp='linear' is not one of"):
        RopeScaling("yarn", 2.0, 128, ramp="linear")
    with pytest.raises(ValueError, match="high_freq_factor > low_freq_factor"):
        RopeScaling("llama3", 8.0, 128, low_freq_factor=4.0, high_freq_factor=1.0)
    with pytest.raises(ValueError, match="attention_factor is a YaRN setting"):
        RopeScaling("linear", 2.0, 128, attention_factor=1.2)
    with pytest.raises(ValueError, match="layout='complex' is not one of"):
        RotaryEmbedding(8, layout="complex")
    cos, sin = RotaryEmbedding(8)(torch.arange(3))
    with pytest.raises(ValueError, match="layout="):
        apply_rope(torch.randn(3, 8), cos, sin, layout="neox")
    with pytest.raises(ValueError, match="head_dim=6"):
        apply_rope(torch.randn(3, 6), cos, sin)  # tables built for head_dim 8
    with pytest.raises(ValueError, match=">= 0"):
        RotaryEmbedding(8)(torch.tensor([-1, 0]))
    with pytest.raises(TypeError, match="integer"):
        RotaryEmbedding(8)(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="n_head"):
        alibi_slopes(0)


def test_span_equals_forward_on_the_same_positions():
    rope = RotaryEmbedding(16, context_length=32)
    for start, end in ((0, 1), (5, 32), (30, 40), (40, 41)):  # inside the cache, across its end, beyond it
        cos, sin = rope.span(start, end)
        cos_ref, sin_ref = rope(torch.arange(start, end))
        assert torch.equal(cos, cos_ref) and torch.equal(sin, sin_ref)
    dynamic = RotaryEmbedding(16, context_length=32, scaling=RopeScaling("dynamic_ntk", 2.0, 16))
    for a, b in zip(dynamic.span(0, 24), dynamic(torch.arange(0, 24))):  # past L = 16: rescaled, not cached
        assert torch.equal(a, b)


def test_tables_set_in_float64_keep_the_frequencies_they_were_built_from():
    """A caller (exercise 5) sets scaled frequencies and float64 tables: the float32 rebuild keeps them."""
    rope = RotaryEmbedding(16, context_length=64)
    scaled = rope.inv_freq.double() / 4  # position interpolation by 4
    positions = torch.arange(64)
    cos64, sin64 = (t.double() for t in rope_cos_sin(positions, scaled))  # tables a student built in float64
    rope.inv_freq, rope.cos_cached, rope.sin_cached = scaled, cos64, sin64
    cos, sin = rope(positions)
    assert cos.dtype == torch.float32 and rope.inv_freq.dtype == torch.float32
    torch.testing.assert_close(rope.inv_freq, scaled.float())
    torch.testing.assert_close(cos, cos64.float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(sin, sin64.float(), atol=1e-6, rtol=0)


def test_a_half_precision_cast_recomputes_the_frequencies():
    rope = RotaryEmbedding(16, context_length=64)
    exact = rope.inv_freq.clone()
    rope.half()
    rope(torch.arange(8))
    torch.testing.assert_close(rope.inv_freq, exact, atol=0, rtol=0)
