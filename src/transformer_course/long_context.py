"""The long-context study of the shipped model: how far past its training length does it go?

    python -m transformer_course long-context           # writes results/long_context-cpu.json and .png

1. Zero-shot: the shipped model (trained at L = 256 tokens) evaluated at 1×, 2×, 4× and 8× L on the
   held-out long documents with RoPE as trained ("none") and with each scaling of ``positions``,
   its factor set for the length evaluated (s = length / L).
2. Fine-tuned: a short fine-tune at 4× L (a few hundred steps on a CPU, the same data mix as
   pre-training) with position interpolation, with YaRN, and with no scaling at all (a control:
   does fine-tuning alone explain the gain?), each then evaluated at every length.
3. Loss by token position at 8× L, and passkey retrieval accuracy by length and depth.
4. ``--budget``: loss at 4× L after fine-tunes of 20, 50 and 100 steps, per method: how fast each adapts
   (``results/long_context_budget-cpu.json``).

Everything the book and exercise 5 state about context extension comes from the file this writes,
which records the machine and the date.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Optional

import torch

from .data import load_split, long_documents
from .evaluate import loss_by_position, passkey_accuracy, perplexity_by_length, with_rope_scaling
from .config import RopeScaling
from .results import machine_info
from .train import TrainConfig, train

log = logging.getLogger(__name__)

ZERO_SHOT = ("none", "linear", "ntk", "dynamic_ntk", "yarn")
FINE_TUNED = ("linear", "yarn", "none")


def scaling_for(kind: str, factor: float, L: int) -> Optional[RopeScaling]:
    return None if kind == "none" or factor <= 1 else RopeScaling(kind, factor, original_context_length=L)


def fine_tune(base: str, kind: str, factor: int, L: int, steps: int, data: dict, seed: int = 0):
    """Fine-tune ``base`` at factor·L tokens with the given scaling (or none) on ``data`` ({"train", "val"})."""
    model = {"context_length": factor * L}
    scaling = scaling_for(kind, factor, L)
    if scaling is not None:
        model["rope_scaling"] = dataclasses.asdict(scaling)
    cfg = TrainConfig(init_from=base, model=model, steps=steps, seq_len=factor * L, batch_size=4, lr=5e-4,
                      min_lr=5e-5, warmup_steps=20, eval_interval=steps, eval_batches=4, passkey_fraction=0.125,
                      seed=seed + 1)
    return train(cfg, progress=False, data=data), cfg


def run_study(base: str = "course-llama", *, multiples=(1, 2, 4, 8), fine_tune_factor: int = 4,
              fine_tune_steps: int = 200, passkey_trials: int = 10, max_docs: Optional[int] = None) -> dict:
    from . import pretrained

    model = pretrained.load(base)
    L = model.config.context_length
    lengths = [m * L for m in multiples]
    docs = long_documents()  # held-out files of at least 8 KiB
    docs = docs[:max_docs] if max_docs else docs
    depths = [0.0, 0.25, 0.5, 0.75, 1.0]
    results = {"machine": machine_info(), "model": base, "training_length": L, "lengths": lengths,
               "documents": [name for name, _ in docs], "zero_shot": [], "fine_tuned": [], "fine_tune_runs": []}

    for kind in ZERO_SHOT:
        for length in lengths:
            scaled = with_rope_scaling(model, scaling_for(kind, length / L, L))
            row = perplexity_by_length(scaled, docs, [length])[0]
            results["zero_shot"].append({"method": kind, "factor": length / L, **row})
            log.info("zero-shot %s at %d: %.3f bits/byte", kind, length, row["bits_per_byte"])

    tuned, corpus = {}, {"train": load_split("train"), "val": load_split("val")}  # read once for every fine-tune
    for kind in FINE_TUNED:
        run, cfg = fine_tune(base, kind, fine_tune_factor, L, fine_tune_steps, corpus)
        tuned[kind] = run.model
        results["fine_tune_runs"].append({"method": kind, "factor": fine_tune_factor, "steps": cfg.steps,
                                          "seq_len": cfg.seq_len, "batch_size": cfg.batch_size, "lr": cfg.lr,
                                          "seconds": run.seconds, "final_val_loss": run.val_loss})
        for row in perplexity_by_length(run.model, docs, lengths):
            results["fine_tuned"].append({"method": kind, "factor": fine_tune_factor, **row})
        log.info("fine-tuned %s: %s", kind, [round(r["bits_per_byte"], 3) for r in results["fine_tuned"][-len(lengths):]])

    longest = max(lengths)
    positions = {"none (zero-shot)": model,
                 f"linear s={longest // L} (zero-shot)": with_rope_scaling(model, scaling_for("linear", longest / L, L)),
                 f"yarn s={longest // L} (zero-shot)": with_rope_scaling(model, scaling_for("yarn", longest / L, L)),
                 f"linear s={fine_tune_factor} (fine-tuned)": tuned["linear"]}
    results["loss_by_position"] = {name: loss_by_position(m, docs, longest).tolist() for name, m in positions.items()}

    results["passkey"] = []
    for name, m in {"none (zero-shot)": model, "linear (fine-tuned)": tuned["linear"],
                    "yarn (fine-tuned)": tuned["yarn"]}.items():
        for row in passkey_accuracy(m, lengths, depths, trials=passkey_trials):
            results["passkey"].append({"model": name, **row})
    return results


def fine_tune_budget(base: str = "course-llama", *, steps=(20, 50, 100), methods=FINE_TUNED, factor: int = 4) -> dict:
    """How fast does each method adapt? Loss at factor·L after fine-tunes of increasing length.

    Chen et al. (2023) report that interpolation adapts within a few hundred steps while plain
    extrapolation needs far longer; this measures the same question for the shipped model.
    """
    from . import pretrained

    L = pretrained.load(base).config.context_length
    docs = long_documents()
    rows, corpus = [], {"train": load_split("train"), "val": load_split("val")}
    for kind in methods:
        for n in steps:
            run, _ = fine_tune(base, kind, factor, L, n, corpus)
            row = perplexity_by_length(run.model, docs, [factor * L])[0]
            rows.append({"method": kind, "steps": n, **row})
            log.info("fine-tune budget: %s, %d steps: %.3f bits/byte at %d", kind, n, row["bits_per_byte"], factor * L)
    return {"machine": machine_info(), "model": base, "training_length": L, "factor": factor, "rows": rows}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    L = results["training_length"]
    ax = axes[0]
    for kind in ZERO_SHOT:
        rows = [r for r in results["zero_shot"] if r["method"] == kind]
        ax.plot([r["length"] for r in rows], [r["bits_per_byte"] for r in rows], "o-", label=f"{kind} (zero-shot)")
    for kind in FINE_TUNED:
        rows = [r for r in results["fine_tuned"] if r["method"] == kind]
        ax.plot([r["length"] for r in rows], [r["bits_per_byte"] for r in rows], "s--", label=f"{kind} (fine-tuned)")
    ax.axvline(L, color="grey", lw=0.8)
    ax.set(xlabel="context length (tokens = bytes)", ylabel="bits per byte (lower is better)",
           title="Held-out loss by context length")
    _length_axis(ax, results["lengths"])
    ax.legend(fontsize=7)
    ax = axes[1]
    for name, curve in results["loss_by_position"].items():
        curve = torch.tensor(curve) / math.log(2)
        window = 32
        smooth = torch.nn.functional.avg_pool1d(curve.view(1, 1, -1), window, stride=window).flatten()
        ax.plot((torch.arange(len(smooth)) * window + window / 2).tolist(), smooth.tolist(), label=name)
    ax.axvline(L, color="grey", lw=0.8)
    ax.set(xlabel="token position", ylabel="bits per byte (mean over 32 positions)", title="Loss by position")
    ax.legend(fontsize=7)
    ax = axes[2]
    for name in dict.fromkeys(r["model"] for r in results["passkey"]):
        rows = [r for r in results["passkey"] if r["model"] == name]
        by_len = {}
        for r in rows:
            by_len.setdefault(r["length"], []).append(r["accuracy"])
        ax.plot(list(by_len), [sum(v) / len(v) for v in by_len.values()], "o-", label=name)
    ax.set(xlabel="prompt length (tokens)", ylabel="passkey accuracy (mean over depths)",
           title="Passkey retrieval", ylim=(-0.05, 1.05))
    _length_axis(ax, results["lengths"])
    ax.legend(fontsize=7)
    fig.suptitle(f"{results['model']} trained at {L} tokens; {results['machine']['cpu']}, {results['machine']['date'][:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _length_axis(ax, lengths) -> None:
    """Log-2 axis labelled at the evaluated lengths only."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.xaxis.set_minor_formatter(NullFormatter())


def write_budget(out_dir: str = "results", **kwargs) -> Path:
    """Run ``fine_tune_budget`` and write ``long_context_budget-cpu.json`` into ``out_dir``."""
    path = Path(out_dir) / "long_context_budget-cpu.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fine_tune_budget(**kwargs), indent=1) + "\n")
    return path


def write_study(out_dir: str = "results", **kwargs) -> Path:
    """Run the study and write ``long_context-cpu.json`` and its plot into ``out_dir``."""
    results = run_study(**kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "long_context-cpu.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "long_context-cpu.png")
    return path
