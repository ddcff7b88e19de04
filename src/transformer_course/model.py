"""The three transformer families, each one class that reads top to bottom.

    TransformerLM       decoder-only, causal (GPT, Llama, Mistral): (B, T) token ids -> (B, T, vocab) logits
    TransformerEncoder  encoder-only, bidirectional (BERT): (B, T) ids -> (B, T, vocab) masked-LM logits
    EncoderDecoderLM    encoder + causal decoder with cross-attention (original Transformer, T5)

All three are built from one ``ModelConfig``. Shapes: idx (B, T); hidden states x (B, T, C), C = n_embd.

State-dict keys (what ``model.state_dict()`` holds; graders and the converters of ``convert.py`` use them):
    tok_emb.weight (vocab, C); pos_emb.weight (context_length, C) when position == "learned";
    blocks.{i}.norm1, blocks.{i}.attn.{q,k,v,o}_proj, blocks.{i}.norm2, blocks.{i}.ffn.{up,down[,gate]}
        (with experts: blocks.{i}.ffn.router and blocks.{i}.ffn.experts.{e}.{up,down,gate});
    norm_f (pre-norm stacks only: a post-norm block ends in a norm already);
    lm_head.weight (vocab, C), the same tensor as tok_emb.weight when tie_embeddings.
EncoderDecoderLM adds encoder_blocks.{i}... and encoder_norm for its encoder; its decoder blocks (blocks.{i})
also have norm_cross and cross_attn. RoPE tables (``rope``) and KV caches are buffers, not in the state dict.

Positions are explicit, as in litgpt and gpt-fast: ``forward(idx)`` is a sequence of its own at positions
0 .. T - 1 and never touches a KV cache; ``forward(idx, start_pos)`` with a cache set up (``setup_cache``) is
a decoding step: idx's keys and values are written at positions start_pos .. and idx attends to every cached
position before them. A call at start_pos 0 starts a new sequence: nothing depends on what an earlier call
left behind.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .attention import padding_mask
from .config import ModelConfig
from .kv_cache import KVCache, RollingKVCache
from .layers import make_ffn, make_norm
from .moe import MixtureOfExperts
from .multi_head import MultiHeadAttention
from .positions import RotaryEmbedding, sinusoidal_table


class TransformerBlock(nn.Module):
    """Attention, optional cross-attention and FFN, each wrapped in a residual connection and a norm.

    pre-norm  (GPT-2 and later):     x = x + f(norm(x))      - the residual path is a clean identity
    post-norm (Vaswani et al. 2017): x = norm(x + f(x))      - every layer's output is renormalised
    """

    def __init__(self, config: ModelConfig, *, causal: bool = True, cross: bool = False, attn_impl: str = "sdpa",
                 device=None, dtype=None):
        super().__init__()
        c, kw = config, dict(device=device, dtype=dtype)
        self.pre_norm = c.norm_placement == "pre"
        self.norm1 = make_norm(c.norm, c.n_embd, c.norm_eps, c.bias, **kw)
        self.attn = MultiHeadAttention(
            c.n_embd, c.n_head, c.n_kv_head, bias=c.bias, qkv_bias=c.qkv_bias, causal=causal, window=c.sliding_window,
            alibi=c.position == "alibi", rope_layout=c.rope_layout, impl=attn_impl, **kw)
        if cross:
            self.norm_cross = make_norm(c.norm, c.n_embd, c.norm_eps, c.bias, **kw)
            self.cross_attn = MultiHeadAttention(c.n_embd, c.n_head, c.n_kv_head, bias=c.bias, qkv_bias=c.qkv_bias,
                                                 cross=True, impl=attn_impl, **kw)
        else:
            self.cross_attn = None
        self.norm2 = make_norm(c.norm, c.n_embd, c.norm_eps, c.bias, **kw)
        if c.n_expert:
            self.ffn = MixtureOfExperts(c.n_embd, c.ffn_hidden, c.n_expert, c.n_expert_active, c.activation,
                                        c.bias, **kw)
        else:
            self.ffn = make_ffn(c.activation, c.n_embd, c.ffn_hidden, c.bias, **kw)
        self.dropout = _dropout(c.dropout)

    def _residual(self, x: Tensor, norm: nn.Module, f) -> Tensor:
        if self.pre_norm:
            return x + self.dropout(f(norm(x)))
        return norm(x + self.dropout(f(x)))

    def forward(self, x: Tensor, *, start_pos: Optional[int] = None, rope=None, mask: Optional[Tensor] = None,
                context: Optional[Tensor] = None, context_mask: Optional[Tensor] = None) -> Tensor:
        """x: (B, T, C) -> (B, T, C). start_pos: where x starts in the KV cache (None: no cache; see model.py)."""
        x = self._residual(x, self.norm1, lambda h: self.attn(h, start_pos=start_pos, rope=rope, mask=mask))
        if self.cross_attn is not None:
            x = self._residual(x, self.norm_cross, lambda h: self.cross_attn(h, context=context, mask=context_mask))
        return self._residual(x, self.norm2, self.ffn)


def _dropout(p: float) -> nn.Module:
    """nn.Dropout, or nothing at all when p is 0 (every preset): one module call less per layer when decoding."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def _check_config(config) -> None:
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig (try ModelConfig.from_name('tiny-llama')); got {type(config).__name__}.")


def _position_embedding(c: ModelConfig, **kw) -> Optional[nn.Embedding]:
    """Learned absolute positions (GPT-2); RoPE, ALiBi and sinusoidal positions have no weights."""
    return nn.Embedding(c.context_length, c.n_embd, **kw) if c.position == "learned" else None


def _stack(c: ModelConfig, n_layer: int, *, causal: bool, cross: bool = False, attn_impl: str, **kw) -> nn.ModuleList:
    return nn.ModuleList(TransformerBlock(c, causal=causal, cross=cross, attn_impl=attn_impl, **kw)
                         for _ in range(n_layer))


def _final_norm(c: ModelConfig, **kw) -> nn.Module:
    """Post-norm blocks end in a norm already; pre-norm stacks need one before the output layer."""
    return make_norm(c.norm, c.n_embd, c.norm_eps, c.bias, **kw) if c.norm_placement == "pre" else nn.Identity()


def _rope(c: ModelConfig, device=None) -> Optional[RotaryEmbedding]:
    if c.position != "rope":
        return None
    return RotaryEmbedding(c.head_dim, base=c.rope_base, context_length=c.context_length, scaling=c.rope_scaling,
                           layout=c.rope_layout, device=device)


def _embed(model: nn.Module, idx: Tensor, start_pos: int = 0) -> Tensor:
    """Token embedding plus absolute positions (learned or sinusoidal): (B, T) ids -> (B, T, C)."""
    c = model.config
    if idx.dim() != 2:
        raise ValueError(f"idx must be (B, T) token ids; got shape {tuple(idx.shape)} (use idx[None] for one sequence).")
    if idx.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"idx must hold integer token ids (B, T); got dtype {idx.dtype}.")
    if start_pos < 0:
        raise ValueError(f"start_pos={start_pos} must be >= 0: it is the position of idx[:, 0].")
    x = model.tok_emb(idx)  # (B, T, C)
    end = start_pos + idx.shape[1]
    if c.position == "learned":
        if end > c.context_length:
            raise ValueError(
                f"learned positions stop at context_length={c.context_length} but position {end - 1} was asked "
                f"for: shorten the input, or use a model with position='rope', 'alibi' or 'sinusoidal'."
            )
        x = x + model.pos_emb(torch.arange(start_pos, end, device=idx.device))
    elif c.position == "sinusoidal":
        x = x + sinusoidal_table(end, c.n_embd, device=idx.device, dtype=x.dtype)[start_pos:end]
    return model.emb_dropout(x)


def _rope_span(model: nn.Module, start_pos: int, T: int):
    return model.rope.span(start_pos, start_pos + T) if model.rope is not None else None


def _init_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2's initialisation: N(0, 0.02), residual output projections scaled by 1/sqrt(2·n_layer)."""
    for name, p in model.named_parameters():
        if p.device.type == "meta":
            continue
        if p.dim() >= 2:
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("o_proj.weight", "down.weight")) else 0.02
            nn.init.normal_(p, mean=0.0, std=std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)


def _output_layer(model: nn.Module, n_layer: int, **kw) -> None:
    """The output layer (tied to the token embedding when the config says so), then every weight initialised."""
    c = model.config
    model.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False, **kw)
    _init_weights(model, n_layer)
    if c.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight


class TransformerLM(nn.Module):
    """Decoder-only causal language model: ``forward(idx)`` maps (B, T) ids to (B, T, vocab) logits.

    ``attn_impl`` picks the attention implementation of every layer ("naive", "tiled", "sdpa"); the
    three give the same logits up to float round-off. For decoding, ``setup_cache`` gives every layer a
    KV cache; then ``forward(idx, start_pos)`` stores idx's keys and values at positions start_pos ..
    and attends to every cached position before them (see ``generate``). Without ``start_pos`` the
    cache is neither read nor written.
    """

    def __init__(self, config: ModelConfig, *, attn_impl: str = "sdpa", device=None, dtype=None):
        super().__init__()
        _check_config(config)
        c, kw = config, dict(device=device, dtype=dtype)
        self.config = c
        self.tok_emb = nn.Embedding(c.vocab_size, c.n_embd, **kw)
        self.pos_emb = _position_embedding(c, **kw)
        self.emb_dropout = _dropout(c.dropout)
        self.rope = _rope(c, device)
        self.blocks = _stack(c, c.n_layer, causal=True, attn_impl=attn_impl, **kw)
        self.norm_f = _final_norm(c, **kw)
        _output_layer(self, c.n_layer, **kw)

    def embed(self, idx: Tensor, start_pos: Optional[int] = None) -> Tensor:
        """(B, T) ids at positions start_pos .. -> (B, T, C): token embedding plus learned or sinusoidal positions."""
        return _embed(self, idx, start_pos or 0)

    def hidden_states(self, idx: Tensor, start_pos: Optional[int] = None) -> Tensor:
        """(B, T) ids -> (B, T, C): the final norm's output, what the output layer reads."""
        x = self.embed(idx, start_pos)  # (B, T, C)
        rope = _rope_span(self, start_pos or 0, idx.shape[1])  # (cos, sin), each (T, head_dim), or None
        for block in self.blocks:
            x = block(x, start_pos=start_pos, rope=rope)
        return self.norm_f(x)

    def forward(self, idx: Tensor, start_pos: Optional[int] = None) -> Tensor:
        """idx: (B, T) token ids -> logits (B, T, vocab).

        start_pos None: idx is a whole sequence, positions 0 .. T - 1, and the KV cache is not used. An int: a
        decoding step, idx at positions start_pos .. start_pos + T - 1, its keys and values stored in the cache.
        """
        return self.lm_head(self.hidden_states(idx, start_pos))

    def set_attn_impl(self, impl: str) -> None:
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                module.impl = impl

    # ----- KV cache -------------------------------------------------------------------------------
    def setup_cache(self, batch_size: int, max_len: Optional[int] = None, *, dtype=None) -> None:
        """Allocate a KV cache in every layer for up to ``max_len`` positions (default context_length).

        With ``config.sliding_window`` the cache is a ``RollingKVCache`` of the window's size.
        """
        c = self.config
        max_len = c.context_length if max_len is None else max_len
        ref = self.lm_head.weight
        for block in self.blocks:
            cls, capacity = (RollingKVCache, c.sliding_window) if c.sliding_window else (KVCache, max_len)
            block.attn.kv_cache = cls(batch_size, c.n_kv_head, capacity, c.head_dim,
                                      device=ref.device, dtype=dtype or ref.dtype)

    def remove_cache(self) -> None:
        for block in self.blocks:
            block.attn.kv_cache = None

    @property
    def cache_length(self) -> Optional[int]:
        """Positions held by the KV cache (0 .. cache_length - 1), or None without a cache."""
        cache = self.blocks[0].attn.kv_cache
        return None if cache is None else cache.length

    def aux_loss(self) -> Tensor:
        """Sum of the mixture-of-experts load-balancing losses of the last forward (0 without experts)."""
        losses = [b.ffn.aux_loss for b in self.blocks if isinstance(b.ffn, MixtureOfExperts) and b.ffn.aux_loss is not None]
        return torch.stack(losses).sum() if losses else torch.zeros((), device=self.lm_head.weight.device)


class TransformerEncoder(nn.Module):
    """Encoder-only, bidirectional model (BERT-style): (B, T) ids -> (B, T, vocab) masked-LM logits.

    ``lengths`` (B,) hides right padding from every query. The output layer is tied to the embedding
    when ``config.tie_embeddings``.
    """

    def __init__(self, config: ModelConfig, *, attn_impl: str = "sdpa", device=None, dtype=None):
        super().__init__()
        _check_config(config)
        c, kw = config, dict(device=device, dtype=dtype)
        self.config = c
        self.tok_emb = nn.Embedding(c.vocab_size, c.n_embd, **kw)
        self.pos_emb = _position_embedding(c, **kw)
        self.emb_dropout = _dropout(c.dropout)
        self.rope = _rope(c, device)
        self.blocks = _stack(c, c.n_layer, causal=False, attn_impl=attn_impl, **kw)
        self.norm_f = _final_norm(c, **kw)
        _output_layer(self, c.n_layer, **kw)

    def encode(self, idx: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """(B, T) -> hidden states (B, T, C)."""
        mask = None if lengths is None else padding_mask(lengths, idx.shape[1])  # (B, 1, 1, T)
        x, rope = _embed(self, idx, 0), _rope_span(self, 0, idx.shape[1])
        for block in self.blocks:
            x = block(x, rope=rope, mask=mask)
        return self.norm_f(x)

    def forward(self, idx: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        return self.lm_head(self.encode(idx, lengths))


class EncoderDecoderLM(nn.Module):
    """Encoder-decoder (Vaswani et al., 2017): a bidirectional encoder reads the source; a causal decoder
    with cross-attention to the encoder's output predicts the target. Embeddings are shared.

    ``forward(src, tgt)``: (B, S) and (B, T) ids -> (B, T, vocab) logits for the next target token.
    """

    def __init__(self, config: ModelConfig, *, n_encoder_layer: Optional[int] = None, attn_impl: str = "sdpa",
                 device=None, dtype=None):
        super().__init__()
        _check_config(config)
        c, kw = config, dict(device=device, dtype=dtype)
        self.config = c
        n_enc = c.n_layer if n_encoder_layer is None else n_encoder_layer
        self.tok_emb = nn.Embedding(c.vocab_size, c.n_embd, **kw)
        self.pos_emb = _position_embedding(c, **kw)
        self.emb_dropout = _dropout(c.dropout)
        self.rope = _rope(c, device)
        self.encoder_blocks = _stack(c, n_enc, causal=False, attn_impl=attn_impl, **kw)
        self.encoder_norm = _final_norm(c, **kw)
        self.blocks = _stack(c, c.n_layer, causal=True, cross=True, attn_impl=attn_impl, **kw)
        self.norm_f = _final_norm(c, **kw)
        _output_layer(self, c.n_layer + n_enc, **kw)

    def encode(self, src: Tensor, src_lengths: Optional[Tensor] = None) -> Tensor:
        """(B, S) source ids -> the encoder's output (B, S, C), what every decoder block cross-attends to."""
        mask = None if src_lengths is None else padding_mask(src_lengths, src.shape[1])  # (B, 1, 1, S)
        x, rope = _embed(self, src, 0), _rope_span(self, 0, src.shape[1])
        for block in self.encoder_blocks:
            x = block(x, rope=rope, mask=mask)
        return self.encoder_norm(x)

    def forward(self, src: Tensor, tgt: Tensor, src_lengths: Optional[Tensor] = None) -> Tensor:
        src_mask = None if src_lengths is None else padding_mask(src_lengths, src.shape[1])  # (B, 1, 1, S)
        memory = self.encode(src, src_lengths)  # (B, S, C)
        x, rope = _embed(self, tgt, 0), _rope_span(self, 0, tgt.shape[1])  # (B, T, C)
        for block in self.blocks:
            x = block(x, rope=rope, context=memory, context_mask=src_mask)
        return self.lm_head(self.norm_f(x))  # (B, T, vocab)
