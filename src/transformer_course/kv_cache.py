"""Key/value caches for autoregressive decoding.

Without a cache, generating token t recomputes keys and values for all t previous tokens. A cache
stores them once: each step computes k and v for the new tokens only and attends over the stored ones.

Shapes: the cache stores ``(B, n_kv_head, capacity, head_dim)`` for keys and for values: the
*key/value* heads, with RoPE already applied to the keys. GQA's saving is exactly this: the cache holds
n_kv_head heads, and query heads are grouped against them inside ``attention`` after the lookup.

Life cycle: the model's ``setup_cache(batch_size, max_len)`` allocates one cache per layer,
``reset_cache()`` empties them (keeping the memory), ``remove_cache()`` frees them.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn


class KVCache(nn.Module):
    """Preallocated cache: writes new entries in place, never reallocates (gpt-fast's ``KVCache``).

    ``update(k, v)`` stores the T new positions at ``[length, length + T)``, advances ``length`` and
    returns views of everything stored so far, ``(B, n_kv_head, length, head_dim)``.
    """

    def __init__(self, batch_size: int, n_kv_head: int, capacity: int, head_dim: int, *, device=None, dtype=None):
        super().__init__()
        shape = (batch_size, n_kv_head, capacity, head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.length = 0  # positions stored so far; also the absolute position of the next token

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def reset(self) -> None:
        self.length = 0

    def _check(self, k: Tensor, v: Tensor) -> None:
        B, n_kv_head, _, head_dim = self.k.shape
        if k.shape != v.shape or k.shape[0] != B or k.shape[1] != n_kv_head or k.shape[3] != head_dim:
            raise ValueError(
                f"cache holds (B={B}, n_kv_head={n_kv_head}, ·, head_dim={head_dim}); got k {tuple(k.shape)}, "
                f"v {tuple(v.shape)}. Set up the cache with the batch size you decode with."
            )

    def update(self, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
        """k, v: (B, n_kv_head, T, head_dim) for the new positions -> all stored keys and values."""
        self._check(k, v)
        start, end = self.length, self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(
                f"KV cache is full: it holds {self.capacity} positions and {end} were asked for. "
                f"Call setup_cache(max_len={end}) or more, or reset_cache() to start a new sequence."
            )
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class RollingKVCache(KVCache):
    """Cache for sliding-window attention (Mistral): keeps only the last ``window`` positions.

    Memory stays at ``window`` positions however long the sequence grows. Position p is stored in slot
    ``p % window`` (a ring buffer). ``update`` returns, in position order, the kept positions that the
    new queries may still see followed by the new ones, so the caller's causal window mask with the
    default ``q_offset = S - T`` lines up; ``length`` still counts every position seen.
    """

    def update(self, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
        self._check(k, v)
        window, T = self.capacity, k.shape[2]
        kept = min(self.length, window)
        # slots of the kept positions, oldest first: positions length - kept, ..., length - 1
        order = torch.arange(self.length - kept, self.length, device=self.k.device) % window
        k_all = torch.cat([self.k.index_select(2, order), k], dim=2)  # (B, n_kv_head, kept + T, head_dim)
        v_all = torch.cat([self.v.index_select(2, order), v], dim=2)
        # store the last `window` of the new positions in their ring slots
        n_store = min(T, window)
        slots = torch.arange(self.length + T - n_store, self.length + T, device=self.k.device) % window
        self.k[:, :, slots] = k[:, :, T - n_store:]
        self.v[:, :, slots] = v[:, :, T - n_store:]
        self.length += T
        return k_all, v_all
