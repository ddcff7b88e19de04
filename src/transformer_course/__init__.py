"""transformer_course: the reference implementation of the course *Transformer Architecture and Long Context*.

Modules, one concept each:
    attention        attention(q, k, v, ...): naive, tiled (FlashAttention in PyTorch) and SDPA; masks
    positions        sinusoidal, RoPE (+ PI, NTK, dynamic NTK, YaRN scaling), ALiBi
    layers, moe      LayerNorm, RMSNorm, FFN, SwiGLU; mixture of experts
    multi_head       MultiHeadAttention (MHA, GQA, MQA, cross-attention)
    kv_cache         KVCache, RollingKVCache
    model            TransformerLM, TransformerEncoder, EncoderDecoderLM
    generate         generate(model, idx, max_new_tokens, ...)
    accounting       parameters, FLOPs and memory from a config
    ring_attention   attention across processes (torch.distributed)
    config           ModelConfig and presets
"""
from .config import ModelConfig
from .model import EncoderDecoderLM, TransformerEncoder, TransformerLM

__all__ = ["ModelConfig", "TransformerLM", "TransformerEncoder", "EncoderDecoderLM"]
__version__ = "0.1.0"
