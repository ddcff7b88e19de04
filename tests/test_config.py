"""ModelConfig validation and presets."""
import pytest

from transformer_course import ModelConfig
from transformer_course.positions import RopeScaling


def test_presets_have_the_published_shapes():
    c = ModelConfig.from_name("llama-2-70b")
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.head_dim, c.ffn_hidden) == (80, 8192, 64, 8, 128, 28672)
    assert ModelConfig.from_name("gpt2").n_kv_head == 12  # default: MHA
    assert ModelConfig.from_name("mistral-7b").sliding_window == 4096


def test_overrides_and_round_trip():
    c = ModelConfig.from_name("tiny-llama", context_length=512,
                              rope_scaling=RopeScaling("linear", 2.0, original_context_length=256))
    assert c.context_length == 512 and c.name == "tiny-llama"
    assert ModelConfig.from_dict(c.to_dict()) == c


def test_swiglu_default_width_follows_llama_rule():
    assert ModelConfig(n_embd=4096, n_head=32, activation="swiglu").ffn_hidden == 11008
    assert ModelConfig(n_embd=128, n_head=4).ffn_hidden == 512


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_embd=100, n_head=3), "divisible by n_head"),
    (dict(n_head=4, n_kv_head=3), "multiple of n_kv_head"),
    (dict(norm="batchnorm"), "norm="),
    (dict(position="rope", n_embd=12, n_head=4), "even"),
    (dict(rope_scaling=RopeScaling("linear", 2.0, 128)), "position='rope'"),
    (dict(n_expert=4, n_expert_active=5), "n_expert_active"),
    (dict(n_layer=0), "positive"),
])
def test_bad_configs_say_what_to_change(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match="gpt2"):
        ModelConfig.from_name("gpt-5")
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.from_name("gpt2", n_layers=2)
