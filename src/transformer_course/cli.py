"""Command line: ``python -m transformer_course --help``."""
from __future__ import annotations

import argparse
import json
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
    p = sub.add_parser("bench", help="attention and decoding benchmarks; writes results/bench-<device>.json")
    p.add_argument("--quick", action="store_true", help="short lengths only (a smoke run)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if present, else cpu")
    p.add_argument("--out-dir", default="results", help="folder for the JSON results (default results/)")
    p.set_defaults(func=cmd_bench)
    return parser


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
