"""Parameters, FLOPs and memory computed from a ``ModelConfig`` alone, without building the model.

Tests check every formula here against an instantiated model (on the meta device for the big presets)
and against PyTorch's FLOP counter, so the numbers the book prints are the numbers the code has.

    >>> count_parameters(ModelConfig.from_name("gpt2"))
    124439808
"""
from __future__ import annotations

import torch

from .config import ModelConfig


def _norm_params(c: ModelConfig) -> int:
    return c.n_embd * (2 if c.norm == "layernorm" and c.bias else 1)


def _attention_weights(c: ModelConfig) -> int:
    """Matrices of q, k, v and output projections: C·(n_head + 2·n_kv_head)·head_dim + n_head·head_dim·C."""
    q_out, kv_out = c.n_head * c.head_dim, c.n_kv_head * c.head_dim
    return c.n_embd * (q_out + 2 * kv_out) + q_out * c.n_embd


def _ffn_weights(c: ModelConfig) -> int:
    """Matrices of one FFN (one expert): 2·C·hidden, or 3·C·hidden for SwiGLU."""
    return (3 if c.activation == "swiglu" else 2) * c.n_embd * c.ffn_hidden


def _n_ffn(c: ModelConfig, active_only: bool) -> int:
    if not c.n_expert:
        return 1
    return c.n_expert_active if active_only else c.n_expert


def attention_params(c: ModelConfig) -> int:
    """Parameters of one layer's attention: projection matrices plus their biases."""
    qkv_biases = (c.n_head + 2 * c.n_kv_head) * c.head_dim
    return _attention_weights(c) + (qkv_biases if c.bias or c.qkv_bias else 0) + (c.n_embd if c.bias else 0)


def ffn_params(c: ModelConfig, *, active_only: bool = False) -> int:
    """Parameters of one layer's FFN: every expert (or only the active ones) plus the router."""
    n_mats = 3 if c.activation == "swiglu" else 2
    one = _ffn_weights(c) + (((n_mats - 1) * c.ffn_hidden + c.n_embd) if c.bias else 0)
    router = c.n_embd * c.n_expert
    return _n_ffn(c, active_only) * one + router


def block_params(c: ModelConfig, *, active_only: bool = False) -> int:
    """One decoder block: two norms, attention and FFN."""
    return 2 * _norm_params(c) + attention_params(c) + ffn_params(c, active_only=active_only)


def count_parameters(config: ModelConfig, *, active_only: bool = False, embeddings: bool = True) -> int:
    """Parameters of ``TransformerLM(config)``; a tied output layer counts once.

    active_only: count only the ``n_expert_active`` experts a token uses (mixture of experts).
    embeddings: include token/position embeddings and an untied output layer (Kaplan et al. count without).
    """
    c = config
    total = c.n_layer * block_params(c, active_only=active_only)
    total += _norm_params(c) if c.norm_placement == "pre" else 0  # final norm
    if embeddings:
        total += c.vocab_size * c.n_embd  # token embedding
        total += c.context_length * c.n_embd if c.position == "learned" else 0
        total += 0 if c.tie_embeddings else c.vocab_size * c.n_embd  # output layer
    return total


def flops_per_token(config: ModelConfig, seq_len: int) -> int:
    """Forward-pass FLOPs for one token that attends to ``seq_len`` keys (multiply-add = 2 FLOPs).

    2 · (matrix weights a token passes through: attention, active experts, router, output layer)
    + 4 · n_layer · keys · n_head · head_dim for the q·kᵀ and weights·v products, with
    keys = min(seq_len, sliding_window). Norms, biases, softmax and activations are left out (a few
    percent). Training costs about 3× this (forward plus backward): Kaplan et al.'s (2020) C ≈ 6·N per
    token when the context term is small.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len} must be a positive number of tokens.")
    c = config
    keys = min(seq_len, c.sliding_window) if c.sliding_window else seq_len
    per_block = _attention_weights(c) + _n_ffn(c, active_only=True) * _ffn_weights(c) + c.n_embd * c.n_expert
    matmul_weights = c.n_layer * per_block + c.vocab_size * c.n_embd  # the output layer multiplies even when tied
    return 2 * matmul_weights + 4 * c.n_layer * keys * c.n_head * c.head_dim


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def kv_cache_bytes(config: ModelConfig, seq_len: int, batch_size: int = 1, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of the KV cache: 2 (k and v) · n_layer · n_kv_head · head_dim · positions · batch · bytes.

    positions = min(seq_len, sliding_window): a rolling cache keeps only the window. Note n_kv_head, not
    n_head: this is where GQA and MQA save memory (the lecture's ``2·L·d·seq_len`` holds for MHA only).
    """
    c = config
    positions = min(seq_len, c.sliding_window) if c.sliding_window else seq_len
    return 2 * c.n_layer * c.n_kv_head * c.head_dim * positions * batch_size * dtype_bytes(dtype)


def weights_bytes(config: ModelConfig, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of the weights stored in ``dtype``."""
    return count_parameters(config) * dtype_bytes(dtype)


def human_bytes(n: float) -> str:
    """1536 -> '1.50 KiB' (binary units, as memory is allocated)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
