"""What it took for the shipped model to retrieve a passkey: the training runs tried, measured alike.

    python -m transformer_course passkey-runs checkpoints/a checkpoints/b ...   # writes results/passkey_runs-cpu.json

Each folder is a checkpoint that ``train`` wrote (or a shipped model). For each: how it was trained (its
training config, read from the folder), its validation loss in bits per byte, and greedy passkey accuracy
at the training length by depth (the model card's 100 seeded prompts) and at shorter prompt lengths: a
model that copies a key only from near the question, or only at the length it was trained on, shows it
in the depths and lengths it fails at.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .checkpoint import load_checkpoint
from .evaluate import passkey_accuracy
from .pretrained import resolve, stages
from .results import machine_info, write

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)  # where the key is: 0 right after the intro, 1 just before the question
TRIALS = 20  # seeded prompts per depth: 100 at the training length (the model card's figure; tests re-measure it)
SHORTER = (160, 200)  # prompt lengths below the training length of 256 (the shortest prompt is 150 tokens)


def at_training_length(model) -> list:
    """Greedy passkey accuracy of ``model`` on ``TRIALS`` seeded prompts of its training length at each depth."""
    return passkey_accuracy(model, [model.config.context_length], DEPTHS, trials=TRIALS)


def measure_run(name: str) -> dict:
    """One checkpoint folder (or shipped model name): its training config and summary, and its passkey accuracy."""
    model = load_checkpoint(resolve(name)).eval()
    L = model.config.context_length
    cfg, summary = stages(name)[-1]
    at_L = at_training_length(model)
    shorter = passkey_accuracy(model, [n for n in SHORTER if n < L], DEPTHS, trials=TRIALS // 2)
    mean = lambda rows: sum(r["accuracy"] for r in rows) / len(rows)  # noqa: E731
    return {"folder": name, "train_config": cfg, "val_bits_per_byte": summary["val_bits_per_byte"],
            "seconds": summary["seconds"], "passkey_at_L": at_L, "passkey_shorter": shorter,
            "accuracy_at_L": mean(at_L), "accuracy_shorter": mean(shorter)}


def write_runs(folders: Sequence[str], out_dir: str = "results", command: str = "") -> Path:
    """Measure every folder and write ``passkey_runs-cpu.json`` into ``out_dir``."""
    runs = [measure_run(f) for f in folders]
    return write({"machine": machine_info(), "command": command, "runs": runs}, "passkey_runs-cpu", out_dir)
