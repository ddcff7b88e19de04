"""Whole models against Hugging Face transformers' implementations of GPT-2 and Llama, same weights.

These are the strongest oracles for "correct to the last formula": every norm epsilon, activation
variant, RoPE layout and GQA head order must match for the logits to agree.
"""
import pytest
import torch

from transformer_course import ModelConfig, TransformerLM
from transformer_course.convert import gpt2_from_hf, llama_to_hf
from transformer_course.generate import generate

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e .[test])")
ATOL = 1e-4  # float32 logits of O(1), different but equivalent op orders


def test_gpt2_preset_matches_hf_gpt2():
    config = ModelConfig.from_name("gpt2", n_layer=2, vocab_size=300, context_length=64)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=300, n_positions=64, n_embd=768, n_layer=2, n_head=12)).eval()
    ours = TransformerLM(config).eval()
    ours.load_state_dict(gpt2_from_hf(hf.state_dict(), 2))
    x = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("n_kv_head", [6, 2, 1])
def test_llama_preset_matches_hf_llama(n_kv_head):
    config = ModelConfig.from_name("tiny-llama", n_kv_head=n_kv_head)
    ours = TransformerLM(config).eval()
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.n_embd, intermediate_size=config.ffn_hidden,
        num_hidden_layers=config.n_layer, num_attention_heads=config.n_head, num_key_value_heads=n_kv_head,
        max_position_embeddings=config.context_length, rope_theta=config.rope_base, rms_norm_eps=config.norm_eps,
        tie_word_embeddings=False, attention_bias=False)).eval()
    hf.load_state_dict(llama_to_hf(ours.state_dict(), config.n_layer))
    x = torch.randint(0, 256, (2, 50))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=ATOL, rtol=1e-4)
        prompt = torch.randint(1, 256, (1, 5))
        theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30, min_new_tokens=30,
                             do_sample=False, pad_token_id=None)
    assert torch.equal(generate(ours, prompt, 30), theirs)
