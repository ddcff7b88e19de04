"""Benchmarks: figures printed and written to a JSON results file, never timed tests.

    python -m transformer_course bench                 # CPU (and CUDA when present) -> results/bench-<device>.json

Every results file records the machine (CPU model, cores, threads, GPU), the torch version and the date,
so the book can say where each figure comes from. Peak memory on the CPU is the process's peak resident
set size during the call, measured in a fresh process per point (Linux: VmHWM, reset through
/proc/self/clear_refs); on CUDA it is ``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from .accounting import human_bytes
from .attention import SDPA_BACKENDS, BackendUnavailableError, attention
from .config import ModelConfig
from .convert import llama_to_hf
from .generate import generate
from .model import TransformerLM
from .results import machine_info

ATTN_SHAPE = dict(B=1, n_head=2, head_dim=64)  # small enough that naive fits in memory at T = 16k
ATTN_LENGTHS = (1024, 2048, 4096, 8192, 16384)
NAIVE_MEMORY_BUDGET = 8 * 1024**3  # skip naive points whose score matrices alone would exceed this


def _time(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


# ------------------------------------------------------------------------------------------------
# Attention: time and peak memory against sequence length
# ------------------------------------------------------------------------------------------------
def _rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set size
        return True
    except OSError:
        return False


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _attention_point(impl: str, T: int, causal: bool) -> dict:
    """One measurement, run in a fresh process by ``bench_attention_cpu``."""
    B, H, D = ATTN_SHAPE["B"], ATTN_SHAPE["n_head"], ATTN_SHAPE["head_dim"]
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    fn = lambda: attention(q, k, v, causal=causal, impl=impl)
    fn()  # warm-up (allocator, kernels)
    if not _rss_reset():
        raise RuntimeError("cannot reset the peak-RSS counter (/proc/self/clear_refs): Linux is needed")
    base = _rss("VmRSS")
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    peak = _rss("VmHWM") - base
    seconds = first if first > 2.0 else min(first, _time(fn, repeats=3))
    return {"impl": impl, "T": T, "seconds": seconds, "peak_bytes": max(peak, 0)}


def bench_attention_cpu(lengths=ATTN_LENGTHS, impls=("naive", "tiled", "sdpa"), causal: bool = True) -> list:
    rows = []
    for T in lengths:
        for impl in impls:
            scores = ATTN_SHAPE["B"] * ATTN_SHAPE["n_head"] * T * T * 4
            if impl == "naive" and scores > NAIVE_MEMORY_BUDGET:
                rows.append({"impl": impl, "T": T, "skipped": f"score matrix alone needs {human_bytes(scores)}"})
                continue
            cmd = [sys.executable, "-c",
                   "import json, sys; from transformer_course.bench import _attention_point; "
                   f"print(json.dumps(_attention_point({impl!r}, {T}, {causal})))"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                rows.append({"impl": impl, "T": T, "skipped": f"failed: {done.stderr.strip().splitlines()[-1:]}"})
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def bench_attention_cuda(lengths=ATTN_LENGTHS + (32768,), dtype=torch.bfloat16, causal: bool = True) -> list:
    """Every SDPA backend and the two teaching implementations on the GPU: time, TFLOP/s, peak memory."""
    B, H, D = 4, 16, 64
    sync = torch.cuda.synchronize
    rows = []
    for T in lengths:
        q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dtype) for _ in range(3))
        # FLOPs of q·kᵀ and weights·v; a causal kernel skips half of them (the FlashAttention papers' convention)
        flops = 4 * B * H * T * T * D / (2 if causal else 1)
        for impl, backend in [("sdpa", b) for b in SDPA_BACKENDS] + [("naive", None), ("tiled", None)]:
            name = f"sdpa-{backend}" if backend else impl
            if impl == "naive" and B * H * T * T * 4 > NAIVE_MEMORY_BUDGET:
                rows.append({"impl": name, "T": T, "skipped": "score matrix too large"})
                continue
            fn = lambda: attention(q, k, v, causal=causal, impl=impl, backend=backend,
                                   block_size=1024 if impl == "tiled" else 256)
            try:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                seconds = _time(fn, repeats=5, sync=sync)
                peak = torch.cuda.max_memory_allocated() - base
            except (BackendUnavailableError, torch.cuda.OutOfMemoryError) as err:
                rows.append({"impl": name, "T": T, "skipped": str(err).split(". ")[0]})
                continue
            rows.append({"impl": name, "T": T, "seconds": seconds, "tflops": flops / seconds / 1e12, "peak_bytes": peak})
    return rows


# ------------------------------------------------------------------------------------------------
# Decoding: tokens per second with and without the KV cache
# ------------------------------------------------------------------------------------------------
def bench_decode(preset: str = "tiny-llama", new_tokens: int = 1024, device: str = "cpu",
                 compare_transformers: bool = True) -> list:
    """Greedy decoding from a one-token prompt, batch 1: tokens per second of ``generate`` with and without
    the KV cache and, for Llama-style presets, of transformers' ``generate`` on the same weights.

    Each figure is one timed run after one warm-up run. Rows: {"impl", "new_tokens", "seconds",
    "tokens_per_second"} (plus "same_tokens_as_ours_first_64" for transformers), or {"impl", "skipped"}.
    """
    config = ModelConfig.from_name(preset)
    torch.manual_seed(0)
    model = TransformerLM(config, device=device).eval()
    prompt = torch.zeros(1, 1, dtype=torch.long, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    for use_cache in (True, False):
        seconds = _time(lambda: generate(model, prompt, new_tokens, use_cache=use_cache), repeats=1, sync=sync)
        rows.append({"impl": "transformer_course " + ("with KV cache" if use_cache else "without cache"),
                     "new_tokens": new_tokens, "seconds": seconds, "tokens_per_second": new_tokens / seconds})
    if compare_transformers:
        rows.extend(_decode_transformers(config, model, new_tokens, device, sync))
    return rows


def _decode_transformers(config: ModelConfig, model: TransformerLM, new_tokens: int, device: str, sync) -> list:
    """The same configuration and weights as a transformers ``LlamaForCausalLM`` (``ModelConfig.to_hf`` and
    ``convert.llama_to_hf``), if transformers is installed: its cached greedy ``generate``, timed like ours."""
    try:
        import transformers
    except ImportError:
        return [{"impl": "transformers", "skipped": "not installed (pip install transformers to compare)"}]
    try:
        hf_dict = config.to_hf("llama")
    except ValueError as err:
        return [{"impl": "transformers", "skipped": f"{config.name} is not a Llama-style preset ({err})"}]
    # RoPE needs no table past max_position_embeddings in either library; raising it only keeps transformers quiet.
    hf_dict["max_position_embeddings"] = max(config.context_length, new_tokens + 1)
    hf_config = transformers.AutoConfig.for_model(hf_dict.pop("model_type"), **hf_dict)
    hf = transformers.AutoModelForCausalLM.from_config(hf_config).to(device).eval()
    hf.load_state_dict(llama_to_hf(model.state_dict(), config.n_layer))  # strict: every weight is ours
    prompt = torch.zeros(1, 1, dtype=torch.long, device=device)
    kwargs = dict(attention_mask=torch.ones_like(prompt), do_sample=False, use_cache=True)
    ours = generate(model, prompt, 64)
    with torch.no_grad():
        theirs = hf.generate(prompt, max_new_tokens=64, min_new_tokens=64, **kwargs)
    same = bool(torch.equal(ours, theirs))

    def run():
        with torch.no_grad():
            hf.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)

    seconds = _time(run, repeats=1, sync=sync)
    return [{"impl": f"transformers {transformers.__version__} ({type(hf).__name__}.generate, KV cache)",
             "new_tokens": new_tokens, "seconds": seconds, "tokens_per_second": new_tokens / seconds,
             "same_tokens_as_ours_first_64": same}]


# ------------------------------------------------------------------------------------------------
# Training throughput
# ------------------------------------------------------------------------------------------------
def bench_train(presets=("tiny-gpt", "tiny-llama"), steps: int = 20, batch_size: int = 16, seq_len: int = 256) -> list:
    """Training tokens per second (forward, backward, AdamW step) on the course corpus."""
    from .data import load_split
    from .train import TrainConfig, train

    data = {"train": load_split("train"), "val": load_split("val")}
    rows = []
    for preset in presets:
        cfg = TrainConfig(preset=preset, steps=steps + 6, batch_size=batch_size, seq_len=seq_len, warmup_steps=1,
                          eval_interval=steps + 6, eval_batches=1)
        marks = {}

        def mark(step):  # time steps 5 .. steps + 4: after a warm-up of five, before the final evaluation
            marks[step] = time.perf_counter()

        result = train(cfg, progress=False, data=data, on_step=mark)
        seconds = marks[steps + 5] - marks[5]
        rows.append({"preset": preset, "batch_size": batch_size, "seq_len": seq_len, "steps": steps,
                     "tokens_per_second": steps * batch_size * seq_len / seconds,
                     "parameters": sum(p.numel() for p in result.model.parameters())})
    return rows


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------
def run_all(out_dir: Path = Path("results"), quick: bool = False, device: Optional[str] = None) -> Path:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    lengths = ATTN_LENGTHS[:2] if quick else ATTN_LENGTHS
    new_tokens = 128 if quick else 1024
    results = {"machine": machine_info(device), "attention_shape": dict(ATTN_SHAPE, causal=True)}
    results["attention_cpu"] = bench_attention_cpu(lengths)
    if device == "cuda":
        results["attention_cuda"] = bench_attention_cuda(lengths if quick else ATTN_LENGTHS + (32768,))
    results["decode"] = bench_decode(new_tokens=new_tokens, device=device)
    results["train"] = bench_train(steps=5 if quick else 20)
    results["targets"] = check_targets(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench-{device}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def check_targets(results: dict) -> dict:
    """The issue's targets, evaluated on the measured figures (None where a point is missing)."""
    def point(rows, impl, T, key):
        return next((r.get(key) for r in rows if r.get("impl") == impl and r.get("T") == T), None)

    rows = results["attention_cpu"]
    naive, tiled = point(rows, "naive", 8192, "peak_bytes"), point(rows, "tiled", 8192, "peak_bytes")
    decode = {r["impl"]: r.get("tokens_per_second") for r in results["decode"]}
    cached = decode.get("transformer_course with KV cache")
    uncached = decode.get("transformer_course without cache")
    hf = next((v for k, v in decode.items() if k.startswith("transformers ") and v), None)
    return {
        "tiled_peak_over_naive_peak_at_8192": (tiled / naive) if naive and tiled is not None else None,
        "tiled_peak_at_most_1_16_of_naive": (tiled * 16 <= naive) if naive and tiled is not None else None,
        "cache_speedup": (cached / uncached) if cached and uncached else None,
        "cache_at_least_10x": (cached >= 10 * uncached) if cached and uncached else None,
        "cached_over_transformers": (cached / hf) if cached and hf else None,
        "cached_at_least_1_5x_transformers": (cached >= 1.5 * hf) if cached and hf else None,
    }


def format_table(results: dict) -> str:
    m = results["machine"]
    lines = [f"machine: {m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} torch threads)"
             + (f", GPU {m['gpu']}" if "gpu" in m else "") + f"; torch {m['torch']}; {m['date']}", ""]
    shape = results["attention_shape"]
    lines.append(f"attention on CPU, causal, B={shape['B']} n_head={shape['n_head']} head_dim={shape['head_dim']}, float32")
    lines.append(f"{'impl':<8}{'T':>8}{'time':>12}{'peak memory':>16}")
    for r in results["attention_cpu"]:
        if "skipped" in r:
            lines.append(f"{r['impl']:<8}{r['T']:>8}   skipped: {r['skipped']}")
        else:
            lines.append(f"{r['impl']:<8}{r['T']:>8}{r['seconds'] * 1e3:>10.1f} ms{human_bytes(r['peak_bytes']):>16}")
    if "attention_cuda" in results:
        lines += ["", f"attention on {m.get('gpu')}, causal, bf16", f"{'impl':<16}{'T':>8}{'time':>12}{'TFLOP/s':>10}{'peak':>14}"]
        for r in results["attention_cuda"]:
            if "skipped" in r:
                lines.append(f"{r['impl']:<16}{r['T']:>8}   skipped: {r['skipped']}")
            else:
                lines.append(f"{r['impl']:<16}{r['T']:>8}{r['seconds'] * 1e3:>10.2f} ms{r['tflops']:>10.1f}"
                             f"{human_bytes(r['peak_bytes']):>14}")
    lines += ["", "decoding, batch 1, greedy"]
    for r in results["decode"]:
        if "skipped" in r:
            lines.append(f"  {r['impl']}: skipped ({r['skipped']})")
        else:
            lines.append(f"  {r['impl']:<70}{r['tokens_per_second']:>8.0f} tokens/s ({r['new_tokens']} new tokens)")
    lines += ["", "training (forward, backward, AdamW), batch of 16 x 256 tokens"]
    for r in results.get("train", []):
        lines.append(f"  {r['preset']:<12}{r['parameters']:>12,} parameters{r['tokens_per_second']:>10.0f} tokens/s")
    lines += ["", "targets:"] + [f"  {k}: {v if not isinstance(v, float) else round(v, 4)}" for k, v in results["targets"].items()]
    return "\n".join(lines)
