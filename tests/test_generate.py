"""KV caches and generation: cached decoding must equal uncached decoding."""
import pytest
import torch

from transformer_course import ModelConfig, TransformerLM
from transformer_course.generate import generate, sample_next
from transformer_course.kv_cache import KVCache, RollingKVCache



def test_cached_generation_equals_uncached(variant, config_of):
    model = TransformerLM(config_of(variant))
    prompt = torch.randint(0, 50, (2, 7))
    cached = generate(model, prompt, 25, use_cache=True)
    uncached = generate(model, prompt, 25, use_cache=False)
    assert cached.shape == (2, 32)
    assert torch.equal(cached[:, :7], prompt)
    assert torch.equal(cached, uncached)


def test_cached_logits_equal_full_forward_step_by_step(config_of):
    model = TransformerLM(config_of("sliding-window")).eval()  # window 5: the rolling cache wraps
    x = torch.randint(0, 50, (2, 30))
    full = model(x)
    model.setup_cache(2, 30)
    for _ in range(2):  # the second pass restarts at position 0 over a used cache: nothing of the first remains
        pieces = [model(x[:, :9], 0)]  # prefill longer than the window
        for t in range(9, 30, 3):
            pieces.append(model(x[:, t:t + 3], t))  # decode several tokens at a time
        torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4)
    assert model.blocks[0].attn.kv_cache.capacity == 5  # memory bounded by the window


def test_positions_are_explicit_and_a_cache_can_rewind(config_of):
    """forward(idx, start_pos) is a function of its arguments: the cache's state never shifts positions."""
    model = TransformerLM(config_of("llama-gqa")).eval()
    x, other = torch.randint(0, 50, (2, 12)), torch.randint(0, 50, (2, 4))
    full = model(x)
    torch.testing.assert_close(model(x[:, 5:], 5)[:, :0], full[:, :0])  # no cache: positions from start_pos
    model.setup_cache(2, 12)
    model(x[:, :8], 0)
    model(other, 8)  # a rejected draft of 4 tokens at positions 8 .. 11 ...
    torch.testing.assert_close(model(x[:, 8:], 8), full[:, 8:], atol=1e-5, rtol=1e-4)  # ... overwritten
    torch.testing.assert_close(model(x, 0), full, atol=1e-5, rtol=1e-4)  # at 0: a new sequence over the used cache
    model(other)  # without start_pos: a sequence of its own; the cache is neither read nor written
    assert model.cache_length == 12
    torch.testing.assert_close(model(x[:, 11:], 11), full[:, 11:], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="continue at start_pos=12"):
        model(x[:, :1], 13)  # position 12 was never stored


def test_seeded_sampling_is_the_same_with_and_without_cache(config_of):
    model = TransformerLM(config_of("llama-gqa"))
    prompt = torch.randint(0, 50, (1, 4))
    runs = [generate(model, prompt, 20, use_cache=c, temperature=0.9, top_k=20, top_p=0.9,
                     generator=torch.Generator().manual_seed(7)) for c in (True, False)]
    assert torch.equal(*runs)


def test_generate_leaves_the_model_as_it_found_it(config_of):
    model = TransformerLM(config_of("gpt")).train()
    generate(model, torch.zeros(1, 1, dtype=torch.long), 3)
    assert model.training and model.cache_length is None


def test_cache_writes_in_place_and_never_reallocates():
    cache = KVCache(1, 2, 10, 4)
    ptr = cache.k.data_ptr()
    k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    k_all, _ = cache.update(k, v, 0)
    assert cache.length == 3 and torch.equal(k_all, k)
    k_all, v_all = cache.update(k[:, :, :1], v[:, :, :1], 3)
    assert cache.length == 4 and k_all.shape == (1, 2, 4, 4) and torch.equal(v_all[:, :, 3], v[:, :, 0])
    assert cache.k.data_ptr() == ptr
    k_all, _ = cache.update(v[:, :, :2], v[:, :, :2], 1)  # rewind: positions 1, 2 rewritten, 3 dropped
    assert cache.length == 3 and torch.equal(k_all[:, :, 1:], v[:, :, :2]) and torch.equal(k_all[:, :, 0], k[:, :, 0])
    with pytest.raises(ValueError, match="KV cache is full"):
        cache.update(torch.randn(1, 2, 8, 4), torch.randn(1, 2, 8, 4), 3)
    with pytest.raises(ValueError, match="batch size"):
        cache.update(torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4), 3)
    with pytest.raises(ValueError, match="start_pos=4"):
        cache.update(k, v, 4)  # a gap: position 3 is not stored


def test_rolling_cache_returns_the_window_in_order():
    cache = RollingKVCache(1, 1, 4, 1)
    seen = []
    for chunk in ([0, 1, 2], [3], [4, 5, 6, 7, 8], [9]):
        k = torch.tensor(chunk, dtype=torch.float32).view(1, 1, -1, 1)
        k_all, _ = cache.update(k, k, chunk[0])
        seen.append(k_all.flatten().tolist())
    # each update returns the kept positions (at most the last 4) followed by the new ones
    assert seen == [[0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6, 7, 8], [5, 6, 7, 8, 9]]
    assert cache.length == 10
    with pytest.raises(ValueError, match="rolling cache continues at start_pos=10"):
        cache.update(k, k, 7)  # positions that left the window cannot be rewritten
    k_all, _ = cache.update(k, k, 0)  # a restart
    assert cache.length == 1 and k_all.flatten().tolist() == [9]


def test_cache_errors_say_what_to_do(config_of):
    model = TransformerLM(config_of("gpt"))
    model.setup_cache(1, 8)
    with pytest.raises(ValueError, match="holds no positions yet: start at start_pos=0"):
        model(torch.zeros(1, 3, dtype=torch.long), 2)
    model(torch.zeros(1, 6, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="setup_cache\\(batch_size, max_len=9\\)"):
        model(torch.zeros(1, 3, dtype=torch.long), 6)
    with pytest.raises(ValueError, match="start_pos=-1 must be >= 0"):
        model(torch.zeros(1, 3, dtype=torch.long), -1)


def test_sampling_filters():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9]])
    assert sample_next(logits).item() == 1
    gen = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, temperature=1.0, top_k=2, generator=gen).item() for _ in range(200)}
    assert draws == {1, 3}
    # top_p: token 1 alone has p≈0.47 < 0.5, so the nucleus needs token 3 too, and nothing else
    draws = {sample_next(logits, temperature=1.0, top_p=0.5, generator=gen).item() for _ in range(200)}
    assert draws == {1, 3}
    assert {sample_next(logits, temperature=1.0, top_p=0.01, generator=gen).item() for _ in range(50)} == {1}
    with pytest.raises(ValueError, match="temperature"):
        sample_next(logits, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        sample_next(logits, temperature=1.0, top_p=1.5)
