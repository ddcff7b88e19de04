"""Scaled dot-product attention, three ways, behind one entry point.

Shape vocabulary, used in every module of this package:

    B          batch size
    T          query positions
    S          key/value positions (S == T for self-attention without a cache)
    n_head     query heads
    n_kv_head  key/value heads; n_head % n_kv_head == 0
               (MHA: n_kv_head == n_head, MQA: n_kv_head == 1, GQA: in between)
    group      n_head // n_kv_head, query heads that share one key/value head
    head_dim   size of one head

    q: (B, n_head, T, head_dim)    k, v: (B, n_kv_head, S, head_dim)    out: (B, n_head, T, head_dim)

Positions. Query row i sits at absolute position ``q_offset + i`` and key column j at position j.
``q_offset`` defaults to ``S - T``: the queries are the *last* T of the S keys, which is what decoding
with a KV cache needs (one new query, S cached keys). Masks are boolean everywhere, **True = may attend**.

Implementations (``impl=``):
    "naive"  softmax(q kᵀ / √head_dim) v, materialising the (T, S) score matrix: the textbook formula.
    "tiled"  the FlashAttention algorithm (Dao et al., 2022) in plain PyTorch: query and key/value blocks,
             an online softmax with a running maximum and normaliser, never the (T, S) matrix.
    "sdpa"   ``torch.nn.functional.scaled_dot_product_attention``; ``backend=`` forces one of its kernels.

Query heads are grouped per key/value head (query head h reads key/value head ``h // group``, the
layout of ``enable_gqa=True`` in PyTorch), so GQA never copies keys or values to n_head heads.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

IMPLS = ("naive", "tiled", "sdpa")

# Names accepted by ``backend=``, mapped to the members of torch.nn.attention.SDPBackend.
SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "math": "MATH",
    "cudnn": "CUDNN_ATTENTION",
}


class BackendUnavailableError(RuntimeError):
    """A forced SDPA backend cannot run these inputs. Raised instead of falling back silently."""


# --------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------
def build_mask(
    T: int,
    S: int,
    *,
    causal: bool = False,
    window: Optional[int] = None,
    q_offset: Optional[int] = None,
    device=None,
) -> Optional[Tensor]:
    """Boolean (T, S) mask, True = may attend, or None when every query may see every key.

    causal: key j is visible to query i when ``j <= q_offset + i``.
    window: sliding window of width ``window`` (Mistral-style when causal): query at position p sees
        keys at positions ``p - window < j <= p``, i.e. itself and the ``window - 1`` keys before it.
        Without ``causal`` the window is symmetric: ``|p - j| < window`` (Longformer-style local attention).
    """
    if not causal and window is None:
        return None
    q_pos = torch.arange(T, device=device).unsqueeze(1) + _resolve_offset(T, S, q_offset)  # (T, 1)
    k_pos = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
    return visible(q_pos, k_pos, causal, window)


def prefix_lm_mask(T: int, prefix_length, *, device=None) -> Tensor:
    """Boolean prefix-LM mask, True = may attend (Raffel et al., 2020; UniLM, Dong et al., 2019).

    The first ``prefix_length`` positions (the prompt) see each other in both directions; every later
    position sees the whole prefix and, causally, the positions up to itself: key j is visible to query i
    when ``j < prefix_length or j <= i``. ``prefix_length`` 0 gives the causal mask, T the full one.

    prefix_length: an int -> (T, T); or a (B,) tensor of prefix lengths -> (B, 1, T, T), one per sequence.
    """
    q_pos = torch.arange(T, device=device).unsqueeze(1)  # (T, 1)
    k_pos = torch.arange(T, device=device).unsqueeze(0)  # (1, T)
    causal = k_pos <= q_pos  # (T, T)
    if isinstance(prefix_length, Tensor):
        if prefix_length.dim() != 1:
            raise ValueError(f"prefix_length must be an int or a (B,) tensor; got shape {tuple(prefix_length.shape)}.")
        in_prefix = k_pos < prefix_length.to(q_pos.device).view(-1, 1, 1)  # (B, 1, T)
        return (causal | in_prefix)[:, None]  # (B, 1, T, T)
    if not 0 <= prefix_length <= T:
        raise ValueError(f"prefix_length={prefix_length} must be between 0 (causal) and T={T} (full attention).")
    return causal | (k_pos < prefix_length)  # (T, T)


def padding_mask(lengths: Tensor, S: int) -> Tensor:
    """(B, 1, 1, S) key mask from the number of real (non-padding) tokens in each sequence.

    Right padding: keys at positions ``>= lengths[b]`` are hidden. Combine with ``causal=True`` freely.
    """
    k_pos = torch.arange(S, device=lengths.device)
    return (k_pos.unsqueeze(0) < lengths.unsqueeze(1))[:, None, None, :]  # (B, 1, 1, S)


def visible(q_pos: Tensor, k_pos: Tensor, causal: bool, window: Optional[int]) -> Tensor:
    """Boolean visibility (True = may attend) of keys at ``k_pos`` from queries at ``q_pos``, broadcast.

    Absolute positions, e.g. q_pos (T, 1) and k_pos (1, S); ``build_mask`` and ring attention use it.
    """
    # The broadcast shape via a subtraction: torch.broadcast_shapes imports sympy on its first call (~0.3 s).
    ok = torch.ones((q_pos - k_pos).shape, dtype=torch.bool, device=q_pos.device)
    if causal:
        ok &= k_pos <= q_pos
    if window is not None:
        ok &= k_pos > q_pos - window
        if not causal:
            ok &= k_pos < q_pos + window
    return ok


def _resolve_offset(T: int, S: int, q_offset: Optional[int]) -> int:
    offset = S - T if q_offset is None else q_offset
    if offset < 0:
        raise ValueError(
            f"q_offset={offset} is negative (T={T} queries, S={S} keys): with a causal mask the queries "
            "must sit at or after the first key. Pass fewer queries or more keys, or set q_offset >= 0."
        )
    return offset


def alibi_bias(slopes: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor:
    """ALiBi (Press et al., 2022): add ``-slope_h * |p_q - p_k|`` to the scores of head h.

    slopes: (n_head,); q_pos: (T, 1); k_pos: (1, S)  ->  (n_head, T, S) float bias.
    For causal attention this is the paper's ``m * (j - i)`` for j <= i.
    """
    distance = (q_pos - k_pos).abs().to(slopes.dtype)  # (T, S)
    return -slopes.view(-1, 1, 1) * distance  # (n_head, T, S)


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    window: Optional[int] = None,
    mask: Optional[Tensor] = None,
    q_offset: Optional[int] = None,
    alibi_slopes: Optional[Tensor] = None,
    scale: Optional[float] = None,
    impl: str = "sdpa",
    backend: Optional[str] = None,
    block_size: int = 256,
) -> Tensor:
    """Scaled dot-product attention. Returns (B, n_head, T, head_dim).

    Args:
        q: (B, n_head, T, head_dim). k, v: (B, n_kv_head, S, head_dim), n_head a multiple of n_kv_head.
        causal: hide keys after each query's position (see the module docstring for positions).
        window: sliding-window width (see ``build_mask``).
        mask: boolean, broadcastable to (B, n_head, T, S), True = may attend (padding, custom patterns).
            Combined with ``causal`` and ``window`` by logical and.
        q_offset: absolute position of the first query; default ``S - T``.
        alibi_slopes: (n_head,) ALiBi slopes; adds ``-slope * distance`` to the scores.
        scale: multiplier of q kᵀ; default ``1 / sqrt(head_dim)``.
        impl: "naive", "tiled" or "sdpa".
        backend: with impl="sdpa", force one SDPA kernel: "flash", "efficient", "math" or "cudnn".
            If that kernel cannot run these inputs, ``BackendUnavailableError`` says why; nothing falls back.
            On CUDA, "flash" is FlashAttention(-2) and needs float16/bfloat16 and no explicit mask. On the CPU,
            PyTorch ships its own tiled ("flash") kernel that also takes float32 and masks, so it runs there.
        block_size: with impl="tiled", the query and key/value block size.

    A query that may attend to no key at all (a fully masked row) gets an output of zeros from
    "naive" and "tiled"; PyTorch's kernels may return NaN or zeros for such rows.
    """
    check_shapes(q, k, v, mask)
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {IMPLS}.")
    if backend is not None and impl != "sdpa":
        raise ValueError(f"backend={backend!r} only applies to impl='sdpa', not impl={impl!r}.")
    if window is not None and window < 1:
        raise ValueError(f"window={window} must be a positive number of keys, or None for no window.")
    T, S = q.shape[-2], k.shape[-2]
    offset = _resolve_offset(T, S, q_offset) if (causal or window is not None or alibi_slopes is not None) else 0
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if causal and window is None and offset >= S - 1:
        causal = False  # the first query already sees every key (one-token decoding): no mask needed

    if impl == "tiled":
        return _tiled(q, k, v, causal, window, mask, offset, alibi_slopes, scale, block_size)
    if impl == "naive":
        probs = attention_probs(
            q, k, causal=causal, window=window, mask=mask, q_offset=offset, alibi_slopes=alibi_slopes, scale=scale
        )
        B, n_head, T, head_dim = q.shape
        out = group_rows(probs.to(v.dtype), k.shape[1]) @ v  # (B, n_kv_head, group·T, head_dim)
        return out.view(B, n_head, T, head_dim)
    return _sdpa(q, k, v, causal, window, mask, offset, alibi_slopes, scale, backend)


def score_dtype(x: Tensor) -> torch.dtype:
    """Scores and softmax run in float32 for half-precision inputs, and in float64 for float64 inputs."""
    return torch.promote_types(x.dtype, torch.float32)


def attention_probs(
    q: Tensor,
    k: Tensor,
    *,
    causal: bool = False,
    window: Optional[int] = None,
    mask: Optional[Tensor] = None,
    q_offset: Optional[int] = None,
    alibi_slopes: Optional[Tensor] = None,
    scale: Optional[float] = None,
) -> Tensor:
    """The attention weights softmax(q kᵀ · scale + bias), (B, n_head, T, S), in float32 (float64 for float64 inputs).

    This is the "naive" path; it is also what the book plots to show what heads attend to.
    """
    n_kv_head, T, S = k.shape[1], q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (group_rows(q, n_kv_head) @ k.transpose(-1, -2)).to(score_dtype(q)) * scale  # (B, n_kv_head, group·T, S)
    scores = scores.view(q.shape[0], q.shape[1], T, S)  # (B, n_head, T, S)
    offset = _resolve_offset(T, S, q_offset) if (causal or window is not None or alibi_slopes is not None) else 0
    q_pos = torch.arange(T, device=q.device).unsqueeze(1) + offset  # (T, 1)
    k_pos = torch.arange(S, device=q.device).unsqueeze(0)  # (1, S)
    if alibi_slopes is not None:
        scores = scores + alibi_bias(alibi_slopes.float(), q_pos, k_pos)
    allowed = _allowed(q_pos, k_pos, causal, window, mask)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if allowed is not None:  # fully masked rows: softmax gives NaN; define them as zeros
        probs = probs.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)
    return probs


# --------------------------------------------------------------------------------------------------
# The FlashAttention algorithm in plain PyTorch
# --------------------------------------------------------------------------------------------------
class OnlineSoftmax:
    """softmax(scores) @ v accumulated one key/value block at a time (Milakov & Gimelshein, 2018).

    Keeps, for every query row, the running maximum ``m`` of the scores seen so far, the normaliser
    ``l = Σ exp(s - m)`` and the unnormalised output ``acc = Σ exp(s - m) v``. When a new block raises
    the maximum, the old sums are rescaled by ``exp(m_old - m_new)``. After the last block,
    ``acc / l`` equals softmax over all keys, exactly up to round-off. The tiled kernel and ring
    attention both use this class; only where the blocks come from differs.
    """

    def __init__(self) -> None:
        self.m: Optional[Tensor] = None
        self.l: Optional[Tensor] = None
        self.acc: Optional[Tensor] = None

    def update(self, scores: Tensor, v: Tensor) -> None:
        """scores: (..., Tq, Sk) in score_dtype, -inf where masked; v: (..., Sk, head_dim) (broadcastable)."""
        block_max = scores.amax(dim=-1, keepdim=True)  # (..., Tq, 1)
        m_new = block_max if self.m is None else torch.maximum(self.m, block_max)
        # A row that has seen only -inf keeps m = -inf; use 0 there so that exp() gives 0, not NaN.
        m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        p = torch.exp(scores - m_safe)  # (..., Tq, Sk)
        pv = p @ v.to(p.dtype)  # (..., Tq, head_dim)
        if self.m is None:
            self.l, self.acc = p.sum(dim=-1, keepdim=True), pv
        else:
            alpha = torch.exp(self.m - m_safe)  # rescales the old sums; exp(-inf) = 0 for empty rows
            self.l = alpha * self.l + p.sum(dim=-1, keepdim=True)
            self.acc = alpha * self.acc + pv
        self.m = m_new

    @property
    def empty(self) -> bool:
        """True until the first ``update``."""
        return self.acc is None

    def result(self) -> Tensor:
        """acc / l, with zeros for rows that saw no visible key."""
        if self.empty:
            raise RuntimeError("OnlineSoftmax.result() called before any update().")
        return torch.where(self.l > 0, self.acc / self.l.clamp_min(torch.finfo(self.l.dtype).tiny), 0.0)


def _tiled(q, k, v, causal, window, mask, offset, alibi_slopes, scale, block_size):
    if block_size < 1:
        raise ValueError(f"block_size={block_size} must be a positive integer.")
    B, n_head, T, head_dim = q.shape
    n_kv_head, S = k.shape[1], k.shape[2]
    group = n_head // n_kv_head
    qg = _grouped(q, n_kv_head)  # (B, n_kv_head, group, T, head_dim)
    slopes = None if alibi_slopes is None else _grouped(alibi_slopes.float().view(1, -1, 1, 1), n_kv_head)
    full_mask = None if mask is None else mask.expand(B, n_head, T, S)
    out = torch.empty_like(q)
    for i0 in range(0, T, block_size):
        i1 = min(i0 + block_size, T)
        bq = i1 - i0
        q_blk = qg[..., i0:i1, :].reshape(B, n_kv_head, group * bq, head_dim)  # the group's rows stacked
        q_pos = torch.arange(i0, i1, device=q.device).unsqueeze(1) + offset  # (bq, 1)
        acc = OnlineSoftmax()
        for j0 in range(0, S, block_size):
            j1 = min(j0 + block_size, S)
            if causal and j0 > offset + i1 - 1:
                break  # this block and all later ones lie in every query's future
            if window is not None and j1 - 1 <= offset + i0 - window:
                continue  # this block lies entirely before every query's window
            k_pos = torch.arange(j0, j1, device=q.device).unsqueeze(0)  # (1, bk)
            s = (q_blk @ k[:, :, j0:j1].transpose(-1, -2)).to(score_dtype(q)) * scale  # (B, n_kv_head, group·bq, bk)
            s = s.view(B, n_kv_head, group, bq, j1 - j0)  # (B, n_kv_head, group, bq, bk) for biases and masks
            if slopes is not None:
                s = s - slopes * (q_pos - k_pos).abs()
            block_mask = None if full_mask is None else _grouped(full_mask[..., i0:i1, j0:j1], n_kv_head)
            allowed = _allowed(q_pos, k_pos, causal, window, block_mask)
            if allowed is not None:
                s = s.masked_fill(~allowed, float("-inf"))
            acc.update(s.view(B, n_kv_head, group * bq, j1 - j0), v[:, :, j0:j1])
        if acc.empty:  # every key block was skipped: nothing visible
            out[..., i0:i1, :] = 0
        else:
            out[..., i0:i1, :] = acc.result().view(B, n_head, bq, head_dim).to(q.dtype)
    return out


# --------------------------------------------------------------------------------------------------
# PyTorch's fused kernels
# --------------------------------------------------------------------------------------------------
def _sdpa(q, k, v, causal, window, mask, offset, alibi_slopes, scale, backend):
    T, S = q.shape[-2], k.shape[-2]
    kwargs = {"scale": scale, "enable_gqa": k.shape[1] != q.shape[1]}
    # SDPA's is_causal aligns the mask to the top-left corner (key j visible to query i when j <= i),
    # so it is only right when the queries start at position 0; otherwise pass the mask explicitly.
    if causal and window is None and mask is None and alibi_slopes is None and offset == 0 and T == S:
        kwargs["is_causal"] = True
    elif causal or window is not None or alibi_slopes is not None:  # positions matter: build mask or bias
        q_pos = torch.arange(T, device=q.device).unsqueeze(1) + offset
        k_pos = torch.arange(S, device=q.device).unsqueeze(0)
        allowed = _allowed(q_pos, k_pos, causal, window, mask)
        if alibi_slopes is not None:
            bias = alibi_bias(alibi_slopes.float(), q_pos, k_pos).to(q.dtype)  # (n_head, T, S)
            if allowed is not None:
                bias = bias.masked_fill(~allowed, float("-inf"))
            kwargs["attn_mask"] = bias
        elif allowed is not None:
            kwargs["attn_mask"] = allowed
    elif mask is not None:
        kwargs["attn_mask"] = mask
    run = F.scaled_dot_product_attention if backend is None else (
        lambda q, k, v, **kw: _sdpa_forced(q, k, v, kw, backend))
    if kwargs["enable_gqa"] and "attn_mask" not in kwargs and not kwargs.get("is_causal"):
        # Without a mask the queries are independent, so the group of query heads that share a key/value
        # head can be read as group·T queries of one head (multi-query decoding): no GQA kernel needed.
        B, n_head, T, head_dim = q.shape
        kwargs["enable_gqa"] = False
        out = run(q.reshape(B, k.shape[1], -1, head_dim), k, v, **kwargs)  # (B, n_kv_head, group·T, head_dim)
        return out.view(B, n_head, T, head_dim)
    if kwargs["enable_gqa"]:
        k, v = k.contiguous(), v.contiguous()  # PyTorch's CPU GQA path is many times slower on strided views
    return run(q, k, v, **kwargs)


def _sdpa_forced(q, k, v, kwargs, backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if backend not in SDPA_BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {sorted(SDPA_BACKENDS)} (or None for PyTorch's choice).")
    with warnings.catch_warnings(record=True) as caught:  # PyTorch explains its refusals as warnings
        warnings.simplefilter("always")
        try:
            with sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[backend])):
                return F.scaled_dot_product_attention(q, k, v, **kwargs)
        except RuntimeError as err:
            reasons = "; ".join(str(w.message).strip() for w in caught) or str(err)
    has_mask = "attn_mask" in kwargs
    hints = []
    if backend in ("flash", "efficient", "cudnn") and q.device.type != "cuda":
        hints.append(f"the {backend} kernel of this PyTorch build may need a CUDA device (inputs are on {q.device.type})")
    if backend in ("flash", "cudnn") and q.dtype not in (torch.float16, torch.bfloat16):
        hints.append(f"on CUDA it needs float16 or bfloat16 inputs (got {q.dtype})")
    if backend in ("flash", "cudnn") and has_mask:
        hints.append("it takes no explicit mask: use causal=True without window, ALiBi or a cache offset")
    raise BackendUnavailableError(
        f"SDPA backend {backend!r} cannot run these inputs (device={q.device.type}, dtype={q.dtype}, "
        f"explicit mask={'yes' if has_mask else 'no'}, head_dim={q.shape[-1]}). "
        + (("Likely cause: " + "; ".join(hints) + ". ") if hints else "")
        + f"PyTorch said: {reasons}. To run anyway, pass backend=None to let PyTorch choose, or another impl."
    )


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def _grouped(x: Tensor, n_kv_head: int) -> Tensor:
    """(B, n_head, ...) -> (B, n_kv_head, group, ...): query heads grouped by the key/value head they read."""
    return x.unflatten(1, (n_kv_head, x.shape[1] // n_kv_head))


def group_rows(x: Tensor, n_kv_head: int) -> Tensor:
    """(B, n_head, T, X) -> (B, n_kv_head, group·T, X): the query rows of a group stacked.

    GQA without copying keys or values: ``group_rows(q) @ kᵀ`` and ``group_rows(p) @ v`` are plain batched
    matrix products over n_kv_head. (Broadcasting k over a separate group dimension instead,
    (B, n_kv_head, 1, S, head_dim), makes ``torch.matmul`` copy k group times.)
    """
    B, n_head, T, X = x.shape
    return x.reshape(B, n_kv_head, (n_head // n_kv_head) * T, X)


def _allowed(q_pos: Tensor, k_pos: Tensor, causal: bool, window: Optional[int], mask: Optional[Tensor]) -> Optional[Tensor]:
    """``visible`` and ``mask`` combined, or None when nothing is hidden (then no mask is built at all)."""
    if not causal and window is None:
        return mask
    allowed = visible(q_pos, k_pos, causal, window)
    return allowed if mask is None else allowed & mask


def check_shapes(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor]) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"q, k and v must be 4-D (B, heads, positions, head_dim); got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}. Reshape (B, T, C) inputs with x.view(B, T, n_head, head_dim).transpose(1, 2)."
        )
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape; got {tuple(k.shape)} and {tuple(v.shape)}.")
    if q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree in batch size (dim 0) and head_dim (dim 3)."
        )
    if q.shape[1] % k.shape[1] != 0:
        raise ValueError(
            f"n_head={q.shape[1]} (q.shape[1]) must be a multiple of n_kv_head={k.shape[1]} (k.shape[1]); "
            "choose n_kv_head among the divisors of n_head."
        )
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be boolean (True = may attend); got dtype {mask.dtype}.")
        try:
            torch.broadcast_shapes(mask.shape, (q.shape[0], q.shape[1], q.shape[2], k.shape[2]))
        except RuntimeError:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to (B, n_head, T, S) = "
                f"{(q.shape[0], q.shape[1], q.shape[2], k.shape[2])}."
            ) from None
