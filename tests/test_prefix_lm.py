"""The prefix-LM mask: bidirectional over the prefix, causal after it (True = may attend)."""
import pytest
import torch

from transformer_course.attention import attention, build_mask, prefix_lm_mask


def test_prefix_lm_mask_is_full_on_the_prefix_and_causal_after_it():
    m = prefix_lm_mask(6, 3)
    assert m.dtype == torch.bool and m.shape == (6, 6)
    assert m[:3, :3].all(), "the prefix sees itself in both directions"
    assert not m[:3, 3:].any(), "the prefix never sees the continuation"
    assert torch.equal(m[3:, 3:], torch.ones(3, 3, dtype=torch.bool).tril()), "causal after the prefix"
    assert m[3:, :3].all(), "the continuation sees the whole prefix"


def test_the_extremes_are_the_causal_and_the_full_masks():
    assert torch.equal(prefix_lm_mask(5, 0), build_mask(5, 5, causal=True))
    assert prefix_lm_mask(5, 5).all()
    with pytest.raises(ValueError):
        prefix_lm_mask(5, 6)


def test_per_sequence_prefix_lengths_and_attention_sees_what_the_mask_allows():
    lengths = torch.tensor([2, 4])
    m = prefix_lm_mask(6, lengths)
    assert m.shape == (2, 1, 6, 6)
    assert torch.equal(m[0, 0], prefix_lm_mask(6, 2)) and torch.equal(m[1, 0], prefix_lm_mask(6, 4))
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 8) for _ in range(3))
    out = attention(q, k, v, mask=m, impl="naive")
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 3], v2[:, :, 3] = 5.0, 5.0  # change position 3: inside the prefix of sequence 1, after it in 0
    moved = (attention(q, k2, v2, mask=m, impl="naive") - out).abs().amax(dim=(1, 3)) > 1e-6  # (B, T)
    assert moved[0].tolist() == [False, False, False, True, True, True]
    assert moved[1].tolist() == [True] * 6
