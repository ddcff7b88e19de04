"""State-dict conversion between this package and Hugging Face ``transformers`` checkpoints, both directions.

    llama_to_hf / llama_from_hf   Llama, Mistral and Qwen2 (``*ForCausalLM``: one layout; Qwen2 adds q/k/v biases)
    gpt2_to_hf / gpt2_from_hf     GPT-2 (``GPT2LMHeadModel``: Conv1D weights, fused q/k/v)

Each takes a state dict and ``n_layer`` and returns a new dict that shares the tensors where it can (GPT-2's
transposes and splits are views). Reading and writing Hugging Face folders is ``hf.py``'s job; this module
only renames, transposes and splits. Used by the parity tests, the decoding benchmark and ``hf.py``; nothing
here downloads anything.

Our keys are documented in ``model.py``. Both sides use the half-split RoPE layout, so Llama's q/k rows
need no permutation (Meta's original checkpoints do: see ``positions.interleaved_to_half``).

Tied embeddings: Hugging Face files omit ``lm_head.weight`` when the output layer is tied; ``*_from_hf``
then takes it from the token embedding. ``*_to_hf`` always writes it (``load_state_dict`` of a tied
transformers model accepts it); ``hf.save_hf`` drops it again before writing a tied model.

Keys that neither side expects raise ValueError (a checkpoint of another family, a bias the config does not
declare), except buffers that old transformers versions saved: rotary ``inv_freq`` and GPT-2's causal masks.
"""
from __future__ import annotations

from typing import Dict, Iterable, Tuple

import torch
from torch import Tensor

StateDict = Dict[str, Tensor]
KeyMap = Dict[str, str]  # our key -> their key

# Module names, ours -> transformers'. Each pair covers ".weight" and, where present, ".bias".
LLAMA_GLOBAL = (("tok_emb", "model.embed_tokens"), ("norm_f", "model.norm"), ("lm_head", "lm_head"))
LLAMA_LAYER = (  # blocks.{i}.<ours>  <->  model.layers.{i}.<theirs>
    ("norm1", "input_layernorm"),
    ("attn.q_proj", "self_attn.q_proj"),
    ("attn.k_proj", "self_attn.k_proj"),
    ("attn.v_proj", "self_attn.v_proj"),
    ("attn.o_proj", "self_attn.o_proj"),
    ("norm2", "post_attention_layernorm"),
    ("ffn.gate", "mlp.gate_proj"),
    ("ffn.up", "mlp.up_proj"),
    ("ffn.down", "mlp.down_proj"),
)
GPT2_GLOBAL = (("tok_emb", "transformer.wte"), ("pos_emb", "transformer.wpe"), ("norm_f", "transformer.ln_f"),
               ("lm_head", "lm_head"))
GPT2_LAYER = (  # blocks.{i}.<ours>  <->  transformer.h.{i}.<theirs>; "T": a Conv1D, weight stored (in, out)
    ("norm1", "ln_1", ""),
    ("attn.o_proj", "attn.c_proj", "T"),
    ("norm2", "ln_2", ""),
    ("ffn.up", "mlp.c_fc", "T"),
    ("ffn.down", "mlp.c_proj", "T"),
)
# q, k and v are one Conv1D in GPT-2: c_attn.weight (C, 3C) and c_attn.bias (3C,), in the order q, k, v.
GPT2_QKV = ("attn.q_proj", "attn.k_proj", "attn.v_proj")
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")  # buffers, not weights


def _key_map(global_pairs: Iterable[Tuple[str, str]], layer_pairs: Iterable[Tuple[str, ...]], n_layer: int,
             ours_prefix: str, their_prefix: str) -> KeyMap:
    """Every key both ways: {"blocks.0.norm1.weight": "model.layers.0.input_layernorm.weight", ...}."""
    pairs = list(global_pairs)
    for i in range(n_layer):
        pairs += [(f"{ours_prefix.format(i=i)}{a}", f"{their_prefix.format(i=i)}{b}") for a, b, *_ in layer_pairs]
    return {f"{a}.{p}": f"{b}.{p}" for a, b in pairs for p in ("weight", "bias")}


def _rename(state: StateDict, key_map: KeyMap, what: str) -> StateDict:
    """Rename every key of ``state`` through ``key_map``; a key outside it (and not a known buffer) is an error."""
    unknown = [k for k in state if k not in key_map and not k.endswith(IGNORED_SUFFIXES)]
    if unknown:
        raise ValueError(f"{len(unknown)} key(s) of this state dict have no place in {what}: {unknown[:5]}. "
                         "Is it a checkpoint of another family, or does the config miss a feature (biases)?")
    return {key_map[k]: v for k, v in state.items() if k in key_map}


def _tie(state: StateDict, embedding: str) -> StateDict:
    """A file saved with tied embeddings has no lm_head.weight: the output layer is the embedding."""
    if "lm_head.weight" not in state:
        state["lm_head.weight"] = state[embedding]
    return state


# ------------------------------------------------------------------------------------------------
# Llama, Mistral, Qwen2
# ------------------------------------------------------------------------------------------------
def _llama_map(n_layer: int) -> KeyMap:
    return _key_map(LLAMA_GLOBAL, LLAMA_LAYER, n_layer, "blocks.{i}.", "model.layers.{i}.")


def llama_to_hf(state: StateDict, n_layer: int) -> StateDict:
    """TransformerLM (Llama-style config) -> ``LlamaForCausalLM`` / ``MistralForCausalLM`` / ``Qwen2ForCausalLM`` keys."""
    return _rename(state, _llama_map(n_layer), "the Llama layout")


def llama_from_hf(state: StateDict, n_layer: int) -> StateDict:
    """``LlamaForCausalLM`` / ``MistralForCausalLM`` / ``Qwen2ForCausalLM`` keys -> TransformerLM keys."""
    inverse = {theirs: ours for ours, theirs in _llama_map(n_layer).items()}
    return _tie(_rename(state, inverse, "TransformerLM (Llama layout)"), "tok_emb.weight")


# ------------------------------------------------------------------------------------------------
# GPT-2
# ------------------------------------------------------------------------------------------------
def _gpt2_map(n_layer: int) -> KeyMap:
    return _key_map(GPT2_GLOBAL, GPT2_LAYER, n_layer, "blocks.{i}.", "transformer.h.{i}.")


def _gpt2_transposed(n_layer: int) -> set:
    """Our keys whose weight GPT-2 stores transposed (Conv1D, (in, out))."""
    return {f"blocks.{i}.{a}.weight" for i in range(n_layer) for a, _, t in GPT2_LAYER if t == "T"}


def gpt2_to_hf(state: StateDict, n_layer: int) -> StateDict:
    """TransformerLM (the "gpt2" preset layout) -> ``GPT2LMHeadModel`` keys: Conv1D transposes, fused c_attn."""
    state = dict(state)
    fused = {}
    for i in range(n_layer):
        ours = [f"blocks.{i}.{name}" for name in GPT2_QKV]
        for p in ("weight", "bias"):
            parts = [state.pop(f"{o}.{p}") for o in ours]  # q, k, v: (C, C) weights, (C,) biases
            fused[f"transformer.h.{i}.attn.c_attn.{p}"] = (
                torch.cat(parts, dim=0).t().contiguous() if p == "weight" else torch.cat(parts, dim=0))  # (C, 3C)
    transposed = _gpt2_transposed(n_layer)
    state = {k: (v.t().contiguous() if k in transposed else v) for k, v in state.items()}
    return {**_rename(state, _gpt2_map(n_layer), "the GPT-2 layout"), **fused}


def gpt2_from_hf(state: StateDict, n_layer: int) -> StateDict:
    """``GPT2LMHeadModel`` (or bare ``GPT2Model``) keys -> TransformerLM (the "gpt2" preset layout).

    GPT-2 stores its linear layers as ``Conv1D`` with weights (in, out), the transpose of ``nn.Linear``,
    and fuses q, k and v into one ``c_attn`` matrix of 3·C columns. Keys without the "transformer."
    prefix (the original OpenAI conversion) are accepted.
    """
    state = {(k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k): v for k, v in state.items()}
    split = {}
    for i in range(n_layer):
        theirs = f"transformer.h.{i}.attn.c_attn."
        qkv_w, qkv_b = state.pop(theirs + "weight").t(), state.pop(theirs + "bias")  # (3C, C), (3C,)
        for name, w, b in zip(GPT2_QKV, qkv_w.chunk(3, dim=0), qkv_b.chunk(3, dim=0)):
            split[f"blocks.{i}.{name}.weight"], split[f"blocks.{i}.{name}.bias"] = w, b
    inverse = {theirs: ours for ours, theirs in _gpt2_map(n_layer).items()}
    out = _rename(state, inverse, "TransformerLM (GPT-2 layout)")
    transposed = _gpt2_transposed(n_layer)
    out = {k: (v.t() if k in transposed else v) for k, v in out.items()}
    return _tie({**out, **split}, "tok_emb.weight")

