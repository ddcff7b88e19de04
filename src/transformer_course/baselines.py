"""Baselines for a byte-level language model: what does a model with no neural network score?

    train, val = load_split("train"), load_split("val")
    unigram_bits_per_byte(train, val)          # byte frequencies only
    byte_entropy_bits(train)                   # the entropy of those frequencies, on the same bytes
    ngram_bits_per_byte(train, val, order=5)   # the previous 4 bytes, Witten-Bell smoothed

Both return bits per byte on ``val``, the unit of ``evaluate`` (``loss / ln 2`` with the byte tokenizer),
so a transformer's validation loss can be put beside them. A model that does not beat the 5-gram has not
yet learned anything a lookup table could not.

Unigram: add-one (Laplace) smoothing, ``p(w) = (c(w) + 1) / (N + 256)``, so no byte has probability 0.

n-gram of order n (context h = the n - 1 previous bytes): interpolated Witten-Bell smoothing (Witten &
Bell, 1991), in the recursive form of Chen & Goodman (1999, "An empirical study of smoothing techniques
for language modeling", section 2.5)::

    p(w | h) = (c(h w) + N1+(h .) * p(w | h')) / (c(h) + N1+(h .))

where h' is h without its oldest byte, c(h w) counts the n-gram in the training data, c(h) = sum over w
of c(h w), and N1+(h .) is the number of distinct bytes seen after h. The more kinds of bytes follow a
context, the more weight goes to the shorter context. A context never seen in training (c(h) = 0) uses
p(w | h') unchanged. The recursion ends at the add-one unigram, so order 1 *is* the unigram baseline.

Where scoring starts: every byte of ``val`` is scored, the first n - 1 with the context they have
(byte i, for i < n - 1, with its i previous bytes). So every order is averaged over the same bytes.
``train`` and ``val`` are each one stream: n-grams run across the EOT separators between documents,
exactly as the transformer's training windows do.

Vectorised with numpy: an n-gram is packed into one uint64 (8 bits per byte, oldest byte highest, so
order <= 8), counted with ``np.unique`` and looked up with ``np.searchsorted``. Order 5 on the ~11 MB
training split takes seconds, not minutes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Union

import numpy as np
import torch
from torch import Tensor

MAX_ORDER = 8  # 8 bytes fill a uint64 key
_BYTE = np.uint64(8)  # bits per byte, as a numpy scalar so shifts stay in uint64

Bytes = Union[Tensor, np.ndarray, bytes]


def unigram_bits_per_byte(train: Bytes, val: Bytes) -> float:
    """Cross-entropy on ``val`` in bits per byte of add-one-smoothed byte frequencies from ``train``."""
    train, val = _as_bytes(train, "train"), _as_bytes(val, "val", nonempty=True)
    return _bits_per_byte(_unigram(train)[val])


def byte_entropy_bits(data: Bytes) -> float:
    """Entropy of the byte frequencies of ``data``, in bits per byte: the loss of the best context-free model
    of ``data`` itself (no smoothing, no held-out bytes; ``unigram_bits_per_byte`` is the held-out version)."""
    counts = np.bincount(_as_bytes(data, "data", nonempty=True), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def ngram_bits_per_byte(train: Bytes, val: Bytes, order: int) -> float:
    """Cross-entropy on ``val`` in bits per byte of a Witten-Bell byte n-gram model fitted on ``train``.

    ``order`` n counts the predicted byte: n = 1 is the unigram, n = 5 conditions on 4 previous bytes.
    Every byte of ``val`` is scored; the first n - 1 with the shorter context they have.
    """
    _check_order(order)
    train, val = _as_bytes(train, "train"), _as_bytes(val, "val", nonempty=True)
    model = _fit(train, order)
    probs = np.empty(len(val))  # p(val[i] | up to order - 1 previous bytes)
    head = min(order - 1, len(val))
    for i in range(head):  # the first bytes: only i previous bytes exist, so only orders 1 .. i + 1
        probs[i] = _probabilities(model, [_ngram_keys(val[i - k: i + 1], k + 1) for k in range(i + 1)])[0]
    if len(val) > head:
        # n-gram of length k + 1 ending at byte i starts at i - k; for i >= order - 1 it is key [i - k] of
        # _ngram_keys(val, k + 1), so byte i = order - 1 + j is element [order - 1 - k + j].
        keys = [_ngram_keys(val, k + 1)[order - 1 - k:] for k in range(order)]  # each (len(val) - order + 1,)
        probs[head:] = _probabilities(model, keys)
    return _bits_per_byte(probs)


def ngram_probabilities(train: Bytes, context: Bytes, order: int) -> Tensor:
    """p(w | context) for all 256 next bytes w, (256,) float64, under the same model as ``ngram_bits_per_byte``.

    Only the last ``order - 1`` bytes of ``context`` matter (fewer if it is shorter). Sums to 1: handy to
    check the smoothing, or to sample text from the n-gram model.
    """
    _check_order(order)
    train, context = _as_bytes(train, "train"), _as_bytes(context, "context")
    context = context[len(context) - min(order - 1, len(context)):]  # the bytes the model looks at
    model = _fit(train, len(context) + 1)
    nxt = np.arange(256, dtype=np.uint64)  # (256,) every candidate next byte
    keys = []
    for k in range(len(context) + 1):  # n-grams of length k + 1: the last k context bytes, then w
        prefix = _ngram_keys(context[len(context) - k:], k)[0] if k else np.uint64(0)
        keys.append((prefix << _BYTE) | nxt)
    return torch.from_numpy(_probabilities(model, keys))


# --------------------------------------------------------------------------------------------------
# Counting and interpolating
# --------------------------------------------------------------------------------------------------
@dataclass
class _Level:
    """Training counts for n-grams of one length n >= 2 (context h = the first n - 1 bytes)."""

    ngrams: np.ndarray  # (G,) sorted distinct n-gram keys
    counts: np.ndarray  # (G,) c(h w)
    contexts: np.ndarray  # (H,) sorted distinct context keys (n-gram key >> 8)
    totals: np.ndarray  # (H,) c(h) = sum_w c(h w)
    types: np.ndarray  # (H,) N1+(h .) = distinct w seen after h


@dataclass
class _Model:
    unigram: np.ndarray  # (256,) add-one probabilities
    levels: List[_Level]  # n = 2 .. order


def _fit(train: np.ndarray, order: int) -> _Model:
    levels = []
    for n in range(2, order + 1):
        ngrams, counts = np.unique(_ngram_keys(train, n), return_counts=True)  # sorted
        ctx = ngrams >> _BYTE  # (G,) sorted too: the context is the key's high bits
        starts = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]]) if len(ctx) else np.zeros(0, dtype=np.int64)
        totals = np.add.reduceat(counts, starts) if len(ctx) else np.zeros(0, dtype=np.int64)
        types = np.diff(np.r_[starts, len(ctx)])
        levels.append(_Level(ngrams, counts, ctx[starts], totals, types))
    return _Model(_unigram(train), levels)


def _probabilities(model: _Model, keys: List[np.ndarray]) -> np.ndarray:
    """p(w | h) for Q queries: keys[k] (Q,) holds the n-grams of length k + 1 ending in w, k = 0 .. n - 1.

    Starts from the unigram (keys[0] is w itself) and applies the Witten-Bell step once per longer context.
    """
    p = model.unigram[keys[0].astype(np.int64)]  # (Q,)
    for level, key in zip(model.levels, keys[1:]):
        count = _lookup(level.ngrams, level.counts, key)  # c(h w)
        total = _lookup(level.contexts, level.totals, key >> _BYTE)  # c(h)
        types = _lookup(level.contexts, level.types, key >> _BYTE)  # N1+(h .)
        p = np.where(total > 0, (count + types * p) / np.maximum(total + types, 1), p)
    return p


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values at the positions of ``queries`` in ``sorted_keys``; 0 for keys that are absent."""
    if len(sorted_keys) == 0:
        return np.zeros(len(queries), dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == queries, values[at], 0)


def _ngram_keys(data: np.ndarray, n: int) -> np.ndarray:
    """Every n-gram of ``data`` packed as uint64, oldest byte highest: (len(data) - n + 1,) (empty if shorter)."""
    count = max(len(data) - n + 1, 0)
    keys = np.zeros(count, dtype=np.uint64)
    for k in range(n):
        keys = (keys << _BYTE) | data[k: k + count].astype(np.uint64)
    return keys


def _unigram(train: np.ndarray) -> np.ndarray:
    return (np.bincount(train, minlength=256) + 1) / (len(train) + 256)  # (256,) add-one


def _bits_per_byte(probs: np.ndarray) -> float:
    return float(-np.log2(probs).mean())


def _as_bytes(data: Bytes, name: str, nonempty: bool = False) -> np.ndarray:
    """uint8 tensor (as from ``data.load_split``), numpy array or bytes -> (N,) uint8 numpy array."""
    if isinstance(data, (bytes, bytearray)):
        arr = np.frombuffer(bytes(data), dtype=np.uint8)
    elif isinstance(data, Tensor):
        arr = data.detach().cpu().reshape(-1).numpy()
    else:
        arr = np.asarray(data).reshape(-1)
    if arr.dtype != np.uint8:
        if arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
            raise ValueError(f"{name} must hold bytes (integers in [0, 256), e.g. a uint8 tensor from "
                             f"data.load_split); got dtype {arr.dtype}.")
        arr = arr.astype(np.uint8)
    if nonempty and arr.size == 0:
        raise ValueError(f"{name} is empty: there is nothing to score.")
    return arr


def _check_order(order: int) -> None:
    if not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order={order!r} must be an integer from 1 (unigram) to {MAX_ORDER} "
                         "(an n-gram is packed into 64 bits).")

