"""Checks for exercise 3, rotary position embeddings (RoPE).

Graded names (stated at the top of the notebook):
    rope_frequencies(head_dim, base=10000.0) -> Tensor          (head_dim // 2,) float32, theta_i = base^(-2i/head_dim)
    apply_rope(x, positions, base=10000.0) -> Tensor            x (B, n_head, T, head_dim) float32, positions (T,)
                                                                integers (any integer dtype, need not start at 0)
    rope_scores(q, k, q_positions, k_positions, base=10000.0)   q (B, n_head, T, head_dim), k (B, n_head, S, head_dim)
                                                                -> (B, n_head, T, S) raw q·k after RoPE

Layout: the "half" pairing of GPT-NeoX and Hugging Face Llama (``transformer_course.positions``):
coordinate i is paired with i + head_dim/2, and pair i turns by ``position * theta_i``.

Each part uses the previous one by name (apply_rope calls rope_frequencies, rope_scores calls apply_rope), so
parts 2 and 3 are run twice: with the student's earlier parts and with the grader's references substituted
(``base.own_and_alone``); a part right with the references passes with a note.
Every check uses a base other than 10000 somewhere (a visible one too), and the default base once.
The spec fixes x to float32, so no other dtype of x is graded; the frequencies must be float32 (spec'd), and
positions come as int64 and as int32.
"""
from __future__ import annotations

import math

import torch

from transformer_course.positions import apply_rope as package_apply_rope
from transformer_course.positions import rope_cos_sin, rope_inv_freq

from .base import call, diagnose, explain, judge_own_and_alone, mismatch, own_and_alone, randn, register, seeded

# Frequencies span 1 down to ~1/base: compare relatively. float32 pow agrees with the reference to a few
# ulps (~1e-7 relative); 1e-5 leaves room for a float64 computation cast to float32, or exp(-2i ln(base)/d).
FREQ_RTOL = 1e-5
FREQ_ATOL = 1e-9  # the smallest frequency tested is ~1e-5 (base 500000): 1e-9 is 1e-4 of it


def _rope_atol(max_position: int, scale: float) -> float:
    """Tolerance for rotated values of size ~``scale`` at positions up to ``max_position``.

    The angle ``position * theta`` is rounded in float32 (relative error 2^-24 ~ 6e-8), so a correct
    answer computed in another order (or in float64) differs from the reference by about
    ``scale * max_position * 6e-8``; 20x that, plus 1e-5 for the sums, separates right from wrong
    (every known mistake moves values by O(scale))."""
    return 1e-5 * scale + 20 * scale * max_position * 6e-8


# --------------------------------------------------------------------------------------------------
# References (put in the student's namespace to judge a part on its own) and functional models
# --------------------------------------------------------------------------------------------------
def _freqs(D: int, base: float) -> torch.Tensor:
    return rope_inv_freq(D, base)[0]  # (D // 2,) float32


def reference_rope_frequencies(head_dim, base=10000.0):
    return _freqs(head_dim, base)


def _rotate(x, positions, inv_freq, *, table="half", pairing="half", sign=1.0, swap=False):
    """RoPE built from package parts, with the knobs that model the usual mistakes."""
    cos, sin = rope_cos_sin(positions, inv_freq, layout=table)  # (T, D) each
    if swap:
        cos, sin = sin, cos
    return package_apply_rope(x, cos, sign * sin, pairing)


def reference_apply_rope(x, positions, base=10000.0):
    return _rotate(x, positions, _freqs(x.shape[-1], base))


def _hand_rotate(x, positions, inv_freq, *, halves="chunk", rotated="right"):
    """x * cos + r(x) * sin with the half-layout tables, written out to model mistakes in r:
    halves="even-odd": x1, x2 = x[..., ::2], x[..., 1::2] (the interleaved split) recombined with torch.cat;
    rotated="no-minus": r(x) = cat(x2, x1), the minus sign lost."""
    cos, sin = rope_cos_sin(positions, inv_freq)  # (T, D)
    D = x.shape[-1]
    x1, x2 = (x[..., : D // 2], x[..., D // 2:]) if halves == "chunk" else (x[..., ::2], x[..., 1::2])
    r = torch.cat((-x2, x1), dim=-1) if rotated == "right" else torch.cat((x2, x1), dim=-1)
    return x * cos + r * sin


def _freq_mistakes(D: int, base: float):
    i = torch.arange(D // 2, dtype=torch.float64)
    return [
        ("the exponent is -i/head_dim instead of -2i/head_dim (use torch.arange(0, head_dim, 2) / head_dim, "
         "or 2 * i / head_dim)", lambda: (base ** (-i / D)).float()),
        ("the frequencies are not inverted: base^(+2i/head_dim) instead of base^(-2i/head_dim) "
         "(theta_i must fall from 1 to about 1/base)", lambda: (base ** (2 * i / D)).float()),
        ("the exponent runs from 0 to exactly -1 (linspace over head_dim/2 points); it must be -2i/head_dim, "
         "whose last value is -(head_dim - 2)/head_dim",
         lambda: (base ** -torch.linspace(0, 1, D // 2, dtype=torch.float64)).float()),
        ("operator precedence: `base ** -2 * i / head_dim` computes (base^-2)·i/head_dim; put the whole exponent "
         "in parentheses: base ** (-2 * i / head_dim)", lambda: (base ** -2.0 * i / D).float()),
        ("the exponent is computed with integer division (//), so it is 0 and every theta_i is 1: divide with /",
         lambda: torch.ones(D // 2)),
        ("the exponent is divided by head_dim/2 instead of head_dim: theta_i = base^(-2i/head_dim), with "
         "2i running over 0, 2, ..., head_dim - 2", lambda: (base ** (-4 * i / D)).float()),
        ("i starts at 1 (the paper numbers the pairs from 1 and writes 2(i - 1)): theta_0 must be base^0 = 1; "
         "use torch.arange(0, head_dim, 2)", lambda: (base ** (-(2 * i + 2) / D)).float()),
        ("the `base` argument is ignored (10000 is used whatever base is passed)",
         lambda: _freqs(D, 10000.0) if base != 10000.0 else None),
    ]


def _rope_mistakes(x, positions, D, base):
    inv = _freqs(D, base)
    i = torch.arange(D // 2, dtype=torch.float64)
    T = x.shape[-2]
    consecutive = bool(torch.equal(positions - positions[0], torch.arange(T)))  # then some mistakes coincide
    return [
        ("coordinates are paired as neighbours (2i, 2i+1), the interleaved layout (Meta's complex-number code); "
         "this exercise uses the half layout: pair coordinate i with i + head_dim/2 (x1, x2 = x.chunk(2, dim=-1))",
         lambda: _rotate(x, positions, inv, table="interleaved", pairing="interleaved")),
        ("the cos/sin tables repeat each angle twice side by side (repeat_interleave, or stack + flatten) while "
         "the rotation pairs i with i + head_dim/2: build the tables as torch.cat((angles, angles), dim=-1)",
         lambda: _rotate(x, positions, inv, table="interleaved", pairing="half")),
        ("the rotation pairs neighbours (2i, 2i+1) but the cos/sin tables are in the half layout: pair "
         "coordinate i with i + head_dim/2, as rotate_half does",
         lambda: _rotate(x, positions, inv, table="half", pairing="interleaved")),
        ("x1, x2 are the even and odd coordinates (x[..., ::2], x[..., 1::2]) but are put back with torch.cat: "
         "in the half layout they are the two halves, x1, x2 = x.chunk(2, dim=-1)",
         lambda: _hand_rotate(x, positions, inv, halves="even-odd")),
        ("the rotation goes the wrong way (by -theta): rotate_half(x) must be cat(-x2, x1), and the result "
         "x*cos + rotate_half(x)*sin", lambda: _rotate(x, positions, inv, sign=-1.0)),
        ("rotate_half lost its minus sign: it must be cat(-x2, x1), not cat(x2, x1) (a quarter turn, not a swap)",
         lambda: _hand_rotate(x, positions, inv, rotated="no-minus")),
        ("cos and sin are swapped: the result is x*cos + rotate_half(x)*sin",
         lambda: _rotate(x, positions, inv, swap=True)),
        ("positions are off by one (they start at 1, or you add 1): use the positions as given",
         lambda: _rotate(x, positions + 1, inv)),
        ("`positions` is ignored: the angles come from torch.arange(T) instead of the positions passed in"
         + ("" if not consecutive else " (or the positions are shifted to start at 0: use them as given)"),
         lambda: _rotate(x, torch.arange(T), inv)),
        ("the positions are shifted to start at 0 (positions - positions[0]): RoPE needs the absolute positions "
         "as given", lambda: None if consecutive else _rotate(x, positions - positions[0], inv)),
        ("the positions are assumed consecutive (positions[0] + torch.arange(T)): use every position as given, "
         "positions[t] for row t", lambda: None if consecutive else _rotate(x, positions[0] + torch.arange(T), inv)),
        ("the frequency exponent is -i/head_dim instead of -2i/head_dim",
         lambda: _rotate(x, positions, (base ** (-i / D)).float())),
        ("the frequencies are not inverted: base^(+2i/head_dim) instead of base^(-2i/head_dim)",
         lambda: _rotate(x, positions, (base ** (2 * i / D)).float())),
        ("the `base` argument is ignored (10000 is used whatever base is passed; pass base on to "
         "rope_frequencies)", lambda: _rotate(x, positions, _freqs(D, 10000.0)) if base != 10000.0 else None),
    ]


# --------------------------------------------------------------------------------------------------
# Part 1: the frequencies
# --------------------------------------------------------------------------------------------------
def _diagnose_relative(got, want, mistakes):
    """``diagnose`` on the ratio to the reference: the wrong frequencies span many orders of magnitude
    (base^(+2i/d) reaches ~base), where a float32 answer is off by more than any absolute tolerance."""
    if not (isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype.is_floating_point):
        return diagnose(got, mistakes, atol=1e-6)
    w = want.double()
    ratios = [(hint, lambda wrong=wrong: wrong().double() / w) for hint, wrong in mistakes]
    return diagnose(got.double() / w, ratios, atol=1e-4)  # float32 rounding moves a ratio by ~1e-7


@register("ex3.frequencies", "RoPE frequencies theta_i = base^(-2i/head_dim)",
          where="the `rope_frequencies` cell (part 1)",
          params=dict(D=16, base=500000.0), outputs=("default_base", "given_base"))
class Frequencies:
    @staticmethod
    def run(student, p):
        rope_frequencies = student.get("rope_frequencies", "(head_dim, base=10000.0)")
        return {"default_base": torch.as_tensor(call(rope_frequencies, 8)),
                "given_base": torch.as_tensor(call(rope_frequencies, p.D, base=p.base))}

    @staticmethod
    def judge(got, p):
        problems = []
        for key, d, b, shown in (("default_base", 8, 10000.0, "rope_frequencies(8)"),
                                 ("given_base", p.D, p.base, f"rope_frequencies({p.D}, base={p.base:g})")):
            want = _freqs(d, b)
            problem = mismatch(got[key], want, shown, atol=FREQ_ATOL, rtol=FREQ_RTOL)
            if problem:
                hint = _diagnose_relative(got[key], want, (_freq_mistakes(d, b)))
                if hint is None and got[key].shape == (d,):
                    hint = f"it returns head_dim = {d} values; there is one frequency per pair: head_dim // 2 = {d // 2}"
                problems.append(explain(problem, hint))
            elif got[key].dtype != torch.float32:
                problems.append(f"{shown} returns {got[key].dtype}; the frequencies must be a float32 tensor "
                                "(torch.arange(0, head_dim, 2, dtype=torch.float32), or .float() at the end)")
        return problems


# --------------------------------------------------------------------------------------------------
# Part 2: applying RoPE
# --------------------------------------------------------------------------------------------------
def _x(p):
    return randn(seeded(p.seed), p.B, p.H, p.T, p.D)  # (B, n_head, T, head_dim)


def _start_positions(p):
    """Every other position from p.start, as int32: the spec allows any integer positions, in any integer
    dtype, and gaps tell a position ignored from one shifted to start at 0."""
    return torch.arange(p.start, p.start + 2 * p.T, 2, dtype=torch.int32)


def _judge_apply(outs, p):
    """The problems of one run of apply_rope: ``from_zero`` (default base), ``from_start`` (base p.base, int32
    positions p.start, p.start + 2, ...), ``x_after`` (the input after the calls)."""
    x = _x(p)
    atol = _rope_atol(p.start + 2 * p.T, scale=4.0)  # N(0, 1) entries: a pair's length stays below ~4
    problems = []
    if mismatch(outs["x_after"], x, "x", atol=0.0):
        problems.append("apply_rope changed its input x in place; return a new tensor and leave x as it was "
                        "(q and k are used again after RoPE)")
    for key, positions, base in (("from_zero", torch.arange(p.T), 10000.0),
                                 ("from_start", _start_positions(p), p.base)):
        want = _rotate(x, positions, _freqs(p.D, base))
        shown = (f"apply_rope(x, torch.arange({int(positions[0])}, {int(positions[-1]) + 1}"
                 + (", 2, dtype=torch.int32)" if key == "from_start" else ")")
                 + (")" if key == "from_zero" else f", base={base:g})"))
        problem = mismatch(outs[key], want, shown, atol=atol)
        if problem:
            mistakes = (_rope_mistakes(x, positions.long(), p.D, base))
            problems.append(explain(problem, diagnose(outs[key], mistakes, atol=atol)))
    return problems


@register("ex3.apply_rope", "apply_rope in the half layout", where="the `apply_rope` cell (part 2)",
          params=dict(seed=0, B=2, H=3, T=5, D=8, start=7, base=500.0),
          outputs=("from_zero", "from_start", "x_after", "alone_from_zero", "alone_from_start", "alone_x_after",
                   "own_failed", "alone_failed"))
class ApplyRope:
    @staticmethod
    def run(student, p):
        apply_rope = student.get("apply_rope", "(x, positions, base=10000.0)")

        def compute():
            x = _x(p)
            out = {"from_zero": call(apply_rope, x.clone(), torch.arange(p.T)),  # the default base, 10000
                   "from_start": call(apply_rope, x, _start_positions(p), base=p.base)}
            out["x_after"] = x  # the input must come back unchanged: RoPE returns a new tensor
            return out

        return own_and_alone(student, compute, rope_frequencies=reference_rope_frequencies)

    @staticmethod
    def judge(got, p):
        return judge_own_and_alone(got, lambda outs: _judge_apply(outs, p), "apply_rope", "rope_frequencies")


# --------------------------------------------------------------------------------------------------
# Part 3: scores after RoPE depend on m - n only
# --------------------------------------------------------------------------------------------------
def _qk(p, S):
    gen = seeded(p.seed + 1000)
    return randn(gen, p.B, p.H, p.T, p.D), randn(gen, p.B, p.H, S, p.D)  # q (B, H, T, D), k (B, H, S, D)


def _scores(q, k, qp, kp, inv, *, rotate_q=True, rotate_k=True):
    qr = _rotate(q, qp, inv) if rotate_q else q
    kr = _rotate(k, kp, inv) if rotate_k else k
    return qr @ kr.transpose(-2, -1)  # (B, H, T, S)


def _score_mistakes(q, k, qp, kp, D, base):
    inv = _freqs(D, base)
    return ([
        ("k is not rotated: apply RoPE to both q (at q_positions) and k (at k_positions)",
         lambda: _scores(q, k, qp, kp, inv, rotate_k=False)),
        ("q is not rotated: apply RoPE to both q (at q_positions) and k (at k_positions)",
         lambda: _scores(q, k, qp, kp, inv, rotate_q=False)),
        # rotating both with the same positions cancels out (R_m^T R_m = I): one model covers both slips
        ("q and k are rotated with the same positions (k is rotated with the query positions, or q with the key "
         "positions, or neither is rotated), so the rotations cancel and the scores are the plain q·k: rotate q "
         "with q_positions and k with k_positions", lambda: _scores(q, k, qp, qp, inv)),
        ("the scores are transposed: entry [t, s] must be q_t · k_s (q @ k.transpose(-2, -1))",
         lambda: _scores(q, k, qp, kp, inv).transpose(-2, -1)),
        ("the scores are divided by sqrt(head_dim); return the raw dot products q·k",
         lambda: _scores(q, k, qp, kp, inv) / math.sqrt(D)),
        ("a softmax is applied; return the raw dot products q·k, not attention weights",
         lambda: torch.softmax(_scores(q, k, qp, kp, inv), dim=-1)),
        ("`base` is not passed on to apply_rope, so the rotation uses 10000 whatever base is given: "
         "apply_rope(q, q_positions, base)",
         lambda: _scores(q, k, qp, kp, _freqs(D, 10000.0)) if base != 10000.0 else None),
        ("only the matching rows are multiplied ((q * k).sum(-1) gives q_t · k_t): every query must meet every "
         "key, q_rot @ k_rot.transpose(-2, -1)", lambda: (_rotate(q, qp, inv) * _rotate(k, kp, inv)).sum(-1)),
    ])


def _score_cases(p):
    """(output, q_positions, k_positions, base, S) of each call: q from q_start, k from k_start; the same
    shifted by p.shift; S != T keys; and once with the default base."""
    qp, kp = torch.arange(p.q_start, p.q_start + p.T), torch.arange(p.k_start, p.k_start + p.T)
    more = torch.arange(p.k_start, p.k_start + p.T + 3)  # S = T + 3 keys
    return [("scores", qp, kp, p.base, p.T), ("shifted", qp + p.shift, kp + p.shift, p.base, p.T),
            ("more_keys", qp, more, p.base, p.T + 3), ("default_base", qp, kp, 10000.0, p.T)]


def _judge_scores(outs, p):
    problems = []
    for key, qp, kp, base, S in _score_cases(p):
        if key == "more_keys" and int(outs["more_keys_raised"]):
            problems.append(
                f"rope_scores raised an error for T={p.T} queries and S={S} keys, though it runs when S = T: "
                "q is (B, n_head, T, head_dim) with T positions and k is (B, n_head, S, head_dim) with S positions; "
                "the usual cause is that k is rotated with the query positions (or q with the key positions)")
            continue
        q, k = _qk(p, S)
        # A score sums head_dim products of N(0, 1) numbers, each off by the angle's rounding error.
        atol = _rope_atol(int(max(qp.max(), kp.max())) + 1, scale=4.0 * p.D)
        want = _scores(q, k, qp, kp, _freqs(p.D, base))
        shown = (f"rope_scores(q, k, q_positions={int(qp[0])}..{int(qp[-1])}, k_positions={int(kp[0])}..{int(kp[-1])}"
                 + (")" if key == "default_base" else f", base={base:g})"))
        problem = mismatch(outs[key], want, shown, atol=atol)
        if problem:
            problems.append(explain(problem, diagnose(outs[key], _score_mistakes(q, k, qp, kp, p.D, base), atol=atol)))
            if key == "scores":
                return problems  # the other calls would repeat the same mistake
    # The property itself, on the student's own numbers: shifting both positions changes nothing.
    a, b = outs["scores"], outs["shifted"]
    atol = _rope_atol(p.q_start + p.T + p.shift, scale=4.0 * p.D)
    if a.shape == b.shape and a.dtype.is_floating_point and torch.isfinite(a).all() and torch.isfinite(b).all():
        if not torch.allclose(a.double(), b.double(), atol=atol):
            err = (a.double() - b.double()).abs().max().item()
            problems.append(
                f"shifting both q_positions and k_positions by {p.shift} changed your scores by up to {err:.3g}: "
                "after RoPE, q_m · k_n must depend on m - n only. Rotate q by its own positions and k by its "
                "own, with the same frequencies")
    return problems


@register("ex3.rope_scores", "q·k after RoPE depends only on the relative position",
          where="the `rope_scores` cell (part 3)",
          params=dict(seed=0, B=1, H=2, T=6, D=8, q_start=4, k_start=1, shift=50, base=500.0),
          outputs=tuple(f"{prefix}{key}" for prefix in ("", "alone_")
                        for key in ("scores", "shifted", "more_keys", "default_base", "more_keys_raised"))
          + ("own_failed", "alone_failed"))
class RopeScores:
    @staticmethod
    def run(student, p):
        rope_scores = student.get("rope_scores", "(q, k, q_positions, k_positions, base=10000.0)")

        def compute():
            out = {"more_keys_raised": torch.tensor(0)}
            for key, qp, kp, base, S in _score_cases(p):
                q, k = _qk(p, S)
                try:
                    out[key] = (call(rope_scores, q, k, qp, kp) if key == "default_base"
                                else call(rope_scores, q, k, qp, kp, base=base))
                except Exception:  # noqa: BLE001 - S != T: explained by the judge (square calls raise as usual)
                    if key != "more_keys":
                        raise
                    out[key], out["more_keys_raised"] = torch.empty(0), torch.tensor(1)
            return out

        return own_and_alone(student, compute, apply_rope=reference_apply_rope,
                             rope_frequencies=reference_rope_frequencies)

    @staticmethod
    def judge(got, p):
        return judge_own_and_alone(got, lambda outs: _judge_scores(outs, p), "rope_scores",
                                   "apply_rope (and the rope_frequencies it calls)")
