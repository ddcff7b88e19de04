"""Tests for transformer_course.baselines against a direct pure-Python Witten-Bell model.

The oracle counts n-grams in dicts and applies Chen & Goodman's recursion one byte at a time, exactly
as the formula reads; the package version packs n-grams into integers and vectorises with numpy. Both
compute in float64 and differ only in the order of additions: rel 1e-12.
"""
import math
import random
from collections import Counter

import numpy as np
import pytest
import torch

from transformer_course.baselines import byte_entropy_bits, ngram_bits_per_byte, ngram_probabilities, unigram_bits_per_byte

REL = 1e-12  # float64, same operations in a different order


class WittenBellOracle:
    """Interpolated Witten-Bell over bytes, written from the formula, no vectorisation."""

    def __init__(self, train: bytes, order: int):
        self.order, self.n_train = order, len(train)
        self.counts = Counter(train[i:i + n] for n in range(1, order + 1) for i in range(len(train) - n + 1))

    def prob(self, context: bytes, w: int) -> float:
        if not context:
            return (self.counts[bytes([w])] + 1) / (self.n_train + 256)  # add-one unigram
        lower = self.prob(context[1:], w)
        followers = [self.counts[context + bytes([v])] for v in range(256)]
        total, types = sum(followers), sum(c > 0 for c in followers)
        if total == 0:
            return lower  # unseen context: back off unchanged
        return (followers[w] + types * lower) / (total + types)

    def bits_per_byte(self, val: bytes) -> float:
        bits = [-math.log2(self.prob(val[max(0, i - self.order + 1):i], val[i])) for i in range(len(val))]
        return sum(bits) / len(bits)


def _tensor(b: bytes) -> torch.Tensor:
    return torch.tensor(list(b), dtype=torch.uint8)


TRAIN = (b"def f(x):\n    return x + 1\n\ndef g(y):\n    return f(y) * 2\n\x00class A:\n    pass\n\x00"
         + bytes(random.Random(0).randrange(256) for _ in range(60))
         + b"def h(z):\n    return g(z) - f(z)\n\x00") * 2
VAL = b"def k(x):\n    return f(x) + g(x)\n\x00class B(A):\n    x = 1\n\x00\xff\xfe{}" + TRAIN[17:60]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_matches_the_direct_witten_bell_recursion(order):
    expected = WittenBellOracle(TRAIN, order).bits_per_byte(VAL)
    got = ngram_bits_per_byte(_tensor(TRAIN), _tensor(VAL), order)
    assert got == pytest.approx(expected, rel=REL), (
        f"order {order}: {got} bits per byte, the direct Witten-Bell recursion gives {expected}; check the "
        "counts c(h w), c(h), N1+(h .), the back-off for unseen contexts, and the short contexts at the start of val."
    )


def test_val_shorter_than_the_context():
    """A val of 2 bytes with order 4: both bytes are scored with the context they have."""
    oracle = WittenBellOracle(TRAIN, 4)
    assert ngram_bits_per_byte(_tensor(TRAIN), _tensor(b"de"), 4) == pytest.approx(oracle.bits_per_byte(b"de"), rel=REL)


@pytest.mark.parametrize("context", [b"", b"d", b"def ", b"\x00cl", b"zzz", b"    return "])
def test_probabilities_are_the_oracle_and_sum_to_one(context):
    probs = ngram_probabilities(_tensor(TRAIN), _tensor(context), order=4)
    assert probs.shape == (256,) and probs.dtype == torch.float64
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-12), "the 256 next-byte probabilities must sum to 1"
    assert (probs > 0).all(), "smoothing must leave no byte with probability 0"
    oracle = WittenBellOracle(TRAIN, 4)
    expected = torch.tensor([oracle.prob(context[-3:] if context else b"", w) for w in range(256)], dtype=torch.float64)
    torch.testing.assert_close(probs, expected, rtol=REL, atol=0)


def test_order_one_is_the_unigram_baseline():
    assert ngram_bits_per_byte(_tensor(TRAIN), _tensor(VAL), 1) == unigram_bits_per_byte(_tensor(TRAIN), _tensor(VAL))


def test_unigram_is_add_one_cross_entropy():
    train, val = b"aab", b"abc"
    p = {ord("a"): 3 / 259, ord("b"): 2 / 259, ord("c"): 1 / 259}  # (count + 1) / (3 + 256)
    expected = -sum(math.log2(p[b]) for b in val) / 3
    assert unigram_bits_per_byte(_tensor(train), _tensor(val)) == pytest.approx(expected, rel=REL)


def test_longer_context_helps_on_repetitive_text():
    text = b"the cat sat on the mat. the dog sat on the log. " * 20
    bpb = [ngram_bits_per_byte(_tensor(text), _tensor(text[:300]), n) for n in range(1, 6)]
    assert all(a > b for a, b in zip(bpb, bpb[1:])), f"bits per byte should fall with the order; got {bpb}"
    assert bpb[-1] < 0.5 * bpb[0]


def test_inputs_and_errors():
    as_list = ngram_bits_per_byte(np.frombuffer(TRAIN, dtype=np.uint8), VAL, 3)  # numpy and bytes work too
    assert as_list == ngram_bits_per_byte(_tensor(TRAIN), _tensor(VAL), 3)
    with pytest.raises(ValueError, match="order"):
        ngram_bits_per_byte(_tensor(TRAIN), _tensor(VAL), 0)
    with pytest.raises(ValueError, match="order"):
        ngram_bits_per_byte(_tensor(TRAIN), _tensor(VAL), 9)
    with pytest.raises(ValueError, match="empty"):
        unigram_bits_per_byte(_tensor(TRAIN), _tensor(b""))
    with pytest.raises(ValueError, match="bytes"):
        unigram_bits_per_byte(torch.tensor([0, 300]), _tensor(VAL))


def test_byte_entropy_is_in_bits_and_is_the_unigram_on_its_own_bytes():
    assert math.isclose(byte_entropy_bits(torch.tensor([1, 2, 3, 4] * 10, dtype=torch.uint8)), 2.0)
    assert byte_entropy_bits(torch.full((50,), 7, dtype=torch.uint8)) == 0.0
    data = torch.randint(0, 40, (200_000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    # add-one smoothing over 256 values costs little on 200k bytes: the two agree to a few thousandths
    assert math.isclose(byte_entropy_bits(data), unigram_bits_per_byte(data, data), abs_tol=5e-3)
