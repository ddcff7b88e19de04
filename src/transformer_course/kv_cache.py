"""Key/value caches for autoregressive decoding.

Without a cache, generating token t recomputes keys and values for all t previous tokens. A cache
stores them once: each step computes k and v for the new tokens only and attends over the stored ones.

Shapes: the cache stores ``(B, n_kv_head, capacity, head_dim)`` for keys and for values: the
*key/value* heads, with RoPE already applied to the keys. GQA's saving is exactly this: the cache holds
n_kv_head heads, and query heads are grouped against them inside ``attention`` after the lookup.

Positions are explicit, as in gpt-fast and litgpt: ``update(k, v, start_pos)`` writes the new entries at
``start_pos ..``, so a forward pass from position 0 starts a new sequence and nothing depends on what
an earlier call left behind. Life cycle: the model's ``setup_cache(batch_size, max_len)`` allocates one
cache per layer, ``remove_cache()`` frees them.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn


class KVCache(nn.Module):
    """Preallocated cache: writes new entries in place, never reallocates (gpt-fast's ``KVCache``).

    ``k``, ``v``: the buffers, (B, n_kv_head, capacity, head_dim). ``length``: positions stored, 0 .. length - 1.
    ``update(k, v, start_pos)`` stores the T new positions at ``[start_pos, start_pos + T)``, sets ``length``
    to ``start_pos + T`` and returns views of positions ``0 .. length - 1``, ``(B, n_kv_head, length, head_dim)``.
    ``start_pos`` may go back (a new sequence at 0, or a rejected draft in speculative decoding), not forward
    past ``length``: those positions were never stored.
    """

    def __init__(self, batch_size: int, n_kv_head: int, capacity: int, head_dim: int, *, device=None, dtype=None):
        super().__init__()
        shape = (batch_size, n_kv_head, capacity, head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.length = 0  # positions stored: 0 .. length - 1

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def _check(self, k: Tensor, v: Tensor, start_pos: int) -> None:
        B, n_kv_head, _, head_dim = self.k.shape
        if k.shape != v.shape or k.shape[0] != B or k.shape[1] != n_kv_head or k.shape[3] != head_dim:
            raise ValueError(
                f"cache holds (B={B}, n_kv_head={n_kv_head}, ·, head_dim={head_dim}); got k {tuple(k.shape)}, "
                f"v {tuple(v.shape)}. Set up the cache with the batch size you decode with."
            )
        if start_pos > 0 and self.length == 0:
            raise ValueError(f"start_pos={start_pos}, but the cache holds no positions yet: start at start_pos=0.")
        if not 0 <= start_pos <= self.length:
            raise ValueError(
                f"start_pos={start_pos}, but the cache holds positions 0 .. {self.length - 1}: continue at "
                f"start_pos={self.length} or earlier (0 starts a new sequence)."
            )

    def update(self, k: Tensor, v: Tensor, start_pos: int) -> Tuple[Tensor, Tensor]:
        """k, v: (B, n_kv_head, T, head_dim) for positions start_pos .. start_pos + T - 1 -> all stored ones."""
        self._check(k, v, start_pos)
        end = start_pos + k.shape[2]
        if end > self.capacity:
            raise ValueError(
                f"KV cache is full: it holds {self.capacity} positions and position {end - 1} was asked for. "
                f"Call setup_cache(batch_size, max_len={end}) or more."
            )
        self.k[:, :, start_pos:end] = k
        self.v[:, :, start_pos:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class RollingKVCache(KVCache):
    """Cache for sliding-window attention (Mistral): keeps only the last ``window`` positions.

    Memory stays at ``window`` positions however long the sequence grows. Position p is stored in slot
    ``p % window`` (a ring buffer). ``update`` returns, in position order, the kept positions that the
    new queries may still see followed by the new ones, so the caller's causal window mask with the
    default ``q_offset = S - T`` lines up; ``length`` still counts every position seen. Positions that
    left the window cannot be written again, so ``start_pos`` is either ``length`` (continue) or 0 (restart).
    """

    def update(self, k: Tensor, v: Tensor, start_pos: int) -> Tuple[Tensor, Tensor]:
        self._check(k, v, start_pos)
        if start_pos == 0:
            self.length = 0
        elif start_pos != self.length:
            raise ValueError(
                f"a rolling cache continues at start_pos={self.length} or restarts at 0; got {start_pos} "
                "(positions that left the window are gone)."
            )
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
