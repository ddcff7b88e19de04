"""Functional models of the mistakes students make, shared by every exercise's judge.

A diagnosis is a (hint, thunk) pair (see ``base.diagnose``): the thunk computes what a known wrong
implementation returns on the judge's inputs, and the hint names the mistake in words a student can act on.
The models here serve every exercise whose code contains the same step, so a mistake named in exercise 1
(dividing by head_dim, an off-by-one causal mask) is named in exercises 2 and 4 as well.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor

Mistakes = List[Tuple[str, Callable[[], Tensor]]]
MASK_FILL = -1e9  # a finite "minus infinity", the other way students fill masks


def causal_allowed(T: int, S: int, diagonal: int = 0) -> Tensor:
    """(T, S) True where query i may attend key j: j <= i + (S - T) + diagonal (the queries are the last T
    of S positions, as when decoding with a cache; T == S is the usual lower triangle)."""
    return torch.ones(T, S, dtype=torch.bool).tril(S - T + diagonal)


def manual_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: Optional[float] = None,
                     allowed: Optional[Tensor] = None, dim: int = -1, fill: float = float("-inf"),
                     after_softmax: bool = False, kv_order: str = "interleave") -> Tensor:
    """softmax(q kᵀ · scale) v, written out, with the knobs the diagnoses turn.

    q (B, H, T, D); k, v (B, H_kv, S, D) with H_kv dividing H: query head h reads key/value head
    h // (H / H_kv) (``kv_order="interleave"``, right) or h % H_kv (``"tiled"``, the .repeat mistake).
    ``allowed`` (T, S) True = may attend; ``fill`` the value masked scores get; ``after_softmax`` zeroes the
    masked weights instead; ``dim`` the softmax axis."""
    n_rep = q.shape[1] // k.shape[1]
    if n_rep > 1:
        if kv_order == "interleave":
            k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        else:
            k, v = k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale  # (B, H, T, S)
    if allowed is not None and not after_softmax:
        scores = scores.masked_fill(~allowed, fill)
    weights = torch.softmax(scores, dim=dim)
    if allowed is not None and after_softmax:
        weights = weights.masked_fill(~allowed, 0.0)
    return weights @ v


def attention_mistakes(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Mistakes:
    """The mistakes of scaled dot-product attention (scale, softmax axis, every wrong causal mask), for
    q (B, H, T, D) and k, v (B, H_kv, S, D); with a cache the queries are the last T of S positions."""
    T, S, D = q.shape[-2], k.shape[-2], q.shape[-1]
    mask = causal_allowed(T, S) if causal else None
    mistakes: Mistakes = [
        ("the scores are not divided by sqrt(head_dim)", lambda: manual_attention(q, k, v, scale=1.0, allowed=mask)),
        ("the scores are divided by head_dim instead of sqrt(head_dim)",
         lambda: manual_attention(q, k, v, scale=1 / D, allowed=mask)),
        ("the scores are multiplied by sqrt(head_dim) instead of divided by it",
         lambda: manual_attention(q, k, v, scale=math.sqrt(D), allowed=mask)),
        ("softmax is taken over the query axis (dim=-2) instead of the key axis (dim=-1)",
         lambda: manual_attention(q, k, v, allowed=mask, dim=-2)),
    ]
    if q.shape[1] != k.shape[1]:
        mistakes.append(("the key/value heads are expanded in the wrong order: query head h must read key/value "
                         "head h // n_rep (repeat_interleave on dim=1), not h % n_kv_head (.repeat)",
                         lambda: manual_attention(q, k, v, allowed=mask, kv_order="tiled")))
    if not causal:
        mistakes.append(("causal=False still applies the causal mask: only mask when causal is True",
                         lambda: manual_attention(q, k, v, allowed=causal_allowed(T, S))))
        return mistakes
    return mistakes + [
        ("the causal mask is inverted: True must mean 'may attend'; you hid the past and kept the future, so the "
         "last position sees no key at all (NaN) - fill where the mask is False",
         lambda: manual_attention(q, k, v, allowed=~causal_allowed(T, S))),
        ("the causal mask is inverted: positions attend to the future instead of the past (use tril, not triu)",
         lambda: manual_attention(q, k, v, allowed=~causal_allowed(T, S, -1))),
        ("the causal mask is off by one: it hides the diagonal, so a position cannot see itself and the first "
         "position sees nothing (NaN); key j must be visible to query i when j <= i (tril with diagonal=0)",
         lambda: manual_attention(q, k, v, allowed=causal_allowed(T, S, -1))),
        ("the causal mask is off by one: it hides the diagonal, so a position cannot see itself and the first "
         "position, with every key masked, averages all values, the future included; key j must be visible to "
         "query i when j <= i (tril with diagonal=0)",
         lambda: manual_attention(q, k, v, allowed=causal_allowed(T, S, -1), fill=MASK_FILL)),
        ("the causal mask is off by one: each position also sees the next one (tril with diagonal=0, not 1)",
         lambda: manual_attention(q, k, v, allowed=causal_allowed(T, S, 1))),
        ("the mask is applied after the softmax: masked weights are zeroed but the rows no longer sum to 1; "
         "fill the scores with -inf before the softmax",
         lambda: manual_attention(q, k, v, allowed=causal_allowed(T, S), after_softmax=True)),
        ("the causal mask is aligned to the top-left corner: with T queries after a cache of S - T positions, "
         "query i is at position S - T + i and may see keys 0..S - T + i (torch.ones(T, S).tril(S - T))",
         lambda: manual_attention(q, k, v, allowed=torch.ones(T, S, dtype=torch.bool).tril()) if T != S else None),
        ("the mask is ignored: causal=True gives full attention", lambda: manual_attention(q, k, v)),
    ]


def layer_norm_mistakes(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Mistakes:
    """A hand-written LayerNorm's mistakes: the epsilon outside the square root or missing, the unbiased
    variance, the gain and bias left out. They differ most on an input of small variance (judge one)."""
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return [
        ("the epsilon is added after the square root: (x - mean) / (sqrt(var) + eps); it goes inside, "
         "(x - mean) / sqrt(var + eps)", lambda: (x - mean) / (var.sqrt() + eps) * weight + bias),
        ("there is no epsilon: (x - mean) / sqrt(var) blows up on an input of small variance; use "
         "sqrt(var + eps)", lambda: (x - mean) / var.sqrt() * weight + bias),
        ("the variance is the unbiased one (divided by n - 1); LayerNorm divides by n: x.var(-1, unbiased=False)",
         lambda: (x - mean) / (x.var(-1, keepdim=True, unbiased=True) + eps).sqrt() * weight + bias),
        ("the epsilon is not the one given (norm_eps / eps=1e-5)",
         lambda: (x - mean) / (var + 1e-6).sqrt() * weight + bias),
        ("the gain (weight) and bias are not applied after normalising",
         lambda: (x - mean) / (var + eps).sqrt()),
    ]


def small_variance(x: Tensor, scale: float = 1e-3) -> Tensor:
    """``x`` squeezed around its mean: an input on which an epsilon mistake changes the output a lot."""
    return x.mean(-1, keepdim=True) + scale * (x - x.mean(-1, keepdim=True))
