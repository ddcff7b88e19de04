"""Ring attention must equal ordinary attention, however the sequence is split across processes.

Starting processes costs seconds (each imports torch), so the distributed checks share one start-up per
world size: the ``ring`` fixture runs every case in one set of workers, and the tests read its results.
"""
import pytest
import torch
import torch.nn.functional as F

from transformer_course.attention import attention
from transformer_course.ring_attention import _run_on_ring, _split, run_ring_attention, simulate_ring

B, N_HEAD, T, HEAD_DIM = 2, 4, 24, 8
# (causal, n_kv_head): full and causal attention, with MHA (n_kv_head == n_head) and GQA (2 query heads per kv head).
CASES = [(False, 4), (True, 4), (False, 2), (True, 2)]
# float32 round-off: the ring sums the softmax block by block with rescaling, in another order than one
# softmax over the whole row; with these O(1) inputs that moves results by up to ~5e-7, well below 1e-5.
# A wrong mask, a lost rescale or a block folded twice moves them by ~1e-1.
ATOL, RTOL = 1e-5, 1e-5


def make_qkv(seed: int, n_kv_head: int, T: int = T):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, N_HEAD, T, HEAD_DIM, generator=g)
    k = torch.randn(B, n_kv_head, T, HEAD_DIM, generator=g)
    v = torch.randn(B, n_kv_head, T, HEAD_DIM, generator=g)
    return q, k, v


def with_new_last_chunk(q, k, v, world_size: int, seed: int):
    """The same inputs with the keys and values of the last rank's chunk replaced by fresh random ones."""
    C = q.shape[2] // world_size
    k, v = k.clone(), v.clone()
    g = torch.Generator().manual_seed(seed)
    k[:, :, -C:] = torch.randn(k[:, :, -C:].shape, generator=g)
    v[:, :, -C:] = torch.randn(v[:, :, -C:].shape, generator=g)
    return q, k, v


@pytest.fixture(scope="module", params=[2, 4], ids=lambda w: f"world_size={w}")
def ring(request):
    """Runs every case of CASES, plus the causal GQA case with a changed last chunk, in one set of workers."""
    world_size = request.param
    inputs = [make_qkv(seed, n_kv_head) for seed, (_, n_kv_head) in enumerate(CASES)]
    causal = [c for c, _ in CASES]
    inputs.append(with_new_last_chunk(*inputs[-1], world_size, seed=99))  # for test_future_chunk_does_not_leak
    causal.append(True)
    outputs = _run_on_ring([_split(*qkv, world_size) for qkv in inputs], causal, scale=None)
    return world_size, inputs, causal, outputs


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"causal={c}-n_kv_head={n}" for c, n in CASES])
def test_matches_naive_attention_and_sdpa(ring, case):
    world_size, inputs, causal, outputs = ring
    q, k, v = inputs[case]
    out = outputs[case]
    what = f"ring attention (world_size={world_size}, causal={causal[case]}, n_kv_head={k.shape[1]})"
    assert out.shape == q.shape, f"{what} returned shape {tuple(out.shape)}, expected {tuple(q.shape)}."
    naive = attention(q, k, v, causal=causal[case], impl="naive")
    assert torch.allclose(out, naive, atol=ATOL, rtol=RTOL), (
        f"{what} differs from attention(impl='naive') by up to {(out - naive).abs().max():.2e} "
        f"(tolerance {ATOL:g}): a block is masked, skipped or rescaled wrongly."
    )
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=causal[case], enable_gqa=k.shape[1] != q.shape[1])
    assert torch.allclose(out, sdpa, atol=ATOL, rtol=RTOL), (
        f"{what} differs from PyTorch's scaled_dot_product_attention by up to {(out - sdpa).abs().max():.2e}."
    )


@pytest.mark.slow
def test_future_chunk_does_not_leak(ring):
    """Causal: new keys/values in the last chunk must leave every earlier chunk's output bit for bit unchanged."""
    world_size, _, _, outputs = ring
    before, after = outputs[len(CASES) - 1], outputs[len(CASES)]
    C = T // world_size
    assert not torch.equal(before[:, :, -C:], after[:, :, -C:]), "the change to the last chunk had no effect at all"
    leaked = (before[:, :, :-C] - after[:, :, :-C]).abs().max()
    assert torch.equal(before[:, :, :-C], after[:, :, :-C]), (
        f"with causal=True, changing the last chunk's keys/values changed earlier outputs (by up to {leaked:.2e}): "
        "blocks from later ranks lie in the future and must be skipped."
    )


@pytest.mark.slow
def test_simulation_equals_distributed(ring):
    world_size, inputs, causal, outputs = ring
    for (q, k, v), c, out in zip(inputs, causal, outputs):
        simulated = simulate_ring(q, k, v, world_size=world_size, causal=c)
        # Same folds in the same order; only the matmul's thread count differs (1 per worker), which may
        # change float32 summation order in the last bits.
        assert torch.allclose(simulated, out, atol=1e-6, rtol=0), (
            f"simulate_ring differs from the distributed run (world_size={world_size}, causal={c}, "
            f"n_kv_head={k.shape[1]}) by {(simulated - out).abs().max():.2e}."
        )


@pytest.mark.slow
def test_run_ring_attention_end_to_end():
    """The public entry point (split, spawn, gather) with MQA, causal masking, a custom scale and float64."""
    q, k, v = (t.double() for t in make_qkv(7, n_kv_head=1, T=12))  # MQA: every query head reads one kv head
    out = run_ring_attention(q, k, v, world_size=2, causal=True, scale=0.5)
    assert out.dtype == q.dtype, f"run_ring_attention returned {out.dtype} for {q.dtype} inputs."
    expected = attention(q, k, v, causal=True, scale=0.5, impl="naive")
    assert torch.allclose(out, expected, atol=ATOL, rtol=RTOL), (
        f"run_ring_attention differs from naive attention by {(out - expected).abs().max():.2e}."
    )


@pytest.mark.parametrize("world_size", [1, 3, 6])
@pytest.mark.parametrize("causal", [False, True])
def test_simulation_matches_naive(world_size, causal):
    """Cheap (no processes): more world sizes, a ring of one included."""
    q, k, v = make_qkv(3, n_kv_head=2)
    out = simulate_ring(q, k, v, world_size=world_size, causal=causal)
    expected = attention(q, k, v, causal=causal, impl="naive")
    assert torch.allclose(out, expected, atol=ATOL, rtol=RTOL), (
        f"simulate_ring(world_size={world_size}, causal={causal}) differs from naive attention "
        f"by {(out - expected).abs().max():.2e}."
    )


def test_indivisible_length_raises():
    q, k, v = make_qkv(0, n_kv_head=2, T=10)
    with pytest.raises(ValueError, match="cannot be split into world_size=4"):
        run_ring_attention(q, k, v, world_size=4)
    with pytest.raises(ValueError, match="cannot be split into world_size=4"):
        simulate_ring(q, k, v, world_size=4)


def test_inputs_requiring_grad_raise():
    q, k, v = make_qkv(0, n_kv_head=2)
    with pytest.raises(ValueError, match="forward-only"):
        simulate_ring(q.requires_grad_(), k, v, world_size=2)


@pytest.mark.slow
def test_failing_worker_raises_in_caller():
    """Unequal chunks: every worker raises ValueError; the caller gets it as an error, not a hang."""
    q, k, v = make_qkv(0, n_kv_head=2, T=6)
    chunks = [(q[:, :, :4], k[:, :, :4], v[:, :, :4]), (q[:, :, 4:], k[:, :, 4:], v[:, :, 4:])]
    with pytest.raises(RuntimeError, match="(?s)ValueError.*chunks of equal shape"):
        _run_on_ring([chunks], [False], scale=None)
