"""The positional-scheme study: a tiny run of every scheme, written as the command writes it."""
import json

import pytest
import torch

from transformer_course.config import ModelConfig
from transformer_course.model import TransformerLM
from transformer_course.position_study import (SCHEMES, forward_clamped, position_losses,
                                               write_position_study)


@pytest.fixture(scope="module")
def small_data():
    gen = torch.Generator().manual_seed(0)
    text = bytes(torch.randint(97, 101, (20_000,), generator=gen).tolist())  # four letters, at random
    data = torch.frombuffer(bytearray(b"abcd" * 3000 + text), dtype=torch.uint8)
    return {"train": data, "val": data[-8000:].clone()}


def test_every_scheme_is_trained_and_scored_at_1x_and_2x(small_data, tmp_path):
    path = write_position_study(out_dir=str(tmp_path), command="test", length=16, steps=6, n_eval=4,
                                n_bins=4, data=small_data, model=dict(n_embd=32, n_layer=1))
    study = json.loads(path.read_text())
    assert study["command"] == "test" and study["machine"]["cpu_count"] >= 1
    assert study["training_length"] == 16 and study["unit"] == "bits per byte"
    runs = {r["scheme"]: r for r in study["runs"]}
    assert list(runs) == list(SCHEMES)
    for scheme, run in runs.items():
        assert run["model"]["position"] == scheme and run["model"]["context_length"] == 16
        assert 0 < run["bits_per_byte_1x"] < 9  # a byte costs at most 8 bits under a uniform guess (+ slack)
        if scheme == "learned":  # no row past the table: not run at 2x, but scored with clamped positions
            assert run["bits_per_byte_2x"] is None and run["by_position_2x"] is None
            clamped = run["clamped_2x"]
            assert clamped["bits_per_byte_1x"] == pytest.approx(run["bits_per_byte_1x"], rel=1e-5)
            assert len(clamped["by_position_2x"]) == 4
        else:
            assert len(run["by_position_2x"]) == 4
            mean_of_bins = sum(run["by_position_2x"]) / 4
            assert run["bits_per_byte_2x"] == pytest.approx(mean_of_bins, rel=1e-5)


def test_clamped_positions_change_nothing_inside_the_table():
    torch.manual_seed(0)
    model = TransformerLM(ModelConfig(vocab_size=20, context_length=8, n_layer=1, n_embd=16, n_head=2)).eval()
    idx = torch.randint(0, 20, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(forward_clamped(model, idx), model(idx))
        with pytest.raises(ValueError):
            model(torch.randint(0, 20, (2, 9)))  # the table stops at 8 positions
        longer = forward_clamped(model, torch.randint(0, 20, (2, 12)))  # positions 8..11 reuse row 7
    assert longer.shape == (2, 12, 20)
    losses = position_losses(model, torch.randint(0, 20, (3, 13)), clamped=True)
    assert losses.shape == (3, 12) and (losses > 0).all()
