"""Hugging Face model folders: read one into a TransformerLM, write one that transformers can load.

    model = load_hf("path/to/Llama-3.2-1B")        # config.json + model.safetensors (or shards), nothing downloaded
    save_hf(model, "out/")                          # then AutoModelForCausalLM.from_pretrained("out/") works

Supported families: Llama, Mistral, Qwen2 (one layout, ``convert.llama_*``) and GPT-2 (``convert.gpt2_*``).
The configuration goes through ``ModelConfig.from_hf`` / ``to_hf``, the keys through ``convert.py``; this
module only reads and writes files. transformers itself is not needed, only safetensors.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .convert import StateDict, gpt2_from_hf, gpt2_to_hf, llama_from_hf, llama_to_hf
from .model import TransformerLM

WEIGHTS_NAME, INDEX_NAME, CONFIG_NAME = "model.safetensors", "model.safetensors.index.json", "config.json"


def load_hf(folder, *, device=None, dtype: Optional[torch.dtype] = None) -> TransformerLM:
    """A TransformerLM with the weights of a local Hugging Face folder, in eval mode.

    Reads ``config.json`` (through ``ModelConfig.from_hf``) and ``model.safetensors``, or the shards listed
    in ``model.safetensors.index.json``. dtype: the parameters' dtype; by default the dtype the file stores
    (RoPE tables and norms still compute in float32). The model is built on the meta device and takes the
    file's tensors as its parameters, so the weights are in memory once. Loading is strict: a missing or
    unexpected weight raises.
    """
    folder = Path(folder)
    hf_config = _read_config(folder)
    config = ModelConfig.from_hf(hf_config)
    state = _read_weights(folder)
    if not config.tie_embeddings and "lm_head.weight" not in state:
        raise ValueError(f"{folder}: tie_word_embeddings is false but the weights have no lm_head.weight.")
    from_hf = gpt2_from_hf if hf_config["model_type"] == "gpt2" else llama_from_hf
    state = from_hf(state, config.n_layer)
    dtype = dtype or state["tok_emb.weight"].dtype
    state = _to(state, device, dtype)
    with torch.device("meta"):
        model = TransformerLM(config, dtype=dtype)
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_embeddings:  # assign=True gave lm_head its own Parameter; make it the embedding's again
        model.lm_head.weight = model.tok_emb.weight
    if model.rope is not None:  # buffers are not in the state dict: compute the tables where the weights are
        model.rope.reset_tables(device=model.tok_emb.weight.device)
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"load_hf left {left[:5]} on the meta device: this model has state load_hf does not fill.")
    return model.eval()


def save_hf(model: TransformerLM, folder, *, model_type: Optional[str] = None,
            config_extra: Optional[dict] = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` that ``AutoModelForCausalLM.from_pretrained(folder)`` loads.

    model_type: "llama", "mistral", "qwen2" or "gpt2" (default: the one ``ModelConfig.to_hf`` picks).
    config_extra: merged into config.json last, e.g. ``{"eos_token_id": 2}`` for a tokenizer's special tokens.
    A tied output layer is stored once, as the embedding, the way transformers stores it.
    """
    if not isinstance(model, TransformerLM):
        raise TypeError(f"save_hf writes a TransformerLM; got {type(model).__name__}.")
    hf_config = model.config.to_hf(model_type)
    to_hf = gpt2_to_hf if hf_config["model_type"] == "gpt2" else llama_to_hf
    state = to_hf({k: v.detach() for k, v in model.state_dict().items()}, model.config.n_layer)
    if model.config.tie_embeddings:
        state.pop("lm_head.weight")  # the same tensor as the embedding; safetensors refuses shared tensors
    state = {k: v.contiguous().cpu() for k, v in state.items()}
    hf_config["dtype"] = str(model.tok_emb.weight.dtype).removeprefix("torch.")
    hf_config.update(config_extra or {})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    (folder / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2) + "\n")
    return folder


def _to(state: StateDict, device, dtype: torch.dtype) -> StateDict:
    """Every tensor on ``device`` in ``dtype``, contiguous; a tensor under two keys (tied) is converted once."""
    moved: dict = {}
    for v in state.values():
        if id(v) not in moved:
            moved[id(v)] = v.to(device=device, dtype=dtype).contiguous()
    return {k: moved[id(v)] for k, v in state.items()}


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}: is it a Hugging Face model folder?")
    hf_config = json.loads(path.read_text())
    if "model_type" not in hf_config:
        raise ValueError(f"{path} has no model_type: a course checkpoint? Read those with checkpoint.load_checkpoint.")
    return hf_config


def _read_weights(folder: Path) -> StateDict:
    """model.safetensors, or every shard named in model.safetensors.index.json, as one dict on the CPU."""
    if (folder / WEIGHTS_NAME).exists():
        return load_file(str(folder / WEIGHTS_NAME))
    if (folder / INDEX_NAME).exists():
        weight_map = json.loads((folder / INDEX_NAME).read_text())["weight_map"]  # key -> shard file name
        state: StateDict = {}
        for shard in sorted(set(weight_map.values())):
            state.update(load_file(str(folder / shard)))
        return state
    raise FileNotFoundError(
        f"{folder} has neither {WEIGHTS_NAME} nor {INDEX_NAME}; only safetensors weights are read "
        "(convert a pytorch_model.bin with transformers' save_pretrained(..., safe_serialization=True))."
    )
