"""The long-context study of the shipped model: how far past its training length does it go?

    python -m transformer_course long-context           # writes results/long_context-cpu.json and .png

1. Zero-shot: the shipped model (trained at L = 256 tokens) evaluated at 1×, 2×, 4× and 8× L on the
   held-out long documents with RoPE as trained ("none") and with each scaling of ``positions`` set up
   for the length it reads (``scaling_for``), and the same for passkey retrieval by length and depth.
2. Fine-tuned: a short fine-tune at 4× L with position interpolation, with YaRN, and with no scaling at
   all (a control: does fine-tuning alone explain the gain?), each then evaluated at every length. Each
   is run on two data mixes (``MIXES``): text only, as Chen et al. (2023) fine-tuned on the Pile, so
   that retrieval past L tests what the fine-tune transferred; and the mix of the model's last training
   stage (text with passkey rows, at 4× L), so that it tests what the methods let the model learn.
3. Loss by token position at 8× L, and the loss on the positions past L only.
4. ``--budget``: loss at 4× L after fine-tunes of 20, 50 and 100 steps, per method: how fast each adapts
   (``results/long_context_budget-cpu.json``).

Everything the book and exercise 5 state about context extension comes from the files this writes,
which record the machine, the date and the command.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from pathlib import Path
from typing import Optional

import torch

from .data import load_split, long_documents
from .evaluate import loss_by_position, passkey_accuracy, with_rope_scaling
from .config import RopeScaling
from .passkey_training import DEPTHS
from .results import machine_info, write
from .train import TrainConfig, train

log = logging.getLogger(__name__)

ZERO_SHOT = ("none", "linear", "ntk", "dynamic_ntk", "yarn")
FINE_TUNED = ("linear", "yarn", "none")
MIXES = {"text": 0.0, "text + passkey": 0.75}  # fine-tune data: the share of rows that end in a passkey prompt
DYNAMIC_LENGTH_FACTOR = "dynamic_ntk, factor l/L"  # the variant: transformers' formula with its factor set to l/L


def scaling_for(kind: str, factor: float, L: int) -> Optional[RopeScaling]:
    """``kind`` set up for ``factor`` times the training length L (None: RoPE as trained).

    linear, ntk, yarn: factor s = length / L, nothing at or below L. dynamic_ntk: the usual configuration,
    the same at every length: Hugging Face's formula with factor 1, i.e. Peng et al.'s (2023) "Dynamic
    NTK", NTK with s = max(1, l / L) for the current length l. ``DYNAMIC_LENGTH_FACTOR`` is the variant
    that also sets transformers' factor to length / L (an effective s of s·l/L - (s - 1), 57 at 8×).
    """
    if kind == "dynamic_ntk":
        return RopeScaling("dynamic_ntk", 1.0, original_context_length=L)
    if kind == DYNAMIC_LENGTH_FACTOR:
        kind = "dynamic_ntk"
    return None if kind == "none" or factor <= 1 else RopeScaling(kind, factor, original_context_length=L)


def fine_tune(base: str, kind: str, factor: int, L: int, steps: int, data: dict, *, passkey_fraction: float = 0.0,
              seed: int = 0):
    """Fine-tune ``base`` at factor·L tokens with the given scaling (or none) on ``data`` ({"train", "val"})."""
    model = {"context_length": factor * L}
    scaling = scaling_for(kind, factor, L)
    if scaling is not None:
        model["rope_scaling"] = dataclasses.asdict(scaling)
    cfg = TrainConfig(init_from=base, model=model, steps=steps, seq_len=factor * L, batch_size=4, lr=5e-4,
                      min_lr=5e-5, warmup_steps=min(20, steps), eval_interval=steps, eval_batches=4,
                      passkey_fraction=passkey_fraction, seed=seed + 1)
    return train(cfg, progress=False, data=data), cfg


def losses_at(model, docs, length: int, L: int) -> dict:
    """Bits per byte of the first ``length + 1`` tokens of every document: the mean over all positions
    from the document's start, and over the positions at or past L only (None when length <= L)."""
    curve = loss_by_position(model, docs, length) / math.log(2)  # (length,) bits at each position
    return {"length": length, "documents": len(docs), "bits_per_byte": curve.mean().item(),
            "bits_per_byte_past_L": curve[L:].mean().item() if length > L else None}


def run_study(base: str = "course-llama", *, multiples=(1, 2, 4, 8), fine_tune_factor: int = 4,
              fine_tune_steps: int = 200, mixes: Optional[dict] = None, passkey_trials: int = 10,
              max_docs: Optional[int] = None, command: str = "") -> dict:
    from . import pretrained

    model = pretrained.load(base)
    L = model.config.context_length
    lengths = [m * L for m in multiples]
    docs = long_documents()  # held-out files of at least 8 KiB
    docs = docs[:max_docs] if max_docs else docs
    results = {"machine": machine_info(), "command": command, "model": base, "training_length": L,
               "training_tokens": pretrained.training_tokens(base), "lengths": lengths, "depths": list(DEPTHS),
               "passkey_trials": passkey_trials, "documents": [name for name, _ in docs], "zero_shot": [],
               "zero_shot_variants": [], "fine_tuned": [], "fine_tuned_rescaled": [], "fine_tune_runs": [],
               "passkey": []}

    def passkey(name: str, method: str, tuned: bool, m, length: int) -> None:
        for row in passkey_accuracy(m, [length], DEPTHS, trials=passkey_trials):
            results["passkey"].append({"model": name, "method": method, "fine_tuned": tuned, **row})

    for kind in ZERO_SHOT + (DYNAMIC_LENGTH_FACTOR,):
        for length in lengths:
            scaled = with_rope_scaling(model, scaling_for(kind, length / L, L))
            row = {"method": kind, "factor": length / L, **losses_at(scaled, docs, length, L)}
            results["zero_shot_variants" if kind == DYNAMIC_LENGTH_FACTOR else "zero_shot"].append(row)
            if kind != DYNAMIC_LENGTH_FACTOR:
                passkey(f"{kind} (zero-shot)", kind, False, scaled, length)
            log.info("zero-shot %s at %d: %.3f bits/byte", kind, length, row["bits_per_byte"])

    tuned, corpus = {}, {"train": load_split("train"), "val": load_split("val")}  # read once for every fine-tune
    for (mix, fraction), kind in itertools.product((mixes or MIXES).items(), FINE_TUNED):
        run, cfg = fine_tune(base, kind, fine_tune_factor, L, fine_tune_steps, corpus, passkey_fraction=fraction)
        tuned[kind, mix] = run.model
        tokens = pretrained.run_tokens(vars(cfg))
        results["fine_tune_runs"].append({"method": kind, "mix": mix, "factor": fine_tune_factor, "steps": cfg.steps,
                                          "seq_len": cfg.seq_len, "batch_size": cfg.batch_size, "lr": cfg.lr,
                                          "passkey_fraction": cfg.passkey_fraction, "tokens": tokens,
                                          "share_of_training_tokens": tokens / results["training_tokens"],
                                          "seconds": run.seconds, "final_val_loss": run.val_loss})
        for length in lengths:
            results["fine_tuned"].append({"method": kind, "mix": mix, "factor": fine_tune_factor,
                                          **losses_at(run.model, docs, length, L)})
            passkey(f"{kind} (fine-tuned, {mix})", kind, True, run.model, length)
            if kind != "none" and length > fine_tune_factor * L:  # past the fine-tune: the factor set for the length
                rescaled = with_rope_scaling(run.model, scaling_for(kind, length / L, L))
                results["fine_tuned_rescaled"].append({"method": kind, "mix": mix, "factor": length / L,
                                                       **losses_at(rescaled, docs, length, L)})
        log.info("fine-tuned %s on %s: %s", kind, mix,
                 [round(r["bits_per_byte"], 3) for r in results["fine_tuned"][-len(lengths):]])

    longest = max(lengths)
    positions = {"none (zero-shot)": model,
                 f"linear s={longest // L} (zero-shot)": with_rope_scaling(model, scaling_for("linear", longest / L, L)),
                 f"yarn s={longest // L} (zero-shot)": with_rope_scaling(model, scaling_for("yarn", longest / L, L)),
                 f"linear s={fine_tune_factor} (fine-tuned on text)": tuned["linear", "text"],
                 f"none (fine-tuned at {fine_tune_factor}L on text)": tuned["none", "text"]}
    results["loss_by_position"] = {name: loss_by_position(m, docs, longest).tolist() for name, m in positions.items()}
    return results


def fine_tune_budget(base: str = "course-llama", *, steps=(20, 50, 100), methods=FINE_TUNED, factor: int = 4,
                     command: str = "") -> dict:
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
            row = losses_at(run.model, docs, factor * L, L)
            rows.append({"method": kind, "steps": n, **row})
            log.info("fine-tune budget: %s, %d steps: %.3f bits/byte at %d", kind, n, row["bits_per_byte"], factor * L)
    return {"machine": machine_info(), "command": command, "model": base, "training_length": L, "factor": factor,
            "rows": rows}


def plot(results: dict, path: Path) -> None:
    """Loss by length and by position (top), and a heat map of passkey accuracy by length and depth for each
    model (below: the zero-shot methods, then the fine-tuned ones)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L = results["training_length"]
    models = list(dict.fromkeys(r["model"] for r in results["passkey"]))
    cols = 4
    n_rows = 1 + math.ceil(len(models) / cols)
    fig = plt.figure(figsize=(16, 4.2 * n_rows))
    grid = fig.add_gridspec(n_rows, cols)
    ax = fig.add_subplot(grid[0, :2])
    for kind in ZERO_SHOT:
        rows = [r for r in results["zero_shot"] if r["method"] == kind]
        ax.plot([r["length"] for r in rows], [r["bits_per_byte"] for r in rows], "o-", label=f"{kind} (zero-shot)")
    for (mix, style), kind in itertools.product(zip(MIXES, ("s--", "^:")), FINE_TUNED):
        rows = [r for r in results["fine_tuned"] if r["method"] == kind and r["mix"] == mix]
        ax.plot([r["length"] for r in rows], [r["bits_per_byte"] for r in rows], style,
                label=f"{kind} (fine-tuned, {mix})")
    ax.axvline(L, color="grey", lw=0.8)
    ax.set(xlabel="context length (tokens = bytes)", ylabel="bits per byte (lower is better)",
           title="Held-out loss by context length (mean over positions from the start)")
    _length_axis(ax, results["lengths"])
    ax.legend(fontsize=7, ncol=2)
    ax = fig.add_subplot(grid[0, 2:])
    for name, curve in results["loss_by_position"].items():
        curve = torch.tensor(curve) / math.log(2)
        window = 32
        smooth = torch.nn.functional.avg_pool1d(curve.view(1, 1, -1), window, stride=window).flatten()
        ax.plot((torch.arange(len(smooth)) * window + window / 2).tolist(), smooth.tolist(), label=name)
    ax.axvline(L, color="grey", lw=0.8)
    ax.set(xlabel="token position", ylabel="bits per byte (mean over 32 positions)", title="Loss by position")
    ax.legend(fontsize=7)
    for k, name in enumerate(models):
        passkey_heat_map(fig.add_subplot(grid[1 + k // cols, k % cols]), results, name)
    fig.suptitle(f"{results['model']} trained at {L} tokens; passkey: {results['passkey_trials']} prompts per cell; "
                 f"{results['machine']['cpu']}, {results['machine']['date'][:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def passkey_heat_map(ax, results: dict, name: str, fontsize: int = 8) -> None:
    """Passkey accuracy of the study's model ``name`` on ``ax``: key depth down, prompt length across."""
    L, lengths, depths = results["training_length"], results["lengths"], results["depths"]
    acc = {(r["length"], r["depth"]): r["accuracy"] for r in results["passkey"] if r["model"] == name}
    table = torch.tensor([[acc[n, d] for n in lengths] for d in depths])  # (depths, lengths)
    ax.imshow(table, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i in range(len(depths)):
        for j in range(len(lengths)):
            ax.text(j, i, f"{table[i, j]:.0%}", ha="center", va="center", fontsize=fontsize,
                    color="black" if table[i, j] > 0.6 else "white")
    ax.set_xticks(range(len(lengths)), [f"{n}\n({n // L}×)" for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set(title=f"passkey: {name}", xlabel="prompt length", ylabel="key depth")


def _length_axis(ax, lengths) -> None:
    """Log-2 axis labelled at the evaluated lengths only."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.xaxis.set_minor_formatter(NullFormatter())


def write_budget(out_dir: str = "results", **kwargs) -> Path:
    """Run ``fine_tune_budget`` and write ``long_context_budget-cpu.json`` into ``out_dir``."""
    return write(fine_tune_budget(**kwargs), "long_context_budget-cpu", out_dir)


def write_study(out_dir: str = "results", **kwargs) -> Path:
    """Run the study and write ``long_context-cpu.json`` and its plot into ``out_dir``."""
    results = run_study(**kwargs)
    path = write(results, "long_context-cpu", out_dir)
    plot(results, path.with_suffix(".png"))
    return path
