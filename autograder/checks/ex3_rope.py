"""Checks for exercise 3, rotary position embeddings (RoPE).

Graded names (stated at the top of the notebook):
    rope_frequencies(head_dim, base=10000.0) -> Tensor          (head_dim // 2,)  theta_i = base^(-2i/head_dim)
    apply_rope(x, positions, base=10000.0) -> Tensor            x (B, n_head, T, head_dim), positions (T,) integers
    rope_scores(q, k, q_positions, k_positions, base=10000.0)   q (B, n_head, T, head_dim), k (B, n_head, S, head_dim)
                                                                -> (B, n_head, T, S) raw q·k after RoPE

Layout: the "half" pairing of GPT-NeoX and Hugging Face Llama (``transformer_course.positions``):
coordinate i is paired with i + head_dim/2, and pair i turns by ``position * theta_i``.
"""
from __future__ import annotations

import math

import torch

from transformer_course.positions import apply_rope as reference_apply_rope
from transformer_course.positions import rope_cos_sin, rope_inv_freq

from .base import call, diagnose, expect_keys, explain, mismatch, randn, register, seeded

# Frequencies span 1 down to ~1/base: compare relatively. float32 pow agrees with the reference to a few
# ulps (~1e-7 relative); 1e-5 leaves room for a float64 computation cast to float32.
FREQ_RTOL = 1e-5
FREQ_ATOL = 1e-9  # the smallest frequency tested is ~1e-4: 1e-9 is 1e-5 of it


def _rope_atol(max_position: int, scale: float) -> float:
    """Tolerance for rotated values of size ~``scale`` at positions up to ``max_position``.

    The angle ``position * theta`` is rounded in float32 (relative error 2^-24 ~ 6e-8), so a correct
    answer computed in another order (or in float64) differs from the reference by about
    ``scale * max_position * 6e-8``; 20x that, plus 1e-5 for the sums, separates right from wrong
    (every known mistake moves values by O(scale))."""
    return 1e-5 * scale + 20 * scale * max_position * 6e-8


# --------------------------------------------------------------------------------------------------
# Reference and known mistakes, computed with the package on the same inputs
# --------------------------------------------------------------------------------------------------
def _freqs(D: int, base: float) -> torch.Tensor:
    return rope_inv_freq(D, base)[0]  # (D // 2,) float32


def _freq_mistakes(D: int, base: float):
    i = torch.arange(D // 2, dtype=torch.float64)
    return [
        ("the exponent is -i/head_dim instead of -2i/head_dim (use torch.arange(0, head_dim, 2) / head_dim, "
         "or 2 * i / head_dim)", lambda: (base ** (-i / D)).float()),
        ("the frequencies are not inverted: base^(+2i/head_dim) instead of base^(-2i/head_dim) "
         "(theta_i must fall from 1 to about 1/base)", lambda: (base ** (2 * i / D)).float()),
        ("the exponent runs from 0 to exactly -1 (linspace over head_dim/2 points); it must be -2i/head_dim, "
         "whose last value is -(head_dim - 2)/head_dim", lambda: (base ** -torch.linspace(0, 1, D // 2, dtype=torch.float64)).float()),
        ("operator precedence: `base ** -2 * i / head_dim` computes (base^-2)·i/head_dim; put the whole exponent "
         "in parentheses: base ** (-2 * i / head_dim)", lambda: (base ** -2.0 * i / D).float()),
    ]


def _rotate(x, positions, inv_freq, *, table="half", pairing="half", sign=1.0, swap=False):
    """RoPE built from package parts, with the knobs that model the usual mistakes."""
    cos, sin = rope_cos_sin(positions, inv_freq, layout=table)  # (T, D) each
    if swap:
        cos, sin = sin, cos
    return reference_apply_rope(x, cos, sign * sin, pairing)


def _rope_mistakes(x, positions, D, base):
    inv = _freqs(D, base)
    i = torch.arange(D // 2, dtype=torch.float64)
    T = x.shape[-2]
    return [
        ("coordinates are paired as neighbours (2i, 2i+1), the interleaved layout; this exercise uses the half "
         "layout: pair coordinate i with i + head_dim/2 (x1, x2 = x.chunk(2, dim=-1))",
         lambda: _rotate(x, positions, inv, table="interleaved", pairing="interleaved")),
        ("the cos/sin tables repeat each angle twice side by side (repeat_interleave) while the rotation pairs "
         "i with i + head_dim/2: build the tables as torch.cat((angles, angles), dim=-1)",
         lambda: _rotate(x, positions, inv, table="interleaved", pairing="half")),
        ("the rotation pairs neighbours (2i, 2i+1) but the cos/sin tables are in the half layout: pair "
         "coordinate i with i + head_dim/2, as rotate_half does",
         lambda: _rotate(x, positions, inv, table="half", pairing="interleaved")),
        ("the rotation goes the wrong way (by -theta): rotate_half(x) must be cat(-x2, x1), and the result "
         "x*cos + rotate_half(x)*sin", lambda: _rotate(x, positions, inv, sign=-1.0)),
        ("cos and sin are swapped: the result is x*cos + rotate_half(x)*sin",
         lambda: _rotate(x, positions, inv, swap=True)),
        ("positions are off by one (they start at 1, or you add 1): use the positions as given",
         lambda: _rotate(x, positions + 1, inv)),
        ("`positions` is ignored: the angles come from torch.arange(T) instead of the positions passed in",
         lambda: _rotate(x, torch.arange(T), inv)),
        ("the frequency exponent is -i/head_dim instead of -2i/head_dim",
         lambda: _rotate(x, positions, (base ** (-i / D)).float())),
        ("the frequencies are not inverted: base^(+2i/head_dim) instead of base^(-2i/head_dim)",
         lambda: _rotate(x, positions, (base ** (2 * i / D)).float())),
        ("the `base` argument is ignored (10000 is used whatever base is passed)",
         lambda: _rotate(x, positions, _freqs(D, 10000.0))),
    ]


# --------------------------------------------------------------------------------------------------
# Part 1: the frequencies
# --------------------------------------------------------------------------------------------------
@register("ex3.frequencies", "RoPE frequencies theta_i = base^(-2i/head_dim)",
          where="the `rope_frequencies` cell (part 1)")
class Frequencies:
    @staticmethod
    def run(student, D=16, base=10000.0):
        rope_frequencies = student.get("rope_frequencies", "(head_dim, base=10000.0)")
        return {"default_base": torch.as_tensor(call(rope_frequencies, 8)),
                "given_base": torch.as_tensor(call(rope_frequencies, D, base=base))}

    @staticmethod
    def judge(got, D=16, base=10000.0):
        missing = expect_keys(got, ["default_base", "given_base"])
        if missing:
            return missing
        problems = []
        for key, d, b, shown in (("default_base", 8, 10000.0, "rope_frequencies(8)"),
                                ("given_base", D, base, f"rope_frequencies({D}, base={base:g})")):
            want = _freqs(d, b)
            problem = mismatch(got[key], want, shown, atol=FREQ_ATOL, rtol=FREQ_RTOL)
            if problem:
                hint = diagnose(got[key], _freq_mistakes(d, b), atol=1e-6)
                if hint is None and got[key].shape == (d,):
                    hint = f"it returns head_dim = {d} values; there is one frequency per pair: head_dim // 2 = {d // 2}"
                problems.append(explain(problem, hint))
        return problems


# --------------------------------------------------------------------------------------------------
# Part 2: applying RoPE
# --------------------------------------------------------------------------------------------------
def _x(seed, B, H, T, D):
    return randn(seeded(seed), B, H, T, D)


@register("ex3.apply_rope", "apply_rope in the half layout", where="the `apply_rope` cell (part 2)")
class ApplyRope:
    @staticmethod
    def run(student, seed=0, B=2, H=3, T=5, D=8, start=7, base=10000.0):
        apply_rope = student.get("apply_rope", "(x, positions, base=10000.0)")
        x = _x(seed, B, H, T, D)
        out = {"from_zero": call(apply_rope, x, torch.arange(T), base=base),
               "from_start": call(apply_rope, x, torch.arange(start, start + T), base=base)}
        out["x_after"] = x  # the input must come back unchanged: RoPE returns a new tensor
        return out

    @staticmethod
    def judge(got, seed=0, B=2, H=3, T=5, D=8, start=7, base=10000.0):
        missing = expect_keys(got, ["from_zero", "from_start", "x_after"])
        if missing:
            return missing
        x = _x(seed, B, H, T, D)
        atol = _rope_atol(start + T, scale=4.0)  # N(0, 1) entries: a pair's length stays below ~4
        problems = []
        if mismatch(got["x_after"], x, "x", atol=0.0):
            problems.append("apply_rope changed its input x in place; return a new tensor and leave x as it was "
                            "(q and k are used again after RoPE)")
        for key, positions in (("from_zero", torch.arange(T)), ("from_start", torch.arange(start, start + T))):
            want = _rotate(x, positions, _freqs(D, base))
            shown = f"apply_rope(x, torch.arange({positions[0]}, {positions[0] + T}), base={base:g})"
            problem = mismatch(got[key], want, shown, atol=atol)
            if problem:
                problems.append(explain(problem, diagnose(got[key], _rope_mistakes(x, positions, D, base), atol=atol)))
        return problems


# --------------------------------------------------------------------------------------------------
# Part 3: scores after RoPE depend on m - n only
# --------------------------------------------------------------------------------------------------
def _qk(seed, B, H, T, D):
    gen = seeded(seed + 1000)
    return randn(gen, B, H, T, D), randn(gen, B, H, T, D)


def _scores(q, k, qp, kp, inv, *, rotate_q=True, rotate_k=True):
    qr = _rotate(q, qp, inv) if rotate_q else q
    kr = _rotate(k, kp, inv) if rotate_k else k
    return qr @ kr.transpose(-2, -1)  # (B, H, T, S)


def _score_mistakes(q, k, qp, kp, inv, D):
    return [
        ("k is not rotated: apply RoPE to both q (at q_positions) and k (at k_positions)",
         lambda: _scores(q, k, qp, kp, inv, rotate_k=False)),
        ("q is not rotated: apply RoPE to both q (at q_positions) and k (at k_positions)",
         lambda: _scores(q, k, qp, kp, inv, rotate_q=False)),
        ("k is rotated with the query positions: rotate k with k_positions",
         lambda: _scores(q, k, qp, qp, inv)),
        ("q is rotated with the key positions: rotate q with q_positions",
         lambda: _scores(q, k, kp, kp, inv)),
        ("the scores are transposed: entry [t, s] must be q_t · k_s (q @ k.transpose(-2, -1))",
         lambda: _scores(q, k, qp, kp, inv).transpose(-2, -1)),
        ("the scores are divided by sqrt(head_dim); return the raw dot products q·k",
         lambda: _scores(q, k, qp, kp, inv) / math.sqrt(D)),
        ("a softmax is applied; return the raw dot products q·k, not attention weights",
         lambda: torch.softmax(_scores(q, k, qp, kp, inv), dim=-1)),
    ]


@register("ex3.rope_scores", "q·k after RoPE depends only on the relative position",
          where="the `rope_scores` cell (part 3)")
class RopeScores:
    @staticmethod
    def run(student, seed=0, B=1, H=2, T=6, D=8, q_start=4, shift=50, base=10000.0):
        rope_scores = student.get("rope_scores", "(q, k, q_positions, k_positions, base=10000.0)")
        q, k = _qk(seed, B, H, T, D)
        qp, kp = torch.arange(q_start, q_start + T), torch.arange(T)
        return {"scores": call(rope_scores, q, k, qp, kp, base=base),
                "shifted": call(rope_scores, q, k, qp + shift, kp + shift, base=base)}

    @staticmethod
    def judge(got, seed=0, B=1, H=2, T=6, D=8, q_start=4, shift=50, base=10000.0):
        missing = expect_keys(got, ["scores", "shifted"])
        if missing:
            return missing
        q, k = _qk(seed, B, H, T, D)
        qp, kp = torch.arange(q_start, q_start + T), torch.arange(T)
        inv = _freqs(D, base)
        # A score sums head_dim products of N(0, 1) numbers, each off by the angle's rounding error.
        atol = _rope_atol(q_start + T + shift, scale=4.0 * D)
        problems = []
        for key, s in (("scores", 0), ("shifted", shift)):
            want = _scores(q, k, qp + s, kp + s, inv)
            shown = f"rope_scores(q, k, q_positions={int(qp[0]) + s}.., k_positions={int(kp[0]) + s}..)"
            problem = mismatch(got[key], want, shown, atol=atol)
            if problem:
                problems.append(explain(problem, diagnose(got[key], _score_mistakes(q, k, qp + s, kp + s, inv, D), atol=atol)))
        # The property itself, on the student's own numbers: shifting both positions changes nothing.
        a, b = got["scores"], got["shifted"]
        if a.shape == b.shape and a.dtype.is_floating_point and torch.isfinite(a).all() and torch.isfinite(b).all():
            if not torch.allclose(a.double(), b.double(), atol=atol):
                err = (a.double() - b.double()).abs().max().item()
                problems.append(
                    f"shifting both q_positions and k_positions by {shift} changed your scores by up to {err:.3g}: "
                    "after RoPE, q_m · k_n must depend on m - n only. Rotate q by its own positions and k by its "
                    "own, with the same frequencies")
        if problems:
            problems.append("if ex3.apply_rope fails too, fix apply_rope first: rope_scores is usually built on it")
        return problems
