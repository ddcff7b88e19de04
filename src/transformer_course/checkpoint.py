"""Checkpoints: a folder with model.safetensors and config.json (plus the training state while training).

    save_checkpoint(out_dir, model)            # model.safetensors + config.json
    model = load_checkpoint(out_dir)           # a TransformerLM with those weights

The state-dict keys are the model's own (see ``model.py``); a tied output layer is stored once, as
``tok_emb.weight``. Hugging Face folders are read and written by ``hf.py``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .model import TransformerLM


def save_checkpoint(out_dir, model: TransformerLM, *, optimizer=None, step: int = 0, train_config=None,
                    history=None) -> Path:
    """model.safetensors + config.json (+ train_state.pt and train_config.json when training)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight")  # the same tensor as tok_emb.weight; safetensors stores it once
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(), "step": step}, out / "train_state.pt")
        (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(train_config), indent=2) + "\n")
        (out / "history.json").write_text(json.dumps(history or [], indent=2) + "\n")
    return out


def load_checkpoint(path, *, device=None) -> TransformerLM:
    """A TransformerLM from a folder holding model.safetensors and config.json."""
    path = Path(path)
    missing = [n for n in ("model.safetensors", "config.json") if not (path / n).exists()]
    if missing:
        raise FileNotFoundError(f"{path} is not a checkpoint folder: {', '.join(missing)} missing.")
    config = ModelConfig.from_dict(json.loads((path / "config.json").read_text()))
    model = TransformerLM(config, device=device)
    state = load_file(str(path / "model.safetensors"), device=str(device or "cpu"))
    if config.tie_embeddings:
        state["lm_head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state)
    return model
