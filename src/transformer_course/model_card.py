"""The model card of a trained checkpoint: how it was made and how good it is, every figure computed here.

    python -m transformer_course card course-llama      # rewrites src/transformer_course/pretrained/course-llama/README.md
"""
from __future__ import annotations

import json
from pathlib import Path

from .accounting import count_parameters
from .baselines import ngram_bits_per_byte, unigram_bits_per_byte
from .data import load_split
from .evaluate import split_bits_per_byte
from .passkey_training import TRIALS, at_training_length
from .pretrained import load, resolve, run_tokens, stages, training_tokens


def train_command(train_config: dict, out_dir: str) -> str:
    """The ``python -m transformer_course train`` command line that repeats a run of ``train_config``."""
    parts = ["python -m transformer_course train"]
    for key, value in train_config.items():
        if key in ("out_dir", "model", "save_interval") or value is None:
            continue
        parts.append(f"--{key.replace('_', '-')} {value}")
    for key, value in (train_config.get("model") or {}).items():
        parts.append(f"--set {key}={value}")
    parts.append(f"--out-dir {out_dir}")
    return " \\\n    ".join(parts)


def _stage_line(k: int, cfg: dict, summary: dict) -> str:
    what = ("language modelling from a random initialisation" if cfg["init_from"] is None else
            f"fine-tuning the checkpoint of stage {k - 1}")
    if cfg["passkey_fraction"]:
        what += (f"; {cfg['passkey_fraction']:.0%} of the rows of each batch end in a passkey prompt and its answer "
                 f"({cfg['passkey_full_rows']:.0%} of the prompts fill their row, the others have a random length from "
                 "half the row to all of it and follow text), trained on the answer only, as a loss term of its own "
                 "(`train.batch_at`, `train.training_loss`); the other rows and the text are language modelling")
    tokens = run_tokens(cfg)
    return (f"| stage {k} | {what}; {cfg['steps']} steps of {cfg['batch_size']} × {cfg['seq_len']} tokens "
            f"({tokens:,} tokens), lr {cfg['lr']} ({cfg['warmup_steps']} warm-up steps, cosine decay to "
            f"{cfg['min_lr']}), seed {cfg['seed']}; {summary['seconds'] / 60:.1f} min; validation loss at the end "
            f"{summary['val_bits_per_byte']:.3f} bits per byte ({cfg['eval_batches']} fixed batches) |")


def write_card(name_or_path) -> Path:
    """Write the model card README.md of a trained checkpoint folder, every figure computed here.

    Compares the model's bits per byte on the whole validation split with a unigram and character
    n-gram baselines on the same split, measures passkey retrieval at the training length, and states
    how the model was trained, stage by stage (from the files that ``train`` wrote, ``pretrained.stages``).
    """
    folder = resolve(name_or_path)
    model = load(folder)
    c = model.config
    runs = stages(folder)
    train_cfg, summary = runs[-1]
    machine = summary["machine"]
    train_data, val_data = load_split("train"), load_split("val")
    seq_len = train_cfg["seq_len"]
    rows = [("this model", split_bits_per_byte(model, val_data, seq_len))]
    rows.append(("unigram (byte frequencies, add-one)", unigram_bits_per_byte(train_data, val_data)))
    for order in (3, 5):
        rows.append((f"{order}-gram of bytes (interpolated Witten-Bell)", ngram_bits_per_byte(train_data, val_data, order)))
    passkey = at_training_length(model)
    key_acc = sum(r["accuracy"] for r in passkey) / len(passkey)
    digit_acc = sum(r["digit_accuracy"] for r in passkey) / len(passkey)
    tokens_seen = training_tokens(folder)
    minutes = sum(s["seconds"] for _, s in runs) / 60
    out = [cfg["out_dir"] for cfg, _ in runs[:-1]] + [f"src/transformer_course/pretrained/{folder.name}"]
    commands = []
    for k, (cfg, _) in enumerate(runs):
        commands += [f"# stage {k + 1}", train_command(cfg, out[k])]
    lines = [
        f"# {folder.name}",
        "",
        "A small Llama-style language model trained by this package's own code on the Python standard library's",
        "source files, and taught to retrieve a passkey from its context, shipped so that the course's long-context",
        "chapter and exercise 5 have a pre-trained model that needs no download. Load it with",
        "`transformer_course.pretrained.load(\"" + folder.name + "\")`.",
        "",
        "| | |",
        "| --- | --- |",
        f"| architecture | decoder-only, {c.n_layer} layers, d_model {c.n_embd}, {c.n_head} query heads and {c.n_kv_head} key/value "
        f"heads (GQA), head_dim {c.head_dim}, SwiGLU FFN of {c.ffn_hidden}, RMSNorm (pre-norm), RoPE (θ = {c.rope_base:g}, "
        f"{c.rope_layout} layout), untied output layer |",
        f"| parameters | {count_parameters(c):,} (float32, {(folder / 'model.safetensors').stat().st_size / 2**20:.1f} MiB) |",
        f"| tokenizer | bytes (vocabulary {c.vocab_size}) |",
        f"| training length | {seq_len} tokens |",
        f"| data | the `train` split of the standard library of Python {machine['python']} ({len(train_data):,} bytes); "
        f"{tokens_seen:,} tokens seen in all ({tokens_seen / len(train_data):.2f} epochs) |",
        f"| optimiser | AdamW (β = {train_cfg['beta1']}, {train_cfg['beta2']}; weight decay {train_cfg['weight_decay']}), "
        f"gradient clipping {train_cfg['grad_clip']} |",
    ] + [_stage_line(k, cfg, s) for k, (cfg, s) in enumerate(runs, 1)] + [
        f"| training time | {minutes:.1f} min in all on {machine['cpu']} ({machine['cpu_count']} cores, "
        f"{machine['torch_threads']} torch threads), torch {machine['torch']}, {machine['date'][:10]} |",
        "",
        "Reproduce it (the weights are repeatable on the same machine and torch version):",
        "",
        "```bash",
        *commands,
        "```",
        "",
        "## Validation loss against simple baselines",
        "",
        f"All on the whole `val` split ({len(val_data):,} bytes; files chosen by a hash of their path, see",
        f"`transformer_course.data`). The model reads non-overlapping windows of {seq_len} tokens. A uniform",
        "guess costs 8 bits per byte.",
        "",
        "| model | bits per byte |",
        "| --- | --- |",
    ] + [f"| {name} | {bpb:.3f} |" for name, bpb in rows] + [
        "",
        "## Passkey retrieval at the training length",
        "",
        f"Greedy decoding of the 5-digit key from {len(passkey) * TRIALS} seeded prompts of {seq_len} tokens "
        f"(`evaluate.passkey_accuracy`, {TRIALS} at each depth), with the prompt of `data.passkey_sample`: "
        f"{key_acc:.0%} of the keys exactly, {digit_acc:.0%} of the digits at their place (chance: 10%).",
        "",
        "| key depth | " + " | ".join(f"{r['depth']:g}" for r in passkey) + " |",
        "| --- |" + " ---: |" * len(passkey),
        "| keys retrieved | " + " | ".join(f"{r['accuracy']:.0%}" for r in passkey) + " |",
        "",
        f"The validation loss logged at the end of training, on {train_cfg['eval_batches']} fixed batches of the same "
        f"split, was {summary['val_bits_per_byte']:.4f} bits per byte; the test suite checks that the shipped weights "
        "reproduce it, and the passkey accuracy above.",
        "",
    ]
    path = folder / "README.md"
    path.write_text("\n".join(lines))
    return path
