"""The three model families: shapes, causality, implementation parity, oracles for the modules."""
import pytest
import torch
from torch import nn

from transformer_course import EncoderDecoderLM, ModelConfig, TransformerEncoder, TransformerLM
from transformer_course.model import TransformerBlock
from transformer_course.multi_head import MultiHeadAttention



def ids(B=2, T=20, vocab=50):
    return torch.randint(0, vocab, (B, T))


def test_lm_shapes_and_causality(variant, config_of):
    model = TransformerLM(config_of(variant)).eval()
    x = ids()
    logits = model(x)
    assert logits.shape == (2, 20, 50)
    x2 = x.clone()
    x2[:, 12] = (x2[:, 12] + 1) % 50  # change one token: earlier positions must not notice
    logits2 = model(x2)
    torch.testing.assert_close(logits2[:, :12], logits[:, :12], atol=1e-5, rtol=0)
    assert not torch.allclose(logits2[:, 12:], logits[:, 12:])


def test_attention_implementations_agree_inside_the_model(variant, config_of):
    model = TransformerLM(config_of(variant)).eval()
    x = ids(T=33)
    ref = model(x)
    for impl in ("naive", "tiled"):
        model.set_attn_impl(impl)
        torch.testing.assert_close(model(x), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["gpt", "llama-gqa", "moe"])
def test_every_parameter_gets_a_finite_gradient(variant, config_of):
    model = TransformerLM(config_of(variant))
    x = ids()
    logits = model(x)
    loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 50), x[:, 1:].reshape(-1)) + 0.01 * model.aux_loss()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} received a zero gradient"


def test_tied_embeddings_share_one_tensor(config_of):
    model = TransformerLM(config_of("gpt"))
    assert model.lm_head.weight is model.tok_emb.weight
    untied = TransformerLM(config_of("gpt", tie_embeddings=False))
    assert untied.lm_head.weight is not untied.tok_emb.weight


def test_mha_module_matches_torch_multihead_attention():
    C, n_head, T = 32, 4, 10
    ours = MultiHeadAttention(C, n_head, bias=True, causal=True)
    ref = nn.MultiheadAttention(C, n_head, bias=True, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.o_proj.weight)
        ref.out_proj.bias.copy_(ours.o_proj.bias)
    x = torch.randn(2, T, C)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)  # nn.MultiheadAttention: True = NOT allowed
    expected, _ = ref(x, x, x, attn_mask=future, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
    # cross-attention: queries from x, keys/values from another sequence, no mask
    cross = MultiHeadAttention(C, n_head, bias=True, cross=True)
    cross.load_state_dict(ours.state_dict())
    memory = torch.randn(2, 7, C)
    expected, _ = ref(x, memory, memory, need_weights=False)
    torch.testing.assert_close(cross(x, context=memory), expected, atol=1e-5, rtol=1e-5)


def test_gqa_equals_mha_with_repeated_key_value_heads():
    C, n_head, n_kv_head, hd = 32, 8, 2, 4
    gqa = MultiHeadAttention(C, n_head, n_kv_head)
    mha = MultiHeadAttention(C, n_head, n_head)
    group = n_head // n_kv_head
    with torch.no_grad():
        mha.q_proj.weight.copy_(gqa.q_proj.weight)
        mha.o_proj.weight.copy_(gqa.o_proj.weight)
        # query head h reads key/value head h // group: repeat each kv head's rows `group` times
        for proj in ("k_proj", "v_proj"):
            w = getattr(gqa, proj).weight.view(n_kv_head, hd, C).repeat_interleave(group, 0).reshape(n_head * hd, C)
            getattr(mha, proj).weight.copy_(w)
    x = torch.randn(2, 9, C)
    torch.testing.assert_close(gqa(x), mha(x), atol=1e-6, rtol=1e-5)


def test_block_placements_follow_their_formulas(config_of):
    cfg = config_of("gpt")
    x = torch.randn(2, 6, 32)
    pre = TransformerBlock(cfg).eval()
    h = x + pre.attn(pre.norm1(x))
    torch.testing.assert_close(pre(x), h + pre.ffn(pre.norm2(h)))
    post = TransformerBlock(config_of("gpt", norm_placement="post")).eval()
    h = post.norm1(x + post.attn(x))
    torch.testing.assert_close(post(x), post.norm2(h + post.ffn(h)))


def test_encoder_is_bidirectional_and_ignores_padding(config_of):
    model = TransformerEncoder(config_of("gpt")).eval()
    x = ids(T=12)
    out = model(x)
    assert out.shape == (2, 12, 50)
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % 50
    assert not torch.allclose(model(x2)[:, 0], out[:, 0])  # the first position sees the last
    lengths = torch.tensor([12, 8])
    padded = model(x, lengths)
    x3 = x.clone()
    x3[1, 8:] = 0  # change only padding
    torch.testing.assert_close(model(x3, lengths)[1, :8], padded[1, :8], atol=1e-5, rtol=0)


def test_encoder_decoder_uses_the_source_and_is_causal_in_the_target(config_of):
    model = EncoderDecoderLM(config_of("llama-gqa")).eval()
    src, tgt = ids(T=9), ids(T=7)
    out = model(src, tgt)
    assert out.shape == (2, 7, 50)
    src2 = src.clone()
    src2[:, -1] = (src2[:, -1] + 1) % 50
    assert not torch.allclose(model(src2, tgt)[:, 0], out[:, 0])  # every target position sees all the source
    tgt2 = tgt.clone()
    tgt2[:, 4] = (tgt2[:, 4] + 1) % 50
    torch.testing.assert_close(model(src, tgt2)[:, :4], out[:, :4], atol=1e-5, rtol=0)
    lengths = torch.tensor([9, 5])
    src3 = src.clone()
    src3[1, 5:] = 3
    torch.testing.assert_close(model(src3, tgt, lengths)[1], model(src, tgt, lengths)[1], atol=1e-5, rtol=0)


def test_learned_positions_refuse_to_run_past_the_table(config_of):
    model = TransformerLM(config_of("gpt", context_length=16))
    with pytest.raises(ValueError, match="context_length=16"):
        model(ids(T=17))


def test_bad_inputs_say_what_to_do(config_of):
    model = TransformerLM(config_of("gpt"))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.zeros(1, 5))
    with pytest.raises(TypeError, match="ModelConfig"):
        TransformerLM({"n_layer": 2})


def test_meta_device_builds_big_models_without_memory():
    model = TransformerLM(ModelConfig.from_name("llama-2-70b"), device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
