"""Command line: ``python -m transformer_course --help``."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from .accounting import count_parameters, human_bytes, kv_cache_bytes, weights_bytes
from .config import PRESETS, ModelConfig

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}


def cmd_memory(args: argparse.Namespace) -> int:
    config = ModelConfig.from_name(args.model)
    dtype = DTYPES[args.dtype]
    params = count_parameters(config)
    weights = weights_bytes(config, dtype)
    kv = kv_cache_bytes(config, args.seq_len, args.batch, dtype)
    per_token = kv_cache_bytes(config, 1, 1, dtype)
    window = f"; the rolling window keeps only the last {config.sliding_window:,}" if config.sliding_window else ""
    print(f"model       {config.name}: {config.n_layer} layers, d_model {config.n_embd}, {config.n_head} heads, "
          f"{config.n_kv_head} KV heads, head_dim {config.head_dim}")
    print(f"parameters  {params:,} ({params / 1e9:.2f} B)")
    print(f"weights     {human_bytes(weights)} in {args.dtype}")
    print(f"KV cache    {human_bytes(kv)} for {args.seq_len:,} tokens x batch {args.batch} in {args.dtype} "
          f"({human_bytes(per_token)} per token{window})")
    print(f"total       {human_bytes(weights + kv)} (weights + KV cache; activations not included)")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    print(f"{'preset':<14}{'layers':>7}{'d_model':>9}{'heads':>7}{'kv':>5}{'context':>9}{'parameters':>17}")
    for name in PRESETS:
        c = ModelConfig.from_name(name)
        print(f"{name:<14}{c.n_layer:>7}{c.n_embd:>9}{c.n_head:>7}{c.n_kv_head:>5}{c.context_length:>9}"
              f"{count_parameters(c):>17,}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_table, run_all

    path = run_all(Path(args.out_dir), quick=args.quick, device=args.device)
    print(format_table(json.loads(path.read_text())))
    print(f"\nwritten to {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from .train import TrainConfig, train

    _log_progress()
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    kwargs = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    model = dict(_parse_assignment(a) for a in args.set)
    if args.rope_scaling:
        model["rope_scaling"] = _parse_rope_scaling(args.rope_scaling)
    result = train(TrainConfig(model=model, **kwargs), resume=args.resume)
    where = f"; checkpoint in {args.out_dir}" if args.out_dir else ""
    print(f"final validation loss {result.val_loss / math.log(2):.4f} bits per byte "
          f"after {result.seconds / 60:.1f} min{where}")
    return 0


def _log_progress() -> None:
    """The commands print the library's progress messages (the library itself configures no logging)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")


def _parse_assignment(text: str):
    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--set expects KEY=VALUE (for example n_layer=2), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _parse_rope_scaling(text: str) -> dict:
    parts = text.split(":")
    if len(parts) != 3:
        raise SystemExit(f"--rope-scaling expects KIND:FACTOR:ORIGINAL_CONTEXT (for example linear:4:256), got {text!r}")
    return {"kind": parts[0], "factor": float(parts[1]), "original_context_length": int(parts[2])}


def cmd_long_context(args: argparse.Namespace) -> int:
    from .long_context import write_budget, write_study

    _log_progress()
    command = " ".join(["python -m transformer_course long-context", f"--model {args.model}", f"--out-dir {args.out_dir}"]
                       + (["--budget"] if args.budget else [f"--fine-tune-steps {args.fine_tune_steps}"]))
    if args.budget:
        print(f"written to {write_budget(out_dir=args.out_dir, base=args.model, command=command)}")
        return 0
    path = write_study(out_dir=args.out_dir, base=args.model, fine_tune_steps=args.fine_tune_steps, command=command)
    print(f"written to {path} and {path.with_suffix('.png')}")
    return 0


def cmd_passkey_runs(args: argparse.Namespace) -> int:
    from .passkey_training import write_runs

    command = " ".join(["python -m transformer_course passkey-runs", *args.folders, f"--out-dir {args.out_dir}"])
    print(f"written to {write_runs(args.folders, out_dir=args.out_dir, command=command)}")
    return 0


def cmd_position_study(args: argparse.Namespace) -> int:
    from .position_study import write_position_study

    _log_progress()
    command = (f"python -m transformer_course position-study --length {args.length} --steps {args.steps} "
               f"--out-dir {args.out_dir}")
    path = write_position_study(out_dir=args.out_dir, command=command, length=args.length, steps=args.steps)
    print(f"written to {path}")
    return 0


def cmd_norm_study(args: argparse.Namespace) -> int:
    from .norm_study import write_norm_study

    _log_progress()
    command = f"python -m transformer_course norm-study --out-dir {args.out_dir}"
    print(f"written to {write_norm_study(out_dir=args.out_dir, command=command)}")
    return 0


def cmd_rope_study(args: argparse.Namespace) -> int:
    from .rope_study import write_rope_study

    _log_progress()
    command = f"python -m transformer_course rope-study --model {args.model} --out-dir {args.out_dir}"
    print(f"written to {write_rope_study(out_dir=args.out_dir, command=command, model_name=args.model)}")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from .model_card import write_card

    print(f"written to {write_card(args.model)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m transformer_course",
                                     description="Tools of the course 'Transformer Architecture and Long Context'.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("memory", help="parameters, weights memory and KV-cache memory of a preset")
    p.add_argument("--model", required=True, choices=sorted(PRESETS), metavar="NAME",
                   help=f"preset name: {', '.join(sorted(PRESETS))}")
    p.add_argument("--seq-len", type=_positive, required=True, help="tokens held in the KV cache")
    p.add_argument("--batch", type=_positive, default=1, help="sequences decoded at once (default 1)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="storage type (default bf16)")
    p.set_defaults(func=cmd_memory)
    p = sub.add_parser("presets", help="the preset table (layers, width, heads, context, parameters)")
    p.set_defaults(func=cmd_presets)
    p = sub.add_parser("train", help="train a model on the standard-library corpus (AdamW, cosine schedule)")
    _add_train_arguments(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("long-context", help="context-extension study of a shipped model; writes results/long_context-cpu.*")
    p.add_argument("--model", default="course-llama", help="shipped model name or checkpoint folder")
    p.add_argument("--fine-tune-steps", type=_positive, default=200, help="steps of each fine-tune at 4x length")
    p.add_argument("--budget", action="store_true", help="instead: loss at 4x after 20, 50, 100 fine-tune steps per method")
    p.add_argument("--out-dir", default="results")
    p.set_defaults(func=cmd_long_context)
    p = sub.add_parser("passkey-runs", help="passkey accuracy of training runs; writes results/passkey_runs-cpu.json")
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="checkpoint folders (or shipped model names)")
    p.add_argument("--out-dir", default="results")
    p.set_defaults(func=cmd_passkey_runs)
    p = sub.add_parser("position-study", help="one small LM per positional scheme, scored at 1x and 2x its training "
                                              "length; writes results/positional_schemes-cpu.json")
    p.add_argument("--length", type=_positive, default=64, help="training length in bytes (default 64)")
    p.add_argument("--steps", type=_positive, default=800, help="training steps per scheme (default 800)")
    p.add_argument("--out-dir", default="results")
    p.set_defaults(func=cmd_position_study)
    p = sub.add_parser("norm-study", help="pre-norm against post-norm over learning rates without warm-up; writes "
                                          "results/norm_placement-cpu.json")
    p.add_argument("--out-dir", default="results")
    p.set_defaults(func=cmd_norm_study)
    p = sub.add_parser("rope-study", help="zero-shot RoPE scalings of a shipped model (YaRN with and without its "
                                          "temperature, Llama 3.1); writes results/rope_study-cpu.json")
    p.add_argument("--model", default="course-llama", help="shipped model name or checkpoint folder")
    p.add_argument("--out-dir", default="results")
    p.set_defaults(func=cmd_rope_study)
    p = sub.add_parser("card", help="(re)write the model card of a trained checkpoint from its files")
    p.add_argument("model", help="shipped model name or checkpoint folder")
    p.set_defaults(func=cmd_card)
    p = sub.add_parser("bench", help="attention and decoding benchmarks; writes results/bench-<device>.json")
    p.add_argument("--quick", action="store_true", help="short lengths only (a smoke run)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if present, else cpu")
    p.add_argument("--out-dir", default="results", help="folder for the JSON results (default results/)")
    p.set_defaults(func=cmd_bench)
    return parser


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    import dataclasses

    from .train import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        if f.name == "model":
            continue
        kind = {"int": int, "float": float}.get(str(f.type), str)
        default = f.default if f.default is not dataclasses.MISSING else None
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None,
                       help=f"default {default}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a ModelConfig field of the preset, e.g. --set n_layer=2 (repeatable)")
    p.add_argument("--rope-scaling", metavar="KIND:FACTOR:L", help="e.g. linear:4:256 (kinds: linear, ntk, dynamic_ntk, yarn)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out-dir")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
