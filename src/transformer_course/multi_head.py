"""Multi-head attention as a module: projections, heads, positions, cache, output projection.

Shapes: x (B, T, C) with C = n_embd; q (B, n_head, T, head_dim); k, v (B, n_kv_head, S, head_dim).
With ``n_kv_head < n_head`` this is grouped-query attention (Ainslie et al., 2023), with
``n_kv_head == 1`` multi-query attention (Shazeer, 2019). Keys and values keep their n_kv_head heads
through the cache; ``attention`` groups the query heads against them, so nothing is ever repeated.

Weights (documented, stable names): ``q_proj.weight`` (n_head·head_dim, C), ``k_proj.weight`` and
``v_proj.weight`` (n_kv_head·head_dim, C), ``o_proj.weight`` (C, n_head·head_dim), biases if ``bias``
(q, k and v only with ``qkv_bias``).
Head h uses rows ``h·head_dim : (h+1)·head_dim`` of q_proj.weight.
"""
from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor, nn

from .attention import attention
from .kv_cache import KVCache
from .positions import alibi_slopes, apply_rope


class MultiHeadAttention(nn.Module):
    """Self-attention (causal or bidirectional) or cross-attention with MHA, GQA or MQA.

    Args:
        n_embd: model width C. n_head, n_kv_head: query and key/value heads (n_kv_head divides n_head).
        causal: causal mask in self-attention. window: sliding-window width, or None.
        cross: keys and values come from ``context`` (an encoder's output), not from x; no mask, no RoPE.
        alibi: add ALiBi biases with the standard slopes for n_head heads.
        bias: biases on all four projections; qkv_bias: biases on q, k and v even without ``bias`` (Qwen2).
        rope_layout: pair layout that ``rope=(cos, sin)`` in ``forward`` was built for.
        impl: "naive", "tiled" or "sdpa" (see ``attention``); can be changed on the fly.
    """

    def __init__(self, n_embd: int, n_head: int, n_kv_head: Optional[int] = None, *, bias: bool = False,
                 causal: bool = True, window: Optional[int] = None, cross: bool = False, alibi: bool = False,
                 qkv_bias: bool = False, rope_layout: str = "half", impl: str = "sdpa", device=None,
                 dtype=None):
        super().__init__()
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        if n_embd % n_head or n_head % n_kv_head:
            raise ValueError(
                f"need n_embd % n_head == 0 and n_head % n_kv_head == 0; got n_embd={n_embd}, "
                f"n_head={n_head}, n_kv_head={n_kv_head}."
            )
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, n_embd // n_head
        self.causal, self.window, self.cross = causal and not cross, window, cross
        self.rope_layout, self.impl = rope_layout, impl
        kw = dict(device=device, dtype=dtype)
        qkv_bias = bias or qkv_bias
        self.q_proj = nn.Linear(n_embd, n_head * self.head_dim, bias=qkv_bias, **kw)
        self.k_proj = nn.Linear(n_embd, n_kv_head * self.head_dim, bias=qkv_bias, **kw)
        self.v_proj = nn.Linear(n_embd, n_kv_head * self.head_dim, bias=qkv_bias, **kw)
        self.o_proj = nn.Linear(n_head * self.head_dim, n_embd, bias=bias, **kw)
        if alibi:
            self.register_buffer("alibi_slopes", alibi_slopes(n_head).to(device), persistent=False)
        else:
            self.alibi_slopes = None
        self.kv_cache: Optional[KVCache] = None

    def forward(self, x: Tensor, *, start_pos: Optional[int] = None, context: Optional[Tensor] = None,
                rope: Optional[Tuple[Tensor, Tensor]] = None, mask: Optional[Tensor] = None) -> Tensor:
        """x: (B, T, C) -> (B, T, C).

        start_pos: with a KV cache (``self.kv_cache``), where x starts: its keys and values are stored at
            positions start_pos .. start_pos + T - 1 and x attends to every cached position before them.
            None: x is a sequence of its own and the cache is not used.
        context: (B, S, C) encoder output, required for cross-attention.
        rope: (cos, sin) for the T new positions, each (T, head_dim), applied to q and k.
        mask: boolean (B or 1, 1, T or 1, S) extra mask, True = may attend (padding).
        """
        B, T, C = x.shape
        if self.cross and context is None:
            raise ValueError("cross-attention needs context= (the encoder output, shape (B, S, C)).")
        source = context if self.cross else x
        S_new = source.shape[1]
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, head_dim)
        k = self.k_proj(source).view(B, S_new, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, S, hd)
        v = self.v_proj(source).view(B, S_new, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, S, hd)
        if rope is not None and not self.cross:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin, self.rope_layout), apply_rope(k, cos, sin, self.rope_layout)
        if self.kv_cache is not None and start_pos is not None and not self.cross:
            k, v = self.kv_cache.update(k, v, start_pos)  # (B, n_kv_head, S, head_dim): positions 0 .. S - 1
        y = attention(q, k, v, causal=self.causal, window=self.window, mask=mask,
                      alibi_slopes=self.alibi_slopes, impl=self.impl)  # (B, n_head, T, head_dim)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))  # (B, T, C)
