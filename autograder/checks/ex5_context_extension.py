"""Checks for exercise 5, stretching the shipped RoPE model past its training length.

Graded names (stated at the top of the notebook):
    interpolated_inv_freq(inv_freq, factor) -> Tensor        position interpolation: (head_dim // 2,)
    ntk_inv_freq(head_dim, base=10000.0, factor=1.0) -> Tensor   NTK-aware scaling: (head_dim // 2,)
    apply_scaling(model, kind, factor) -> TransformerLM       kind "linear" (PI) or "ntk"; a new model,
                                                              the one passed in is left unchanged
    bits_per_byte(model, sequences) -> float                  sequences: list of 1-D token tensors

The model is ``transformer_course.pretrained.load("course-llama")`` (RoPE, half layout, head_dim 32,
trained at 256 tokens). Its RoPE lives in ``model.rope``: buffers ``inv_freq`` and the cached
tables ``cos_cached``, ``sin_cached`` (context_length, head_dim); positions past the tables are computed
from ``inv_freq``. The judge compares logits with the model that ``evaluate.with_rope_scaling`` builds
(the package's ``rope_inv_freq`` frequencies in the same buffers; the notebook asserts the two agree).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from transformer_course import pretrained
from transformer_course.data import long_documents
from transformer_course.evaluate import token_losses
from transformer_course.positions import RopeScaling, rope_cos_sin, rope_inv_freq

from .base import StudentError, call, diagnose, expect_keys, explain, finite_number, mismatch, register, seeded

MODEL = "course-llama"
# Frequencies span 1 down to ~1e-4: compare relatively; float32 pow is exact to a few ulps (~1e-7).
FREQ_RTOL, FREQ_ATOL = 1e-5, 1e-9  # atol: 1e-9 is < 1e-4 of the smallest frequency tested (~1.5e-5)
# Logits of the shipped model are O(10). A correct scaling computed in another order (angles as
# (p / s) * theta instead of p * (theta / s)) moves the angles by float32 rounding only, which moves the
# logits by ~1e-5 at these lengths; every known mistake moves them by more than 1e-2.
LOGIT_ATOL = 1e-3
# Bits per byte from float32 log-probabilities summed over a few hundred tokens agree to ~1e-6; the
# nearest mistake (counting one token too many per sequence) is off by ~1e-2.
BPB_ATOL = 1e-4


def _base_freqs(D: int, base: float) -> torch.Tensor:
    return rope_inv_freq(D, base)[0]  # (D // 2,) float32


def _ntk_ref(D: int, base: float, factor: float) -> torch.Tensor:
    return rope_inv_freq(D, base, RopeScaling("ntk", factor, original_context_length=1))[0]


def _freqs_from_base(D: int, base: float) -> torch.Tensor:
    i2 = torch.arange(0, D, 2, dtype=torch.float64)
    return (base ** (-i2 / D)).float()


# --------------------------------------------------------------------------------------------------
# Part 1: position interpolation
# --------------------------------------------------------------------------------------------------
@register("ex5.interpolation", "position interpolation: inv_freq / factor",
          where="the `interpolated_inv_freq` cell (part 1)")
class Interpolation:
    @staticmethod
    def run(student, D=32, base=10000.0, factor=4.0):
        f = student.get("interpolated_inv_freq", "(inv_freq, factor)")
        inv_freq = _base_freqs(D, base)
        out = {"scaled": torch.as_tensor(call(f, inv_freq, factor)),
               "identity": torch.as_tensor(call(f, _base_freqs(D, base), 1.0))}
        out["inv_freq_after"] = inv_freq  # must come back unchanged
        return out

    @staticmethod
    def judge(got, D=32, base=10000.0, factor=4.0):
        missing = expect_keys(got, ["scaled", "identity", "inv_freq_after"])
        if missing:
            return missing
        inv = _base_freqs(D, base)
        problems = []
        if mismatch(got["inv_freq_after"], inv, "inv_freq", atol=0.0):
            problems.append("interpolated_inv_freq changed the inv_freq passed in (in place, e.g. `inv_freq /= factor`): "
                            "return a new tensor; in apply_scaling the tensor passed in is the original model's buffer")
        for key, s in (("scaled", factor), ("identity", 1.0)):
            problem = mismatch(got[key], inv / s, f"interpolated_inv_freq(inv_freq, {s:g})", atol=FREQ_ATOL, rtol=FREQ_RTOL)
            if problem:
                hint = diagnose(got[key], [
                    ("the frequencies are multiplied by the factor, which multiplies the positions; position "
                     "interpolation divides the positions by the factor, i.e. inv_freq / factor", lambda: inv * s),
                    ("inv_freq is returned unchanged", lambda: inv),
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
@register("ex5.ntk", "NTK-aware frequencies: base * factor^(d/(d-2))", where="the `ntk_inv_freq` cell (part 2)")
class Ntk:
    @staticmethod
    def run(student, D=32, base=10000.0, factor=4.0):
        f = student.get("ntk_inv_freq", "(head_dim, base=10000.0, factor=1.0)")
        return {"scaled": torch.as_tensor(call(f, D, base, factor)),
                "identity": torch.as_tensor(call(f, D, base, 1.0))}

    @staticmethod
    def judge(got, D=32, base=10000.0, factor=4.0):
        missing = expect_keys(got, ["scaled", "identity"])
        if missing:
            return missing
        problems = []
        for key, s in (("scaled", factor), ("identity", 1.0)):
            want = _ntk_ref(D, base, s)
            problem = mismatch(got[key], want, f"ntk_inv_freq({D}, {base:g}, {s:g})", atol=FREQ_ATOL, rtol=FREQ_RTOL)
            if problem:
                inv = _base_freqs(D, base)
                hint = diagnose(got[key], [
                    ("the exponent of the factor is d/(d-1); NTK-aware scaling uses base' = base * factor^(d/(d-2)), "
                     "so that the lowest frequency (i = d/2 - 1) is divided by exactly the factor",
                     lambda: _freqs_from_base(D, base * s ** (D / (D - 1)))),
                    ("the exponent of the factor is (d-2)/d; it is d/(d-2): base' = base * factor^(d/(d-2))",
                     lambda: _freqs_from_base(D, base * s ** ((D - 2) / D))),
                    ("the base is multiplied by the factor without the exponent d/(d-2): base' = base * factor^(d/(d-2))",
                     lambda: _freqs_from_base(D, base * s)),
                    ("factor^(d/(d-2)) divides every frequency directly; NTK scales the base instead, so that "
                     "the highest frequency stays 1 and only the low ones are slowed",
                     lambda: inv / s ** (D / (D - 2))),
                    ("every frequency is divided by the factor: that is position interpolation, not NTK",
                     lambda: inv / s),
                    ("the base is divided by the scale: NTK enlarges the base (base * factor^(d/(d-2)))",
                     lambda: _freqs_from_base(D, base / s ** (D / (D - 2)))),
                    ("the frequencies are not inverted: base'^(+2i/d) instead of base'^(-2i/d)",
                     lambda: (1 / _ntk_ref(D, base, s).double()).float()),
                ], atol=1e-6)
                g = got[key]
                if hint is None and g.shape == want.shape and torch.isfinite(g).all():
                    hint = (f"check the two ends: theta_0 must stay 1 (yours {float(g[0]):.4g}) and the last frequency "
                            f"must be the original one divided by the factor ({float(want[-1]):.4g}; yours {float(g[-1]):.4g})")
                problems.append(explain(problem, hint))
        return problems


# --------------------------------------------------------------------------------------------------
# Part 3: scaling the shipped model
# --------------------------------------------------------------------------------------------------
def _ids(seed: int, T: int) -> torch.Tensor:
    """(1, T) tokens from a seeded place of a seeded held-out document."""
    docs = long_documents()
    gen = seeded(seed)
    _, doc = docs[int(torch.randint(len(docs), (1,), generator=gen))]
    start = int(torch.randint(len(doc) - T, (1,), generator=gen))
    return doc[start:start + T].long()[None]


def _logits_with(model, ids, inv_freq, *, layout="half"):
    """Logits of ``model`` with its RoPE tables and ``inv_freq`` built from ``inv_freq``; restored afterwards.

    This is what ``with_rope_scaling`` builds (``RotaryEmbedding`` fills the same buffers with
    ``rope_cos_sin``), without constructing a model per variant: the judge stays fast."""
    rope = model.rope
    saved = rope.inv_freq, rope.cos_cached, rope.sin_cached
    try:
        rope.cos_cached, rope.sin_cached = rope_cos_sin(torch.arange(rope.context_length), inv_freq, layout=layout)
        rope.inv_freq = inv_freq
        with torch.no_grad():
            return model(ids)
    finally:
        rope.inv_freq, rope.cos_cached, rope.sin_cached = saved


@register("ex5.apply_scaling", "apply_scaling on the shipped model (PI and NTK)",
          where="the `apply_scaling` cell (part 3)")
class ApplyScaling:
    @staticmethod
    def run(student, seed=0, T=128, factor=2.0):
        apply_scaling = student.get("apply_scaling", "(model, kind, factor)")
        model = pretrained.load(MODEL)
        ids = _ids(seed, T)
        out = {}
        for kind in ("linear", "ntk"):
            scaled = call(apply_scaling, model, kind, factor)
            if not isinstance(scaled, nn.Module):
                raise StudentError(f"apply_scaling(model, {kind!r}, {factor}) returned {type(scaled).__name__}; "
                                   "it must return the scaled model (a copy of model with new RoPE frequencies).")
            with torch.no_grad():
                out[kind] = scaled.eval()(ids)
        with torch.no_grad():
            out["original"] = model.eval()(ids)  # the model passed in must be left as it was
        return out

    @staticmethod
    def judge(got, seed=0, T=128, factor=2.0):
        missing = expect_keys(got, ["linear", "ntk", "original"])
        if missing:
            return missing
        model = pretrained.load(MODEL)
        ids = _ids(seed, T)
        c = model.config
        L, D, base = c.context_length, c.head_dim, c.rope_base
        s = float(factor)
        inv = _base_freqs(D, base)
        with torch.no_grad():
            unscaled = model(ids)
        problems = []
        problem = mismatch(got["original"], unscaled, "the original model's logits after apply_scaling", atol=LOGIT_ATOL)
        if problem:
            changed = got["original"].shape == unscaled.shape  # the right shape, other values: the model was modified
            problems.append(explain(problem, "apply_scaling changed the model passed in: scale a copy "
                                             "(copy.deepcopy(model)) and return it, so the original can be compared"
                                    if changed else None))
        same = ("the scaled model gives the same logits as the original: its RoPE was not changed where the model "
                "reads it. Positions below context_length come from the cached tables rope.cos_cached and "
                "rope.sin_cached, later ones from rope.inv_freq (rope = model.rope): set all three")
        interleaved = ("the cos/sin tables are in the interleaved layout (angles repeated side by side); the model "
                       "pairs coordinate i with i + head_dim/2, so the tables are torch.cat((angles, angles), dim=-1)")
        mistakes = {
            "linear": [
                ("the positions are multiplied by the factor instead of divided (PI divides inv_freq by the factor)",
                 lambda: _logits_with(model, ids, inv * s)),
                ("kind='linear' applies the NTK frequencies: 'linear' is position interpolation (inv_freq / factor)",
                 lambda: _logits_with(model, ids, _ntk_ref(D, base, s))),
                ("the base was scaled (base * factor) instead of the positions: PI divides every frequency by the factor",
                 lambda: _logits_with(model, ids, _freqs_from_base(D, base * s))),
                (interleaved, lambda: _logits_with(model, ids, inv / s, layout="interleaved")),
            ],
            "ntk": [
                ("kind='ntk' applies position interpolation: NTK enlarges the base (ntk_inv_freq)",
                 lambda: _logits_with(model, ids, inv / s)),
                ("the NTK exponent is wrong or missing: base' = base * factor^(d/(d-2))",
                 lambda: _logits_with(model, ids, _freqs_from_base(D, base * s))),
                ("the NTK exponent is wrong: base' = base * factor^(d/(d-2)), not d/(d-1)",
                 lambda: _logits_with(model, ids, _freqs_from_base(D, base * s ** (D / (D - 1))))),
                ("factor^(d/(d-2)) divides every frequency directly; NTK scales the base",
                 lambda: _logits_with(model, ids, inv / s ** (D / (D - 2)))),
                (interleaved, lambda: _logits_with(model, ids, _ntk_ref(D, base, s), layout="interleaved")),
            ],
        }
        for kind in ("linear", "ntk"):
            scaled_freq, attention_factor = rope_inv_freq(D, base, RopeScaling(kind, s, original_context_length=L))
            assert attention_factor == 1.0  # PI and NTK leave the logit scale alone (YaRN would not)
            want = _logits_with(model, ids, scaled_freq)  # the model with_rope_scaling would build
            problem = mismatch(got[kind], want, f"logits of apply_scaling(model, {kind!r}, {s:g})", atol=LOGIT_ATOL)
            if problem:
                hint = None
                if s != 1.0 and got[kind].shape == unscaled.shape and torch.allclose(got[kind].double(), unscaled.double(), atol=LOGIT_ATOL):
                    hint = same
                problems.append(explain(problem, hint or diagnose(got[kind], mistakes[kind], atol=LOGIT_ATOL)))
        return problems


# --------------------------------------------------------------------------------------------------
# Part 4: bits per byte
# --------------------------------------------------------------------------------------------------
def _sequences(seed: int, n_seq: int):
    """``n_seq`` uint8 slices of held-out documents, of clearly different lengths (so that averaging per
    sequence and per token disagree)."""
    docs = long_documents()
    gen = seeded(seed + 7)
    out = []
    for j in range(n_seq):
        n = 24 + 53 * j + int(torch.randint(0, 20, (1,), generator=gen))  # tokens, first one never predicted
        _, doc = docs[int(torch.randint(len(docs), (1,), generator=gen))]
        start = int(torch.randint(len(doc) - n, (1,), generator=gen))
        out.append(doc[start:start + n])
    return out


def _per_seq_losses(model, sequences, *, current_token=False):
    """Per-sequence next-token losses in nats (the reference: evaluate.token_losses)."""
    if not current_token:
        return [token_losses(model, s.long()[None])[0] for s in sequences]
    out = []
    for s in sequences:
        ids = s.long()[None]
        with torch.no_grad():
            logits = model(ids[:, :-1])
        out.append(F.cross_entropy(logits[0], ids[0, :-1], reduction="none"))  # predicts the token it reads
    return out


@register("ex5.bits_per_byte", "bits per byte of a model over sequences", where="the `bits_per_byte` cell (part 4)")
class BitsPerByte:
    @staticmethod
    def run(student, seed=0, n_seq=3):
        bits_per_byte = student.get("bits_per_byte", "(model, sequences)")
        model = pretrained.load(MODEL)
        value = call(bits_per_byte, model, _sequences(seed, n_seq))
        if isinstance(value, torch.Tensor):
            value = value.detach().reshape(-1)[0].item() if value.numel() == 1 else float("nan")
        return {"bits_per_byte": torch.tensor(float(value), dtype=torch.float64)}

    @staticmethod
    def judge(got, seed=0, n_seq=3):
        missing = expect_keys(got, ["bits_per_byte"])
        if missing:
            return missing
        model = pretrained.load(MODEL)
        seqs = _sequences(seed, n_seq)
        losses = _per_seq_losses(model, seqs)  # nats, one (n - 1,) tensor per sequence
        total = sum(float(l.double().sum()) for l in losses)
        count = sum(len(l) for l in losses)
        ln2 = math.log(2)
        want = torch.tensor(total / count / ln2, dtype=torch.float64)
        value = got["bits_per_byte"].reshape(-1)[:1].double().reshape(())
        problem = mismatch(value, want, "bits_per_byte(model, sequences)", atol=BPB_ATOL)
        if not problem:
            return []
        t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        hint = diagnose(value, [
            ("the result is in nats (natural log): divide the mean loss by ln 2 to get bits",
             lambda: t(total / count)),
            ("the result is a perplexity (2^bits or e^nats), not bits per byte", lambda: t(2 ** (total / count / ln2))),
            ("the losses are averaged per sequence and then over sequences; average over every predicted token "
             "(total loss / total number of predicted tokens), so long sequences count for more",
             lambda: t(sum(float(l.double().mean()) for l in losses) / len(losses) / ln2)),
            ("the count is off by one per sequence: a sequence of n tokens has n - 1 predicted tokens (the first "
             "token has no prediction)", lambda: t(total / sum(len(s) for s in seqs) / ln2)),
            ("the targets are not shifted: position t must predict token t + 1 (logits of ids[:-1] against ids[1:])",
             lambda: t(sum(float(l.double().sum()) for l in _per_seq_losses(model, seqs, current_token=True)) / count / ln2)),
            ("the total is not divided by the number of predicted tokens", lambda: t(total / ln2)),
            ("log base 10 was used: bits need log base 2 (nats / ln 2)", lambda: t(total / count / math.log(10))),
        ], atol=BPB_ATOL)
        if hint is None and not math.isfinite(finite_number(value)):
            hint = "the value is not a finite number: return a Python float (or a 0-d tensor)"
        return [explain(problem, hint)]
