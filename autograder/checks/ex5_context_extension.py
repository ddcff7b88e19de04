"""Checks for exercise 5, stretching the shipped RoPE model past its training length.

Graded names (stated at the top of the notebook):
    interpolated_inv_freq(inv_freq, factor) -> Tensor        position interpolation: (head_dim // 2,)
    ntk_inv_freq(head_dim, base=10000.0, factor=1.0) -> Tensor   NTK-aware scaling: (head_dim // 2,)
    apply_scaling(model, kind, factor) -> TransformerLM       kind "linear" (PI) or "ntk"; a new model,
                                                              the one passed in is left unchanged
    bits_per_byte(model, sequences) -> float                  sequences: list of 1-D token tensors
    passkey_accuracy(model, samples) -> float                 samples: list of data.PasskeySample; the share
                                                              decoded exactly by greedy decoding

The model is ``transformer_course.pretrained.load("course-llama")`` (RoPE, half layout, head_dim 32,
trained at L = 256 tokens). Its RoPE lives in ``model.rope``: buffers ``inv_freq`` and the cached
tables ``cos_cached``, ``sin_cached`` (context_length, head_dim); an input longer than the tables is computed
from ``inv_freq`` at every position. So apply_scaling is judged on what ``model.rope`` gives at the positions
0..L-1 (read from the tables) and L..2L-1 (from ``inv_freq``), and on the logits of an input longer than L.
A second, small ``TransformerLM`` with another head_dim, base and context length checks that apply_scaling
reads them from ``model.rope`` (the shipped model has the default base, 10000, so it cannot tell).

Part 3 uses parts 1 and 2 by name: it is judged a second time with the reference ``interpolated_inv_freq`` and
``ntk_inv_freq`` substituted (``Student.substitute``), and passes when that run is right (``base.on_its_own``).
bits_per_byte and passkey_accuracy are given the shipped weights in a model with dropout, in training mode (as
after fine-tuning): two calls that differ are told apart (``model.eval()`` missing) before any other diagnosis.

passkey_accuracy is called on each of the check's prompts alone (its value then tells right from wrong for
every prompt, and digit accuracy, a percentage or a cut prompt from exact match) and on all of them at once
(which tells a batch padded to the longest prompt, or a count, from the share). The prompts are at the training
length and past it, where the model retrieves only some keys, and the hidden tests use keys of other lengths.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from transformer_course import pretrained
from transformer_course.data import long_documents, passkey_sample
from transformer_course.evaluate import token_losses
from transformer_course.generate import generate
from transformer_course.model import TransformerLM
from transformer_course.positions import RopeScaling, rope_cos_sin, rope_inv_freq

from .base import (StudentError, call, diagnose, explain, finite_number, mismatch, on_its_own, own_and_alone,
                   randomness, register, seeded)

MODEL = "course-llama"
KINDS = ("linear", "ntk")
# Frequencies span 1 down to ~1e-4: compare relatively; float32 pow is exact to a few ulps (~1e-7).
FREQ_RTOL, FREQ_ATOL = 1e-5, 1e-9  # atol: 1e-9 is < 1e-4 of the smallest frequency tested (~1.5e-5)
# cos and sin of angles p * theta_i for p < 2L = 512: float32 rounds an angle near 512 by ~3e-5, and a correct
# answer computed in another order ((p / s) * theta, float64 angles stored in float32) by a few such ulps, so
# correct tables agree to ~1e-4. Every known mistake moves some entry by more than 0.1.
TABLE_ATOL = 5e-4
# Logits of the shipped model are O(10). A correct scaling computed in another order moves the angles by float32
# rounding only, which moves the logits by ~1e-5 at these lengths; every known mistake moves them by more than 1e-2.
LOGIT_ATOL = 1e-3
# Bits per byte from float32 log-probabilities summed over a few hundred tokens agree to ~1e-6; the
# nearest mistake (counting one token too many per sequence) is off by ~1e-2.
BPB_ATOL = 1e-4
# The second model of apply_scaling: random weights (only its RoPE is read), head_dim 64 / 4 = 16, Llama 3's base.
OTHER = dict(name="ex5-check", n_layer=1, n_embd=64, n_head=4, n_kv_head=2, ffn_hidden=128, context_length=48,
             rope_base=500000.0)
OTHER_WHAT = "a second TransformerLM (head_dim 16, RoPE base 500000, context_length 48: the check's, not the shipped one)"
DROPOUT = 0.1  # the model given to bits_per_byte: the shipped weights with dropout, in training mode
UNKNOWN_KIND = "unknown"


@functools.lru_cache(maxsize=1)
def _documents():
    """The held-out documents, read once per process (every case slices them; nothing is given out uncopied)."""
    return long_documents()


def _base_freqs(D: int, base: float) -> torch.Tensor:
    return rope_inv_freq(D, base)[0]  # (D // 2,) float32


def _ntk_ref(D: int, base: float, factor: float) -> torch.Tensor:
    return rope_inv_freq(D, base, RopeScaling("ntk", factor, original_context_length=1))[0]


def _freqs_from_base(D: int, base: float, step: int = 2) -> torch.Tensor:
    """base^(-step * i / D) for i = 0 .. D/2 - 1: step 2 is right, step 1 the missing factor 2. Computed as a
    student computes it, a Python float to a float32 power: a base that overflows float32 (factor^d for d = 128)
    gives the same zeros."""
    return base ** -(torch.arange(D // 2, dtype=torch.float32) * step / D)


def reference_interpolated_inv_freq(inv_freq, factor):
    """The grader's interpolated_inv_freq, substituted to judge apply_scaling on its own."""
    return inv_freq / factor


def reference_ntk_inv_freq(head_dim, base=10000.0, factor=1.0):
    """The grader's ntk_inv_freq, substituted to judge apply_scaling on its own."""
    return _ntk_ref(head_dim, base, factor)


# --------------------------------------------------------------------------------------------------
# Part 1: position interpolation
# --------------------------------------------------------------------------------------------------
@register("ex5.interpolation", "position interpolation: inv_freq / factor",
          where="the `interpolated_inv_freq` cell (part 1)",
          params=dict(D=32, base=10000.0, factor=4.0), outputs=("scaled", "identity", "inv_freq_after"))
class Interpolation:
    @staticmethod
    def run(student, p):
        f = student.get("interpolated_inv_freq", "(inv_freq, factor)")
        inv_freq = _base_freqs(p.D, p.base)
        out = {"scaled": torch.as_tensor(call(f, inv_freq, p.factor)),
               "identity": torch.as_tensor(call(f, _base_freqs(p.D, p.base), 1.0))}
        out["inv_freq_after"] = inv_freq  # must come back unchanged
        return out

    @staticmethod
    def judge(got, p):
        D, base = p.D, p.base
        inv = _base_freqs(D, base)
        problems = []
        if mismatch(got["inv_freq_after"], inv, "inv_freq", atol=0.0):
            problems.append("interpolated_inv_freq changed the inv_freq passed in (in place, e.g. `inv_freq /= factor`): "
                            "return a new tensor; in apply_scaling the tensor passed in is the original model's buffer")
        for key, s in (("scaled", p.factor), ("identity", 1.0)):
            problem = mismatch(got[key], inv / s, f"interpolated_inv_freq(inv_freq, {s:g})", atol=FREQ_ATOL, rtol=FREQ_RTOL)
            if problem:
                hint = diagnose(got[key], [
                    ("the frequencies are multiplied by the factor, which multiplies the positions; position "
                     "interpolation divides the positions by the factor, i.e. inv_freq / factor", lambda: inv * s),
                    ("inv_freq is returned unchanged", lambda: inv),
                    ("the division is a floor division (//), which rounds every frequency below 1 down to 0: "
                     "use true division, inv_freq / factor", lambda: torch.div(inv, s, rounding_mode="floor")),
                    ("every frequency is divided by factor^(d/(d-2)): that exponent belongs to NTK's base, not to PI; "
                     "PI divides every frequency by exactly the factor", lambda: inv / s ** (D / (D - 2))),
                    ("the base was scaled (base * factor) instead of the positions: PI divides every frequency by the factor",
                     lambda: _freqs_from_base(D, base * s)),
                ], atol=1e-6)
                problems.append(explain(problem, hint))
        return problems


# --------------------------------------------------------------------------------------------------
# Part 2: NTK-aware scaling
# --------------------------------------------------------------------------------------------------
def _ntk_mistakes(D: int, base: float, s: float):
    inv = _base_freqs(D, base)
    e = D / (D - 2)
    mistakes = [
        ("the exponent of the factor is d/(d-1); NTK-aware scaling uses base' = base * factor^(d/(d-2)), "
         "so that the lowest frequency (i = d/2 - 1) is divided by exactly the factor",
         lambda: _freqs_from_base(D, base * s ** (D / (D - 1)))),
        ("the exponent of the factor is (d-2)/d; it is d/(d-2): base' = base * factor^(d/(d-2))",
         lambda: _freqs_from_base(D, base * s ** ((D - 2) / D))),
        ("the base is multiplied by the factor without the exponent d/(d-2): base' = base * factor^(d/(d-2))",
         lambda: _freqs_from_base(D, base * s)),
        ("operator precedence: `factor ** head_dim / (head_dim - 2)` is factor^d divided by (d - 2); the exponent "
         "needs parentheses, factor ** (head_dim / (head_dim - 2))", lambda: _freqs_from_base(D, base * s ** D / (D - 2))),
        ("the exponent d/(d-2) is applied to base * factor; only the factor is raised to it: "
         "base' = base * factor ** (d / (d - 2))", lambda: _freqs_from_base(D, (base * s) ** e)),
        ("the exponents are -i/d for i = 0 .. d/2 - 1; they are -2i/d (torch.arange(0, head_dim, 2) / head_dim)",
         lambda: _freqs_from_base(D, base * s ** e, step=1)),
        ("factor^(d/(d-2)) divides every frequency directly; NTK scales the base instead, so that "
         "the highest frequency stays 1 and only the low ones are slowed",
         lambda: inv / s ** e),
        ("every frequency is divided by the factor: that is position interpolation, not NTK",
         lambda: inv / s),
        ("the base is divided by the scale: NTK enlarges the base (base * factor^(d/(d-2)))",
         lambda: _freqs_from_base(D, base / s ** e)),
        ("the frequencies are not inverted: base'^(+2i/d) instead of base'^(-2i/d)",
         lambda: (1 / _ntk_ref(D, base, s).double()).float()),
    ]
    if base != 10000.0:
        mistakes.append((f"the base argument is ignored (10000 is used): base' = base * factor^(d/(d-2)) with the base "
                         f"passed in ({base:g} here)", lambda: _ntk_ref(D, 10000.0, s)))
    return mistakes


@register("ex5.ntk", "NTK-aware frequencies: base * factor^(d/(d-2))", where="the `ntk_inv_freq` cell (part 2)",
          params=dict(D=32, base=10000.0, factor=4.0), outputs=("scaled", "identity"))
class Ntk:
    @staticmethod
    def run(student, p):
        f = student.get("ntk_inv_freq", "(head_dim, base=10000.0, factor=1.0)")
        return {"scaled": torch.as_tensor(call(f, p.D, p.base, p.factor)),
                "identity": torch.as_tensor(call(f, p.D, p.base, 1.0))}

    @staticmethod
    def judge(got, p):
        D, base = p.D, p.base
        problems = []
        for key, s in (("scaled", p.factor), ("identity", 1.0)):
            want = _ntk_ref(D, base, s)
            problem = mismatch(got[key], want, f"ntk_inv_freq({D}, {base:g}, {s:g})", atol=FREQ_ATOL, rtol=FREQ_RTOL)
            if problem:
                hint = diagnose(got[key], _ntk_mistakes(D, base, s), atol=1e-6)
                g = got[key]
                if hint is None and isinstance(g, torch.Tensor) and g.shape == want.shape and torch.isfinite(g).all():
                    hint = (f"check the two ends: theta_0 must stay 1 (yours {float(g[0]):.4g}) and the last frequency "
                            f"must be the original one divided by the factor ({float(want[-1]):.4g}; yours {float(g[-1]):.4g})")
                problems.append(explain(problem, hint))
        return problems


# --------------------------------------------------------------------------------------------------
# Part 3: scaling the shipped model
# --------------------------------------------------------------------------------------------------
def _ids(seed: int, T: int) -> torch.Tensor:
    """(1, T) tokens from a seeded place of a seeded held-out document."""
    docs = _documents()
    gen = seeded(seed)
    _, doc = docs[int(torch.randint(len(docs), (1,), generator=gen))]
    start = int(torch.randint(len(doc) - T, (1,), generator=gen))
    return doc[start:start + T].long()[None]


def _scaling_inputs(p):
    """The shipped model and the (1, T) held-out tokens of a case: the same in both halves."""
    return pretrained.load(MODEL), _ids(p.seed, p.T)


def _other_model(config) -> TransformerLM:
    """The second model: OTHER's shapes and base, seeded random weights (its RoPE is all that is read)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TransformerLM(dataclasses.replace(config, **OTHER)).eval()


def _reads(model, L: int) -> torch.Tensor:
    """What ``model.rope`` gives: cos, sin at the positions 0..L-1 (the cached tables) and L..2L-1 (computed from
    inv_freq), stacked (4, L, head_dim). L is the original model's context length."""
    rope = getattr(model, "rope", None)
    if rope is None:
        raise StudentError("the model apply_scaling returned has no `rope`: return the copy of model, with its "
                           "RoPE module model.rope changed, not another object")
    with torch.no_grad():
        reads = [*rope(torch.arange(L)), *rope(torch.arange(L, 2 * L))]
    if len({tuple(r.shape) for r in reads}) != 1:
        raise StudentError(f"the RoPE of the model apply_scaling returned gives cos/sin of shapes "
                           f"{[tuple(r.shape) for r in reads]} below and past context_length: build cos_cached and "
                           "sin_cached of shape (context_length, head_dim) from the same frequencies as inv_freq")
    return torch.stack([r.float() for r in reads])


def _scaled(apply_scaling, model, kind: str, factor: float):
    scaled = call(apply_scaling, model, kind, factor)
    if not isinstance(scaled, nn.Module):
        raise StudentError(f"apply_scaling(model, {kind!r}, {factor}) returned {type(scaled).__name__}; "
                           "it must return the scaled model (a copy of model with new RoPE frequencies).")
    return scaled


# What one run of apply_scaling gives: the logits (own run only), the RoPE reads (``_reads``) of each scaled model,
# of the model passed in afterwards and of the second model scaled, and what an unknown kind did.
SCALING_OUTPUTS = ("linear", "ntk", "linear_rope", "ntk_rope", "unknown_kind", "original_rope", "other_linear_rope",
                   "other_ntk_rope")


def _scale_everything(student, p, *, logits: bool = True):
    """Every output of one run of apply_scaling (with whatever interpolated_inv_freq / ntk_inv_freq are defined);
    the logits only with ``logits`` (the run with the reference frequencies is judged on the RoPE alone)."""
    apply_scaling = student.get("apply_scaling", "(model, kind, factor)")
    model, ids = _scaling_inputs(p)  # a fresh model each run: a run may have changed the one before
    L = model.config.context_length
    out = {}
    for kind in KINDS:
        scaled = _scaled(apply_scaling, model, kind, p.factor)
        if logits:
            with torch.no_grad():
                out[kind] = scaled.eval()(ids)  # (1, T, vocab)
        out[f"{kind}_rope"] = _reads(scaled, L)
    try:
        call(apply_scaling, model, UNKNOWN_KIND, p.factor)
        out["unknown_kind"] = torch.tensor(0)  # returned something
    except ValueError:
        out["unknown_kind"] = torch.tensor(1)
    except StudentError:
        raise
    except Exception:  # noqa: BLE001 - another error than the ValueError the spec asks for
        out["unknown_kind"] = torch.tensor(2)
    out["original_rope"] = _reads(model, L)  # the model passed in must be left as it was
    other = _other_model(model.config)
    for kind in KINDS:
        out[f"other_{kind}_rope"] = _reads(_scaled(apply_scaling, other, kind, p.factor), OTHER["context_length"])
    return out


def _tables(L: int, table_freq, held_freq, *, layout="half", cos_freq=None, sin_freq=None) -> torch.Tensor:
    """What a RoPE module gives (``_reads``) whose tables hold ``table_freq`` (cos from ``cos_freq``, sin from
    ``sin_freq`` where given, in ``layout``) and whose inv_freq is ``held_freq``."""
    below, past = torch.arange(L), torch.arange(L, 2 * L)
    cos = rope_cos_sin(below, table_freq if cos_freq is None else cos_freq, layout=layout)[0]
    sin = rope_cos_sin(below, table_freq if sin_freq is None else sin_freq, layout=layout)[1]
    return torch.stack((cos, sin, *rope_cos_sin(past, held_freq)))


def _scaled_freqs(kind: str, D: int, base: float, s: float, L: int) -> torch.Tensor:
    freq, attention_factor = rope_inv_freq(D, base, RopeScaling(kind, s, original_context_length=L))
    assert attention_factor == 1.0  # PI and NTK leave the logit scale alone (YaRN would not)
    return freq


def _table_mistakes(kind: str, D: int, base: float, s: float, L: int):
    """The mistakes of apply_scaling, as what the scaled model's RoPE gives (``_reads``)."""
    inv, want = _base_freqs(D, base), _scaled_freqs(kind, D, base, s, L)
    other_kind = _scaled_freqs("ntk" if kind == "linear" else "linear", D, base, s, L)
    mistakes = [
        ("the RoPE of the copy was not changed at all: set rope.inv_freq and rebuild rope.cos_cached and "
         "rope.sin_cached (rope = the copy's model.rope)", lambda: _tables(L, inv, inv)),
        ("cos_cached and sin_cached were not rebuilt: inputs up to context_length read these tables, which still hold "
         "the original frequencies; rebuild both from the new frequencies (inv_freq alone only serves longer inputs)",
         lambda: _tables(L, inv, want)),
        ("rope.inv_freq was not set: inputs longer than context_length are computed from it at every position, so "
         "they still use the original frequencies; set rope.inv_freq to the new frequencies as well as the tables",
         lambda: _tables(L, want, inv)),
        ("only cos_cached was rebuilt: sin_cached still holds the original table; rebuild both",
         lambda: _tables(L, want, want, sin_freq=inv)),
        ("only sin_cached was rebuilt: cos_cached still holds the original table; rebuild both",
         lambda: _tables(L, want, want, cos_freq=inv)),
        ("the factor is applied twice in the tables: their positions are divided by the factor and multiplied by "
         "frequencies that are already scaled; build them from torch.arange(context_length) times the new frequencies",
         lambda: _tables(L, want / s, want)),
        ("the cos/sin tables are in the interleaved layout (angles repeated side by side); the model "
         "pairs coordinate i with i + head_dim/2, so the tables are torch.cat((angles, angles), dim=-1)",
         lambda: _tables(L, want, want, layout="interleaved")),
        (f"kind={kind!r} applies the other method's frequencies: 'linear' is position interpolation "
         "(interpolated_inv_freq), 'ntk' the NTK-aware base (ntk_inv_freq)", lambda: _tables(L, other_kind, other_kind)),
    ]
    if kind == "linear":
        return mistakes + [
            ("the positions are multiplied by the factor instead of divided (PI divides inv_freq by the factor)",
             lambda: _tables(L, inv * s, inv * s)),
            ("the base was scaled (base * factor) instead of the positions: PI divides every frequency by the factor",
             lambda: (lambda f: _tables(L, f, f))(_freqs_from_base(D, base * s))),
        ]
    wrong_base = [("ntk_inv_freq was given the factor as its base (ntk_inv_freq(head_dim, factor)): its second "
                   "argument is the base; call ntk_inv_freq(rope.head_dim, rope.base, factor)",
                   lambda: (lambda f: _tables(L, f, f))(_base_freqs(D, s)))]
    if base != 10000.0:
        wrong_base.append((f"the NTK frequencies use the default base 10000, not the model's ({base:g}): pass "
                           "rope.base to ntk_inv_freq", lambda: (lambda f: _tables(L, f, f))(_ntk_ref(D, 10000.0, s))))
    return mistakes + wrong_base


def _where(got, want, L: int) -> str:
    """Which half of the RoPE reads is wrong, when no known mistake matches."""
    if not (isinstance(got, torch.Tensor) and got.shape == want.shape):
        return ""
    below = torch.allclose(got[:2].double(), want[:2].double(), atol=TABLE_ATOL)
    past = torch.allclose(got[2:].double(), want[2:].double(), atol=TABLE_ATOL)
    if below and not past:
        return f"positions 0..{L - 1} (the tables) are right, those past context_length (computed from rope.inv_freq) are not"
    if past and not below:
        return f"positions from {L} on (computed from rope.inv_freq) are right, those below (cos_cached, sin_cached) are not"
    return ""


def _logits_with(model, ids, inv_freq):
    """Logits of ``model`` with its RoPE tables and ``inv_freq`` built from ``inv_freq``; restored afterwards.

    This is what ``with_rope_scaling`` builds (``RotaryEmbedding`` fills the same buffers with
    ``rope_cos_sin``), without constructing a model per variant: the judge stays fast."""
    rope = model.rope
    saved = rope.inv_freq, rope.cos_cached, rope.sin_cached
    try:
        rope.cos_cached, rope.sin_cached = rope_cos_sin(torch.arange(rope.context_length), inv_freq)
        rope.inv_freq = inv_freq
        with torch.no_grad():
            return model(ids)
    finally:
        rope.inv_freq, rope.cos_cached, rope.sin_cached = saved


def _judge_scaling_set(got, p, model, want_logits):
    """The problems of one run of apply_scaling, as (what they concern, problem) pairs."""
    c = model.config
    L, D, base, s = c.context_length, c.head_dim, c.rope_base, float(p.factor)
    problems = []
    for kind in KINDS:
        want = _tables(L, *(2 * (_scaled_freqs(kind, D, base, s, L),)))
        what = f"the RoPE of apply_scaling(model, {kind!r}, {s:g}) at positions 0..{2 * L - 1}"
        problem = mismatch(got[f"{kind}_rope"], want, what, atol=TABLE_ATOL)
        if problem:
            hint = diagnose(got[f"{kind}_rope"], _table_mistakes(kind, D, base, s, L), atol=TABLE_ATOL)
            problems.append((kind, explain(problem, hint or _where(got[f"{kind}_rope"], want, L))))
            continue
        if want_logits is None:
            continue  # the run with the reference frequencies: judged on the RoPE
        problem = mismatch(got[kind], want_logits[kind], f"logits of apply_scaling(model, {kind!r}, {s:g}) on "
                           f"{p.T} tokens", atol=LOGIT_ATOL)
        if problem:  # not a matter of the frequencies: judged on the student's own run only
            problems.append(("logits", explain(problem, "the RoPE of the scaled model is right but its logits are not: "
                                                    "apply_scaling must change model.rope only, in a copy of the model "
                                                    "with the same weights")))
    unscaled = _tables(L, _base_freqs(D, base), _base_freqs(D, base))
    problem = mismatch(got["original_rope"], unscaled, "the RoPE of the model passed in, after apply_scaling",
                       atol=TABLE_ATOL)
    if problem:
        problems.append(("original", explain(problem, (
            "apply_scaling changed the model passed in: `scaled = model`, or copy.copy(model) (a shallow copy shares "
            "model.rope with the original), or an in-place change of model.rope.inv_freq; scale "
            "copy.deepcopy(model) and return it, so that the original keeps its frequencies"))))
    raised = int(got["unknown_kind"])
    if raised != 1:
        problems.append(("unknown", f"apply_scaling(model, {UNKNOWN_KIND!r}, {s:g}) "
                         f"{'returned a model' if raised == 0 else 'raised another error than ValueError'}: any kind "
                         "other than 'linear' and 'ntk' must raise a ValueError that names the two kinds"))
    L2, D2, base2 = OTHER["context_length"], OTHER["n_embd"] // OTHER["n_head"], OTHER["rope_base"]
    for kind in KINDS:
        if any(tag == kind for tag, _ in problems):
            continue  # the same mistake, said once: the second model tells only what the shipped one cannot
        want = _tables(L2, *(2 * (_scaled_freqs(kind, D2, base2, s, L2),)))
        g = got[f"other_{kind}_rope"]
        problem = mismatch(g, want, f"the RoPE of apply_scaling(m, {kind!r}, {s:g}) with m {OTHER_WHAT}", atol=TABLE_ATOL)
        if problem:
            if isinstance(g, torch.Tensor) and g.dim() == 3 and g.shape[-1] != D2:
                hint = (f"the frequencies were computed for head_dim {g.shape[-1]}, not for this model's {D2}: read "
                        "head_dim (and base) from model.rope, not from the shipped model's numbers")
            else:
                hint = diagnose(g, _table_mistakes(kind, D2, base2, s, L2), atol=TABLE_ATOL) or _where(g, want, L2)
            problems.append((f"other_{kind}", explain(problem, hint)))
    return problems


@register("ex5.apply_scaling", "apply_scaling on the shipped model (PI and NTK)",
          where="the `apply_scaling` cell (part 3)",
          params=dict(seed=0, T=300, factor=2.0),  # T past the training length (256): every position reads inv_freq
          outputs=SCALING_OUTPUTS + ("own_failed", "alone_failed"))
class ApplyScaling:
    @staticmethod
    def run(student, p):
        return own_and_alone(student, lambda: _scale_everything(student, p),
                             alone=lambda: _scale_everything(student, p, logits=False), keys=SCALING_OUTPUTS,
                             interpolated_inv_freq=reference_interpolated_inv_freq,
                             ntk_inv_freq=reference_ntk_inv_freq)

    @staticmethod
    def judge(got, p):
        model, ids = _scaling_inputs(p)
        c = model.config
        want_logits = {kind: _logits_with(model, ids, _scaled_freqs(kind, c.head_dim, c.rope_base, float(p.factor),
                                                                    c.context_length)) for kind in KINDS}
        dependency = {"linear": "interpolated_inv_freq", "other_linear": "interpolated_inv_freq",
                      "original": "interpolated_inv_freq", "ntk": "ntk_inv_freq", "other_ntk": "ntk_inv_freq"}
        if int(got["own_failed"]):
            own = [("", "apply_scaling raised an error with your interpolated_inv_freq / ntk_inv_freq; "
                        "run the test cells of parts 1 and 2 for their messages")]
        else:
            own = _judge_scaling_set(got, p, model, want_logits)
        if int(got["alone_failed"]):
            return [problem for _, problem in own]
        alone = _judge_scaling_set({k[len("alone_"):]: v for k, v in got.items() if k.startswith("alone_")},
                                   p, model, None)
        names = sorted({dependency[tag] for tag, _ in own if tag in dependency}) or \
            ["interpolated_inv_freq", "ntk_inv_freq"]
        verdict = on_its_own([problem for tag, problem in own if tag != "logits"], [problem for _, problem in alone],
                             "apply_scaling", " and ".join(names))
        return [problem for tag, problem in own if tag == "logits"] + verdict


# --------------------------------------------------------------------------------------------------
# Part 4: bits per byte
# --------------------------------------------------------------------------------------------------
def _sequences(seed: int, n_seq: int, L: int):
    """``n_seq`` uint8 slices of held-out documents, of clearly different lengths (so that averaging per
    sequence and per token disagree); the last one is longer than the training length L."""
    docs = _documents()
    gen = seeded(seed + 7)
    out = []
    for j in range(n_seq):
        jitter = int(torch.randint(0, 20, (1,), generator=gen))
        n = L + 24 + jitter if j == n_seq - 1 else 24 + 53 * j + jitter  # tokens, the first one never predicted
        _, doc = docs[int(torch.randint(len(docs), (1,), generator=gen))]
        start = int(torch.randint(len(doc) - n, (1,), generator=gen))
        out.append(doc[start:start + n].clone())  # a copy: the student's code may change it in place
    return out


def _with_dropout(model) -> TransformerLM:
    """``model`` with dropout, in training mode, as a model comes out of fine-tuning: the modules TransformerLM
    builds for ``config.dropout > 0`` (on the embeddings and each block's residual branches), put in place of
    the identities it builds for 0, without initialising a second set of weights."""
    model.config = dataclasses.replace(model.config, dropout=DROPOUT)
    model.emb_dropout = nn.Dropout(DROPOUT)
    for block in model.blocks:
        block.dropout = nn.Dropout(DROPOUT)
    return model.train()


def _per_seq_losses(model, sequences, *, current_token=False, keep=None):
    """Per-sequence next-token losses in nats (the reference: evaluate.token_losses); ``keep`` tokens of each."""
    sequences = [s[:keep] for s in sequences]
    if not current_token:
        return [token_losses(model, s.long()[None])[0] for s in sequences]
    out = []
    for s in sequences:
        ids = s.long()[None]
        with torch.no_grad():
            logits = model(ids[:, :-1])
        out.append(F.cross_entropy(logits[0], ids[0, :-1], reduction="none"))  # predicts the token it reads
    return out


def _value(value) -> torch.Tensor:
    """A number (a float, or a tensor of one element) as a 0-d float64 tensor; anything else as NaN."""
    if isinstance(value, torch.Tensor):
        value = value.detach().reshape(-1)[0].item() if value.numel() == 1 else float("nan")
    try:
        return torch.tensor(float(value), dtype=torch.float64)
    except (TypeError, ValueError):
        return torch.tensor(float("nan"), dtype=torch.float64)


@register("ex5.bits_per_byte", "bits per byte of a model over sequences", where="the `bits_per_byte` cell (part 4)",
          params=dict(seed=0, n_seq=3), outputs=("bits_per_byte", "once", "again"))
class BitsPerByte:
    @staticmethod
    def run(student, p):
        bits_per_byte = student.get("bits_per_byte", "(model, sequences)")
        shipped = pretrained.load(MODEL)
        model, seqs = _with_dropout(shipped), _sequences(p.seed, p.n_seq, shipped.config.context_length)
        try:  # the shortest sequence twice: dropout left on is told apart, cheaply
            once, again = call(bits_per_byte, model, seqs[:1]), call(bits_per_byte, model, seqs[:1])
            value = call(bits_per_byte, model, seqs)
        except (ValueError, TypeError, RuntimeError, IndexError) as err:
            if "uint8" in str(err) or "Byte" in str(err):
                raise StudentError(f"bits_per_byte failed on uint8 sequences ({err}): the tokens come as bytes "
                                   "(uint8); convert each sequence with .long() before the model and "
                                   "F.cross_entropy") from None
            raise
        return {"bits_per_byte": _value(value), "once": _value(once), "again": _value(again)}

    @staticmethod
    def judge(got, p):
        model = pretrained.load(MODEL)  # the check's model in eval mode: no dropout
        L = model.config.context_length
        seqs = _sequences(p.seed, p.n_seq, L)
        value, once, again = (got[k].reshape(-1)[:1].double().reshape(()) for k in ("bits_per_byte", "once", "again"))
        noisy = randomness(once, again, "bits_per_byte(model, sequences[:1])")
        if noisy:
            return [explain(noisy, "the model the check passes is in training mode, with dropout (as after "
                                   "fine-tuning): call model.eval() before the forward passes; torch.no_grad() "
                                   "alone does not switch dropout off")]
        losses = _per_seq_losses(model, seqs)  # nats, one (n - 1,) tensor per sequence
        total = sum(float(l.double().sum()) for l in losses)
        count = sum(len(l) for l in losses)
        ln2 = math.log(2)
        want = torch.tensor(total / count / ln2, dtype=torch.float64)
        problem = mismatch(value, want, "bits_per_byte(model, sequences)", atol=BPB_ATOL)
        if not problem:
            return []
        t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731

        def cut(keep):  # every sequence cut to its first ``keep`` tokens
            cut_losses = _per_seq_losses(model, seqs, keep=keep)
            return t(sum(float(l.double().sum()) for l in cut_losses) / sum(len(l) for l in cut_losses) / ln2)

        hint = diagnose(value, [
            ("the result is in nats (natural log): divide the mean loss by ln 2 to get bits",
             lambda: t(total / count)),
            ("the mean loss went through log2: a loss is already a logarithm (in nats); convert it to bits by "
             "dividing by ln 2, math.log(2)", lambda: t(math.log2(total / count))),
            ("the sign is wrong: a loss is minus the log-probability of the target, so bits per byte is positive",
             lambda: -want),
            ("the result is a perplexity (2^bits or e^nats), not bits per byte", lambda: t(2 ** (total / count / ln2))),
            ("the result is a perplexity (2^bits or e^nats), not bits per byte", lambda: t(math.exp(total / count))),
            ("the losses are averaged per sequence and then over sequences; average over every predicted token "
             "(total loss / total number of predicted tokens), so long sequences count for more",
             lambda: t(sum(float(l.double().mean()) for l in losses) / len(losses) / ln2)),
            ("each sequence adds its mean loss (F.cross_entropy averages by default) but the total is divided by the "
             "number of predicted tokens: add the sum (reduction='sum') of each sequence's losses",
             lambda: t(sum(float(l.double().mean()) for l in losses) / count / ln2)),
            ("the count is off by one per sequence: a sequence of n tokens has n - 1 predicted tokens (the first "
             "token has no prediction)", lambda: t(total / sum(len(s) for s in seqs) / ln2)),
            ("the targets are not shifted: position t must predict token t + 1 (logits of ids[:-1] against ids[1:])",
             lambda: t(sum(float(l.double().sum()) for l in _per_seq_losses(model, seqs, current_token=True)) / count / ln2)),
            (f"the sequences are cut to the model's context_length ({L}): read each whole sequence in one pass; "
             "the model computes RoPE past its training length", lambda: cut(L)),
            (f"the sequences are cut to the model's context_length ({L}): read each whole sequence in one pass; "
             "the model computes RoPE past its training length", lambda: cut(L + 1)),
            ("the total is not divided by the number of predicted tokens", lambda: t(total / ln2)),
            ("log base 10 was used: bits need log base 2 (nats / ln 2)", lambda: t(total / count / math.log(10))),
        ], atol=BPB_ATOL)
        if hint is None and not math.isfinite(finite_number(value)):
            hint = "the value is not a finite number: return a Python float (or a 0-d tensor)"
        return [explain(problem, hint)]


# --------------------------------------------------------------------------------------------------
# Part 5: passkey accuracy
# --------------------------------------------------------------------------------------------------
# A share of n prompts is k / n, exact in float64 however a correct answer adds it up; every known mistake moves
# some prompt's value by 1 / digits or more.
PASSKEY_ATOL = 1e-9


def _passkey_samples(p):
    """The check's prompts: each (length, depth, digits) of the case ``trials`` times, lengths outermost (a list of
    them mixes lengths). Prompt i draws its key from its own ``random.Random``, so that a case's prompts do not
    depend on the others. Built anew for every call: the student's code may change them."""
    cases = [(n, d, k) for n in p.lengths for d in p.depths for k in p.digits for _ in range(p.trials)]
    return [passkey_sample(n, d, random.Random(f"ex5.passkey:{p.seed}:{i}"), digits=k)
            for i, (n, d, k) in enumerate(cases)]


def _mixed(samples):
    """Indices of the prompts given all at once: the last prompt of each length (lengths outermost, so they
    differ); the check's time goes into decoding, and one of each length is what tells a padded batch apart."""
    return sorted({len(s.ids): i for i, s in enumerate(samples)}.values())


def _count_dropout(model):
    """A one-element list that counts the calls of ``model``'s dropout modules in training mode (forward hooks)."""
    active = [0]

    def seen(module, args, out):
        active[0] += int(module.training)

    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.register_forward_hook(seen)
    return active


def _greedy(model, ids, n, *, cached, position=-1, crop=None):
    """The reference decoding: ``n`` greedy tokens after each row of ``ids`` (B, T) -> (B, n).

    ``cached``: the package's ``generate`` (the prompt once, then one token at a time through the KV cache);
    otherwise the whole sequence is read again at every step. ``position`` and ``crop`` model two mistakes: the
    logits read at another position than the last, and each step's input cut to its last ``crop`` tokens."""
    if cached:
        return generate(model, ids, n, use_cache=True)[:, ids.shape[1]:]
    out = ids
    with torch.no_grad():
        for _ in range(n):
            logits = model(out if crop is None else out[:, -crop:])  # (B, t, vocab)
            out = torch.cat([out, logits[:, position].argmax(dim=-1, keepdim=True)], dim=1)  # fed back
    return out[:, ids.shape[1]:]


def _bytes(text: str) -> torch.Tensor:
    return torch.tensor(list(text.encode("ascii")))  # (len(text),) byte tokens


def _right(tokens: torch.Tensor, answer: str) -> float:
    """1.0 when the first len(answer) of ``tokens`` are exactly the answer's bytes (exact match), else 0.0."""
    return float(torch.equal(tokens[:len(answer)], _bytes(answer)))


class _Decodes:
    """What the reference, and the models of known mistakes, decode for each prompt: computed when first asked
    (a correct answer costs the judge one cached decoding per prompt)."""

    def __init__(self, model, samples, L: int):
        self.model, self.samples, self.L = model, samples, L

    @functools.cached_property
    def cached(self):  # len(answer) + 1 tokens per prompt: the one after the key models a '.' compared too
        return [_greedy(self.model, s.ids[None], len(s.answer) + 1, cached=True)[0] for s in self.samples]

    @functools.cached_property
    def uncached(self):
        return [_greedy(self.model, s.ids[None], len(s.answer), cached=False)[0] for s in self.samples]

    def each(self, value) -> torch.Tensor:
        """(n,) float64: ``value(i, sample)`` for each prompt."""
        return torch.tensor([float(value(i, s)) for i, s in enumerate(self.samples)], dtype=torch.float64)

    def right(self, decoded) -> torch.Tensor:
        return self.each(lambda i, s: _right(decoded[i], s.answer))

    def digits(self, decoded) -> torch.Tensor:
        return self.each(lambda i, s: (decoded[i][:len(s.answer)] == _bytes(s.answer)).double().mean())

    def other(self, keep=None, **how) -> torch.Tensor:
        """Exact match of each prompt decoded another way: ``_greedy``'s ``position`` or ``crop``, or only the
        prompt's ``keep`` = "first" or "last" L tokens read."""
        def one(i, s):
            if (keep or how.get("crop")) and len(s.ids) <= self.L:
                return _right(self.cached[i], s.answer)  # nothing to cut
            ids = s.ids[None] if keep is None else s.ids[None, -self.L:] if keep == "last" else s.ids[None, :self.L]
            return _right(_greedy(self.model, ids, len(s.answer), cached=False, **how)[0], s.answer)
        return self.each(one)

    def batched(self, chosen, value: int, side: str) -> torch.Tensor:
        """The share right when the prompts ``chosen`` are padded with ``value`` on ``side`` to the longest one and
        decoded as one batch without a mask: a shorter prompt is then continued after its padding."""
        samples = [self.samples[i] for i in chosen]
        T, k = max(len(s.ids) for s in samples), max(len(s.answer) for s in samples)
        rows = []
        for s in samples:
            pad = torch.full((T - len(s.ids),), value, dtype=torch.long)
            rows.append(torch.cat((s.ids, pad) if side == "right" else (pad, s.ids)))
        out = _greedy(self.model, torch.stack(rows), k, cached=True)  # (b, k)
        return torch.tensor(sum(_right(o, s.answer) for o, s in zip(out, samples)) / len(samples),
                            dtype=torch.float64)


DIGIT_ACCURACY = ("the share of digits right at their place is counted (digit accuracy): a prompt counts 1 only when "
                  "all its decoded tokens are exactly the answer (exact match), else 0")
PERCENTAGE = "the result is a percentage (x 100): return the share of prompts right, a float in [0, 1]"


def _one_at_a_time_mistakes(d: _Decodes, L: int):
    """(hint, thunk) of the known mistakes, each as the (n,) values of passkey_accuracy(model, [sample]) it gives."""
    ks = sorted({len(s.answer) for s in d.samples})
    right = d.right(d.cached)
    mistakes = [(DIGIT_ACCURACY, lambda: d.digits(d.cached)), (DIGIT_ACCURACY, lambda: d.digits(d.uncached)),
                (PERCENTAGE, lambda: 100 * right), (PERCENTAGE, lambda: 100 * d.right(d.uncached))]
    if right.any():
        mistakes.append((
            f"no prompt counts as right, yet the model decodes {int(right.sum())} of these {len(right)} keys exactly: "
            "check each step. The next token is the argmax over the vocabulary (dim=-1) of the logits of the last "
            "position (logits[:, -1]); it is appended to the input before the next one is predicted (a digit is not "
            "predicted from the prompt alone); and exactly len(sample.answer) new tokens are compared with the "
            "answer's bytes, without the '.' or newline that follow the key in the text",
            lambda: torch.zeros(len(right), dtype=torch.float64)))
    if ks != [5]:
        hard = (f"only the keys of 5 digits can come out right: the number of digits is hard-coded; decode exactly "
                f"len(sample.answer) tokens (these keys have {', '.join(map(str, ks))} digits)")
        for keep in (lambda k: k == 5, lambda k: k <= 5):  # the last 5 tokens compared, or the first k of 5 decoded
            mistakes.append((hard, lambda keep=keep: right * d.each(lambda i, s: keep(len(s.answer)))))
    if any(len(s.ids) > L for s in d.samples):
        cut = (f"the prompts are cut to the model's context_length ({L}): read each whole prompt (RoPE needs no "
               "table past the training length; a cut prompt loses the key or the question)")
        mistakes += [(cut, lambda: d.other(keep="last")), (cut, lambda: d.other(crop=L)),
                     (cut, lambda: d.other(keep="first"))]
    mistakes += [
        ("the logits are read at the position before the last (logits[:, -2]): the next token is predicted by "
         "the last position, logits[:, -1]", lambda: d.other(position=-2)),
        ("every digit is predicted from the prompt alone: append each decoded token to the input before "
         "predicting the next one", lambda: d.each(lambda i, s: set(s.answer) == {chr(int(d.cached[i][0]))})),
        ("the decoded text is compared with the answer and a '.': the answer is exactly the key's digits, "
         "without the '.' or newline that follow the key in the text",
         lambda: d.each(lambda i, s: _right(d.cached[i], s.answer + "."))),
    ]
    return mistakes


def _together_mistakes(d: _Decodes, alone: torch.Tensor, mixed):
    """(hint, thunk) of the mistakes that show only when the prompts ``mixed`` are given at once; ``alone`` their
    values one at a time."""
    lengths = ", ".join(str(len(d.samples[i].ids)) for i in mixed)
    padded = (f"the prompts ({lengths} tokens) were padded into one batch: a shorter prompt is then continued after "
              "its padding, not after its question; decode each prompt on its own (or batch only prompts of the same "
              "length)")
    return [
        ("the number of prompts right is returned, not their share: divide by len(samples)", lambda: alone.sum()),
        (PERCENTAGE, lambda: 100 * alone.mean()),
        (padded, lambda: d.batched(mixed, 0, "right")), (padded, lambda: d.batched(mixed, ord(" "), "right")),
        (padded, lambda: d.batched(mixed, 0, "left")),
        ("only the last prompt is counted (`right = ...` instead of `right += ...`?): add up every prompt's result "
         "before dividing", lambda: alone[-1] / len(alone)),
    ]


def _describe(sample, L: int) -> str:
    n, k = len(sample.ids), len(sample.answer)
    return (f"{n} tokens ({n / L:.3g}x the training length), key {sample.answer!r} ({k} digit{'s' * (k > 1)}) "
            f"at depth {sample.depth:g}")


@register("ex5.passkey_accuracy", "passkey accuracy by greedy decoding", where="the `passkey_accuracy` cell (part 5)",
          # the model retrieves every 5-digit key at 256 tokens, some at 320-360 (others with 2-4 digits of 5 right),
          # none at 2x (512): exact match and digit accuracy differ, and so do cut prompts
          params=dict(seed=0, lengths=(256, 320, 360), depths=(0.0, 1.0), digits=(5,), trials=1),
          outputs=("alone", "together", "again", "dropout_active"))
class PasskeyAccuracy:
    @staticmethod
    def run(student, p):
        passkey_accuracy = student.get("passkey_accuracy", "(model, samples)")
        model = _with_dropout(pretrained.load(MODEL))  # as after fine-tuning: dropout, in training mode
        active = _count_dropout(model)
        alone = [_value(call(passkey_accuracy, model, [sample])) for sample in _passkey_samples(p)]
        again = _value(call(passkey_accuracy, model, [_passkey_samples(p)[-1]]))  # the longest prompt, twice
        samples = _passkey_samples(p)
        together = _value(call(passkey_accuracy, model, [samples[i] for i in _mixed(samples)]))
        return {"alone": torch.stack(alone), "together": together, "again": again,
                "dropout_active": torch.tensor(active[0])}

    @staticmethod
    def judge(got, p):
        model = pretrained.load(MODEL)  # the check's model in eval mode: no dropout
        L = model.config.context_length
        samples = _passkey_samples(p)
        alone = got["alone"].double().reshape(-1)
        noisy = randomness(alone[-1:], got["again"].double().reshape(-1)[:1],
                           "passkey_accuracy(model, [the longest prompt])")
        if noisy or int(got["dropout_active"]):
            return [explain(noisy or "the model's dropout was active while your function decoded",
                            "the model the check passes is in training mode, with dropout (as after fine-tuning): "
                            "call model.eval() before decoding; torch.no_grad() alone does not switch dropout off")]
        if alone.shape != (len(samples),):
            return [f"the check got {alone.numel()} values for its {len(samples)} prompts given one at a time"]
        if not torch.isfinite(alone).all():
            return ["passkey_accuracy returned something that is not a number: return a Python float"]
        d = _Decodes(model, samples, L)
        # Greedy argmax can flip on a near-tie between a cached and an uncached decoding (their logits differ by
        # float round-off): a prompt's value is right if it equals the reference computed either way.
        cached = d.right(d.cached)
        ok = (alone - cached).abs() <= PASSKEY_ATOL
        if not ok.all():
            uncached = d.right(d.uncached)
            ok |= (alone - uncached).abs() <= PASSKEY_ATOL
        if not ok.all():
            wrong = [i for i in range(len(samples)) if not ok[i]]
            i = wrong[0]
            decoded = bytes(d.cached[i][:len(samples[i].answer)].tolist()).decode("latin-1")
            problem = (f"passkey_accuracy(model, [sample]) is wrong for {len(wrong)} of the {len(samples)} prompts "
                       f"given one at a time; the first: {_describe(samples[i], L)}: yours {float(alone[i]):g}, "
                       f"expected {float(cached[i]):g} (greedy decoding gives {decoded!r})")
            return [explain(problem, diagnose(alone, _one_at_a_time_mistakes(d, L), atol=PASSKEY_ATOL))]
        mixed = _mixed(samples)
        together = got["together"].double().reshape(-1)[:1].reshape(())
        # All at once, each prompt may again be decoded either way: the number right lies between the counts of
        # the two references (or of the student's own values one at a time, each of them one of the two).
        count = float(together) * len(mixed)
        if math.isfinite(count) and abs(count - round(count)) <= 1e-6:
            ways = torch.stack((cached, alone))[:, mixed]
            if not ways.sum(1).eq(round(count)).any():
                ways = torch.cat((ways, d.right(d.uncached)[None, mixed]))
            if ways.min(0).values.sum() - 1e-6 <= round(count) <= ways.max(0).values.sum() + 1e-6:
                return []
        lengths = ", ".join(str(len(samples[i].ids)) for i in mixed)
        problem = (f"passkey_accuracy(model, samples) with {len(mixed)} prompts at once ({lengths} tokens), each of "
                   f"them right or wrong as expected on its own: yours {float(together):g}, expected "
                   f"{float(cached[mixed].mean()):g}")
        return [explain(problem, diagnose(together, _together_mistakes(d, alone[mixed], mixed), atol=PASSKEY_ATOL))]
