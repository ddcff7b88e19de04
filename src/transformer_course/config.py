"""One typed configuration for every model in the course, with presets by name.

    >>> cfg = ModelConfig.from_name("llama-2-7b")
    >>> cfg.n_kv_head, cfg.head_dim
    (32, 128)
    >>> ModelConfig.from_name("tiny-llama", context_length=512)   # a preset with overrides

Every field is validated in ``__post_init__``: a bad value raises ValueError that says what to change.
The published presets are copied from the models' released configuration files (cited per preset);
``accounting.count_parameters`` turns them into the parameter counts the book prints.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from .positions import RopeScaling

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "swiglu")
NORMS = ("layernorm", "rmsnorm")
NORM_PLACEMENTS = ("pre", "post")
POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "none")
ROPE_LAYOUTS = ("half", "interleaved")


@dataclass
class ModelConfig:
    """Hyper-parameters of a transformer language model.

    Attributes:
        name: preset name, or "custom".
        vocab_size: number of token ids.
        context_length: longest sequence the model is trained for (learned positions: table size).
        n_layer: transformer blocks.
        n_embd: model width d_model.
        n_head: query heads; head_dim = n_embd // n_head.
        n_kv_head: key/value heads; ``None`` means n_head (MHA). 1 is MQA, in between is GQA.
        ffn_hidden: hidden width of the feed-forward network; ``None`` means 4 * n_embd for relu/gelu and
            the Llama rule (2/3 of 4 * n_embd, rounded up to a multiple of 256) for swiglu.
        activation: "relu", "gelu" (exact erf), "gelu_tanh" (GPT-2's tanh approximation) or "swiglu".
        norm: "layernorm" or "rmsnorm"; norm_eps its epsilon.
        norm_placement: "pre" (x + f(norm(x)), GPT-2 and later) or "post" (norm(x + f(x)), Vaswani et al.).
        position: "learned", "sinusoidal", "rope", "alibi" or "none".
        rope_base, rope_layout, rope_scaling: RoPE's base θ, pair layout ("half" or "interleaved") and
            context-extension method (see positions.RopeScaling).
        sliding_window: attention window width (Mistral), or None for full causal attention.
        bias: biases in the linear layers and norms (GPT-2: yes; Llama: no).
        tie_embeddings: the output layer reuses the token-embedding matrix.
        n_expert, n_expert_active: mixture of experts in every FFN (0 experts = dense FFN).
        dropout: dropout probability in training (0 for every preset).
    """

    name: str = "custom"
    vocab_size: int = 256
    context_length: int = 256
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_kv_head: Optional[int] = None
    ffn_hidden: Optional[int] = None
    activation: str = "gelu"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_placement: str = "pre"
    position: str = "learned"
    rope_base: float = 10000.0
    rope_layout: str = "half"
    rope_scaling: Optional[RopeScaling] = None
    sliding_window: Optional[int] = None
    bias: bool = True
    tie_embeddings: bool = True
    n_expert: int = 0
    n_expert_active: int = 2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for key in ("vocab_size", "context_length", "n_layer", "n_embd", "n_head"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r} must be a positive integer.")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} must be divisible by n_head={self.n_head} (head_dim = n_embd / n_head); "
                f"try n_head in {_divisors(self.n_embd)[:12]}."
            )
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.n_kv_head < 1 or self.n_head % self.n_kv_head:
            raise ValueError(
                f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}; "
                f"choose n_kv_head from {_divisors(self.n_head)} (n_head for MHA, 1 for MQA)."
            )
        for key, allowed in (
            ("activation", ACTIVATIONS),
            ("norm", NORMS),
            ("norm_placement", NORM_PLACEMENTS),
            ("position", POSITIONS),
            ("rope_layout", ROPE_LAYOUTS),
        ):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r} is not one of {allowed}.")
        if self.ffn_hidden is None:
            self.ffn_hidden = llama_ffn_hidden(self.n_embd) if self.activation == "swiglu" else 4 * self.n_embd
        if self.ffn_hidden < 1:
            raise ValueError(f"ffn_hidden={self.ffn_hidden} must be positive.")
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE rotates pairs of dimensions: head_dim={self.head_dim} must be even.")
        if isinstance(self.rope_scaling, dict):  # from JSON (checkpoints, the command line)
            self.rope_scaling = RopeScaling(**self.rope_scaling)
        if self.rope_scaling is not None and self.position != "rope":
            raise ValueError(f"rope_scaling is set but position={self.position!r}; set position='rope' or drop it.")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window={self.sliding_window} must be a positive width, or None.")
        if self.n_expert < 0 or (self.n_expert and not 1 <= self.n_expert_active <= self.n_expert):
            raise ValueError(
                f"n_expert={self.n_expert}, n_expert_active={self.n_expert_active}: need n_expert >= 0 and, "
                "with experts, 1 <= n_expert_active <= n_expert."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1).")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_name(cls, name: str, **overrides) -> "ModelConfig":
        """A preset by name, with optional field overrides: ``from_name("gpt2", n_layer=2)``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {sorted(unknown)}; see help(ModelConfig).")
        return cls(**{"name": name, **PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (checkpoints store it beside the weights)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**d)


def llama_ffn_hidden(n_embd: int, multiple_of: int = 256) -> int:
    """SwiGLU width that keeps the FFN at ~8·d² parameters: 2/3 · 4d, rounded up (Llama's rule)."""
    hidden = int(2 * 4 * n_embd / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def _divisors(n: int) -> list:
    return [d for d in range(1, n + 1) if n % d == 0]


_GPT2 = dict(activation="gelu_tanh", norm="layernorm", position="learned", bias=True, tie_embeddings=True)
_LLAMA = dict(activation="swiglu", norm="rmsnorm", position="rope", bias=False, tie_embeddings=False)

PRESETS: dict = {
    # GPT-2 small (Radford et al., 2019; openai-community/gpt2 config.json): 124,439,808 parameters.
    "gpt2": dict(vocab_size=50257, context_length=1024, n_layer=12, n_embd=768, n_head=12, **_GPT2),
    # LLaMA 1 7B (Touvron et al., 2023a, Table 2): 2048-token context.
    "llama-7b": dict(vocab_size=32000, context_length=2048, n_layer=32, n_embd=4096, n_head=32,
                     ffn_hidden=11008, norm_eps=1e-6, **_LLAMA),
    # Llama 2 (Touvron et al., 2023b; meta-llama/Llama-2-*-hf config.json).
    "llama-2-7b": dict(vocab_size=32000, context_length=4096, n_layer=32, n_embd=4096, n_head=32,
                       ffn_hidden=11008, **_LLAMA),
    "llama-2-70b": dict(vocab_size=32000, context_length=4096, n_layer=80, n_embd=8192, n_head=64, n_kv_head=8,
                        ffn_hidden=28672, **_LLAMA),
    # Mistral 7B v0.1 (Jiang et al., 2023; mistralai/Mistral-7B-v0.1 config.json): GQA and a 4096 window.
    "mistral-7b": dict(vocab_size=32000, context_length=32768, n_layer=32, n_embd=4096, n_head=32, n_kv_head=8,
                       ffn_hidden=14336, sliding_window=4096, **_LLAMA),
    # Llama 3 8B (Grattafiori et al., 2024; meta-llama/Meta-Llama-3-8B config.json): θ = 500,000.
    "llama-3-8b": dict(vocab_size=128256, context_length=8192, n_layer=32, n_embd=4096, n_head=32, n_kv_head=8,
                       ffn_hidden=14336, rope_base=500000.0, **_LLAMA),
    # Mixtral 8x7B (Jiang et al., 2024; mistralai/Mixtral-8x7B-v0.1 config.json): 8 experts, 2 active.
    "mixtral-8x7b": dict(vocab_size=32000, context_length=32768, n_layer=32, n_embd=4096, n_head=32, n_kv_head=8,
                         ffn_hidden=14336, rope_base=1e6, n_expert=8, n_expert_active=2, **_LLAMA),
    # Small models for CPU work, byte-level vocabulary.
    "tiny-gpt": dict(vocab_size=256, context_length=256, n_layer=4, n_embd=128, n_head=4, **_GPT2),
    "tiny-llama": dict(vocab_size=256, context_length=256, n_layer=4, n_embd=192, n_head=6, n_kv_head=2,
                       ffn_hidden=512, **_LLAMA),
}
