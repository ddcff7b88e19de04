"""Autoregressive generation, with or without the KV cache.

    >>> out = generate(model, prompt, max_new_tokens=100)                  # greedy, cached
    >>> out = generate(model, prompt, 100, temperature=0.8, top_p=0.95, generator=torch.Generator().manual_seed(0))

Without the cache, step t runs the model over all t tokens so far (quadratic work in total); with it,
the prompt is processed once ("prefill") and each step feeds only the newest token ("decode").
Both paths compute the same logits up to float round-off, so they give the same tokens.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .model import TransformerLM


def sample_next(logits: Tensor, *, temperature: float = 0.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    """Pick the next token from logits (B, vocab) -> (B, 1).

    temperature 0 is greedy (argmax). Otherwise logits / temperature, keep the ``top_k`` largest and/or the
    smallest set whose probability reaches ``top_p`` (nucleus sampling, Holtzman et al., 2020), and draw.
    """
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy).")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be a positive integer or None.")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1] or None.")
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum - sorted_logits.softmax(dim=-1) >= top_p  # tokens after the nucleus is already full
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.inference_mode()
def generate(model: TransformerLM, idx: Tensor, max_new_tokens: int, *, use_cache: bool = True,
             temperature: float = 0.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
             generator: Optional[torch.Generator] = None) -> Tensor:
    """Extend ``idx`` (B, T) by ``max_new_tokens`` tokens -> (B, T + max_new_tokens).

    With ``use_cache`` a KV cache is set up for exactly the length needed and removed afterwards, also when
    something fails (a cache the caller set up beforehand is replaced). Learned positions cannot go past
    ``context_length``; the model raises a ValueError that says so rather than silently cropping the prompt.

    Dynamic NTK scaling (``RopeScaling("dynamic_ntk", ...)``) past the original length gives different tokens
    with and without the cache, as in Hugging Face transformers: without it, every step recomputes all keys with
    the frequencies of the current length; with it, the cached keys keep the frequencies they were rotated with.
    Every other scaling gives the same tokens both ways.
    """
    if idx.dim() != 2:
        raise ValueError(f"idx must be (B, T) token ids; got shape {tuple(idx.shape)} (use idx[None]).")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0.")
    was_training = model.training
    model.eval()
    pick = lambda logits: sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    try:
        if use_cache:
            model.setup_cache(idx.shape[0], idx.shape[1] + max_new_tokens)
            step_input, start_pos = idx, 0  # prefill: the whole prompt once, at positions 0 .. T - 1
            for _ in range(max_new_tokens):
                next_token = pick(model(step_input, start_pos)[:, -1])  # (B, 1)
                start_pos += step_input.shape[1]
                idx = torch.cat([idx, next_token], dim=1)
                step_input = next_token  # decode: only the new token, at the next position
        else:
            for _ in range(max_new_tokens):
                idx = torch.cat([idx, pick(model(idx)[:, -1])], dim=1)
    finally:
        if use_cache:
            model.remove_cache()
        model.train(was_training)
    return idx
