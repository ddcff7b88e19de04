"""The command line and the benchmark helpers (figures are not asserted, only their consistency)."""
import subprocess
import sys

import pytest
import torch

from transformer_course import ModelConfig
from transformer_course.accounting import count_parameters, human_bytes, kv_cache_bytes, weights_bytes
from transformer_course.bench import bench_attention_cpu, check_targets, format_table
from transformer_course.results import machine_info
from transformer_course.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "transformer_course", *args], capture_output=True, text=True)


def test_help_lists_the_subcommands():
    done = run_cli("--help")
    assert done.returncode == 0
    for command in ("memory", "presets", "bench"):
        assert command in done.stdout


def test_memory_prints_the_accounting_figures(capsys):
    assert main(["memory", "--model", "llama-2-70b", "--seq-len", "4096", "--batch", "8", "--dtype", "fp16"]) == 0
    out = capsys.readouterr().out
    config = ModelConfig.from_name("llama-2-70b")
    assert f"{count_parameters(config):,}" in out
    assert human_bytes(weights_bytes(config, torch.float16)) in out
    assert human_bytes(kv_cache_bytes(config, 4096, 8, torch.float16)) in out


def test_memory_rejects_bad_arguments_with_a_usage_message():
    done = run_cli("memory", "--model", "gpt-5", "--seq-len", "10")
    assert done.returncode == 2 and "invalid choice" in done.stderr and "llama-2-7b" in done.stderr
    done = run_cli("memory", "--model", "gpt2", "--seq-len", "-3")
    assert done.returncode == 2 and "must be at least 1" in done.stderr


def test_presets_table_lists_every_preset(capsys):
    main(["presets"])
    out = capsys.readouterr().out
    assert "124,439,808" in out and "mixtral-8x7b" in out


@pytest.mark.slow
def test_attention_benchmark_measures_less_memory_for_tiled():
    rows = bench_attention_cpu(lengths=(2048,), impls=("naive", "tiled"))
    naive, tiled = (next(r for r in rows if r["impl"] == impl) for impl in ("naive", "tiled"))
    # naive materialises 2 heads x 2048 x 2048 float32 scores (32 MiB); tiled only 256 x 256 blocks
    assert naive["peak_bytes"] > 2 * 2048 * 2048 * 4
    assert tiled["peak_bytes"] * 4 < naive["peak_bytes"]
    results = {"machine": machine_info(), "attention_shape": {"B": 1, "n_head": 2, "head_dim": 64},
               "attention_cpu": rows, "decode": []}
    results["targets"] = check_targets(results)
    assert "naive" in format_table(results)


def test_train_command_writes_a_checkpoint_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--steps", "3", "--batch-size", "2", "--seq-len", "16", "--eval-interval", "3", "--eval-batches", "1",
            "--set", "n_layer=1", "--set", "context_length=32", "--rope-scaling", "linear:2:16", "--out-dir", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "final validation loss" in printed and "bits per byte" in printed and "nats" not in printed, printed
    assert {"model.safetensors", "config.json", "train_state.pt", "summary.json"} <= {p.name for p in out.iterdir()}
    from transformer_course.checkpoint import load_checkpoint
    config = load_checkpoint(out).config
    assert config.n_layer == 1 and config.rope_scaling.kind == "linear" and config.rope_scaling.factor == 2.0
    args[args.index("--steps") + 1] = "5"
    assert main(args + ["--resume"]) == 0
    assert '"resumed_from_step": 3' in (out / "summary.json").read_text()
    with pytest.raises(SystemExit, match="KIND:FACTOR"):
        main(args[:-2] + ["--rope-scaling", "linear"])
