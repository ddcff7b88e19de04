"""transformer_course: the reference implementation of the course *Transformer Architecture and Long Context*.

Modules in layers; each imports only from the layers above it, and ``config`` imports nothing of the package.

Mechanisms
    config           ModelConfig (with presets, ``from_hf``) and RopeScaling: plain data, the leaf
    attention        attention(q, k, v, ...): naive, tiled (FlashAttention in PyTorch) and SDPA; masks
    positions        sinusoidal, RoPE (+ PI, NTK, dynamic NTK, YaRN, Llama 3 scaling), ALiBi
    layers, moe      LayerNorm, RMSNorm, FFN, SwiGLU; mixture of experts
    multi_head       MultiHeadAttention (MHA, GQA, MQA, cross-attention)
    kv_cache         KVCache, RollingKVCache
    ring_attention   attention across processes (torch.distributed)
Models
    model            TransformerLM, TransformerEncoder, EncoderDecoderLM
    generate         generate(model, idx, max_new_tokens, ...)
    accounting       parameters, FLOPs and memory from a config
    checkpoint       save_checkpoint, load_checkpoint (our folders); hf, convert: Hugging Face folders and keys
    pretrained       the models shipped with the course
Experiments
    data, baselines  the corpus (the standard library's sources), passkey prompts; n-gram baselines
    train, evaluate  the training loop; losses in bits per byte, passkey accuracy
    long_context     the context-extension study of the shipped model
    passkey_training what it took the shipped model to retrieve: the training runs tried, measured alike
    position_study   one small LM per positional scheme, scored at 1x and 2x its training length
    norm_study       pre-norm against post-norm: a learning-rate sweep without warm-up on a deep stack
    rope_study       zero-shot RoPE scalings of the shipped model (YaRN's temperature, Llama 3.1's rule)
Tools
    results          reading results files, and the machine they were measured on
    bench, model_card, cli   benchmarks, the shipped model's card, ``python -m transformer_course``
"""
from .config import ModelConfig
from .model import EncoderDecoderLM, TransformerEncoder, TransformerLM

__all__ = ["ModelConfig", "TransformerLM", "TransformerEncoder", "EncoderDecoderLM"]
__version__ = "0.1.0"
