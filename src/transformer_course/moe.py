"""Mixture of experts: a sparse FFN (Shazeer et al., 2017; Fedus et al., 2021; Jiang et al., 2024).

A router scores every token against ``n_expert`` FFNs; each token is processed by its ``top_k`` best
experts only, and their outputs are mixed with the router's renormalised probabilities (Mixtral's rule:
softmax over the top-k logits). Parameters grow with ``n_expert``; compute per token with ``top_k``.

Shapes: x (B, T, C) is flattened to N = B·T tokens; router logits (N, n_expert).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import make_ffn


class MixtureOfExperts(nn.Module):
    """Top-k routed experts with the Switch Transformer load-balancing loss.

    After each forward, ``aux_loss`` holds ``n_expert · Σ_e f_e · P_e`` (Fedus et al., 2021, eq. 4), where
    f_e is the fraction of token-to-expert assignments that went to expert e and P_e the mean router
    probability of e. It equals 1·top_k when routing is perfectly uniform and grows as routing collapses;
    add a small multiple (0.01) of it to the training loss.

    Weights: ``router.weight`` (n_expert, C); ``experts[e]`` is a FeedForward or SwiGLU.
    """

    def __init__(self, dim: int, hidden: int, n_expert: int, top_k: int = 2, activation: str = "swiglu",
                 bias: bool = False, *, device=None, dtype=None):
        super().__init__()
        if not 1 <= top_k <= n_expert:
            raise ValueError(f"top_k={top_k} must be between 1 and n_expert={n_expert}.")
        self.top_k = top_k
        self.router = nn.Linear(dim, n_expert, bias=False, device=device, dtype=dtype)
        self.experts = nn.ModuleList(
            make_ffn(activation, dim, hidden, bias, device=device, dtype=dtype) for _ in range(n_expert)
        )
        self.aux_loss: Optional[Tensor] = None

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, C)
        logits = self.router(x)  # (N, n_expert)
        top_logits, top_idx = logits.topk(self.top_k, dim=-1)  # (N, top_k)
        weights = F.softmax(top_logits.float(), dim=-1).to(x.dtype)  # (N, top_k)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = (top_idx == e).nonzero(as_tuple=True)  # tokens routed to expert e
            if token.numel():
                out.index_add_(0, token, expert(x[token]) * weights[token, slot, None])
        probs = F.softmax(logits.float(), dim=-1)  # (N, n_expert)
        n_expert = len(self.experts)
        fraction = F.one_hot(top_idx, n_expert).float().sum(dim=(0, 1)) / x.shape[0]  # f_e, sums to top_k
        self.aux_loss = n_expert * (fraction * probs.mean(dim=0)).sum()
        return out.reshape(shape)
