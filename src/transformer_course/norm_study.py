"""Pre-norm against post-norm in real training runs: a learning-rate sweep without warm-up on a deep stack.

    from transformer_course.norm_study import write_norm_study
    write_norm_study(out_dir="results", command="python -m transformer_course norm-study")

writes ``results/norm_placement-cpu.json``. Every run is the package's own ``train`` loop (AdamW, gradient
clipping at the default 1.0) on the standard-library corpus, with a constant learning rate from the first
step (no warm-up, no decay), for the same deep, narrow ``ModelConfig`` in both placements
(``norm_placement="pre"`` and ``"post"``) and the same batches. For each (placement, learning rate) the file
holds the training loss of every step and the validation loss at regular steps, in bits per byte, and
whether the run failed: its loss became non-finite, or its final validation loss is no better than the
entropy of the byte frequencies (what a model that ignores the context reaches).

Xiong et al. (2020, "On Layer Normalization in the Transformer Architecture") show that post-norm needs the
warm-up that pre-norm can do without; this study measures where that shows at a size one CPU core trains in
minutes.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from .baselines import byte_entropy_bits
from .data import load_split
from .results import machine_info, write
from .train import TrainConfig, train

NAME = "norm_placement-cpu"
PLACEMENTS = ("pre", "post")
LEARNING_RATES = (1e-3, 3e-3, 6e-3, 1e-2, 3e-2)
MODEL = dict(n_layer=12, n_embd=64, n_head=4, context_length=32, norm_placement="pre")
STEPS = 250
BATCH_SIZE = 8
EVAL_INTERVAL = 25
EVAL_BATCHES = 4
SEED = 0


def run_config(placement: str, lr: float, *, steps: int = STEPS, model: Optional[dict] = None,
               batch_size: int = BATCH_SIZE, eval_interval: int = EVAL_INTERVAL,
               eval_batches: int = EVAL_BATCHES, seed: int = SEED) -> TrainConfig:
    """The training config of one run: constant ``lr`` from step 0 (no warm-up, no decay)."""
    shape = {**MODEL, **(model or {}), "norm_placement": placement}
    return TrainConfig(preset="tiny-gpt", model=shape, steps=steps, batch_size=batch_size,
                       seq_len=shape["context_length"], lr=lr, min_lr=lr, warmup_steps=0,
                       eval_interval=eval_interval, eval_batches=eval_batches, seed=seed)


def run_one(cfg: TrainConfig, data: dict, unigram_bits: float) -> dict:
    """Train one run; its curves in bits per byte and whether it failed (see the module docstring)."""
    cpu_began = time.process_time()
    result = train(cfg, progress=False, data=data)
    cpu_seconds = time.process_time() - cpu_began
    bits = 1 / math.log(2)
    train_bits = [row["train_loss"] * bits for row in result.history]
    val = [(row["step"], row["val_loss"] * bits) for row in result.history if "val_loss" in row]
    final = val[-1][1]
    finite = all(math.isfinite(v) for v in train_bits) and math.isfinite(final)
    return {
        "placement": cfg.model["norm_placement"], "lr": cfg.lr,
        "train_bits_per_byte": [round(v, 4) if math.isfinite(v) else None for v in train_bits],
        "val_steps": [s for s, _ in val],
        "val_bits_per_byte": [round(v, 4) if math.isfinite(v) else None for _, v in val],
        "final_val_bits_per_byte": final if math.isfinite(final) else None,
        "finite": finite,
        "failed": (not finite) or final >= unigram_bits,
        "seconds": round(result.seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
    }


def write_norm_study(out_dir: str = "results", command: str = "", *,
                     learning_rates: Sequence[float] = LEARNING_RATES, steps: int = STEPS,
                     model: Optional[dict] = None, data: Optional[dict] = None) -> Path:
    """Run the sweep (every placement at every learning rate) and write ``norm_placement-cpu.json``.

    data: optional {"train": tensor, "val": tensor} (the test passes small ones); default the stdlib corpus.
    """
    torch.set_num_threads(1)  # the figures of the file are for one core, whatever the machine has
    data = data or {"train": load_split("train"), "val": load_split("val")}
    unigram = byte_entropy_bits(data["train"])
    began, cpu_began = time.perf_counter(), time.process_time()
    runs = [run_one(run_config(pl, lr, steps=steps, model=model), data, unigram)
            for lr in learning_rates for pl in PLACEMENTS]
    shape = {**MODEL, **(model or {})}
    shape.pop("norm_placement")
    example = run_config("pre", learning_rates[0], steps=steps, model=model)
    setup = {"model": shape, "preset": example.preset, "steps": steps, "batch_size": example.batch_size,
             "seq_len": example.seq_len, "warmup_steps": 0, "grad_clip": example.grad_clip,
             "optimizer": f"AdamW betas=({example.beta1}, {example.beta2}), weight decay {example.weight_decay}",
             "learning_rates": list(learning_rates), "seed": example.seed,
             "data": "standard-library corpus: training split for training, validation split for val_bits_per_byte"}
    out = {"machine": machine_info(), "command": command, "setup": setup,
           "unigram_bits_per_byte": unigram, "seconds": round(time.perf_counter() - began, 1),
           "cpu_seconds": round(time.process_time() - cpu_began, 1), "runs": runs}
    return write(out, NAME, out_dir)
