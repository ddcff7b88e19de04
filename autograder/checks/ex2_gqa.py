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
"""
from __future__ import annotations

import math
import numbers

import torch

from transformer_course.accounting import kv_cache_bytes as reference_kv_cache_bytes
from transformer_course.config import ModelConfig
from transformer_course.multi_head import MultiHeadAttention

from .base import StudentError, call, diagnose, expect_keys, explain, load_weights, mismatch, randn, register, seeded

ATOL = 1e-5  # float32 attention on inputs of size ~1: a correct answer agrees with PyTorch's to ~1e-6

WRONG_ORDER = ("the heads are expanded in the wrong order: query head h must read key/value head h // n_rep "
               "(torch.repeat_interleave on dim=1, or expand + reshape), but yours reads head h % n_kv_head "
               "(that is what .repeat(1, n_rep, 1, 1) gives)")


def _tiled_order(x, n_rep):
    """The classic mistake: (kv0, kv1, kv0, kv1, ...) instead of (kv0, kv0, kv1, kv1, ...)."""
    return x.repeat(1, n_rep, 1, 1)


def _manual(q, k, v, *, causal=True, order="interleave", scale=None, dim=-1):
    """Attention written out, with the knobs the diagnoses turn: head order, scale, softmax axis, mask."""
    n_rep = q.shape[1] // k.shape[1]
    if order == "interleave":
        k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
    else:
        k, v = _tiled_order(k, n_rep), _tiled_order(v, n_rep)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if causal:
        T, S = scores.shape[-2:]
        scores = scores.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(scores, dim=dim) @ v


# --------------------------------------------------------------------------------------------------
# Part 1: repeat_kv
# --------------------------------------------------------------------------------------------------
def _kv(seed, B, n_kv_head, T, D):
    return randn(seeded(seed), B, n_kv_head, T, D)


@register("ex2.repeat_kv", "repeat_kv: key/value heads expanded for the query heads",
          where="the `repeat_kv` cell (part 1)")
class RepeatKV:
    @staticmethod
    def run(student, seed=0, B=2, n_kv_head=2, n_rep=3, T=4, D=5):
        repeat_kv = student.get("repeat_kv", "(x, n_rep)")
        x = _kv(seed, B, n_kv_head, T, D)
        return {"out": call(repeat_kv, x.clone(), n_rep), "same": call(repeat_kv, x.clone(), 1)}

    @staticmethod
    def judge(got, seed=0, B=2, n_kv_head=2, n_rep=3, T=4, D=5):
        missing = expect_keys(got, ["out", "same"])
        if missing:
            return missing
        x = _kv(seed, B, n_kv_head, T, D)
        problems = []
        want = x.repeat_interleave(n_rep, dim=1)  # (B, n_kv_head·n_rep, T, D)
        problem = mismatch(got["out"], want, f"repeat_kv(x, n_rep={n_rep}) with x of shape {tuple(x.shape)}", atol=0)
        if problem:
            hint = diagnose(got["out"], [
                (WRONG_ORDER, lambda: _tiled_order(x, n_rep)),
                ("the copies are made along the wrong axis: repeat the heads (dim=1), not the positions",
                 lambda: x.repeat_interleave(n_rep, dim=2)),
            ], atol=0)
            problems.append(explain(problem, hint))
        problem = mismatch(got["same"], x, "repeat_kv(x, n_rep=1)", atol=0)
        if problem:
            problems.append(problem + " (with n_rep=1 it must return x unchanged)")
        return problems


# --------------------------------------------------------------------------------------------------
# Part 2: gqa_attention
# --------------------------------------------------------------------------------------------------
def _qkv(seed, B, n_head, n_kv_head, T, D):
    gen = seeded(seed)
    return randn(gen, B, n_head, T, D), randn(gen, B, n_kv_head, T, D), randn(gen, B, n_kv_head, T, D)


@register("ex2.gqa_attention", "gqa_attention: grouped-query scaled dot-product attention",
          where="the `gqa_attention` cell (part 2)")
class GQAAttention:
    @staticmethod
    def run(student, seed=0, B=2, n_head=6, n_kv_head=2, T=5, D=8):
        gqa_attention = student.get("gqa_attention", "(q, k, v, causal=True)")
        q, k, v = _qkv(seed, B, n_head, n_kv_head, T, D)
        return {"causal": call(gqa_attention, q.clone(), k.clone(), v.clone(), causal=True),
                "full": call(gqa_attention, q.clone(), k.clone(), v.clone(), causal=False)}

    @staticmethod
    def judge(got, seed=0, B=2, n_head=6, n_kv_head=2, T=5, D=8):
        missing = expect_keys(got, ["causal", "full"])
        if missing:
            return missing
        q, k, v = _qkv(seed, B, n_head, n_kv_head, T, D)
        problems = []
        for key, causal in (("causal", True), ("full", False)):
            # PyTorch's own grouped kernel is the reference: enable_gqa=True groups heads as h // n_rep.
            want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
            what = f"gqa_attention(q, k, v, causal={causal}) with n_head={n_head}, n_kv_head={n_kv_head}"
            problem = mismatch(got[key], want, what, atol=ATOL)
            if problem:
                hint = diagnose(got[key], [
                    (WRONG_ORDER, lambda: _manual(q, k, v, causal=causal, order="tile")),
                    ("the scores are not divided by sqrt(head_dim)",
                     lambda: _manual(q, k, v, causal=causal, scale=1.0)),
                    ("softmax is taken over the query axis (dim=-2) instead of the key axis (dim=-1)",
                     lambda: _manual(q, k, v, causal=causal, dim=-2)),
                    ("the causal mask is ignored: causal=True gives full attention",
                     lambda: _manual(q, k, v, causal=False)),
                    ("a causal mask is applied although causal=False", lambda: _manual(q, k, v, causal=True)),
                ], atol=ATOL)
                problems.append(explain(problem, hint))
        return problems


# --------------------------------------------------------------------------------------------------
# Part 3: the GroupedQueryAttention module
# --------------------------------------------------------------------------------------------------
def _module_state(seed, n_embd, n_head, n_kv_head):
    gen = seeded(seed)
    head_dim = n_embd // n_head
    scale = 1 / math.sqrt(n_embd)  # keeps activations of size ~1 so that differences are visible
    return {
        "q_proj.weight": randn(gen, n_head * head_dim, n_embd, scale=scale),
        "k_proj.weight": randn(gen, n_kv_head * head_dim, n_embd, scale=scale),
        "v_proj.weight": randn(gen, n_kv_head * head_dim, n_embd, scale=scale),
        "o_proj.weight": randn(gen, n_embd, n_head * head_dim, scale=scale),
    }


def _module_input(seed, B, T, n_embd):
    return randn(seeded(seed + 1000), B, T, n_embd)


def _not_dividing(n_head):
    """A number of key/value heads that does not divide n_head."""
    return next((k for k in range(2, n_head) if n_head % k), n_head + 1)


def _manual_module(state, x, n_head, n_kv_head, *, order="interleave", causal=True, o_proj=True):
    B, T, C = x.shape
    hd = C // n_head
    q = (x @ state["q_proj.weight"].T).view(B, T, n_head, hd).transpose(1, 2)  # (B, n_head, T, hd)
    k = (x @ state["k_proj.weight"].T).view(B, T, n_kv_head, hd).transpose(1, 2)  # (B, n_kv_head, T, hd)
    v = (x @ state["v_proj.weight"].T).view(B, T, n_kv_head, hd).transpose(1, 2)
    y = _manual(q, k, v, causal=causal, order=order).transpose(1, 2).reshape(B, T, C)
    return y @ state["o_proj.weight"].T if o_proj else y


@register("ex2.module", "GroupedQueryAttention: the module (projections, heads, output)",
          where="the `GroupedQueryAttention` cell (part 3)")
class Module:
    @staticmethod
    def run(student, seed=0, B=2, T=6, n_embd=32, n_head=4, n_kv_head=2):
        GQA = student.get("GroupedQueryAttention", "(n_embd, n_head, n_kv_head)")
        module = call(GQA, n_embd, n_head, n_kv_head)
        state = _module_state(seed, n_embd, n_head, n_kv_head)
        head_dim = n_embd // n_head
        for name in ("k_proj", "v_proj"):
            weight = getattr(getattr(module, name, None), "weight", None)
            if isinstance(weight, torch.Tensor) and weight.shape[0] != n_kv_head * head_dim:
                raise StudentError(
                    f"{name}.weight has {weight.shape[0]} output rows, expected n_kv_head * head_dim = "
                    f"{n_kv_head} * {head_dim} = {n_kv_head * head_dim}: the key/value projections are n_kv_head "
                    "heads wide, not n_head (that is the whole point of GQA: fewer key/value heads to cache).")
        load_weights(module, state, "your GroupedQueryAttention")
        with torch.no_grad():
            out = call(getattr(module, "forward", module), _module_input(seed, B, T, n_embd))
        bad = _not_dividing(n_head)
        try:
            GQA(n_embd, n_head, bad)
            raised = 0
        except ValueError:
            raised = 1
        except NotImplementedError:
            raised = 0
        except Exception:  # noqa: BLE001 - any other exception is reported as "not a ValueError"
            raised = 2
        return {"out": out, "raises": torch.tensor(raised)}

    @staticmethod
    def judge(got, seed=0, B=2, T=6, n_embd=32, n_head=4, n_kv_head=2):
        missing = expect_keys(got, ["out", "raises"])
        if missing:
            return missing
        state = _module_state(seed, n_embd, n_head, n_kv_head)
        x = _module_input(seed, B, T, n_embd)
        reference = MultiHeadAttention(n_embd, n_head, n_kv_head, bias=False, causal=True, impl="sdpa")
        reference.load_state_dict(state)
        with torch.no_grad():
            want = reference(x)
        problems = []
        problem = mismatch(got["out"], want, f"GroupedQueryAttention({n_embd}, {n_head}, {n_kv_head})(x)", atol=ATOL)
        if problem:
            hint = diagnose(got["out"], [
                (WRONG_ORDER, lambda: _manual_module(state, x, n_head, n_kv_head, order="tile")),
                ("the attention is not causal: a position sees later positions (use causal=True)",
                 lambda: _manual_module(state, x, n_head, n_kv_head, causal=False)),
                ("the output projection o_proj is not applied to the concatenated heads",
                 lambda: _manual_module(state, x, n_head, n_kv_head, o_proj=False)),
            ], atol=ATOL)
            problems.append(explain(problem, hint))
        flags = got["raises"].reshape(-1).double()
        raised = int(flags[0]) if flags.numel() and torch.isfinite(flags[0]) else 0
        bad = _not_dividing(n_head)
        if raised != 1:
            what = "did not raise a ValueError" if raised == 0 else "raised an exception that is not a ValueError"
            problems.append(
                f"GroupedQueryAttention({n_embd}, n_head={n_head}, n_kv_head={bad}) {what}: n_kv_head must divide "
                "n_head (each key/value head serves n_head // n_kv_head query heads); check it in __init__ and "
                "raise ValueError with a message that says what to change")
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
          where="the `kv_cache_bytes` cell (part 4)")
class KVCacheBytes:
    @staticmethod
    def run(student, seed=0):
        kv_cache_bytes = student.get(
            "kv_cache_bytes", "(n_layer, n_kv_head, head_dim, seq_len, batch_size, bytes_per_element)")
        values = []
        for _, n_layer, _, n_kv_head, head_dim, seq_len, batch, nbytes in _cases(seed):
            value = call(kv_cache_bytes, n_layer=n_layer, n_kv_head=n_kv_head, head_dim=head_dim, seq_len=seq_len,
                         batch_size=batch, bytes_per_element=nbytes)
            if isinstance(value, torch.Tensor):
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise StudentError(f"kv_cache_bytes should return a number (an int), got {type(value).__name__}.")
            values.append(float(value))
        return {"bytes": torch.tensor(values, dtype=torch.float64)}  # float64 holds these integers exactly

    @staticmethod
    def judge(got, seed=0):
        missing = expect_keys(got, ["bytes"])
        if missing:
            return missing
        cases = _cases(seed)
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
