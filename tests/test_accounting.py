"""Counts computed from configs against instantiated models and PyTorch's FLOP counter."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from transformer_course import ModelConfig, TransformerLM
from transformer_course.accounting import count_parameters, flops_per_token, human_bytes, kv_cache_bytes
from transformer_course.config import PRESETS



@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_count_equals_the_instantiated_model(name):
    config = ModelConfig.from_name(name)
    model = TransformerLM(config, device="meta")  # no memory: shapes only
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())


def test_gpt2_small_is_124_439_808():
    assert count_parameters(ModelConfig.from_name("gpt2")) == 124_439_808


def test_published_totals():
    # Llama 2 paper's "7B" and "70B"; Mixtral paper: 46.7B total, 12.9B active.
    assert count_parameters(ModelConfig.from_name("llama-2-7b")) == 6_738_415_616
    assert count_parameters(ModelConfig.from_name("llama-2-70b")) == 68_976_648_192
    mixtral = ModelConfig.from_name("mixtral-8x7b")
    assert round(count_parameters(mixtral) / 1e9, 1) == 46.7
    assert round(count_parameters(mixtral, active_only=True) / 1e9, 1) == 12.9


@pytest.mark.parametrize("variant", ["gpt", "llama-gqa", "moe"])
def test_flops_match_pytorch_flop_counter(variant, config_of):
    config = config_of(variant)
    model = TransformerLM(config, attn_impl="naive").eval()
    T = 16
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randint(0, 50, (1, T)))
    # The counter sees every matmul; attention over T keys for all T queries (the mask does not save
    # FLOPs in a dense kernel), which is flops_per_token(config, T) per token.
    assert counter.get_total_flops() == T * flops_per_token(config, T)


@pytest.mark.parametrize("variant", ["gpt", "llama-gqa", "sliding-window"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_cache_bytes_equal_the_allocated_cache(variant, dtype, config_of):
    config = config_of(variant)
    model = TransformerLM(config)
    model.setup_cache(batch_size=3, max_len=40, dtype=dtype)
    allocated = sum(b.numel() * b.element_size() for blk in model.blocks for b in blk.attn.kv_cache.buffers())
    assert kv_cache_bytes(config, 40, batch_size=3, dtype=dtype) == allocated


def test_gqa_and_mqa_shrink_the_cache_by_the_head_ratio():
    mha = ModelConfig.from_name("llama-2-7b")
    gqa = ModelConfig.from_name("llama-2-7b", n_kv_head=8)
    mqa = ModelConfig.from_name("llama-2-7b", n_kv_head=1)
    full = kv_cache_bytes(mha, 4096)
    assert full == 2 * 32 * 4096 * 4096 * 2  # 2 · layers · d_model · tokens · 2 bytes = 2 GiB
    assert kv_cache_bytes(gqa, 4096) * 4 == full and kv_cache_bytes(mqa, 4096) * 32 == full


def test_human_bytes():
    assert human_bytes(512) == "512 B" and human_bytes(1536) == "1.50 KiB" and human_bytes(2 * 1024**3) == "2.00 GiB"
