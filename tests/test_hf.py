"""Hugging Face folders (hf.py, convert.py, ModelConfig.from_hf / to_hf) against transformers itself.

Oracle: transformers' own models on the same weights. Small random models are built with transformers,
written with ``save_pretrained`` and read back with ``load_hf``; the other way, our random models are
written with ``save_hf`` and read with ``AutoModelForCausalLM.from_pretrained``. Logits must agree to
float32 round-off (atol 1e-4 on logits of O(1)) and greedy decoding must give the same tokens.
"""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from transformer_course import ModelConfig, TransformerLM
from transformer_course.accounting import count_parameters
from transformer_course.config import RopeScaling
from transformer_course.convert import gpt2_from_hf, gpt2_to_hf, llama_from_hf, llama_to_hf
from transformer_course.generate import generate
from transformer_course.hf import load_hf, save_hf

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e .[test])")
ATOL = 1e-4
VOCAB = 128
NO_TOKENS = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)  # random models: no special tokens
LLAMA_SIZES = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                   max_position_embeddings=64, **NO_TOKENS)

HF_CONFIGS = {
    "llama-mha": lambda: transformers.LlamaConfig(**LLAMA_SIZES),
    "llama-gqa": lambda: transformers.LlamaConfig(**LLAMA_SIZES, num_key_value_heads=2, rope_theta=500000.0),
    "llama-tied-bias": lambda: transformers.LlamaConfig(**LLAMA_SIZES, num_key_value_heads=1, tie_word_embeddings=True,
                                                        attention_bias=True, mlp_bias=True),
    "mistral-window": lambda: transformers.MistralConfig(**LLAMA_SIZES, num_key_value_heads=2, sliding_window=8),
    "qwen2": lambda: transformers.Qwen2Config(**LLAMA_SIZES, num_key_value_heads=2),
    "gpt2": lambda: transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                            **NO_TOKENS),
}


def _hf_model(config):
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def _same_logits(ours, theirs, T=48):
    x = torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x).logits, atol=ATOL, rtol=1e-4)


def _same_greedy_tokens(ours, theirs, new_tokens=24):
    prompt = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                                   min_new_tokens=new_tokens, do_sample=False)
    assert torch.equal(generate(ours, prompt, new_tokens), expected)


# --------------------------------------------------------------------------------------------------
# transformers folder -> load_hf
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_load_hf_matches_transformers(name, tmp_path):
    hf = _hf_model(HF_CONFIGS[name]())
    hf.save_pretrained(tmp_path)
    ours = load_hf(tmp_path)
    assert not ours.training
    if name == "mistral-window":
        assert ours.config.sliding_window == 8  # shorter than the 48 tokens compared: the window matters
    if ours.config.tie_embeddings:
        assert ours.lm_head.weight is ours.tok_emb.weight
    _same_logits(ours, hf)
    _same_greedy_tokens(ours, hf)


def test_load_hf_reads_shards_and_casts(tmp_path):
    hf = _hf_model(HF_CONFIGS["llama-gqa"]())
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / "model.safetensors").exists()
    _same_logits(load_hf(tmp_path), hf)
    half = load_hf(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half.rope.cos_cached.dtype == torch.float32  # RoPE tables stay in float32


@pytest.mark.parametrize("rope", [
    dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16),
    dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16),
    dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16, beta_fast=8.0, beta_slow=2.0,
         truncate=False, attention_factor=1.25),
], ids=["llama3", "yarn", "yarn-options"])
def test_scaled_rope_checkpoints_match_transformers_past_the_original_length(rope, tmp_path):
    config = transformers.LlamaConfig(**{**LLAMA_SIZES, "max_position_embeddings": 64, "num_key_value_heads": 2},
                                      rope_parameters=dict(rope_theta=10000.0, **rope))
    hf = _hf_model(config)
    hf.save_pretrained(tmp_path)
    ours = load_hf(tmp_path)
    assert ours.config.rope_scaling.kind == rope["rope_type"]
    _same_logits(ours, hf, T=60)  # 60 positions, the original length is 16
    _same_greedy_tokens(ours, hf, new_tokens=30)


def test_legacy_rope_theta_and_rope_scaling_keys_are_read(tmp_path):
    """config.json files written by transformers 4 keep rope_theta and rope_scaling at the top level."""
    legacy = {"model_type": "llama", **LLAMA_SIZES, "rope_theta": 500000.0,
              "rope_scaling": {"type": "linear", "factor": 2.0}}
    config = ModelConfig.from_hf(legacy)
    assert config.rope_base == 500000.0 and config.rope_scaling == RopeScaling("linear", 2.0, 64)


# --------------------------------------------------------------------------------------------------
# TransformerLM -> save_hf -> transformers
# --------------------------------------------------------------------------------------------------
OURS = {
    "llama": dict(activation="swiglu", norm="rmsnorm", position="rope", bias=False, tie_embeddings=False, n_kv_head=2),
    "llama-tied": dict(activation="swiglu", norm="rmsnorm", position="rope", bias=False, tie_embeddings=True),
    "mistral": dict(activation="swiglu", norm="rmsnorm", position="rope", bias=False, tie_embeddings=False,
                    n_kv_head=2, sliding_window=8),
    "qwen2": dict(activation="swiglu", norm="rmsnorm", position="rope", bias=False, qkv_bias=True, n_kv_head=1,
                  tie_embeddings=False),
    "llama3-scaled": dict(activation="swiglu", norm="rmsnorm", position="rope", bias=False, tie_embeddings=False,
                          rope_scaling=RopeScaling("llama3", 4.0, 16)),
    "gpt2": dict(activation="gelu_tanh", norm="layernorm", position="learned", bias=True, tie_embeddings=True),
}


@pytest.mark.parametrize("name", sorted(OURS))
def test_save_hf_round_trip_through_transformers(name, tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, context_length=64, n_layer=2, n_embd=64, n_head=4, ffn_hidden=96,
                         norm_eps=1e-6, **OURS[name])
    ours = TransformerLM(config).eval()
    with torch.no_grad():
        for p in ours.parameters():  # biases and norm gains start at 0 and 1: make them count
            p.add_(0.02 * torch.randn_like(p))
    save_hf(ours, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    _same_logits(ours, theirs)
    assert sum(p.numel() for p in theirs.parameters()) == count_parameters(config)
    again = load_hf(tmp_path)  # and back: the same weights, the same config
    assert again.config.to_hf() == config.to_hf()
    _same_logits(again, theirs)


def test_save_hf_refuses_what_transformers_cannot_express(tmp_path):
    config = ModelConfig.from_name("tiny-llama", n_layer=1, rope_scaling=RopeScaling("yarn", 4.0, 64))  # paper ramp
    with pytest.raises(ValueError, match="ramp='hf'"):
        save_hf(TransformerLM(config), tmp_path)
    with pytest.raises(ValueError, match="norm="):
        save_hf(TransformerLM(ModelConfig(n_layer=1, position="rope", activation="swiglu")), tmp_path, model_type="llama")
    with pytest.raises(ValueError, match="model_type='gpt2' needs position='learned'"):
        ModelConfig.from_name("tiny-llama").to_hf("gpt2")


# --------------------------------------------------------------------------------------------------
# Configs and converters
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_parameter_counts_from_hf_configs_equal_transformers(name):
    hf_config = HF_CONFIGS[name]()
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(hf_config)
    assert count_parameters(ModelConfig.from_hf(hf_config.to_dict())) == sum(p.numel() for p in hf.parameters())


def test_parameter_count_of_a_published_qwen2_config():
    """Qwen2-0.5B's config.json (Qwen/Qwen2-0.5B, the fields that matter): 494,032,768 parameters."""
    qwen = {"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
            "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
            "max_position_embeddings": 131072, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": 131072,
            "max_window_layers": 24}
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(transformers.Qwen2Config(**qwen))
    config = ModelConfig.from_hf(qwen)
    assert config.sliding_window is None and config.qkv_bias and not config.bias
    assert count_parameters(config) == sum(p.numel() for p in hf.parameters()) == 494_032_768


@pytest.mark.parametrize("change, match", [
    (dict(model_type="mixtral"), "model_type='mixtral' is not supported"),
    (dict(head_dim=32), "head_dim=32"),
    (dict(mlp_bias=True), "mlp_bias=True"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(rope_scaling={"rope_type": "longrope", "factor": 2.0}), "'longrope' is not supported.*'llama3'"),
    (dict(partial_rotary_factor=0.5), "partial_rotary_factor=0.5"),
])
def test_unsupported_hf_configs_raise(change, match, tmp_path):
    d = {"model_type": "llama", **LLAMA_SIZES, **change}
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_hf(d)
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=match):
        load_hf(tmp_path)  # fails on the config, before looking for weights


def test_converters_are_inverses():
    for config, to_hf, from_hf in ((ModelConfig.from_name("tiny-llama", n_layer=2, qkv_bias=True), llama_to_hf, llama_from_hf),
                                   (ModelConfig.from_name("tiny-gpt", n_layer=2), gpt2_to_hf, gpt2_from_hf)):
        state = TransformerLM(config).state_dict()
        back = from_hf(to_hf(state, config.n_layer), config.n_layer)
        assert back.keys() == state.keys()
        assert all(torch.equal(back[k], state[k]) for k in state)


def test_converters_reject_keys_of_another_family():
    gpt2_state = TransformerLM(ModelConfig.from_name("tiny-gpt", n_layer=1)).state_dict()
    with pytest.raises(ValueError, match="no place in the Llama layout"):
        llama_to_hf(gpt2_state, 1)
    llama_hf = llama_to_hf(TransformerLM(ModelConfig.from_name("tiny-llama", n_layer=1)).state_dict(), 1)
    with pytest.raises(ValueError, match="no place"):  # a Mixtral expert
        llama_from_hf({**llama_hf, "model.layers.0.block_sparse_moe.experts.0.w1.weight": torch.zeros(1)}, 1)
    assert "model.layers.0.self_attn.rotary_emb.inv_freq" not in llama_from_hf(
        {**llama_hf, "model.layers.0.self_attn.rotary_emb.inv_freq": torch.zeros(1)}, 1)  # old files' buffer


def test_load_hf_is_strict(tmp_path):
    """A weight the config does not declare (an o_proj bias in a bias-free Llama) is an error, not ignored."""
    hf = _hf_model(HF_CONFIGS["llama-mha"]())
    hf.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    save_file({**state, "model.layers.0.self_attn.o_proj.bias": torch.zeros(64)}, tmp_path / "model.safetensors")
    with pytest.raises(RuntimeError, match="o_proj.bias"):
        load_hf(tmp_path)


def test_load_hf_explains_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1}))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(ModelConfig().to_dict()))
    with pytest.raises(ValueError, match="load_checkpoint"):
        load_hf(tmp_path)
