"""Checks for exercise 2, grouped-query attention (GQA), with MHA and MQA as its two ends.

Graded names (stated at the top of the notebook):
    repeat_kv(x, n_rep) -> Tensor
        x (B, n_kv_head, T, head_dim) -> (B, n_kv_head·n_rep, T, head_dim); head h is a copy of head h // n_rep
    gqa_attention(q, k, v, causal=True) -> Tensor
        q (B, n_head, T, head_dim); k, v (B, n_kv_head, T, head_dim) -> (B, n_head, T, head_dim);
        query head h reads key/value head h // (n_head // n_kv_head) (PyTorch SDPA's enable_gqa=True layout)
    GroupedQueryAttention(n_embd, n_head, n_kv_head)
        causal self-attention module, forward(x) (B, T, n_embd) -> (B, T, n_embd), no biases;
        weights q_proj.weight (n_head·head_dim, n_embd), k_proj.weight and v_proj.weight
        (n_kv_head·head_dim, n_embd), o_proj.weight (n_embd, n_head·head_dim); ValueError when
        n_kv_head does not divide n_head
    kv_cache_bytes(n_layer, n_kv_head, head_dim, seq_len, batch_size, bytes_per_element) -> int

Parts 2 and 3 build on the earlier parts by name (gqa_attention calls repeat_kv, the module calls
gqa_attention), so each is run twice: with the student's earlier parts, and with the grader's reference
versions substituted (``Student.substitute``). A part right with the references passes with a note
(``base.on_its_own``): one mistake in repeat_kv costs part 1 only. The attention mistakes are the shared
models of ``mistakes.attention_mistakes`` (named the same in exercises 1, 2 and 4), plus the GQA-specific ones
below; the module's are those seen through its projections, plus the head split and merge of exercise 1.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from transformer_course.accounting import kv_cache_bytes as reference_kv_cache_bytes
from transformer_course.config import ModelConfig
from transformer_course.multi_head import MultiHeadAttention

from .base import (StudentError, call, compare, diagnose, explain, judge_own_and_alone, load_weights, mismatch,
                   own_and_alone, randn, randomness, register, seeded)
from .mistakes import attention_mistakes, manual_attention

ATOL = 1e-5  # float32 attention on inputs of size ~1: a correct answer agrees with PyTorch's to ~1e-6

WRONG_ORDER = ("the heads are expanded in the wrong order: query head h must read key/value head h // n_rep "
               "(torch.repeat_interleave on dim=1, or expand + reshape), but yours reads head h % n_kv_head "
               "(that is what .repeat(1, n_rep, 1, 1) or torch.cat([x] * n_rep, dim=1) gives)")
VIEW_ADVICE = ("`.view` needs a contiguous tensor, and the result of .expand or .transpose is not one: use "
               ".reshape(...) (it copies when it must), or call .contiguous() before .view(...)")


def _call(fn, *args, **kwargs):
    """``call``, with PyTorch's "view size is not compatible" error explained."""
    try:
        return call(fn, *args, **kwargs)
    except RuntimeError as err:
        if "view size is not compatible" in str(err):
            name = getattr(fn, "__qualname__", getattr(fn, "__name__", "your code"))
            raise StudentError(f"`{name}` raised RuntimeError: {str(err).rstrip('.')}. {VIEW_ADVICE}.") from None
        raise


def reference_repeat_kv(x, n_rep):
    """The grader's repeat_kv, put in the student's namespace to judge the later parts on their own."""
    return x.repeat_interleave(n_rep, dim=1)  # (B, n_kv_head·n_rep, T, head_dim)


def reference_gqa_attention(q, k, v, causal=True):
    """The grader's gqa_attention: PyTorch's attention on the expanded key/value heads."""
    n_rep = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, reference_repeat_kv(k, n_rep), reference_repeat_kv(v, n_rep),
                                          is_causal=causal).contiguous()  # as a matmul returns it


def _dtype_problem(got, want_dtype, what, advice):
    if isinstance(got, torch.Tensor) and got.dtype != want_dtype:
        return f"{what} returned {got.dtype} for {want_dtype} inputs: {advice}"
    return None


# --------------------------------------------------------------------------------------------------
# Part 1: repeat_kv
# --------------------------------------------------------------------------------------------------
def _kv(p):
    return randn(seeded(p.seed), p.B, p.n_kv_head, p.T, p.D)  # (B, n_kv_head, T, head_dim)


def _repeat_mistakes(x, n_rep):
    return [
        (WRONG_ORDER, lambda: x.repeat(1, n_rep, 1, 1)),
        ("the copies are made along the wrong axis: repeat the heads (dim=1), not the positions (dim=2)",
         lambda: x.repeat_interleave(n_rep, dim=2)),
        ("the copies are made along the wrong axis: repeat the heads (dim=1), not the batch (dim=0)",
         lambda: x.repeat_interleave(n_rep, dim=0)),
        ("the copies are made along the wrong axis: repeat the heads (dim=1), not the head_dim coordinates "
         "(dim=-1)", lambda: x.repeat_interleave(n_rep, dim=-1)),
        ("the copies are made along the wrong axis and in the wrong order: .repeat(n_rep, 1, 1, 1) tiles the "
         "batch; repeat the heads: torch.repeat_interleave(x, n_rep, dim=1)", lambda: x.repeat(n_rep, 1, 1, 1)),
    ]


@register("ex2.repeat_kv", "repeat_kv: key/value heads expanded for the query heads",
          where="the `repeat_kv` cell (part 1)",
          params=dict(seed=0, B=2, n_kv_head=2, n_rep=3, T=4, D=5), outputs=("out", "same", "bf16"))
class RepeatKV:
    @staticmethod
    def run(student, p):
        repeat_kv = student.get("repeat_kv", "(x, n_rep)")
        x = _kv(p)
        return {"out": _call(repeat_kv, x.clone(), p.n_rep), "same": _call(repeat_kv, x.clone(), 1),
                # a model run in bfloat16 gives bfloat16 keys: a copy keeps the dtype
                "bf16": _call(repeat_kv, x.to(torch.bfloat16), p.n_rep)}

    @staticmethod
    def judge(got, p):
        x = _kv(p)
        problems = []
        want = x.repeat_interleave(p.n_rep, dim=1)  # (B, n_kv_head·n_rep, T, D)
        what = f"repeat_kv(x, n_rep={p.n_rep}) with x of shape {tuple(x.shape)}"
        problem = mismatch(got["out"], want, what, atol=0)
        if problem:
            problems.append(explain(problem, diagnose(got["out"], _repeat_mistakes(x, p.n_rep), atol=0)))
        problem = mismatch(got["same"], x, "repeat_kv(x, n_rep=1)", atol=0)
        if problem:
            problems.append(problem + " (with n_rep=1 it must return x unchanged)")
        problem = _dtype_problem(got["bf16"], torch.bfloat16, "repeat_kv(x, n_rep)",
                                 "the copies must keep x's dtype; a tensor made with torch.zeros/torch.empty needs "
                                 "dtype=x.dtype, device=x.device (or use repeat_interleave, or expand + reshape)")
        if problem:
            problems.append(problem)
        elif not problems:
            problem = mismatch(got["bf16"], want.to(torch.bfloat16), what + " in bfloat16", atol=0)
            if problem:
                problems.append(problem)
        return problems


# --------------------------------------------------------------------------------------------------
# Part 2: gqa_attention
# --------------------------------------------------------------------------------------------------
def _qkv(p, dtype=torch.float32):
    gen = seeded(p.seed)
    q, k, v = (randn(gen, p.B, h, p.T, p.D) for h in (p.n_head, p.n_kv_head, p.n_kv_head))
    return q.to(dtype), k.to(dtype), v.to(dtype)  # q (B, n_head, T, D); k, v (B, n_kv_head, T, D)


def _gqa_mistakes(q, k, v, causal):
    """The shared attention mistakes, then those of grouped attention and of this exercise's code."""
    T, S = q.shape[-2], k.shape[-2]
    mask = torch.ones(T, S, dtype=torch.bool).tril() if causal else None
    n_head = q.shape[1]
    return (attention_mistakes(q, k, v, causal) + [
        ("the scores are divided by sqrt(n_head) (q.shape[1]) instead of sqrt(head_dim): head_dim is the last "
         "axis, q.shape[-1]", lambda: manual_attention(q, k, v, scale=1 / math.sqrt(n_head), allowed=mask)),
        ("the masked scores are set to 0 instead of -inf: exp(0) still gives the future a weight; fill them with "
         "float('-inf') before the softmax",
         lambda: manual_attention(q, k, v, allowed=mask, fill=0.0) if causal else None),
    ])


def _judge_gqa(outs, p):
    """The problems of one run of gqa_attention (outputs ``causal``, ``again``, ``full``, ``double``)."""
    noisy = randomness(outs["causal"], outs["again"], "gqa_attention(q, k, v, causal=True)")
    if noisy:  # the spec has no dropout here, and F.dropout drops in any mode unless given training=False
        return [noisy + " (gqa_attention takes no dropout; F.dropout drops whatever the mode unless given "
                "training=False)"]
    q, k, v = _qkv(p)
    problems = []
    for key, causal in (("causal", True), ("full", False)):
        # PyTorch's own grouped kernel is the reference: enable_gqa=True groups heads as h // n_rep.
        want = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        what = f"gqa_attention(q, k, v, causal={causal}) with n_head={p.n_head}, n_kv_head={p.n_kv_head}"
        problems += compare(outs[key], want, what, _gqa_mistakes(q, k, v, causal), atol=ATOL)
    problem = _dtype_problem(outs["double"], torch.float64, "gqa_attention(q, k, v)",
                             "return the inputs' dtype, as F.scaled_dot_product_attention does (no .float(); "
                             "build the mask as a boolean tensor)")
    if problem:
        problems.append(problem)
    elif not problems:
        q, k, v = _qkv(p, torch.float64)
        want = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        problems += compare(outs["double"], want, "gqa_attention(q, k, v, causal=True) in float64",
                            _gqa_mistakes(q, k, v, True), atol=ATOL)
    return problems


@register("ex2.gqa_attention", "gqa_attention: grouped-query scaled dot-product attention",
          where="the `gqa_attention` cell (part 2)",
          params=dict(seed=0, B=2, n_head=6, n_kv_head=2, T=5, D=8),
          outputs=("causal", "again", "full", "double", "alone_causal", "alone_again", "alone_full", "alone_double",
                   "own_failed", "alone_failed"))
class GQAAttention:
    @staticmethod
    def run(student, p):
        gqa_attention = student.get("gqa_attention", "(q, k, v, causal=True)")

        def compute():
            q, k, v = _qkv(p)
            q64, k64, v64 = _qkv(p, torch.float64)
            return {"causal": _call(gqa_attention, q.clone(), k.clone(), v.clone(), causal=True),
                    "again": _call(gqa_attention, q.clone(), k.clone(), v.clone(), causal=True),
                    "full": _call(gqa_attention, q.clone(), k.clone(), v.clone(), causal=False),
                    "double": _call(gqa_attention, q64, k64, v64, causal=True)}

        return own_and_alone(student, compute, repeat_kv=reference_repeat_kv)

    @staticmethod
    def judge(got, p):
        return judge_own_and_alone(got, lambda outs: _judge_gqa(outs, p), "gqa_attention", "repeat_kv")


# --------------------------------------------------------------------------------------------------
# Part 3: the GroupedQueryAttention module
# --------------------------------------------------------------------------------------------------
def _module_state(p):
    gen = seeded(p.seed)
    head_dim = p.n_embd // p.n_head
    scale = 1 / math.sqrt(p.n_embd)  # keeps activations of size ~1 so that differences are visible
    return {
        "q_proj.weight": randn(gen, p.n_head * head_dim, p.n_embd, scale=scale),
        "k_proj.weight": randn(gen, p.n_kv_head * head_dim, p.n_embd, scale=scale),
        "v_proj.weight": randn(gen, p.n_kv_head * head_dim, p.n_embd, scale=scale),
        "o_proj.weight": randn(gen, p.n_embd, p.n_head * head_dim, scale=scale),
    }


def _module_input(p):
    return randn(seeded(p.seed + 1000), p.B, p.T, p.n_embd)


def _not_dividing(n_head):
    """A number of key/value heads that does not divide n_head."""
    return next((k for k in range(2, n_head) if n_head % k), n_head + 1)


def _module_model(state, x, n_head, n_kv_head, *, split="heads", merge="heads", swap_kv=False, o_proj=True,
                  attend=None):
    """GroupedQueryAttention from a state dict; the knobs model mistakes (as ``ex1_transformer._mha``):
    split="no-transpose": (B, T, H·hd).view(B, H, T, hd), the heads cut across positions;
    split="positions": view(B, T, H, hd) never transposed, so attention mixes heads, not positions;
    merge="no-transpose": (B, H, T, hd).reshape(B, T, C) without moving the head axis back;
    swap_kv: keys from v_proj, values from k_proj; ``attend(q, k, v)``: the attention (right by default)."""
    B, T, C = x.shape
    hd = C // n_head
    q, k, v = (x @ state[f"{name}_proj.weight"].T for name in "qkv")  # (B, T, heads·hd)
    if swap_kv:
        k, v = v, k
    heads = (n_head, n_kv_head, n_kv_head)
    if split == "heads":
        q, k, v = (t.view(B, T, h, hd).transpose(1, 2) for t, h in zip((q, k, v), heads))  # (B, heads, T, hd)
    elif split == "no-transpose":
        q, k, v = (t.reshape(B, h, T, hd) for t, h in zip((q, k, v), heads))
    else:  # "positions": (B, T, heads, hd) passed on as if it were (B, heads, T, hd)
        q, k, v = (t.view(B, T, h, hd) for t, h in zip((q, k, v), heads))
    if attend is not None:
        y = attend(q, k, v)
    else:
        rows, cols = q.shape[-2], k.shape[-2]
        y = manual_attention(q, k, v, allowed=torch.ones(rows, cols, dtype=torch.bool).tril())
    y = y.transpose(1, 2).reshape(B, T, C) if merge == "heads" else y.reshape(B, T, C)  # (B, T, C)
    return y @ state["o_proj.weight"].T if o_proj else y


def _module_mistakes(state, x, n_head, n_kv_head):
    model = lambda **knobs: _module_model(state, x, n_head, n_kv_head, **knobs)  # noqa: E731
    B, T, C = x.shape
    hd = C // n_head
    q = (x @ state["q_proj.weight"].T).view(B, T, n_head, hd).transpose(1, 2)  # (B, n_head, T, hd)
    k, v = ((x @ state[f"{n}_proj.weight"].T).view(B, T, n_kv_head, hd).transpose(1, 2) for n in "kv")
    mistakes = [
        ("the attention is not causal: a position sees later positions (call gqa_attention(q, k, v, causal=True))",
         lambda: model(attend=lambda q, k, v: manual_attention(q, k, v))),
        ("the output projection o_proj is not applied to the concatenated heads", lambda: model(o_proj=False)),
        ("the keys and values are swapped: k comes from k_proj and v from v_proj", lambda: model(swap_kv=True)),
        ("the heads are split with a reshape to (B, n_head, T, head_dim) without a transpose: each 'head' then "
         "holds pieces of several positions; use .view(B, T, n_head, head_dim).transpose(1, 2) (n_kv_head for k "
         "and v)", lambda: model(split="no-transpose")),
        ("the heads are split with a reshape to (B, n_head, T, head_dim) without a transpose, and merged back "
         "the same way; use .view(B, T, n_head, head_dim).transpose(1, 2), and .transpose(1, 2).reshape(B, T, C)",
         lambda: model(split="no-transpose", merge="no-transpose")),
        ("attention runs over the heads instead of the positions: after .view(B, T, n_head, head_dim) the "
         "tensor must be transposed to (B, n_head, T, head_dim) before calling gqa_attention",
         lambda: model(split="positions", merge="no-transpose")),
        ("attention runs over the heads instead of the positions: after .view(B, T, n_head, head_dim) the "
         "tensor must be transposed to (B, n_head, T, head_dim) before calling gqa_attention (and transposed "
         "back before merging the heads)", lambda: model(split="positions")),
        ("the heads are concatenated in the wrong order: (B, n_head, T, head_dim) must be transposed back to "
         "(B, T, n_head, head_dim) before .reshape(B, T, n_head * head_dim)", lambda: model(merge="no-transpose")),
    ]
    # every mistake of the attention itself, seen through the module's projections
    for hint, wrong in _gqa_mistakes(q, k, v, True):
        mistakes.append((hint, lambda wrong=wrong: model(attend=lambda *_: wrong())))
    return mistakes


def _judge_module(outs, p):
    """The problems of one run of the module's forward (outputs ``out`` and ``again``)."""
    noisy = randomness(outs["out"], outs["again"], "GroupedQueryAttention(x)")
    if noisy:  # the module is graded after .eval(): an nn.Dropout is off, F.dropout(..., p) is not
        return [noisy + " (the spec has no dropout; if you add one, use nn.Dropout, or F.dropout(..., "
                "training=self.training))"]
    state, x = _module_state(p), _module_input(p)
    reference = MultiHeadAttention(p.n_embd, p.n_head, p.n_kv_head, bias=False, causal=True, impl="sdpa")
    reference.load_state_dict(state)
    with torch.no_grad():
        want = reference(x)
    return compare(outs["out"], want, f"GroupedQueryAttention({p.n_embd}, {p.n_head}, {p.n_kv_head})(x)",
                   _module_mistakes(state, x, p.n_head, p.n_kv_head), atol=ATOL)


@register("ex2.module", "GroupedQueryAttention: the module (projections, heads, output)",
          where="the `GroupedQueryAttention` cell (part 3)",
          params=dict(seed=0, B=2, T=6, n_embd=32, n_head=4, n_kv_head=2),
          outputs=("out", "again", "alone_out", "alone_again", "own_failed", "alone_failed", "raises"))
class Module:
    @staticmethod
    def run(student, p):
        GQA = student.get("GroupedQueryAttention", "(n_embd, n_head, n_kv_head)")
        try:
            module = call(GQA, p.n_embd, p.n_head, p.n_kv_head)
        except ValueError as err:
            raise StudentError(
                f"GroupedQueryAttention({p.n_embd}, n_head={p.n_head}, n_kv_head={p.n_kv_head}) raised ValueError "
                f"({err}), but n_kv_head={p.n_kv_head} divides n_head={p.n_head}: raise only when "
                "n_head % n_kv_head != 0 (not n_kv_head % n_head)") from None
        head_dim = p.n_embd // p.n_head
        for name in ("k_proj", "v_proj"):
            weight = getattr(getattr(module, name, None), "weight", None)
            if isinstance(weight, torch.Tensor) and weight.shape[0] != p.n_kv_head * head_dim:
                raise StudentError(
                    f"{name}.weight has {weight.shape[0]} output rows, expected n_kv_head * head_dim = "
                    f"{p.n_kv_head} * {head_dim} = {p.n_kv_head * head_dim}: the key/value projections are n_kv_head "
                    "heads wide, not n_head (that is the whole point of GQA: fewer key/value heads to cache).")
        load_weights(module, _module_state(p), "your GroupedQueryAttention")
        if isinstance(module, torch.nn.Module):
            module.eval()  # graded in evaluation mode: nn.Dropout, had the student added one, is then off
        forward = getattr(module, "forward", module)

        def compute():
            with torch.no_grad():
                return {"out": _call(forward, _module_input(p)), "again": _call(forward, _module_input(p))}

        out = own_and_alone(student, compute, gqa_attention=reference_gqa_attention, repeat_kv=reference_repeat_kv)
        try:
            GQA(p.n_embd, p.n_head, _not_dividing(p.n_head))
            raised = 0
        except ValueError:
            raised = 1
        except NotImplementedError:
            raised = 0
        except Exception:  # noqa: BLE001 - any other exception is reported as "not a ValueError"
            raised = 2
        out["raises"] = torch.tensor(raised)
        return out

    @staticmethod
    def judge(got, p):
        problems = list(judge_own_and_alone(got, lambda outs: _judge_module(outs, p), "GroupedQueryAttention",
                                 "gqa_attention (and the repeat_kv it calls)"))
        flags = got["raises"].reshape(-1).double()
        raised = int(flags[0]) if flags.numel() and torch.isfinite(flags[0]) else 0
        if raised != 1:
            what = "did not raise a ValueError" if raised == 0 else "raised an exception that is not a ValueError"
            problems.append(
                f"GroupedQueryAttention({p.n_embd}, n_head={p.n_head}, n_kv_head={_not_dividing(p.n_head)}) {what}: "
                "n_kv_head must divide n_head (each key/value head serves n_head // n_kv_head query heads); check it "
                "in __init__ and raise ValueError with a message that says what to change (an assert raises "
                "AssertionError, and is skipped under python -O)")
        return problems


# --------------------------------------------------------------------------------------------------
# Part 4: the KV-cache memory formula
# --------------------------------------------------------------------------------------------------
BYTES_DTYPE = {1: torch.int8, 2: torch.bfloat16, 4: torch.float32, 8: torch.float64}

# (name, n_layer, n_head, n_kv_head, head_dim, seq_len, batch_size, bytes_per_element): published shapes
FIXED_CASES = [
    ("llama-2-7b", 32, 32, 32, 128, 4096, 1, 2),
    ("llama-2-70b", 80, 64, 8, 128, 4096, 1, 2),
    ("an MQA model", 24, 16, 1, 64, 2048, 8, 4),
]


def _cases(seed):
    gen = seeded(seed)
    cases = list(FIXED_CASES)
    for i in range(3):
        r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=gen))  # noqa: E731
        n_kv_head, group = r(1, 8), r(1, 4)
        cases.append((f"random case {i}", r(2, 48), n_kv_head * group, n_kv_head, 16 * r(1, 8), r(1, 8192),
                      r(2, 16), [1, 2, 4, 8][r(0, 3)]))
    return cases


def _reference_bytes(case):
    _, n_layer, n_head, n_kv_head, head_dim, seq_len, batch, nbytes = case
    config = ModelConfig(n_layer=n_layer, n_embd=n_head * head_dim, n_head=n_head, n_kv_head=n_kv_head)
    return reference_kv_cache_bytes(config, seq_len, batch, BYTES_DTYPE[nbytes])


@register("ex2.kv_cache_bytes", "kv_cache_bytes: the KV-cache memory formula",
          where="the `kv_cache_bytes` cell (part 4)", params=dict(seed=0), outputs=("bytes",))
class KVCacheBytes:
    @staticmethod
    def run(student, p):
        kv_cache_bytes = student.get(
            "kv_cache_bytes", "(n_layer, n_kv_head, head_dim, seq_len, batch_size, bytes_per_element)")
        values = []
        for _, n_layer, _, n_kv_head, head_dim, seq_len, batch, nbytes in _cases(p.seed):
            value = call(kv_cache_bytes, n_layer=n_layer, n_kv_head=n_kv_head, head_dim=head_dim, seq_len=seq_len,
                         batch_size=batch, bytes_per_element=nbytes)
            if isinstance(value, torch.Tensor):
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise StudentError(f"kv_cache_bytes should return a number (an int), got {type(value).__name__}.")
            values.append(float(value))
        return {"bytes": torch.tensor(values, dtype=torch.float64)}  # float64 holds these integers exactly

    @staticmethod
    def judge(got, p):
        cases = _cases(p.seed)
        want = torch.tensor([float(_reference_bytes(c)) for c in cases], dtype=torch.float64)
        g = got["bytes"]
        if g.shape != want.shape:
            return [f"the check expected {len(want)} values, got shape {tuple(g.shape)}"]
        if torch.equal(g.double(), want):
            return []
        layers = torch.tensor([float(c[1]) for c in cases], dtype=torch.float64)
        batch = torch.tensor([float(c[6]) for c in cases], dtype=torch.float64)
        nbytes = torch.tensor([float(c[7]) for c in cases], dtype=torch.float64)
        hint = diagnose(g.double(), [
            ("the factor 2 is missing: the cache stores keys AND values", lambda: want / 2),
            ("n_layer is missing: every layer has its own cache", lambda: want / layers),
            ("both the factor 2 (keys and values) and n_layer (one cache per layer) are missing",
             lambda: want / (2 * layers)),
            ("the result counts elements, not bytes: multiply by bytes_per_element", lambda: want / nbytes),
            ("batch_size is missing: every sequence in the batch has its own cache", lambda: want / batch),
            ("the result is in bits, not bytes", lambda: want * 8),
        ], atol=0)
        first = int((g.double() != want).nonzero()[0])
        name, n_layer, _, n_kv_head, head_dim, seq_len, batch_, nb = cases[first]
        problem = (f"kv_cache_bytes(n_layer={n_layer}, n_kv_head={n_kv_head}, head_dim={head_dim}, seq_len={seq_len}, "
                   f"batch_size={batch_}, bytes_per_element={nb}) ({name}) returned {g[first].item():.0f}, "
                   f"expected {want[first].item():.0f}")
        return [explain(problem, hint)]
