"""Long-context evaluation: loss against context length, loss at each position, passkey retrieval,
and RoPE context extension compared side by side.

    docs = long_documents()                                              # held-out files of >= 8 KiB
    perplexity_by_length(model, docs, [256, 512, 1024])                  # one row per length
    loss_by_position(model, docs, 1024)                                  # (1024,): does later context help?
    passkey_accuracy(model, [512, 1024], [0.0, 0.5, 1.0])                # one row per (length, depth)
    context_extension(model, docs, [256, 1024], standard_scalings(4, 256))

All losses are next-token cross-entropies in nats; with the byte tokenizer one token is one byte, so
``loss / ln 2`` is bits per byte, the unit of ``baselines``. Windows always start at the beginning of a
document: a position p then has exactly p tokens of real context, which is what the length curves need.

Two things make length curves comparable: every length is measured on the *same* documents (those long
enough for the longest length), and every length is measured from the documents' starts. Otherwise a
longer window would also mean a different, harder set of text.
"""
from __future__ import annotations

import dataclasses
import math
import random
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import passkey_sample
from .generate import generate
from .model import TransformerLM
from .config import RopeScaling

Docs = Sequence[Tuple[str, Tensor]]  # (name, (n_bytes,) uint8 tokens), as from data.long_documents()


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------
def token_losses(model: nn.Module, ids: Tensor) -> Tensor:
    """Next-token losses of every position: ids (B, T + 1) -> (B, T) float32, in nats.

    Entry [b, t] is ``-log p(ids[b, t + 1] | ids[b, :t + 1])``: one forward pass over ``ids[:, :-1]``,
    without gradients, with the model in eval mode (no dropout), then restored to the mode it was in.
    ``ids`` may be any integer dtype (uint8 slices of the corpus work); it is moved to the model's device.
    """
    if ids.dim() != 2 or ids.shape[1] < 2:
        raise ValueError(f"ids must be (B, T + 1) token ids with T >= 1; got shape {tuple(ids.shape)} (use ids[None]).")
    if ids.is_floating_point() or ids.is_complex():
        raise TypeError(f"ids must hold integer token ids; got dtype {ids.dtype}.")
    ids = ids.to(device=_device(model), dtype=torch.long)
    x, y = ids[:, :-1], ids[:, 1:]  # (B, T) inputs and their next tokens
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x).float()  # (B, T, vocab); float32 so that bf16 models give honest losses
    finally:
        model.train(was_training)
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, T)


def _windows(docs: Docs, n_tokens: int) -> Tensor:
    """The first ``n_tokens`` tokens of every doc that has them: (n_docs, n_tokens) int64."""
    chosen = [doc for _, doc in docs if len(doc) >= n_tokens]
    if not chosen:
        longest = max((len(doc) for _, doc in docs), default=0)
        raise ValueError(
            f"no document has the {n_tokens} tokens needed (the longest length + 1 for its last target); "
            f"the longest of the {len(docs)} given has {longest}. Use shorter lengths or longer documents "
            "(data.long_documents(min_bytes=...))."
        )
    return torch.stack([doc[:n_tokens].long() for doc in chosen])


def _window_losses(model: nn.Module, windows: Tensor, batch_size: int) -> Tensor:
    """token_losses over (n, T + 1) windows, ``batch_size`` at a time (bounds the (B, T, vocab) logits)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive number of windows per forward pass.")
    return torch.cat([token_losses(model, w) for w in windows.split(batch_size)])  # (n, T)


def _check_lengths(lengths: Sequence[int]) -> None:
    if not lengths or any(not isinstance(L, int) or L < 1 for L in lengths):
        raise ValueError(f"lengths={list(lengths)} must be a non-empty list of positive integers (tokens of context).")


def perplexity_by_length(model: nn.Module, docs: Docs, lengths: Sequence[int], *, batch_size: int = 8) -> List[dict]:
    """Loss of windows of each length L, taken from the start of the same documents for every L.

    Uses every document of at least ``max(lengths) + 1`` tokens (the +1 is the last target); window L is
    its first L + 1 tokens, so each document contributes L losses. One row per length, in order:
    ``{"length": L, "documents": n, "tokens": n * L, "loss": mean nats, "bits_per_byte": loss / ln 2,
    "perplexity": exp(loss)}``. Raises ValueError naming the needed length if no document is long enough.

    Every length gets its own forward passes. For a causal model with fixed positions the losses of a
    window of L are the first L losses of a longer window, but not with "dynamic_ntk" scaling, whose
    frequencies depend on the length of the input.
    """
    _check_lengths(lengths)
    windows = _windows(docs, max(lengths) + 1)  # (n, max_L + 1)
    rows = []
    for L in lengths:
        loss = _window_losses(model, windows[:, : L + 1], batch_size).mean().item()  # (n, L) -> mean
        rows.append({"length": L, "documents": windows.shape[0], "tokens": windows.shape[0] * L, "loss": loss,
                     "bits_per_byte": loss / math.log(2), "perplexity": math.exp(loss)})
    return rows


def loss_by_position(model: nn.Module, docs: Docs, length: int, *, batch_size: int = 8) -> Tensor:
    """Mean loss at each position (length,): entry t predicts token t + 1 from the t + 1 tokens before it.

    Averaged over the first ``length + 1`` tokens of every document that has them. A curve that keeps
    falling with t means the model uses distant context; one that rises past the training length means
    it fails to extrapolate. Per-position averages over few documents are noisy: smooth before plotting.
    """
    _check_lengths([length])
    windows = _windows(docs, length + 1)  # (n, length + 1)
    return _window_losses(model, windows, batch_size).mean(dim=0)  # (length,)


# --------------------------------------------------------------------------------------------------
# Passkey retrieval
# --------------------------------------------------------------------------------------------------
def passkey_accuracy(model: nn.Module, lengths: Sequence[int], depths: Sequence[float], trials: int = 10,
                     seed: int = 0) -> List[dict]:
    """Greedy passkey retrieval (Mohtashami & Jaggi, 2023) at each prompt length and key depth.

    For each (length, depth), ``trials`` prompts from ``data.passkey_sample``; trial i draws its key from
    ``random.Random(f"passkey:{seed}:{length}:{float(depth)}:{i}")``, so a cell's prompts do not depend on which
    other cells are evaluated. All trials of a cell have the same length and are decoded as one batch
    with ``generate(..., use_cache=True)`` for exactly as many tokens as the key has digits.

    Rows, lengths outer and depths inner: ``{"length", "depth", "accuracy": share of keys reproduced
    exactly, "digit_accuracy": share of digits right at their place}``.
    """
    _check_lengths(lengths)
    if trials < 1:
        raise ValueError(f"trials={trials} must be a positive number of prompts per (length, depth).")
    device = _device(model)
    rows = []
    for length in lengths:
        for depth in depths:
            samples = [passkey_sample(length, depth, random.Random(f"passkey:{seed}:{length}:{float(depth)}:{i}"))
                       for i in range(trials)]
            prompts = torch.stack([s.ids for s in samples]).to(device)  # (trials, length)
            answers = torch.tensor([list(s.answer.encode("ascii")) for s in samples], device=device)  # (trials, digits)
            out = generate(model, prompts, answers.shape[1], use_cache=True)  # (trials, length + digits)
            right = out[:, length:] == answers  # (trials, digits)
            rows.append({"length": length, "depth": depth, "accuracy": right.all(dim=1).float().mean().item(),
                         "digit_accuracy": right.float().mean().item()})
    return rows


# --------------------------------------------------------------------------------------------------
# RoPE context extension
# --------------------------------------------------------------------------------------------------
def with_rope_scaling(model: TransformerLM, scaling: Optional[RopeScaling],
                      context_length: Optional[int] = None) -> TransformerLM:
    """A new TransformerLM with a copy of ``model``'s weights and ``config.rope_scaling = scaling``.

    ``context_length``, if given, replaces the config's too (for RoPE it only sizes the cached cos/sin
    tables and the default KV cache). The original model and its config are left unchanged, and the
    copy's weights are its own: fine-tuning it does not touch the original. The copy keeps the original's
    device, dtype, attention implementation and train/eval mode.
    """
    c = model.config
    if c.position != "rope":
        raise ValueError(f"with_rope_scaling needs a RoPE model; this one has position={c.position!r}. "
                         "Position interpolation, NTK and YaRN rescale rotary frequencies only.")
    changes = {"rope_scaling": scaling}
    if context_length is not None:
        changes["context_length"] = context_length
    config = dataclasses.replace(c, **changes)  # re-runs ModelConfig.__post_init__: the new values are validated
    ref = model.lm_head.weight
    new = TransformerLM(config, attn_impl=model.blocks[0].attn.impl, device=ref.device, dtype=ref.dtype)
    new.load_state_dict(model.state_dict())  # copies; RoPE tables are buffers outside the state dict
    return new.train(model.training)


def standard_scalings(factor: float, original_context_length: int) -> Dict[str, Optional[RopeScaling]]:
    """The usual ways to stretch a RoPE model trained on L tokens to s * L, by name (``"none"`` = as trained).

    Keys: "none" and the kinds of ``RopeScaling`` ("linear" is position interpolation), spelled as everywhere
    in the package; YaRN with the paper's beta_fast=32, beta_slow=1. See ``positions.rope_inv_freq`` for what each one does to the frequencies.
    """
    L = original_context_length
    return {
        "none": None,
        **{kind: RopeScaling(kind, factor, L) for kind in ("linear", "ntk", "dynamic_ntk", "yarn")},
    }


def context_extension(model: TransformerLM, docs: Docs, lengths: Sequence[int],
                      methods: Dict[str, Optional[RopeScaling]], *, batch_size: int = 8) -> List[dict]:
    """``perplexity_by_length`` for each method (name -> scaling, None = no scaling), on the same windows.

    Each method runs on ``with_rope_scaling(model, scaling)``, so "none" means no scaling even if the
    model was trained with one. Returns the rows of every method in turn, with a "method" key first.

    Note on "dynamic_ntk": a full forward pass over a window of T tokens scales every position by the
    factor for length T (as Hugging Face does without a cache), so early positions of a long window are
    scored with frequencies they would not have had while decoding token by token.
    """
    rows = []
    for name, scaling in methods.items():
        scaled = with_rope_scaling(model, scaling)
        rows += [{"method": name, **row} for row in perplexity_by_length(scaled, docs, lengths, batch_size=batch_size)]
    return rows


def _device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a model without parameters)."""
    p = next(iter(model.parameters()), None)
    return torch.device("cpu") if p is None else p.device


def split_bits_per_byte(model, data: Tensor, seq_len: int, *, batch_size: int = 16) -> float:
    """Bits per byte of ``model`` over all of ``data``, read as non-overlapping windows of ``seq_len``.

    Window i covers tokens ``[i·seq_len, (i+1)·seq_len]`` (its last token is the next window's first), so
    every token after the first is predicted exactly once; the tail that does not fill a window is left out.
    """
    n = (len(data) - 1) // seq_len
    if n < 1:
        raise ValueError(f"data holds {len(data)} tokens, fewer than one window of seq_len={seq_len} + 1.")
    total = 0.0
    for b0 in range(0, n, batch_size):
        starts = range(b0 * seq_len, min(n, b0 + batch_size) * seq_len, seq_len)
        ids = torch.stack([data[s:s + seq_len + 1] for s in starts])  # (b, seq_len + 1)
        total += token_losses(model, ids).double().sum().item()
    return total / (n * seq_len) / math.log(2)
