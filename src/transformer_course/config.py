"""One typed configuration for every model in the course, with presets by name.

    >>> cfg = ModelConfig.from_name("llama-2-7b")
    >>> cfg.n_kv_head, cfg.head_dim
    (32, 128)
    >>> ModelConfig.from_name("tiny-llama", context_length=512)   # a preset with overrides

Every field is validated in ``__post_init__``: a bad value raises ValueError that says what to change.
``ModelConfig.from_hf`` / ``to_hf`` translate Hugging Face ``config.json`` dicts (Llama, Mistral, Qwen2, GPT-2).
The published presets are copied from the models' released configuration files (cited per preset);
``accounting.count_parameters`` turns them into the parameter counts the book prints.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional


ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "swiglu")
NORMS = ("layernorm", "rmsnorm")
NORM_PLACEMENTS = ("pre", "post")
POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "none")
ROPE_LAYOUTS = ("half", "interleaved")
ROPE_SCALING_KINDS = ("linear", "ntk", "dynamic_ntk", "yarn", "llama3")
YARN_RAMPS = ("paper", "hf")
HF_MODEL_TYPES = ("llama", "mistral", "qwen2", "gpt2")
# Hugging Face ``rope_type`` -> our kind (None: plain RoPE). transformers has no static "ntk" type.
HF_ROPE_TYPES = {"default": None, "linear": "linear", "dynamic": "dynamic_ntk", "yarn": "yarn", "llama3": "llama3"}


@dataclass
class RopeScaling:
    """How RoPE is stretched past the training length L = ``original_context_length``.

    kind:
        "linear"       position interpolation (Chen et al., 2023, arXiv:2306.15595): positions / s.
        "ntk"          NTK-aware base scaling (bloc97, 2023; written up in Peng et al., 2023).
        "dynamic_ntk"  "ntk" with a factor that grows with the current sequence length.
        "yarn"         NTK-by-parts interpolation plus attention temperature (Peng et al., 2023,
                       arXiv:2309.00071).
        "llama3"       Llama 3.1's frequency-dependent interpolation (Grattafiori et al., 2024,
                       arXiv:2407.21783).
    factor: s = new context / original context, >= 1 (s = 1 changes nothing).
    beta_fast, beta_slow (yarn): the ramp bounds, the paper's beta and alpha, counted in rotations over L:
        dimensions that turn more than ``beta_fast`` times over L keep their frequency, those that turn
        fewer than ``beta_slow`` times are interpolated by s. Paper values for Llama: 32 and 1.
    ramp (yarn): "paper" (ramp linear in the rotations r, Peng et al.) or "hf" (ramp linear in the
        dimension index, as Hugging Face transformers and the official YaRN code compute it: what a
        Hugging Face YaRN checkpoint was trained with). See ``positions.rope_inv_freq``.
    truncate (yarn, ramp="hf" only): round the ramp's end points outward to whole dimensions (transformers'
        default, True).
    attention_factor (yarn): multiplies cos and sin; None means the paper's ``0.1 ln(s) + 1``.
    low_freq_factor, high_freq_factor (llama3): pairs that turn fewer than ``low_freq_factor`` times over L
        are interpolated by s, those that turn more than ``high_freq_factor`` times are kept, a linear ramp
        in between. Llama 3.1 uses 1 and 4 (with s = 8, L = 8192).

    ``from_hf`` reads a Hugging Face ``rope_scaling`` / ``rope_parameters`` dict, ``to_hf`` writes one.
    """

    kind: str
    factor: float
    original_context_length: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    ramp: str = "paper"
    truncate: bool = True
    attention_factor: Optional[float] = None
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0

    def __post_init__(self) -> None:
        if self.kind not in ROPE_SCALING_KINDS:
            raise ValueError(f"RopeScaling kind={self.kind!r} is not one of {ROPE_SCALING_KINDS}.")
        if not self.factor >= 1.0:
            raise ValueError(
                f"RopeScaling factor={self.factor} must be >= 1: it is new context / original context. "
                "To use RoPE without scaling, pass scaling=None."
            )
        if self.original_context_length < 1:
            raise ValueError(
                f"original_context_length={self.original_context_length} must be the (positive) training "
                "context length L of the model."
            )
        if not self.beta_fast > self.beta_slow > 0:
            raise ValueError(
                f"beta_fast={self.beta_fast} and beta_slow={self.beta_slow} must satisfy beta_fast > beta_slow > 0 "
                "(the paper uses beta_fast=32, beta_slow=1)."
            )
        if self.ramp not in YARN_RAMPS:
            raise ValueError(
                f"ramp={self.ramp!r} is not one of {YARN_RAMPS}: 'paper' ramps linearly in rotations (Peng et "
                "al., 2023), 'hf' in the dimension index (Hugging Face checkpoints)."
            )
        if self.attention_factor is not None and not self.attention_factor > 0:
            raise ValueError(f"attention_factor={self.attention_factor} must be positive, or None for 0.1 ln(s) + 1.")
        if self.attention_factor is not None and self.kind != "yarn":
            raise ValueError(f"attention_factor is a YaRN setting; kind={self.kind!r} does not use it: drop it.")
        if not self.high_freq_factor > self.low_freq_factor > 0:
            raise ValueError(
                f"low_freq_factor={self.low_freq_factor} and high_freq_factor={self.high_freq_factor} must satisfy "
                "high_freq_factor > low_freq_factor > 0 (Llama 3.1 uses 1 and 4)."
            )

    @classmethod
    def from_hf(cls, params: dict, max_position_embeddings: int) -> Optional["RopeScaling"]:
        """A Hugging Face rope dict (``rope_scaling`` or ``rope_parameters``) -> RopeScaling, or None for plain RoPE.

        Keys read: ``rope_type`` (or the older ``type``), ``factor``, ``original_max_position_embeddings``
        (default: ``max_position_embeddings``, as transformers does), and per type ``beta_fast``,
        ``beta_slow``, ``attention_factor``, ``mscale``, ``mscale_all_dim``, ``truncate`` (yarn),
        ``low_freq_factor``, ``high_freq_factor`` (llama3). ``rope_theta`` is read by ``ModelConfig.from_hf``.
        Hugging Face's yarn becomes ``ramp="hf"``; its "dynamic" counts L as ``max_position_embeddings``.
        """
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type not in HF_ROPE_TYPES:
            raise ValueError(
                f"Hugging Face rope type {rope_type!r} is not supported; supported: {sorted(HF_ROPE_TYPES)} "
                f"(mapped to {ROPE_SCALING_KINDS} and plain RoPE)."
            )
        kind = HF_ROPE_TYPES[rope_type]
        if kind is None:
            return None
        factor = params.get("factor")
        L = params.get("original_max_position_embeddings") or max_position_embeddings
        if kind == "yarn" and factor is None:  # transformers: the ratio of the two lengths (DeepSeek-V3)
            factor = max_position_embeddings / L
        if factor is None:
            raise ValueError(f"Hugging Face rope type {rope_type!r} needs a 'factor'; the rope dict has none: {params}.")
        if kind == "linear":
            return cls("linear", float(factor), L)
        if kind == "dynamic_ntk":  # transformers scales past max_position_embeddings, not past an original length
            return cls("dynamic_ntk", float(factor), max_position_embeddings)
        if kind == "llama3":
            missing = {"low_freq_factor", "high_freq_factor"} - set(params)
            if missing:
                raise ValueError(f"Hugging Face rope type 'llama3' needs {sorted(missing)}; the rope dict is {params}.")
            return cls("llama3", float(factor), L, low_freq_factor=float(params["low_freq_factor"]),
                       high_freq_factor=float(params["high_freq_factor"]))
        attention_factor = params.get("attention_factor")
        mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
        if attention_factor is None and mscale and mscale_all_dim:  # transformers' DeepSeek variant
            attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
        return cls("yarn", float(factor), L, beta_fast=float(params.get("beta_fast") or 32.0),
                   beta_slow=float(params.get("beta_slow") or 1.0), ramp="hf",
                   truncate=bool(params.get("truncate", True)),
                   attention_factor=None if attention_factor is None else float(attention_factor))

    def to_hf(self, max_position_embeddings: int) -> dict:
        """The Hugging Face rope dict for this scaling (without ``rope_theta``); ValueError if it has none."""
        s, L = self.factor, self.original_context_length
        if self.kind == "linear":
            return {"rope_type": "linear", "factor": s}
        if self.kind == "dynamic_ntk":
            if L != max_position_embeddings:
                raise ValueError(
                    f"transformers' dynamic NTK scales past max_position_embeddings={max_position_embeddings}, "
                    f"not past original_context_length={L}: set context_length = original_context_length to save it."
                )
            return {"rope_type": "dynamic", "factor": s}
        if self.kind == "llama3":
            return {"rope_type": "llama3", "factor": s, "original_max_position_embeddings": L,
                    "low_freq_factor": self.low_freq_factor, "high_freq_factor": self.high_freq_factor}
        if self.kind == "yarn":
            if self.ramp != "hf":
                raise ValueError(
                    "transformers computes YaRN with the dimension-index ramp: set ramp='hf' to save this model "
                    "(it changes the frequencies inside the ramp, so fine-tune or evaluate with it first)."
                )
            out = {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": L,
                   "beta_fast": self.beta_fast, "beta_slow": self.beta_slow, "truncate": self.truncate}
            if self.attention_factor is not None:
                out["attention_factor"] = self.attention_factor
            return out
        raise ValueError(
            f"transformers has no rope type for kind={self.kind!r} (static NTK); use 'dynamic_ntk' or 'yarn' to save."
        )


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """transformers' ``get_mscale``: 0.1 · mscale · ln(s) + 1 (1 for s <= 1)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


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
            context-extension method (a ``RopeScaling``; a dict is read as our form, with "kind", or as a
            Hugging Face rope dict, with "rope_type").
        sliding_window: attention window width (Mistral), or None for full causal attention.
        bias: biases in the linear layers and norms (GPT-2: yes; Llama: no).
        qkv_bias: biases on the q, k and v projections only (Qwen2), whatever ``bias`` says.
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
    qkv_bias: bool = False
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
        if isinstance(self.rope_scaling, dict):  # from JSON: our form (checkpoints, the command line) or Hugging Face's
            if "kind" in self.rope_scaling:
                self.rope_scaling = RopeScaling(**self.rope_scaling)
            elif "rope_type" in self.rope_scaling or "type" in self.rope_scaling:
                self.rope_scaling = RopeScaling.from_hf(self.rope_scaling, self.context_length)
            else:
                raise ValueError(
                    f"rope_scaling={self.rope_scaling} has neither 'kind' (ours: kind, factor, original_context_length) "
                    "nor 'rope_type' (Hugging Face's)."
                )
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

    @classmethod
    def from_hf(cls, hf_config) -> "ModelConfig":
        """A Hugging Face ``config.json`` dict (or a transformers config object) -> ModelConfig.

        Supported ``model_type``: "llama", "mistral", "qwen2" (the Llama layout: RMSNorm, SwiGLU, RoPE, GQA;
        Mistral adds a sliding window, Qwen2 biases on q, k and v) and "gpt2". RoPE settings are read from
        ``rope_parameters`` (transformers 5) or ``rope_theta`` + ``rope_scaling`` (older files). Anything this
        package cannot compute the same way (another model_type, a head_dim other than hidden_size /
        num_attention_heads, partial rotary, an unknown rope type, per-layer windows...) raises ValueError.
        """
        d = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
        model_type = d.get("model_type")
        if model_type not in HF_MODEL_TYPES:
            raise ValueError(
                f"Hugging Face model_type={model_type!r} is not supported; supported: {HF_MODEL_TYPES}."
            )
        fields = _gpt2_from_hf(d) if model_type == "gpt2" else _llama_from_hf(d, model_type)
        return cls(name=f"hf-{model_type}", **fields)

    def to_hf(self, model_type: Optional[str] = None) -> dict:
        """The Hugging Face ``config.json`` dict of this config (the inverse of ``from_hf``).

        model_type: "llama", "mistral", "qwen2" or "gpt2"; by default the one this config fits: "gpt2"
        for learned positions, "qwen2" with ``qkv_bias``, "mistral" with a sliding window, else "llama".
        RoPE is written as ``rope_theta`` + ``rope_scaling``, which transformers 4 and 5 both read.
        Token ids are written as None: the course's models have no special tokens.
        ValueError if the config uses something that model_type cannot express.
        """
        if model_type is None:
            model_type = ("gpt2" if self.position == "learned" else "qwen2" if self.qkv_bias
                          else "mistral" if self.sliding_window else "llama")
        if model_type not in HF_MODEL_TYPES:
            raise ValueError(f"model_type={model_type!r} is not one of {HF_MODEL_TYPES}.")
        common = dict(vocab_size=self.vocab_size, tie_word_embeddings=self.tie_embeddings,
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
        fields = _gpt2_to_hf(self) if model_type == "gpt2" else _llama_to_hf(self, model_type)
        return {"model_type": model_type, "architectures": [_HF_ARCHITECTURES[model_type]], **fields, **common}


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


# --------------------------------------------------------------------------------------------------
# Hugging Face config.json <-> ModelConfig fields
# --------------------------------------------------------------------------------------------------
_HF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                     "gpt2": "GPT2LMHeadModel"}
_HF_GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def _unsupported(model_type: str, what: str) -> ValueError:
    return ValueError(f"this {model_type} config uses {what}, which transformer_course does not implement.")


def _gpt2_from_hf(d: dict) -> dict:
    """GPT2Config fields (defaults as in transformers' GPT2Config) -> ModelConfig fields."""
    act = d.get("activation_function", "gelu_new")
    if act not in _HF_GPT2_ACTIVATIONS:
        raise _unsupported("gpt2", f"activation_function={act!r} (supported: {sorted(_HF_GPT2_ACTIVATIONS)})")
    for key, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                    ("add_cross_attention", False)):
        if d.get(key, ok) != ok:
            raise _unsupported("gpt2", f"{key}={d[key]!r}")
    n_embd = d.get("n_embd", 768)
    return dict(vocab_size=d.get("vocab_size", 50257), context_length=d.get("n_positions", 1024),
                n_layer=d.get("n_layer", 12), n_embd=n_embd, n_head=d.get("n_head", 12),
                ffn_hidden=d.get("n_inner") or 4 * n_embd, activation=_HF_GPT2_ACTIVATIONS[act], norm="layernorm",
                norm_eps=d.get("layer_norm_epsilon", 1e-5), position="learned", bias=True,
                tie_embeddings=d.get("tie_word_embeddings", True))


def _llama_from_hf(d: dict, model_type: str) -> dict:
    """LlamaConfig / MistralConfig / Qwen2Config fields -> ModelConfig fields."""
    hidden, n_head = d.get("hidden_size", 4096), d.get("num_attention_heads", 32)
    n_layer = d.get("num_hidden_layers", 32)
    if d.get("hidden_act", "silu") != "silu":
        raise _unsupported(model_type, f"hidden_act={d['hidden_act']!r} (only 'silu', i.e. SwiGLU)")
    if d.get("head_dim") is not None and d["head_dim"] * n_head != hidden:
        raise _unsupported(model_type, f"head_dim={d['head_dim']} != hidden_size / num_attention_heads = "
                                       f"{hidden}/{n_head} (head_dim is always n_embd // n_head here)")
    bias, qkv_bias = False, model_type == "qwen2"  # Qwen2: biases on q, k and v, none on o_proj
    if model_type == "llama":
        attention_bias, mlp_bias = bool(d.get("attention_bias", False)), bool(d.get("mlp_bias", False))
        if attention_bias != mlp_bias:
            raise _unsupported(model_type, f"attention_bias={attention_bias} with mlp_bias={mlp_bias} (biases are "
                                           "either on every linear layer, bias=True, or on none)")
        bias = attention_bias
    max_pos = d.get("max_position_embeddings", 2048)
    base, scaling = _rope_from_hf(d, max_pos, model_type)
    return dict(vocab_size=d.get("vocab_size", 32000), context_length=max_pos, n_layer=n_layer, n_embd=hidden,
                n_head=n_head, n_kv_head=d.get("num_key_value_heads") or n_head,
                ffn_hidden=d.get("intermediate_size", 11008), activation="swiglu", norm="rmsnorm",
                norm_eps=d.get("rms_norm_eps", 1e-6), position="rope", rope_base=float(base), rope_scaling=scaling,
                sliding_window=_window_from_hf(d, model_type, n_layer), bias=bias, qkv_bias=qkv_bias,
                tie_embeddings=d.get("tie_word_embeddings", False))


def _rope_from_hf(d: dict, max_pos: int, model_type: str):
    """(rope_base, RopeScaling or None) from ``rope_parameters`` (transformers 5) or ``rope_theta`` + ``rope_scaling``."""
    params = dict(d.get("rope_scaling") or d.get("rope_parameters") or {})
    if params and all(isinstance(v, dict) for v in params.values()):  # nested per layer type (full/sliding)
        nested = [v for v in params.values()]
        if any(v != nested[0] for v in nested):
            raise _unsupported(model_type, f"different RoPE settings per layer type ({sorted(params)})")
        params = dict(nested[0])
    partial = params.get("partial_rotary_factor", d.get("partial_rotary_factor"))
    if partial not in (None, 1, 1.0):
        raise _unsupported(model_type, f"partial_rotary_factor={partial} (RoPE on part of each head)")
    if d.get("original_max_position_embeddings") is not None:  # transformers gives the top-level value priority
        params["original_max_position_embeddings"] = d["original_max_position_embeddings"]
    base = params.get("rope_theta", d.get("rope_theta", 10000.0))
    return base, RopeScaling.from_hf(params, max_pos)


def _window_from_hf(d: dict, model_type: str, n_layer: int) -> Optional[int]:
    """Mistral: ``sliding_window`` (transformers' default 4096). Qwen2: only with ``use_sliding_window``, on the
    layers ``layer_types`` (or ``i >= max_window_layers``) marks "sliding_attention"; all or none is supported."""
    if model_type == "mistral":
        return d.get("sliding_window", 4096)
    if model_type != "qwen2" or not d.get("use_sliding_window", False) or d.get("sliding_window") is None:
        return None
    types = d.get("layer_types") or ["sliding_attention" if i >= d.get("max_window_layers", 28) else "full_attention"
                                     for i in range(n_layer)]
    if all(t == "full_attention" for t in types):
        return None
    if all(t == "sliding_attention" for t in types):
        return d["sliding_window"]
    raise _unsupported(model_type, f"a sliding window on some layers only (layer_types={types}); "
                                   "the window here is the same in every layer")


def _check_hf(c: ModelConfig, model_type: str, required: dict) -> None:
    for key, allowed in required.items():
        value = getattr(c, key)
        if value not in (allowed if isinstance(allowed, tuple) else (allowed,)):
            raise ValueError(f"model_type={model_type!r} needs {key}={allowed!r}; this config has {key}={value!r}.")


def _llama_to_hf(c: ModelConfig, model_type: str) -> dict:
    _check_hf(c, model_type, dict(position="rope", rope_layout="half", norm="rmsnorm", activation="swiglu",
                                  norm_placement="pre", n_expert=0, qkv_bias=model_type == "qwen2",
                                  bias=(False, True) if model_type == "llama" else False))
    if model_type == "llama" and c.sliding_window is not None:
        raise ValueError("model_type='llama' has no sliding window: save as 'mistral' (or 'qwen2' with qkv_bias).")
    out = dict(hidden_size=c.n_embd, intermediate_size=c.ffn_hidden, num_hidden_layers=c.n_layer,
               num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head, head_dim=c.head_dim, hidden_act="silu",
               max_position_embeddings=c.context_length, rms_norm_eps=c.norm_eps, rope_theta=c.rope_base,
               rope_scaling=None if c.rope_scaling is None else c.rope_scaling.to_hf(c.context_length))
    if model_type == "llama":
        out.update(attention_bias=c.bias, mlp_bias=c.bias)
    elif model_type == "mistral":
        out.update(sliding_window=c.sliding_window)  # written even when None: MistralConfig defaults to 4096
    else:
        out.update(use_sliding_window=c.sliding_window is not None, sliding_window=c.sliding_window,
                   max_window_layers=0)
    return out


def _gpt2_to_hf(c: ModelConfig) -> dict:
    _check_hf(c, "gpt2", dict(position="learned", norm="layernorm", bias=True, norm_placement="pre", n_expert=0,
                              n_kv_head=c.n_head, sliding_window=None, activation=("gelu_tanh", "gelu", "relu")))
    act = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}[c.activation]
    return dict(n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head, n_positions=c.context_length,
                n_inner=c.ffn_hidden, activation_function=act, layer_norm_epsilon=c.norm_eps,
                resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout)
