"""ModelConfig validation and presets; Hugging Face config.json in and out."""
import dataclasses

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


# --------------------------------------------------------------------------------------------------
# Hugging Face config.json (ModelConfig.from_hf / to_hf); the models themselves are checked in test_hf.py
# --------------------------------------------------------------------------------------------------
GPT2_JSON = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12,
             "n_head": 12, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
MISTRAL_JSON = {"model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                "sliding_window": 4096, "tie_word_embeddings": False}


def test_from_hf_reads_the_published_configs_as_the_presets():
    """Fields as in openai-community/gpt2 and mistralai/Mistral-7B-v0.1's config.json."""
    fields = lambda c: {k: v for k, v in c.to_dict().items() if k != "name"}
    assert fields(ModelConfig.from_hf(GPT2_JSON)) == fields(ModelConfig.from_name("gpt2"))
    assert fields(ModelConfig.from_hf(MISTRAL_JSON)) == fields(ModelConfig.from_name("mistral-7b", norm_eps=1e-5))


@pytest.mark.parametrize("preset", ["gpt2", "llama-2-7b", "llama-2-70b", "mistral-7b", "llama-3-8b", "tiny-llama"])
def test_to_hf_then_from_hf_gives_the_config_back(preset):
    c = ModelConfig.from_name(preset)
    assert ModelConfig.from_hf(c.to_hf()) == dataclasses.replace(c, name=f"hf-{c.to_hf()['model_type']}")


def test_from_hf_reads_rope_parameters_and_the_older_keys_alike():
    new = {"model_type": "llama", "max_position_embeddings": 131072,
           "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    old = {"model_type": "llama", "max_position_embeddings": 131072, "rope_theta": 500000.0,
           "rope_scaling": {k: v for k, v in new["rope_parameters"].items() if k != "rope_theta"}}
    assert ModelConfig.from_hf(new) == ModelConfig.from_hf(old)
    c = ModelConfig.from_hf(new)
    assert c.rope_base == 500000.0 and c.rope_scaling == RopeScaling("llama3", 8.0, 8192)


def test_qwen2_biases_and_windows():
    qwen = {"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 4,
            "use_sliding_window": False, "sliding_window": 4096}
    c = ModelConfig.from_hf(qwen)
    assert c.qkv_bias and not c.bias and c.sliding_window is None  # the window is off without use_sliding_window
    assert ModelConfig.from_hf({**qwen, "use_sliding_window": True, "max_window_layers": 0}).sliding_window == 4096
    with pytest.raises(ValueError, match="some layers only"):
        ModelConfig.from_hf({**qwen, "use_sliding_window": True, "max_window_layers": 2})


def test_rope_scaling_dicts_in_our_form_and_in_hugging_faces():
    ours = ModelConfig.from_name("tiny-llama", rope_scaling={"kind": "yarn", "factor": 4.0, "original_context_length": 64})
    assert ours.rope_scaling == RopeScaling("yarn", 4.0, 64)  # ramp="paper"
    hf = ModelConfig.from_name("tiny-llama", rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                                           "original_max_position_embeddings": 64})
    assert hf.rope_scaling == RopeScaling("yarn", 4.0, 64, ramp="hf")
    assert ModelConfig.from_dict(hf.to_dict()) == hf
    with pytest.raises(ValueError, match="neither 'kind'"):
        ModelConfig.from_name("tiny-llama", rope_scaling={"factor": 2.0})


@pytest.mark.parametrize("hf, match", [
    ({"model_type": "bert"}, "model_type='bert' is not supported"),
    ({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "head_dim": 8}, "head_dim=8"),
    ({"model_type": "llama", "mlp_bias": True}, "mlp_bias=True"),
    ({"model_type": "llama", "rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, "'longrope' is not supported"),
    ({"model_type": "gpt2", "activation_function": "swish"}, "activation_function='swish'"),
    ({"model_type": "gpt2", "scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
])
def test_from_hf_refuses_what_it_cannot_compute(hf, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_hf(hf)


def test_to_hf_refuses_what_the_family_cannot_express():
    with pytest.raises(ValueError, match="n_expert=0"):
        ModelConfig.from_name("mixtral-8x7b").to_hf()
    with pytest.raises(ValueError, match="qkv_bias=True"):
        ModelConfig.from_name("tiny-llama").to_hf("qwen2")
    with pytest.raises(ValueError, match="no sliding window"):
        ModelConfig.from_name("mistral-7b").to_hf("llama")
