"""State-dict conversion between this package and Hugging Face ``transformers`` checkpoints.

Used by the parity tests (our models against the library's on the same weights) and by the decoding
benchmark; also lets a reader load real GPT-2 or Llama weights they already have on disk. Nothing here
downloads anything.

Our keys are documented in ``model.py``. Both sides use the half-split RoPE layout, so Llama's q/k rows
need no permutation (Meta's original checkpoints do: see ``positions.interleaved_to_half``).
"""
from __future__ import annotations

from typing import Dict

from torch import Tensor

StateDict = Dict[str, Tensor]


def llama_to_hf(state: StateDict, n_layer: int) -> StateDict:
    """TransformerLM (Llama-style preset) -> ``LlamaForCausalLM`` keys."""
    out = {"model.embed_tokens.weight": state["embed.tok_emb.weight"],
           "model.norm.weight": state["backbone.norm_f.weight"],
           "lm_head.weight": state["lm_head.weight"]}
    for i in range(n_layer):
        ours, theirs = f"backbone.blocks.{i}.", f"model.layers.{i}."
        out[theirs + "input_layernorm.weight"] = state[ours + "norm1.weight"]
        out[theirs + "post_attention_layernorm.weight"] = state[ours + "norm2.weight"]
        for p in ("q", "k", "v", "o"):
            out[theirs + f"self_attn.{p}_proj.weight"] = state[ours + f"attn.{p}_proj.weight"]
        for p in ("gate", "up", "down"):
            out[theirs + f"mlp.{p}_proj.weight"] = state[ours + f"ffn.{p}.weight"]
    return out


def gpt2_from_hf(state: StateDict, n_layer: int) -> StateDict:
    """``GPT2LMHeadModel`` keys -> TransformerLM (the "gpt2" preset).

    GPT-2 stores its linear layers as ``Conv1D`` with weights (in, out), the transpose of ``nn.Linear``,
    and fuses q, k and v into one ``c_attn`` matrix of 3·C columns.
    """
    strip = lambda key: key[len("transformer."):] if key.startswith("transformer.") else key
    state = {strip(k): v for k, v in state.items()}
    out = {"embed.tok_emb.weight": state["wte.weight"], "embed.pos_emb.weight": state["wpe.weight"],
           "backbone.norm_f.weight": state["ln_f.weight"], "backbone.norm_f.bias": state["ln_f.bias"]}
    out["lm_head.weight"] = state.get("lm_head.weight", state["wte.weight"])  # tied
    for i in range(n_layer):
        theirs, ours = f"h.{i}.", f"backbone.blocks.{i}."
        for a, b in (("ln_1", "norm1"), ("ln_2", "norm2")):
            out[ours + f"{b}.weight"], out[ours + f"{b}.bias"] = state[theirs + f"{a}.weight"], state[theirs + f"{a}.bias"]
        qkv_w = state[theirs + "attn.c_attn.weight"].t()  # (3C, C)
        qkv_b = state[theirs + "attn.c_attn.bias"]
        for name, w, b in zip("qkv", qkv_w.chunk(3, dim=0), qkv_b.chunk(3, dim=0)):
            out[ours + f"attn.{name}_proj.weight"], out[ours + f"attn.{name}_proj.bias"] = w, b
        for a, b in (("attn.c_proj", "attn.o_proj"), ("mlp.c_fc", "ffn.up"), ("mlp.c_proj", "ffn.down")):
            out[ours + f"{b}.weight"] = state[theirs + f"{a}.weight"].t()
            out[ours + f"{b}.bias"] = state[theirs + f"{a}.bias"]
    return out
