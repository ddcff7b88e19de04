"""Normalisation and feed-forward layers of a transformer block.

Shapes: x is (B, T, C) with C = n_embd; every layer here acts on the last dimension only, so each
position is processed independently ("position-wise").

Norms compute in float32 and cast back to the input dtype (bfloat16 statistics are too coarse).
Each norm's formula is written out in a function (``layer_norm_explicit``, ``rms_norm_explicit``) beside
the module, which calls PyTorch's fused kernel; tests tie the three together (formula, module, ``nn.*``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """LayerNorm (Ba et al., 2016): γ ⊙ (x - mean) / sqrt(var + eps) + β over the feature dimension.

    ``var`` is the biased variance (divide by C), as in ``nn.LayerNorm``. ``bias=False`` drops β.
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, *, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), x.shape[-1:], self.weight.float(), bias, self.eps).to(x.dtype)


def layer_norm_explicit(x: Tensor, weight: Tensor, bias, eps: float) -> Tensor:
    """The formula of ``LayerNorm`` written out; ``LayerNorm`` calls PyTorch's fused kernel (tests tie them)."""
    h = x.float()
    mean = h.mean(dim=-1, keepdim=True)
    var = (h - mean).pow(2).mean(dim=-1, keepdim=True)  # biased: divide by C
    h = (h - mean) * torch.rsqrt(var + eps) * weight.float()
    return (h if bias is None else h + bias.float()).to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich, 2019): γ ⊙ x / sqrt(mean(x²) + eps). No centring, no β."""

    def __init__(self, dim: int, eps: float = 1e-5, *, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.float(), x.shape[-1:], self.weight.float(), self.eps).to(x.dtype)


def rms_norm_explicit(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """The formula of ``RMSNorm`` written out; ``RMSNorm`` calls PyTorch's fused kernel (tests tie them)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (h * weight.float()).to(x.dtype)


def make_norm(kind: str, dim: int, eps: float, bias: bool, *, device=None, dtype=None) -> nn.Module:
    """"layernorm" or "rmsnorm" (the names used by ``ModelConfig.norm``)."""
    if kind == "layernorm":
        return LayerNorm(dim, eps, bias, device=device, dtype=dtype)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps, device=device, dtype=dtype)
    raise ValueError(f"unknown norm {kind!r}; use 'layernorm' or 'rmsnorm'.")


ACTIVATION_FNS = {
    "relu": F.relu,
    "gelu": F.gelu,  # x Φ(x), exact (Hendrycks & Gimpel, 2016)
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's approximation
}


class FeedForward(nn.Module):
    """Position-wise FFN (Vaswani et al., 2017): down(act(up(x))), C -> hidden -> C.

    Weights: ``up.weight`` (hidden, C), ``down.weight`` (C, hidden), biases if ``bias``.
    """

    def __init__(self, dim: int, hidden: int, activation: str = "gelu", bias: bool = True, *, device=None, dtype=None):
        super().__init__()
        if activation not in ACTIVATION_FNS:
            raise ValueError(f"activation={activation!r}: FeedForward takes {sorted(ACTIVATION_FNS)}; use SwiGLU for 'swiglu'.")
        self.act = ACTIVATION_FNS[activation]
        self.up = nn.Linear(dim, hidden, bias=bias, device=device, dtype=dtype)
        self.down = nn.Linear(hidden, dim, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.act(self.up(x)))


class SwiGLU(nn.Module):
    """Gated FFN (Shazeer, 2020), used by Llama and Mistral: down(silu(gate(x)) ⊙ up(x)).

    Three matrices instead of two, so the hidden width is usually 2/3 · 4C to keep ~8C² parameters.
    Weights: ``gate.weight`` and ``up.weight`` (hidden, C), ``down.weight`` (C, hidden).
    """

    def __init__(self, dim: int, hidden: int, bias: bool = False, *, device=None, dtype=None):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=bias, device=device, dtype=dtype)
        self.up = nn.Linear(dim, hidden, bias=bias, device=device, dtype=dtype)
        self.down = nn.Linear(hidden, dim, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def make_ffn(activation: str, dim: int, hidden: int, bias: bool, *, device=None, dtype=None) -> nn.Module:
    if activation == "swiglu":
        return SwiGLU(dim, hidden, bias, device=device, dtype=dtype)
    return FeedForward(dim, hidden, activation, bias, device=device, dtype=dtype)
