"""CUDA paths: PyTorch's FlashAttention kernel through SDPA, and the models on the GPU.

Marked ``cuda``: skipped (with a message) on machines without a GPU, run on the course's GPU machines.
"""
import pytest
import torch

from transformer_course import ModelConfig, TransformerLM
from transformer_course.attention import BackendUnavailableError, attention
from transformer_course.generate import generate

pytestmark = pytest.mark.cuda


def qkv(dtype, n_kv_head=8, T=512):
    shape = lambda h: (2, h, T, 64)
    return (torch.randn(shape(8), device="cuda", dtype=dtype), torch.randn(shape(n_kv_head), device="cuda", dtype=dtype),
            torch.randn(shape(n_kv_head), device="cuda", dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n_kv_head", [8, 2])
def test_flash_backend_matches_naive(dtype, n_kv_head):
    q, k, v = qkv(dtype, n_kv_head)
    ref = attention(q.float(), k.float(), v.float(), causal=True, impl="naive")
    try:
        out = attention(q, k, v, causal=True, backend="flash")
    except BackendUnavailableError as err:  # e.g. GQA in the flash kernel of some torch builds
        pytest.skip(f"flash kernel unavailable for this case on this build: {err}")
    # half precision: ~3 significant digits; the reference runs in float32
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_tiled_matches_naive_on_the_gpu():
    q, k, v = qkv(torch.float32, 2, T=700)
    torch.testing.assert_close(attention(q, k, v, causal=True, impl="tiled", block_size=128),
                               attention(q, k, v, causal=True, impl="naive"), atol=1e-5, rtol=0)


def test_forced_flash_refuses_float32_and_explicit_masks():
    q, k, v = qkv(torch.float32)
    with pytest.raises(BackendUnavailableError, match="float16 or bfloat16"):
        attention(q, k, v, causal=True, backend="flash")
    q, k, v = qkv(torch.bfloat16)
    with pytest.raises(BackendUnavailableError, match="explicit mask"):
        attention(q, k, v, causal=True, window=64, backend="flash")


def test_model_on_gpu_matches_cpu_and_generates_the_same_tokens():
    config = ModelConfig.from_name("tiny-llama")
    cpu = TransformerLM(config).eval()
    gpu = TransformerLM(config, device="cuda").eval()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randint(0, 256, (2, 64))
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), atol=1e-4, rtol=1e-4)
    prompt = torch.randint(0, 256, (1, 4))
    assert torch.equal(generate(gpu, prompt.cuda(), 20).cpu(), generate(gpu, prompt.cuda(), 20, use_cache=False).cpu())
