"""Which positional scheme? Five small byte-level models, alike but for their positions, at 1x and 2x.

    python -m transformer_course position-study      # writes results/positional_schemes-cpu.json

Each scheme of ``SCHEMES`` ("none" = NoPE, "learned", "sinusoidal", "rope", "alibi") trains the same small
decoder (``BASE_MODEL`` on top of the ``tiny-gpt`` preset) with the same batches of the standard-library
corpus (``train.train``, same seed), windows of ``length`` bytes. Each model is then scored, in bits per
byte, on the same held-out windows of the validation split:

    at 1x   windows of ``length`` bytes, every position scored;
    at 2x   windows of ``2 * length`` bytes: the mean over all positions (from the window's start), and the
            mean over the positions past the training length only (``length .. 2 * length - 1``).

A learned table has no row past ``length - 1``; such a model cannot be run at 2x at all (its 2x entries are
``None``). As a variant, ``learned`` is also scored with *clamped* positions: every position past the table
reuses its last row (``clamped_2x``). The per-position loss at 2x, averaged in ``n_bins`` bins, lets the book
draw where each model breaks down. The unigram baseline (byte frequencies only) is recorded beside them.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .baselines import unigram_bits_per_byte
from .data import load_split, random_batch
from .model import TransformerLM
from .results import machine_info, write
from .train import TrainConfig, train

SCHEMES = ("none", "learned", "sinusoidal", "rope", "alibi")
# The model: tiny-gpt's layout (pre-norm LayerNorm, GELU, tied embeddings), smaller so that five runs fit
# in a few CPU minutes. position and context_length are set per run.
BASE_MODEL = dict(n_layer=2, n_embd=64, n_head=4)
EVAL_SEED = 4321  # the held-out windows every model is scored on
NAME = "positional_schemes-cpu.json"


def train_config(scheme: str, length: int, steps: int, seed: int = 0,
                 model: Optional[dict] = None) -> TrainConfig:
    """The training run of one scheme: the same data, steps and seed for every scheme."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not one of {SCHEMES}.")
    overrides = {**BASE_MODEL, **(model or {}), "position": scheme, "context_length": length}
    return TrainConfig(preset="tiny-gpt", model=overrides, steps=steps, batch_size=16, seq_len=length,
                       lr=3e-3, min_lr=3e-4, warmup_steps=min(50, steps // 4 or 1), eval_interval=steps,
                       eval_batches=2, seed=seed)


def forward_clamped(model: TransformerLM, idx: Tensor) -> Tensor:
    """Logits (B, T, vocab) of a learned-position model whose positions past its table reuse the last row."""
    c = model.config
    if c.position != "learned":
        raise ValueError(f"forward_clamped is for position='learned' models; this one has {c.position!r}.")
    pos = torch.arange(idx.shape[1], device=idx.device).clamp(max=c.context_length - 1)  # (T,)
    x = model.tok_emb(idx) + model.pos_emb(pos)  # (B, T, C)
    for block in model.blocks:
        x = block(x)
    return model.lm_head(model.norm_f(x))


@torch.no_grad()
def position_losses(model: TransformerLM, windows: Tensor, *, clamped: bool = False,
                    batch_size: int = 16) -> Tensor:
    """Loss in bits of every next-byte prediction, (n_windows, T - 1) for windows (n_windows, T)."""
    model.eval()
    out = []
    for chunk in windows.split(batch_size):
        x, y = chunk[:, :-1], chunk[:, 1:]
        logits = forward_clamped(model, x) if clamped else model(x)  # (b, T - 1, vocab)
        loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (b, T - 1), nats
        out.append(loss / math.log(2))
    return torch.cat(out)


def score(model: TransformerLM, windows: Tensor, length: int, n_bins: int, *, clamped: bool = False) -> dict:
    """bits per byte at 1x and 2x (``windows`` hold 2 * length + 1 bytes) and the binned 2x curve."""
    at_1x = position_losses(model, windows[:, :length + 1], clamped=clamped).mean().item()
    if model.config.position == "learned" and not clamped:
        return {"bits_per_byte_1x": at_1x, "bits_per_byte_2x": None, "bits_per_byte_2x_beyond": None,
                "by_position_2x": None}
    losses = position_losses(model, windows, clamped=clamped)  # (n, 2 * length)
    curve = losses.mean(0).view(n_bins, -1).mean(-1)  # (n_bins,)
    return {"bits_per_byte_1x": at_1x, "bits_per_byte_2x": losses.mean().item(),
            "bits_per_byte_2x_beyond": losses[:, length:].mean().item(), "by_position_2x": curve.tolist()}


def run_study(length: int = 64, steps: int = 600, n_eval: int = 64, n_bins: int = 16,
              schemes: Sequence[str] = SCHEMES, model: Optional[dict] = None,
              data: Optional[dict] = None) -> dict:
    """Train and score every scheme; returns the dict ``write_position_study`` saves (without the machine)."""
    if (2 * length) % n_bins:
        raise ValueError(f"n_bins={n_bins} must divide 2 * length = {2 * length}.")
    data = data or {"train": load_split("train"), "val": load_split("val")}
    gen = torch.Generator().manual_seed(EVAL_SEED)
    x, y = random_batch(data["val"], n_eval, 2 * length, gen)  # (n_eval, 2 * length) each
    windows = torch.cat([x, y[:, -1:]], dim=1)  # (n_eval, 2 * length + 1): the bytes of each window
    runs = []
    for scheme in schemes:
        cfg = train_config(scheme, length, steps, model=model)
        began = time.perf_counter()
        result = train(cfg, progress=False, data=data)
        seconds = time.perf_counter() - began
        row = {"scheme": scheme, "model": cfg.model, "parameters": sum(p.numel() for p in result.model.parameters()),
               "train_seconds": seconds, "val_bits_per_byte_at_end": result.val_loss / math.log(2),
               **score(result.model, windows, length, n_bins)}
        if scheme == "learned":
            row["clamped_2x"] = score(result.model, windows, length, n_bins, clamped=True)
        runs.append(row)
    return {
        "what": "byte-level LM on the standard-library corpus, one model per positional scheme, trained at "
                "`training_length` bytes and scored on held-out windows of the validation split at 1x and 2x",
        "unit": "bits per byte",
        "training_length": length, "steps": steps, "batch_size": 16, "eval_windows": n_eval,
        "eval_seed": EVAL_SEED, "n_bins": n_bins, "base_model": {**BASE_MODEL, **(model or {})},
        "unigram_bits_per_byte": unigram_bits_per_byte(data["train"], data["val"]),
        "learned_at_2x": "no row past the table: not run (None); `clamped_2x` reuses the last row",
        "runs": runs,
    }


def write_position_study(out_dir: str = "results", command: str = "", **kwargs) -> Path:
    """Run ``run_study(**kwargs)`` and write ``positional_schemes-cpu.json`` with the machine and command."""
    began = time.perf_counter()
    study = run_study(**kwargs)
    record = {"machine": machine_info(), "command": command, "seconds": time.perf_counter() - began, **study}
    return write(record, NAME, out_dir)
