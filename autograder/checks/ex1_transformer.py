"""Checks for exercise 1, a decoder-only transformer built from scratch.

Graded names (stated at the top of the notebook). Shapes: x (B, T, C) with C = n_embd; idx (B, T) int64.
    attention(q, k, v, causal=True) -> Tensor       q, k, v: (B, n_head, T, head_dim) -> (B, n_head, T, head_dim)
    MultiHeadAttention(n_embd, n_head)              q_proj, k_proj, v_proj, o_proj: nn.Linear(C, C) with bias;
                                                    forward(x) -> (B, T, C), causal
    FeedForward(n_embd, ffn_hidden)                 up: nn.Linear(C, ffn_hidden), down: nn.Linear(ffn_hidden, C);
                                                    forward(x) = down(gelu(up(x))), exact (erf) GELU
    Block(n_embd, n_head, ffn_hidden, pre_norm=True)
                                                    norm1, attn, norm2, ffn (nn.LayerNorm with eps 1e-5)
                                                    pre-norm: x + f(norm(x)); post-norm: norm(x + f(x))
    TransformerLM(vocab_size, context_length, n_embd, n_head, n_layer, ffn_hidden)
                                                    tok_emb, pos_emb (nn.Embedding), blocks (nn.ModuleList of
                                                    pre-norm Blocks), norm_f (nn.LayerNorm), lm_head
                                                    (nn.Linear(C, vocab, bias=False) whose weight IS tok_emb.weight);
                                                    forward(idx) -> logits (B, T, vocab); ValueError when
                                                    T > context_length

Checks: ex1.attention, ex1.mha, ex1.ffn, ex1.block (pre_norm=True, and pre_norm=False in its own test cell),
ex1.decoder (logits, causality, tying, the ValueError past context_length), ex1.gradients, ex1.train (the
grader's training loop, judged by the validation loss of the trained weights in the reference model; it does
not look for a leaking mask: a leak barely helps in 80 steps, and ex1.decoder catches it).

Each part is judged on its own. The parts call the earlier ones by name (MultiHeadAttention calls
`attention`, Block builds `MultiHeadAttention` and `FeedForward`, TransformerLM builds `Block`), so a check runs
the student's part twice: as written, and with the grader's reference versions of the earlier parts put in
the student's namespace (``Student.substitute``; outputs prefixed ``alone_``). A part that is right with the
references passes, with a note naming the part to fix first (``base.on_its_own``): one mistake costs its own
part. The references are small adapters with the exercise's constructors and state-dict names
(``_ReferenceMultiHeadAttention`` ...), built from the package's modules; ex1.train and ex1.gradients train
and differentiate the student's TransformerLM around the reference Block.

Every module is run twice in evaluation mode and twice in training mode on the same input: outputs that differ
are reported as randomness (dropout) before any other diagnosis; the exercise's model has no dropout. Norms
are also judged on an input of small variance (``mistakes.small_variance``), where an epsilon mistake changes
the output by orders of magnitude more than the tolerance, and is named (``mistakes.layer_norm_mistakes``).
A tensor kept as a plain attribute of a module (not a registered buffer) is an error: the spec asks for
helper buffers registered with persistent=False, and a plain tensor does not follow .to(device).

This is the GPT-2 design (LayerNorm, GELU, learned positions, biases, tied output layer), so the judges load
the same weights into the reference package's modules (``transformer_course.multi_head``, ``layers``,
``model``): the student's modules have the package's state-dict keys, name for name. (The package's
``TransformerLM`` is imported as ``ReferenceLM``: the student's class has the same name.) Known mistakes are
recomputed by small functional models (``_mha``, ``_block``, ``_decoder``) built from the reference
``attention`` and PyTorch functions; the attention and LayerNorm mistakes are the shared models of
``mistakes`` (named the same in exercises 1, 2 and 4).
"""
from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F

from transformer_course.attention import attention as reference_attention
from transformer_course.config import ModelConfig
from transformer_course.data import load_split, random_batch
from transformer_course.layers import FeedForward as ReferenceFeedForward
from transformer_course.model import TransformerBlock
from transformer_course.model import TransformerLM as ReferenceLM
from transformer_course.multi_head import MultiHeadAttention as ReferenceMultiHeadAttention
from transformer_course.train import VAL_SEED

from .base import (StudentError, call, compare, diagnose, explain, load_weights, mismatch, on_its_own, randn,
                   randomness, register, same, seeded)
from .mistakes import attention_mistakes, layer_norm_mistakes, small_variance

# Tolerances. Every input and weight below is O(1) and float32; a correct answer computed in another order
# (SDPA, a -1e9 mask fill, einsum, a hand-written LayerNorm) agrees with the reference to ~1e-6. The mistakes
# modelled here move the outputs by far more: most by O(0.1) to O(1), the subtlest (GELU's tanh approximation)
# by ~3e-4.
ATOL = 1e-5        # attention and single modules (one or two matrix products)
ATOL_MODEL = 1e-4  # whole models: a few layers of round-off, logits of size ~a few units
# On an input of small variance (var ~1e-6, below LayerNorm's eps 1e-5) a norm divides by sqrt(var + eps)
# ~3e-3, so the float32 round-off of its input comes out ~300 times larger. Measured, a hand-written norm in
# float32 or float64 against the float32 reference: up to 2.1e-4 in the block's output (20 seeds, both shapes
# and placements), 6e-5 in the model's logits. An epsilon mistake (1e-6, outside the square root, missing)
# changes the normalised values by a factor 2 to 3: the block's output by 0.7 to 1.6, the logits by 0.07 to 0.19.
ATOL_SMALL = 2e-3
GRAD_RTOL = 1e-3   # gradients, relative to their size: backward sums many terms in an order we do not fix
GRAD_ATOL = 1e-6
EPS = 1e-5         # nn.LayerNorm's default, the exercise's norms
SMALL = 1e-3       # sub-layer outputs are scaled by this in the small-variance cases: the residual stream
                   # then keeps the small variance of its input up to the norm that is judged


def _grad_atol(want):
    """Gradient tolerance: relative to the largest entry of the reference gradient."""
    return GRAD_ATOL + GRAD_RTOL * float(want.abs().max())


# --------------------------------------------------------------------------------------------------
# Seeded inputs and weights
# --------------------------------------------------------------------------------------------------
def _random_state(shapes, gen):
    """Weights of size O(1) for the documented names, in sorted order (so the judge rebuilds them).

    Norm gains are 1 ± 0.2 and biases ± 0.1 so that swapping norm1/norm2 or dropping a bias shows."""
    state = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if "norm" in name and name.endswith(".weight"):
            state[name] = 1.0 + randn(gen, *shape, scale=0.2)
        elif name.endswith(".bias"):
            state[name] = randn(gen, *shape, scale=0.1)
        elif name.endswith("_emb.weight"):
            state[name] = randn(gen, *shape, scale=0.5)
        else:  # (out, in) matrices: outputs of size ~1 for inputs of size ~1
            state[name] = randn(gen, *shape, scale=1 / math.sqrt(shape[1]))
    return state


def _small_state(state, layers=("o_proj",)):
    """``state`` with the output projections ``layers`` (attn.o_proj, ffn.down) scaled by SMALL: a residual
    stream of small variance stays small past them. In a block only attention's is scaled: both norms then
    see a small variance (pre-norm: norm2 reads x + attn(...); post-norm: norm1 reads it), and the FFN's output,
    of size 1, carries the difference a norm makes to the block's output."""
    return {k: v * SMALL if k.split(".")[-2] in layers else v for k, v in state.items()}


def _shapes(build):
    """The state-dict shapes of the module ``build()`` makes (the global random state is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        return {k: tuple(v.shape) for k, v in build().state_dict().items()}


def _lm_config(V, S, C, H, L, hidden, *, pre_norm=True):
    return ModelConfig(vocab_size=V, context_length=S, n_layer=L, n_embd=C, n_head=H, ffn_hidden=hidden,
                       activation="gelu", norm="layernorm", norm_eps=EPS, norm_placement="pre" if pre_norm else "post",
                       position="learned", bias=True, tie_embeddings=True)


def _reference_lm(V, S, C, H, L, hidden, state=None):
    """The reference model, with ``state`` loaded (tied: one tensor for both names)."""
    model = ReferenceLM(_lm_config(V, S, C, H, L, hidden), attn_impl="naive")
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model


@functools.lru_cache(maxsize=None)
def _lm_shapes(V, S, C, H, L, hidden):
    return _shapes(lambda: ReferenceLM(_lm_config(V, S, C, H, L, hidden)))


def _lm_state(seed, V, S, C, H, L, hidden):
    """Random weights for TransformerLM, lm_head.weight the same tensor as tok_emb.weight."""
    shapes = {k: v for k, v in _lm_shapes(V, S, C, H, L, hidden).items() if k != "lm_head.weight"}
    state = _random_state(shapes, seeded(seed))
    state["lm_head.weight"] = state["tok_emb.weight"]
    return state


def _small_lm_state(state):
    """``state`` on which the residual stream has a small variance at every norm, norm_f included: each row of
    both embeddings squeezed around its mean, the sub-layers' outputs scaled by SMALL."""
    small = _small_state(state, ("o_proj", "down"))
    small["tok_emb.weight"] = small_variance(state["tok_emb.weight"])
    small["pos_emb.weight"] = small_variance(state["pos_emb.weight"])
    small["lm_head.weight"] = small["tok_emb.weight"]
    return small


def _sub(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------------------------------
# The grader's versions of the graded names, with the exercise's signatures and state-dict names: put in the
# student's namespace to judge a later part on its own (``Student.substitute``)
# --------------------------------------------------------------------------------------------------
def _reference_attention_for_students(q, k, v, causal=True):
    """`attention(q, k, v, causal=True)` of part 1, the package's naive path."""
    return reference_attention(q, k, v, causal=causal, impl="naive")


class _ReferenceMultiHeadAttention(ReferenceMultiHeadAttention):
    """`MultiHeadAttention(n_embd, n_head)` of part 2: q_proj, k_proj, v_proj, o_proj with biases, causal."""

    def __init__(self, n_embd, n_head):
        super().__init__(n_embd, n_head, bias=True, impl="naive")


class _ReferenceFeedForward(ReferenceFeedForward):
    """`FeedForward(n_embd, ffn_hidden)` of part 3: down(gelu(up(x)))."""

    def __init__(self, n_embd, ffn_hidden):
        super().__init__(n_embd, ffn_hidden, "gelu", bias=True)


class _ReferenceBlock(TransformerBlock):
    """`Block(n_embd, n_head, ffn_hidden, pre_norm=True)` of part 4: norm1, attn, norm2, ffn. Its attention is
    PyTorch's SDPA (the same function as the naive path to ~1e-7): ex1.train, which trains the student's
    TransformerLM around it, then takes 2.0 s of CPU instead of 2.4 s with the student's own blocks."""

    def __init__(self, n_embd, n_head, ffn_hidden, pre_norm=True):
        super().__init__(_lm_config(16, 16, n_embd, n_head, 1, ffn_hidden, pre_norm=pre_norm), attn_impl="sdpa")


REFERENCE_CLASSES = (_ReferenceMultiHeadAttention, _ReferenceFeedForward, _ReferenceBlock)


def _plain_tensors(module, what):
    """A StudentError when one of the student's modules keeps a tensor as a plain attribute: such a tensor is
    not in state_dict() or buffers(), and model.to(device) leaves it behind (the forward pass then mixes
    devices). The grader's reference modules, and PyTorch's, are not inspected."""
    for name, sub in module.named_modules():
        if isinstance(sub, REFERENCE_CLASSES) or type(sub).__module__.startswith("torch."):
            continue
        plain = sorted(k for k, val in vars(sub).items() if isinstance(val, torch.Tensor))
        if plain:
            owner = f"{what}'s submodule `{name}`" if name else what
            raise StudentError(
                f"{owner} keeps {', '.join(f'self.{k}' for k in plain)} as a plain tensor attribute: it is not in "
                "state_dict() or buffers(), and model.to(device) does not move it. Register it instead: "
                f"self.register_buffer('{plain[0]}', tensor, persistent=False)")


def _random_in_training(first, second, what, part):
    """Two identical training-mode calls that differ: dropout (or another random step) in training mode."""
    if randomness(first, second, what):
        return (f"{what} in training mode gave different outputs for the same input twice: it has dropout (or "
                f"another random step); the {part} of this exercise has none (the notebook lists its layers), "
                "so remove it: with it, its training-mode output and gradients cannot be compared with the reference")
    return None


def _module_outputs(module, x, prefix=""):
    """``module(x)`` twice in evaluation mode, twice in training mode (no gradients): y, y_again, y_train,
    y_train_again, each name prefixed."""
    with torch.no_grad():
        module.eval()
        y, y_again = call(module, x), call(module, x)
        module.train()
        y_train, y_train_again = call(module, x), call(module, x)
        module.eval()
    return {f"{prefix}y": y, f"{prefix}y_again": y_again, f"{prefix}y_train": y_train,
            f"{prefix}y_train_again": y_train_again}


def _module_outputs_names(prefix=""):
    return tuple(f"{prefix}{k}" for k in ("y", "y_again", "y_train", "y_train_again"))


def _with_your_parts(outputs):
    """The outputs of a part run with the student's own earlier parts, or {} when those raise: the part is
    then judged alone (the ``alone_`` outputs, which the check declares), and the earlier part's own check
    reports the error."""
    try:
        return outputs()
    except Exception:
        return {}


def _verdict_with_your_parts(got, keys, judge):
    """``judge("")`` when the run with the student's earlier parts returned every one of ``keys``."""
    if all(k in got for k in keys):
        return judge("")
    return ["with your own earlier parts this part raised an error"]


def _noisy(got, prefix, what, part):
    """[the problem] when two identical calls differed, in evaluation or in training mode; else []."""
    noisy = (randomness(got[f"{prefix}y"], got[f"{prefix}y_again"], what)
             or _random_in_training(got[f"{prefix}y_train"], got[f"{prefix}y_train_again"], what, part))
    return [noisy] if noisy else []


def _judge_module(got, prefix, want, what, part, mistakes, *, atol):
    """Randomness first (evaluation, then training mode), then the output, then the training-mode output."""
    noisy = _noisy(got, prefix, what, part)
    if noisy:
        return noisy
    problems = compare(got[f"{prefix}y"], want, what, mistakes, atol=atol)
    if problems:
        return problems
    problem = mismatch(got[f"{prefix}y_train"], want, f"{what} in training mode (model.train())", atol=atol)
    return [explain(problem, "it computes something else in training mode (a branch on self.training); the "
                    f"{part} of this exercise computes the same function in both modes")] if problem else []


# --------------------------------------------------------------------------------------------------
# Functional models of the right answer and of known mistakes
# --------------------------------------------------------------------------------------------------
def _linear(sd, name, x):
    return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))


def _mha(sd, x, H, *, causal=True, split="heads", merge="heads", o_proj=True, v_proj="v_proj", residual=False):
    """MultiHeadAttention from a state dict. split/merge="heads" is right; the others model mistakes:
    split="no-transpose": (B, T, C).view(B, H, T, hd), the heads cut across positions;
    split="positions": view(B, T, H, hd) never transposed, so attention mixes heads, not positions;
    split="strided": view(B, T, hd, H), so head h is every H-th column instead of a block of hd columns;
    merge="no-transpose": (B, H, T, hd).reshape(B, T, C) without moving the head axis back;
    v_proj="k_proj": the values computed with the key projection (a copy-paste slip);
    residual: the module adds its input, as the block already does."""
    B, T, C = x.shape
    hd = C // H
    q, k, v = _linear(sd, "q_proj", x), _linear(sd, "k_proj", x), _linear(sd, v_proj, x)  # (B, T, C)
    if split == "heads":
        q, k, v = (t.view(B, T, H, hd).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
    elif split == "no-transpose":
        q, k, v = (t.reshape(B, H, T, hd) for t in (q, k, v))
    elif split == "strided":
        q, k, v = (t.view(B, T, hd, H).permute(0, 3, 1, 2) for t in (q, k, v))
    else:  # "positions": (B, T, H, hd) fed to attention as if it were (B, H, T, hd)
        q, k, v = (t.view(B, T, H, hd) for t in (q, k, v))
    y = reference_attention(q, k, v, causal=causal, impl="naive")
    if merge == "heads":
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
    else:
        y = y.reshape(B, T, C)
    y = _linear(sd, "o_proj", y) if o_proj else y
    return x + y if residual else y


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda h: F.gelu(h, approximate="tanh"),
    "relu": F.relu,
    "none": lambda h: h,
    "silu": F.silu,
}


def _ffn(sd, x, *, act="gelu", act_after_down=False, residual=False):
    if act_after_down:
        y = F.gelu(_linear(sd, "down", _linear(sd, "up", x)))
    else:
        y = _linear(sd, "down", ACTIVATIONS[act](_linear(sd, "up", x)))
    return x + y if residual else y


def _layer_norm(x, weight, bias):
    return F.layer_norm(x, x.shape[-1:], weight, bias, EPS)


def _norm_variants():
    """(hint, norm(x, weight, bias)) for each LayerNorm mistake of ``mistakes.layer_norm_mistakes``: the shared
    models, applied to whatever tensor reaches the norm inside a block or a model."""
    probe = torch.ones(1, 2)
    hints = [hint for hint, _ in layer_norm_mistakes(probe, probe[0], probe[0], EPS)]

    def variant(i):
        return lambda x, w, b: layer_norm_mistakes(x, w, b, EPS)[i][1]()

    return [(hint, variant(i)) for i, hint in enumerate(hints)]


def _final_norm_variants():
    """The LayerNorm mistakes, named for norm_f."""
    return [("in norm_f: " + hint.replace("(norm_eps / eps=1e-5)", "(nn.LayerNorm(n_embd) has eps=1e-5)"), norm)
            for hint, norm in _norm_variants()]


def _norm(sd, name, x, fn=_layer_norm):
    return fn(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def _block(sd, x, H, *, pre=True, attn_res=True, ffn_res=True, parallel=False, second_from_input=False,
           swap_norms=False, ffn_post_norm=False, causal=True, norm=_layer_norm):
    """One block from a state dict. pre=True: x + f(norm(x)); pre=False: norm(x + f(x)); the other knobs
    model mistakes (a residual dropped, both sub-layers reading the input, norm1/norm2 swapped, a wrong
    LayerNorm ``norm``...)."""
    n1, n2 = ("norm2", "norm1") if swap_norms else ("norm1", "norm2")
    attn = lambda h: _mha(_sub(sd, "attn."), h, H, causal=causal)  # noqa: E731
    ffn = lambda h: _ffn(_sub(sd, "ffn."), h)  # noqa: E731
    nrm = lambda name, h: _norm(sd, name, h, norm)  # noqa: E731
    if parallel:  # both sub-layers read the block input: x + attn(norm1(x)) + ffn(norm2(x))
        return x + attn(nrm(n1, x)) + ffn(nrm(n2, x))
    if pre:
        a = attn(nrm(n1, x))
        h = x + a if attn_res else a
        if ffn_post_norm:  # the FFN step written post-norm style inside a pre-norm block
            return nrm(n2, h + ffn(h))
        f = ffn(nrm(n2, h))
        return ((x if second_from_input else h) + f) if ffn_res else f
    a = attn(x)
    h = nrm(n1, x + a if attn_res else a)
    f = ffn(h)
    return nrm(n2, ((x if second_from_input else h) + f) if ffn_res else f)


def _decoder(sd, idx, H, L, *, positions=True, final_norm=True, pre=True, causal=True, out=None,
             emb_scale=1.0, norm_f=_layer_norm):
    """TransformerLM from a state dict; ``out`` overrides the output matrix (untied), ``norm_f`` the final norm."""
    T = idx.shape[1]
    x = sd["tok_emb.weight"][idx] * emb_scale  # (B, T, C)
    if positions:
        x = x + sd["pos_emb.weight"][:T]
    for i in range(L):
        x = _block(_sub(sd, f"blocks.{i}."), x, H, pre=pre, causal=causal)
    if final_norm:
        x = _norm(sd, "norm_f", x, norm_f)
    return x @ (sd["tok_emb.weight"] if out is None else out).T  # (B, T, vocab)


# --------------------------------------------------------------------------------------------------
# Part 1: attention
# --------------------------------------------------------------------------------------------------
def _qkv(p):
    gen = seeded(p.seed)
    return tuple(randn(gen, p.B, p.H, p.T, p.D) for _ in range(3))


@register("ex1.attention", "causal scaled dot-product attention", where="the `attention` cell (part 1)",
          params=dict(seed=0, B=2, H=3, T=6, D=8), outputs=("causal", "causal_again", "full"))
class Attention:
    @staticmethod
    def run(student, p):
        attention = student.get("attention", "(q, k, v, causal=True)")
        q, k, v = _qkv(p)
        return {"causal": call(attention, q, k, v, causal=True), "causal_again": call(attention, q, k, v, causal=True),
                "full": call(attention, q, k, v, causal=False)}

    @staticmethod
    def judge(got, p):
        q, k, v = _qkv(p)
        noisy = randomness(got["causal"], got["causal_again"], "attention(q, k, v)")
        if noisy:  # F.dropout is on unless told training=False: a function has no eval mode to switch it off
            return [noisy + "; attention has no dropout in this exercise (F.dropout(x, p) drops even in eval "
                    "mode unless given training=False)"]
        problems = []
        for key, causal in (("full", False), ("causal", True)):
            want = reference_attention(q, k, v, causal=causal, impl="naive")
            problems += compare(got[key], want, f"attention(..., causal={causal})", attention_mistakes(q, k, v, causal),
                                atol=ATOL)
        return problems


# --------------------------------------------------------------------------------------------------
# Part 2: multi-head attention
# --------------------------------------------------------------------------------------------------
def _mha_inputs(p):
    gen = seeded(p.seed)
    shapes = _shapes(lambda: ReferenceMultiHeadAttention(p.C, p.H, bias=True))
    state = _random_state(shapes, gen)
    return state, randn(gen, p.B, p.T, p.C)


def _mha_mistakes(state, x, H):
    return [
        ("the heads are split with a reshape to (B, n_head, T, head_dim) without a transpose: each 'head' then "
         "holds pieces of several positions; use .view(B, T, n_head, head_dim).transpose(1, 2)",
         lambda: _mha(state, x, H, split="no-transpose")),
        ("the heads are split with a reshape to (B, n_head, T, head_dim) without a transpose, and merged back "
         "the same way; use .view(B, T, n_head, head_dim).transpose(1, 2), and .transpose(1, 2).reshape(B, T, C)",
         lambda: _mha(state, x, H, split="no-transpose", merge="no-transpose")),
        ("attention runs over the heads instead of the positions: after .view(B, T, n_head, head_dim) the "
         "tensor must be transposed to (B, n_head, T, head_dim) before calling attention",
         lambda: _mha(state, x, H, split="positions", merge="no-transpose")),
        ("attention runs over the heads instead of the positions: after .view(B, T, n_head, head_dim) the "
         "tensor must be transposed to (B, n_head, T, head_dim) before calling attention (and transposed "
         "back before merging the heads)", lambda: _mha(state, x, H, split="positions")),
        ("the heads are split along the wrong axis: .view(B, T, head_dim, n_head) makes head h every n_head-th "
         "column; head h is the block of columns h*head_dim:(h+1)*head_dim, .view(B, T, n_head, head_dim)",
         lambda: _mha(state, x, H, split="strided")),
        ("the heads are concatenated in the wrong order: (B, n_head, T, head_dim) must be transposed back to "
         "(B, T, n_head, head_dim) before .reshape(B, T, C)",
         lambda: _mha(state, x, H, merge="no-transpose")),
        ("the output projection o_proj is not applied to the concatenated heads", lambda: _mha(state, x, H, o_proj=False)),
        ("the values are computed with k_proj (a copy-paste slip): v = self.v_proj(x)",
         lambda: _mha(state, x, H, v_proj="k_proj")),
        ("MultiHeadAttention adds its input to its output (a residual): the residual belongs to Block; "
         "MultiHeadAttention returns o_proj(heads) alone", lambda: _mha(state, x, H, residual=True)),
        ("the attention is not causal: MultiHeadAttention must call attention(..., causal=True)",
         lambda: _mha(state, x, H, causal=False)),
    ]


def _build(cls, args, state, what):
    """The student's module ``cls(*args)`` with ``state`` loaded, plain tensor attributes refused."""
    module = call(cls, *args)
    if isinstance(module, torch.nn.Module):  # load_weights explains what it should be otherwise
        _plain_tensors(module, what)
    load_weights(module, state, what)
    return module


@register("ex1.mha", "multi-head causal self-attention", where="the `MultiHeadAttention` cell (part 2)",
          params=dict(seed=0, B=2, T=5, C=12, H=3), outputs=_module_outputs_names("alone_"))
class MultiHead:
    @staticmethod
    def run(student, p):
        state, x = _mha_inputs(p)
        module = _build(student.get("MultiHeadAttention", "(n_embd, n_head)"), (p.C, p.H), state,
                        "your MultiHeadAttention")
        with student.substitute(attention=_reference_attention_for_students):
            out = _module_outputs(module, x, "alone_")
        out.update(_with_your_parts(lambda: _module_outputs(module, x)))
        return out

    @staticmethod
    def judge(got, p):
        state, x = _mha_inputs(p)
        reference = ReferenceMultiHeadAttention(p.C, p.H, bias=True, impl="naive")
        reference.load_state_dict(state)
        with torch.no_grad():
            want = reference(x)
        mistakes = _mha_mistakes(state, x, p.H)
        def judge(prefix):
            return _judge_module(got, prefix, want, "MultiHeadAttention(x)", "MultiHeadAttention", mistakes, atol=ATOL)

        return on_its_own(_verdict_with_your_parts(got, _module_outputs_names(), judge), judge("alone_"),
                          "MultiHeadAttention", "attention")


# --------------------------------------------------------------------------------------------------
# Part 3: feed-forward network
# --------------------------------------------------------------------------------------------------
def _ffn_inputs(p):
    gen = seeded(p.seed)
    state = _random_state(_shapes(lambda: ReferenceFeedForward(p.C, p.hidden, "gelu", bias=True)), gen)
    return state, randn(gen, p.B, p.T, p.C)


# hidden=24 = 3·C: a FeedForward that builds nn.Linear(n_embd, 4 * n_embd) instead of using ffn_hidden fails here
@register("ex1.ffn", "position-wise feed-forward network (GELU)", where="the `FeedForward` cell (part 3)",
          params=dict(seed=0, B=2, T=4, C=8, hidden=24), outputs=_module_outputs_names())
class FeedForwardCheck:
    @staticmethod
    def run(student, p):
        state, x = _ffn_inputs(p)
        module = _build(student.get("FeedForward", "(n_embd, ffn_hidden)"), (p.C, p.hidden), state, "your FeedForward")
        return _module_outputs(module, x)

    @staticmethod
    def judge(got, p):
        state, x = _ffn_inputs(p)
        reference = ReferenceFeedForward(p.C, p.hidden, "gelu", bias=True)
        reference.load_state_dict(state)
        with torch.no_grad():
            want = reference(x)
        return _judge_module(got, "", want, "FeedForward(x)", "FeedForward", [
            ("the activation is ReLU; this exercise uses GELU (F.gelu or nn.GELU())", lambda: _ffn(state, x, act="relu")),
            ("there is no activation between up and down: two linear layers in a row are one linear map",
             lambda: _ffn(state, x, act="none")),
            ("GELU's tanh approximation is used; this exercise uses the exact GELU (F.gelu(h) or nn.GELU() "
             "without approximate='tanh')", lambda: _ffn(state, x, act="gelu_tanh")),
            ("the activation is SiLU; this exercise uses GELU (F.gelu or nn.GELU())", lambda: _ffn(state, x, act="silu")),
            ("the activation is applied after down instead of between up and down: down(gelu(up(x)))",
             lambda: _ffn(state, x, act_after_down=True)),
            ("FeedForward adds its input to its output (a residual): the residual belongs to Block; "
             "forward(x) = down(gelu(up(x)))", lambda: _ffn(state, x, residual=True)),
        ], atol=ATOL)


# --------------------------------------------------------------------------------------------------
# Part 4: the block, pre-norm and post-norm
# --------------------------------------------------------------------------------------------------
def _block_inputs(p):
    """Weights, an input, and the small-variance case: the same input squeezed around its mean, with the
    sub-layers' outputs scaled down so that both norms see a small variance."""
    gen = seeded(p.seed)
    state = _random_state(_shapes(lambda: TransformerBlock(_lm_config(16, 16, p.C, p.H, 1, p.hidden))), gen)
    x = randn(gen, p.B, p.T, p.C)
    return state, x, _small_state(state), small_variance(x)


def _block_mistakes(state, x, H, pre_norm):
    if pre_norm:
        return [
            ("pre_norm=True computes a post-norm block, norm(x + f(x)); pre-norm is x = x + attn(norm1(x)), then "
             "x = x + ffn(norm2(x))", lambda: _block(state, x, H, pre=False)),
            ("the residual around attention is missing: x = x + attn(norm1(x)), not x = attn(norm1(x))",
             lambda: _block(state, x, H, attn_res=False)),
            ("the residual around the FFN is missing: x = x + ffn(norm2(x)), not x = ffn(norm2(x))",
             lambda: _block(state, x, H, ffn_res=False)),
            ("both residuals are missing: each sub-layer's output must be added to its input",
             lambda: _block(state, x, H, attn_res=False, ffn_res=False)),
            ("both sub-layers read the block's input (a parallel block); the FFN must read the output of the "
             "attention step: h = x + attn(norm1(x)); out = h + ffn(norm2(h))", lambda: _block(state, x, H, parallel=True)),
            ("the second residual adds the block's input instead of the attention step's output: "
             "h = x + attn(norm1(x)); out = h + ffn(norm2(h))", lambda: _block(state, x, H, second_from_input=True)),
            ("the FFN step normalises after the residual, norm2(h + ffn(h)); in pre-norm mode the norm goes on "
             "the sub-layer's input and the residual sum is left unnormalised: h + ffn(norm2(h))",
             lambda: _block(state, x, H, ffn_post_norm=True)),
            ("norm1 and norm2 are swapped: norm1 goes before attention, norm2 before the FFN",
             lambda: _block(state, x, H, swap_norms=True)),
            ("the attention is not causal inside the block", lambda: _block(state, x, H, causal=False)),
        ]
    return [
        ("pre_norm=False computes a pre-norm block; post-norm is x = norm1(x + attn(x)), then "
         "x = norm2(x + ffn(x))", lambda: _block(state, x, H, pre=True)),
        ("the residual around attention is missing: x = norm1(x + attn(x))", lambda: _block(state, x, H, pre=False, attn_res=False)),
        ("the residual around the FFN is missing: x = norm2(x + ffn(x))", lambda: _block(state, x, H, pre=False, ffn_res=False)),
        ("the second residual adds the block's input instead of the attention step's output: "
         "h = norm1(x + attn(x)); out = norm2(h + ffn(h))", lambda: _block(state, x, H, pre=False, second_from_input=True)),
        ("norm1 and norm2 are swapped: norm1 follows attention, norm2 follows the FFN",
         lambda: _block(state, x, H, pre=False, swap_norms=True)),
        ("the attention is not causal inside the block", lambda: _block(state, x, H, pre=False, causal=False)),
    ]


EPS_ADVICE = ("the output is right on ordinary inputs but not on an input of small variance, where LayerNorm's "
              "epsilon matters: use nn.LayerNorm(n_embd) (eps=1e-5), or, written by hand, "
              "(x - mean) / sqrt(var + 1e-5) with the biased variance")


def _judge_norms(got, want, what, mistakes, *, atol, named_only=False):
    """The output on an input of small variance: a wrong epsilon shows here by orders of magnitude. With
    ``named_only``, [] unless the output is one of the LayerNorm ``mistakes``."""
    problem = mismatch(got, want, f"{what} on an input of small variance", atol=atol)
    if problem is None:
        return []
    hint = diagnose(got, mistakes, atol=atol)
    if named_only and hint is None:
        return []
    return [explain(problem, hint or EPS_ADVICE)]


def _block_outputs(module, x, small_state, x_small, state, what, prefix=""):
    out = _module_outputs(module, x, prefix)
    load_weights(module, small_state, what)
    with torch.no_grad():
        out[f"{prefix}y_small"] = call(module, x_small)
    load_weights(module, state, what)
    return out


BLOCK_OUTPUTS = _module_outputs_names() + ("y_small",)


@register("ex1.block", "transformer block (pre-norm, and post-norm as an option)", where="the `Block` cell (part 4)",
          params=dict(seed=0, B=2, T=5, C=12, H=3, hidden=24, pre_norm=True),
          outputs=tuple(f"alone_{k}" for k in BLOCK_OUTPUTS))
class BlockCheck:
    @staticmethod
    def run(student, p):
        state, x, small_state, x_small = _block_inputs(p)
        what = f"your Block(pre_norm={p.pre_norm})"
        signature = "(n_embd, n_head, ffn_hidden, pre_norm=True)"
        args = (p.C, p.H, p.hidden)
        cls = student.get("Block", signature)
        with student.substitute(MultiHeadAttention=_ReferenceMultiHeadAttention, FeedForward=_ReferenceFeedForward):
            module = call(cls, *args, pre_norm=p.pre_norm)
            if isinstance(module, torch.nn.Module):
                _plain_tensors(module, what)
            load_weights(module, state, what)
            out = _block_outputs(module, x, small_state, x_small, state, what, "alone_")

        def yours():
            module = call(cls, *args, pre_norm=p.pre_norm)
            load_weights(module, state, what)
            return _block_outputs(module, x, small_state, x_small, state, what)

        out.update(_with_your_parts(yours))
        return out

    @staticmethod
    def judge(got, p):
        state, x, small_state, x_small = _block_inputs(p)
        reference = TransformerBlock(_lm_config(16, 16, p.C, p.H, 1, p.hidden, pre_norm=p.pre_norm), attn_impl="naive")
        reference.load_state_dict(state)
        with torch.no_grad():
            want = reference(x)
            reference.load_state_dict(small_state)
            want_small = reference(x_small)
        what = f"Block(pre_norm={p.pre_norm})(x)"
        mistakes = _block_mistakes(state, x, p.H, p.pre_norm) + [
            (hint, lambda norm=norm: _block(state, x, p.H, pre=p.pre_norm, norm=norm)) for hint, norm in _norm_variants()]
        norm_mistakes = [(hint, lambda norm=norm: _block(small_state, x_small, p.H, pre=p.pre_norm, norm=norm))
                         for hint, norm in _norm_variants()]

        def judge(prefix):
            noisy = _noisy(got, prefix, what, "Block")
            if noisy:
                return noisy
            # the small-variance input first: an epsilon mistake shows there by orders of magnitude, and only
            # faintly on the ordinary input, where it could pass for another mistake
            norms = _judge_norms(got[f"{prefix}y_small"], want_small, what, norm_mistakes, atol=ATOL_SMALL,
                                 named_only=True)
            return norms or _judge_module(got, prefix, want, what, "Block", mistakes, atol=ATOL) or \
                _judge_norms(got[f"{prefix}y_small"], want_small, what, norm_mistakes, atol=ATOL_SMALL)

        return on_its_own(_verdict_with_your_parts(got, BLOCK_OUTPUTS, judge), judge("alone_"),
                          "Block", "MultiHeadAttention or FeedForward")


# --------------------------------------------------------------------------------------------------
# Part 5: the decoder-only language model, and its gradients
# --------------------------------------------------------------------------------------------------
def _dims(p):
    return p.V, p.S, p.C, p.H, p.L, p.hidden


def _decoder_inputs(p):
    """Weights, token ids, ids with the tail changed at ``cut``, and a change to the token embedding."""
    state = _lm_state(p.seed, *_dims(p))
    gen = seeded(p.seed + 10_000)
    idx = torch.randint(0, p.V, (p.B, p.T), generator=gen)
    cut = p.T // 2
    changed = idx.clone()
    changed[:, cut:] = (idx[:, cut:] + 1 + torch.randint(0, p.V - 1, (p.B, p.T - cut), generator=gen)) % p.V  # all differ
    delta = randn(gen, p.V, p.C, scale=0.5)
    return state, idx, changed, cut, delta


def _student_lm(student, state, V, S, C, H, L, hidden, *, own_block=True):
    """The student's TransformerLM with ``state`` loaded; with ``own_block=False`` built around the reference
    Block (the student's namespace holds it while the model is built and used: call inside the substitute)."""
    cls = student.get("TransformerLM", "(vocab_size, context_length, n_embd, n_head, n_layer, ffn_hidden)")
    model = call(cls, V, S, C, H, L, hidden)
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, (list, tuple)):
        raise StudentError("your TransformerLM keeps its blocks in a Python list, which hides them from state_dict(), "
                           "parameters() and the optimiser: use nn.ModuleList(...)")
    if not own_block and isinstance(model, torch.nn.Module):
        _plain_tensors(model, "your TransformerLM")
    load_weights(model, state, "your TransformerLM")
    return model


@contextlib.contextmanager
def _reference_block(student):
    with student.substitute(Block=_ReferenceBlock):
        yield


def _embedding_parameter(model):
    params = dict(model.named_parameters(remove_duplicate=False))
    if "tok_emb.weight" not in params:
        raise StudentError("your TransformerLM's tok_emb.weight is not a parameter: make tok_emb an nn.Embedding.")
    return params["tok_emb.weight"]


# past_context: what TransformerLM(idx) did with T = context_length + 1
PAST_CONTEXT = {0.0: "returned logits", 1.0: "raised ValueError",
                2.0: "raised another exception than ValueError (nn.Embedding raises IndexError past its table)"}


def _decoder_outputs(student, p, prefix, own_block):
    state, idx, changed, cut, delta = _decoder_inputs(p)
    model = _student_lm(student, state, *_dims(p), own_block=own_block)
    model.eval()
    out = {}
    with torch.no_grad():
        out[f"{prefix}logits"], out[f"{prefix}logits_again"] = call(model, idx), call(model, idx)
        out[f"{prefix}logits_changed"] = call(model, changed)
        load_weights(model, _small_lm_state(state), "your TransformerLM")
        out[f"{prefix}logits_small"] = call(model, idx)
        load_weights(model, state, "your TransformerLM")
        _embedding_parameter(model).add_(delta)  # a tied output layer moves with the embedding
        out[f"{prefix}logits_moved"] = call(model, idx)
        too_long = torch.zeros(1, p.S + 1, dtype=torch.long)
        try:
            model(too_long)
            code = 0.0
        except ValueError:
            code = 1.0
        except Exception:  # IndexError from the embedding, or anything else: not the spec'd ValueError
            code = 2.0
    out[f"{prefix}past_context"] = torch.tensor(code)
    return out


DECODER_KEYS = ("logits", "logits_again", "logits_changed", "logits_small", "logits_moved", "past_context")


@register("ex1.decoder", "decoder-only language model: logits, causality, tied output layer",
          where="the `TransformerLM` cell (part 5)",
          params=dict(seed=0, B=2, T=8, V=32, S=12, C=16, H=2, L=2, hidden=32),
          outputs=tuple(f"alone_{k}" for k in DECODER_KEYS))
class Decoder:
    @staticmethod
    def run(student, p):
        with _reference_block(student):
            out = _decoder_outputs(student, p, "alone_", own_block=False)
        out.update(_with_your_parts(lambda: _decoder_outputs(student, p, "", own_block=True)))
        return out

    @staticmethod
    def judge(got, p):
        state, idx, changed, cut, delta = _decoder_inputs(p)
        model = _reference_lm(*_dims(p), state).eval()
        with torch.no_grad():
            want, want_changed = model(idx), model(changed)
            model.load_state_dict(_small_lm_state(state))
            want_small = model(idx)
        moved = dict(state)
        moved["tok_emb.weight"] = state["tok_emb.weight"] + delta
        moved["lm_head.weight"] = moved["tok_emb.weight"]
        with torch.no_grad():
            want_moved = _reference_lm(*_dims(p), moved).eval()(idx)
        wants = dict(logits=want, logits_changed=want_changed, logits_small=want_small, logits_moved=want_moved)
        def judge(prefix):
            return Decoder._judge(got, prefix, p, state, idx, cut, moved, wants)

        return on_its_own(_verdict_with_your_parts(got, DECODER_KEYS, judge), judge("alone_"), "TransformerLM", "Block")

    @staticmethod
    def _judge(got, prefix, p, state, idx, cut, moved, wants):
        B, T, V, H, L = p.B, p.T, p.V, p.H, p.L
        logits = got[f"{prefix}logits"]
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (B, T, V):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            return [f"TransformerLM(idx) for idx of shape (B, T) = {(B, T)} returned shape {shape}; it must return "
                    f"logits of shape (B, T, vocab_size) = {(B, T, V)}"]
        noisy = randomness(logits, got[f"{prefix}logits_again"], "TransformerLM(idx) after model.eval()")
        if noisy:  # before causality: two noisy passes differ everywhere, the past included
            return [noisy + " (F.dropout(x, p) drops unless given training=self.training; this model has no dropout)"]
        problems = []
        early, early_changed = logits[:, :cut].double(), got[f"{prefix}logits_changed"][:, :cut].double()
        if early_changed.shape == early.shape and not torch.allclose(early, early_changed, atol=ATOL_MODEL, rtol=0):
            problems.append(
                f"changing the tokens at positions {cut}..{T - 1} changed the logits at positions 0..{cut - 1}: "
                "the model sees the future. Check the causal mask in `attention` and that MultiHeadAttention "
                "calls it with causal=True")
        want = wants["logits"]
        mistakes = [
            ("the position embedding is not added: x = tok_emb(idx) + pos_emb(torch.arange(T))",
             lambda: _decoder(state, idx, H, L, positions=False)),
            ("the final LayerNorm (norm_f) is not applied before the output layer",
             lambda: _decoder(state, idx, H, L, final_norm=False)),
            ("the blocks are post-norm; TransformerLM stacks pre-norm blocks (Block's default, pre_norm=True)",
             lambda: _decoder(state, idx, H, L, pre=False, final_norm=False)),
            ("the blocks are post-norm and followed by norm_f; TransformerLM stacks pre-norm blocks (pre_norm=True)",
             lambda: _decoder(state, idx, H, L, pre=False)),
            ("the model returns probabilities (softmax of the logits); forward must return the logits themselves",
             lambda: torch.softmax(want, dim=-1)),
            ("the model returns log-probabilities (log_softmax); forward must return the logits themselves",
             lambda: torch.log_softmax(want, dim=-1)),
            ("the token embedding is scaled by sqrt(n_embd); this model adds tok_emb(idx) and pos_emb(...) as they are",
             lambda: _decoder(state, idx, H, L, emb_scale=math.sqrt(p.C))),
            ("the attention is not causal", lambda: _decoder(state, idx, H, L, causal=False)),
        ] + [(hint, lambda norm=norm: _decoder(state, idx, H, L, norm_f=norm)) for hint, norm in _final_norm_variants()]
        small = _small_lm_state(state)
        norm_mistakes = [(hint, lambda norm=norm: _decoder(small, idx, H, L, norm_f=norm))
                         for hint, norm in _final_norm_variants()]
        # a wrong epsilon in norm_f first: it shows on the small-variance case, barely on the ordinary one
        norms = _judge_norms(got[f"{prefix}logits_small"], wants["logits_small"], "TransformerLM(idx)", norm_mistakes,
                             atol=ATOL_SMALL, named_only=True)
        problems += norms or compare(logits, want, "TransformerLM(idx)", mistakes, atol=ATOL_MODEL)
        if problems:
            return problems
        problems += compare(got[f"{prefix}logits_changed"], wants["logits_changed"],
                            "TransformerLM(idx) for a second input", [], atol=ATOL_MODEL)
        problems += compare(got[f"{prefix}logits_moved"], wants["logits_moved"],
                            "TransformerLM(idx) after a change to tok_emb.weight", [
            ("the output layer is not tied to the token embedding: changing tok_emb.weight must change lm_head too; "
             "write self.lm_head.weight = self.tok_emb.weight after creating both",
             lambda: _decoder(moved, idx, H, L, out=state["tok_emb.weight"])),
        ], atol=ATOL_MODEL)
        problems += _judge_norms(got[f"{prefix}logits_small"], wants["logits_small"], "TransformerLM(idx)",
                                 norm_mistakes, atol=ATOL_SMALL)
        code = float(got[f"{prefix}past_context"])
        if code != 1.0:
            problems.append(f"TransformerLM(idx) with T = context_length + 1 = {p.S + 1} tokens "
                            f"{PAST_CONTEXT.get(code, 'did something else')}; it must raise a ValueError that says "
                            "the sequence is longer than context_length (there is no learned position for it): "
                            "check T against self.context_length at the start of forward")
        return problems


def _gradient_inputs(seed, B, T, V):
    gen = seeded(seed + 20_000)
    return torch.randint(0, V, (B, T), generator=gen), torch.randint(0, V, (B, T), generator=gen)


def _reference_gradients(state, idx, targets, dims, *, tied=True):
    """Loss and gradients of the reference model, by parameter name (a tied weight under both names)."""
    model = _reference_lm(*dims, state)
    if not tied:  # an untied model with the same values: lm_head gets its own copy
        model.lm_head.weight = torch.nn.Parameter(state["tok_emb.weight"].clone())
    logits = model(idx)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters(remove_duplicate=False)}
    return loss.detach(), grads


def _gradient_outputs(student, p, prefix, own_block):
    state = _lm_state(p.seed, *_dims(p))
    idx, targets = _gradient_inputs(p.seed, p.B, p.T, p.V)
    model = _student_lm(student, state, *_dims(p), own_block=own_block)
    model.train()
    model.zero_grad(set_to_none=True)
    logits = call(model, idx)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    with torch.no_grad():  # the same forward pass again: dropout would give another loss
        again = call(model, idx)
    out = {f"{prefix}loss": loss.detach(), f"{prefix}logits_train": logits.detach(), f"{prefix}logits_train_again": again}
    for name, param in model.named_parameters(remove_duplicate=False):
        if param.grad is not None:
            out[f"{prefix}grad.{name}"] = param.grad
    return out


GRADIENT_KEYS = ("loss", "logits_train", "logits_train_again")


@register("ex1.gradients", "gradients reach every parameter and match the reference",
          where="the `TransformerLM` cell (part 5): every parameter must be used in forward, without detach()",
          params=dict(seed=0, B=2, T=8, V=32, S=12, C=16, H=2, L=2, hidden=32),
          outputs=tuple(f"alone_{k}" for k in GRADIENT_KEYS))
class Gradients:
    @staticmethod
    def run(student, p):
        with _reference_block(student):
            out = _gradient_outputs(student, p, "alone_", own_block=False)
        out.update(_with_your_parts(lambda: _gradient_outputs(student, p, "", own_block=True)))
        return out

    @staticmethod
    def judge(got, p):
        dims = _dims(p)
        state = _lm_state(p.seed, *dims)
        idx, targets = _gradient_inputs(p.seed, p.B, p.T, p.V)
        loss, grads = _reference_gradients(state, idx, targets, dims)
        untied = []  # computed once, when a tied weight's gradient is wrong

        def judge(prefix):
            noisy = _random_in_training(got[f"{prefix}logits_train"], got[f"{prefix}logits_train_again"],
                                           "TransformerLM(idx)", "TransformerLM")
            if noisy:
                return [noisy + " (dropout on the embeddings is the usual place)"]
            problem = mismatch(got[f"{prefix}loss"], loss, "the cross-entropy loss of your model's logits in "
                               "training mode", atol=ATOL_MODEL)
            if problem:
                return [problem + "; the forward pass in training mode (model.train()) is wrong, so the gradients "
                        "are too: if ex1.decoder passes (it runs in evaluation mode), look for what only training "
                        "mode changes (a branch on self.training)"]
            problems = []
            for name in sorted(grads):
                key = f"{prefix}grad.{name}"
                if key not in got:
                    hint = (" - is the position embedding added in forward?" if name.startswith("pos_emb") else
                            " - is this layer used in forward, and is nothing detached (.detach(), .data, torch.no_grad)?")
                    problems.append(f"no gradient reached {name}{hint}")
                    continue
                problem = mismatch(got[key], grads[name], f"the gradient of {name}", atol=_grad_atol(grads[name]))
                if problem:
                    if name in ("tok_emb.weight", "lm_head.weight"):
                        if not untied:
                            untied.append(_reference_gradients(state, idx, targets, dims, tied=False)[1])
                        if same(got[key], untied[0][name], _grad_atol(untied[0][name])):
                            problem = explain(problem, "the output layer is not tied to the token embedding, so each "
                                              "matrix gets only its own share of the gradient; write "
                                              "self.lm_head.weight = self.tok_emb.weight")
                    problems.append(problem)
            return problems

        return on_its_own(_verdict_with_your_parts(got, GRADIENT_KEYS, judge), judge("alone_"),
                          "TransformerLM", "Block")


# --------------------------------------------------------------------------------------------------
# Part 6: a short training run with the grader's loop, judged on held-out text by the reference model
# --------------------------------------------------------------------------------------------------
# The grader's training run: a 2-layer model on byte windows of the course corpus. AdamW at lr 5e-3 after a
# 10-step linear warm-up, gradients clipped at 1, 80 steps of 16 windows of 64 bytes: about 2 s on one
# thread. (At lr 1e-2 the loss sometimes spiked: 2 seeds in 16 ended 0.4 bits higher, a correct model could
# fail.) The student's TransformerLM is trained around the reference Block (each part is judged on its own:
# the blocks are ex1.block's), so this part grades what only training exercises in the TransformerLM cell:
# its initialisation, dropout, weights re-initialised inside forward, parameters the optimiser cannot see.
TRAIN = dict(V=256, S=64, C=64, H=4, L=2, hidden=256)
TRAIN_STEPS, TRAIN_WARMUP, TRAIN_BATCH, TRAIN_SEQ, TRAIN_LR = 80, 10, 16, 64, 5e-3
VAL_BATCHES = 8  # fixed validation batches, drawn with the training loop's own VAL_SEED
# Threshold in bits per byte on the "val" split (the loss in nats divided by ln 2, the unit the course states
# model losses in). The course's solution trained by this loop scores 3.77 to 4.04 bits (2.61 to 2.80 nats;
# seeds 0-31, mean 3.92 bits, measured with its own blocks; seeds 0-7 on two threads agree within 0.006; around
# the reference Block, as the check trains it now, seeds 0-11 score 3.80 to 3.96, mean 3.90); the range is
# stated in the failure message. Predicting bytes by their frequency alone (the unigram baseline,
# transformer_course.baselines) scores 4.72, an untrained model log2 256 = 8. 3 nats = 4.33 bits leaves 0.29
# above the worst seed for a correct model whose round-off sends training down another path, and still demands
# a model that uses context: it must beat the unigram baseline by 0.39 bits.
TRAIN_MAX_VAL_BITS = 3.0 / math.log(2)
TRAIN_REFERENCE_RANGE = (3.77, 4.04)


@contextlib.contextmanager
def _one_thread():
    """Matrices this small gain nothing from more threads, and on a busy machine threads that wait on each
    other made the training run ten times slower (measured: 45 s instead of 5 s for two runs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def _split(name):
    return load_split(name)


def _initial_state(seed):
    """GPT-2 initialisation (the reference model's), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ReferenceLM(_lm_config(**TRAIN))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def validation_loss(model):
    """Mean next-byte loss (nats) of ``model`` on fixed windows of the "val" split."""
    gen, total = seeded(VAL_SEED), 0.0
    with torch.no_grad():
        for _ in range(VAL_BATCHES):
            x, y = random_batch(_split("val"), TRAIN_BATCH, TRAIN_SEQ, gen)
            logits = model(x)
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)))
    return total / VAL_BATCHES


@register("ex1.train", "a short training run reaches the stated validation loss",
          where="the `TransformerLM` cell (part 5): the grader trains it with its own loop",
          params=dict(seed=0), outputs=tuple(sorted(_lm_shapes(*TRAIN.values()))))
class Train:
    @staticmethod
    def run(student, p):
        with _one_thread(), _reference_block(student):
            return Train._train(student, p.seed)

    @staticmethod
    def _train(student, seed):
        state = _initial_state(seed)
        model = _student_lm(student, state, *TRAIN.values(), own_block=False)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR, betas=(0.9, 0.95), weight_decay=0.0)
        gen = seeded(seed)
        for step in range(TRAIN_STEPS):
            for group in optimizer.param_groups:  # linear warm-up, then constant
                group["lr"] = TRAIN_LR * min(1.0, (step + 1) / TRAIN_WARMUP)
            x, y = random_batch(_split("train"), TRAIN_BATCH, TRAIN_SEQ, gen)
            logits = call(model, x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        return {name: t.detach() for name, t in model.state_dict().items()}

    @staticmethod
    def judge(got, p):
        shapes = _lm_shapes(*TRAIN.values())
        wrong = [f"{k}: {tuple(got[k].shape)}, expected {shapes[k]}" for k in shapes if tuple(got[k].shape) != shapes[k]]
        if wrong:
            return ["the trained weights have the wrong shapes: " + "; ".join(wrong)]
        if not all(torch.isfinite(got[k]).all() for k in shapes):
            return ["training diverged: the trained weights contain NaN or infinity"]
        if not torch.equal(got["lm_head.weight"], got["tok_emb.weight"]):
            return ["after training, lm_head.weight and tok_emb.weight differ: the output layer is not tied to the "
                    "token embedding (write self.lm_head.weight = self.tok_emb.weight)"]
        model = _reference_lm(*TRAIN.values(), {k: got[k].float() for k in shapes}).eval()
        with _one_thread():
            bits = validation_loss(model) / math.log(2)
        if not bits <= TRAIN_MAX_VAL_BITS:
            low, high = TRAIN_REFERENCE_RANGE
            return [f"after {TRAIN_STEPS} steps of the grader's training loop (your TransformerLM around the "
                    f"reference Block), your model's weights score a validation loss of {bits:.2f} bits per byte in "
                    f"the reference architecture; a correct model reaches {low:.2f}-{high:.2f} and the threshold is "
                    f"{TRAIN_MAX_VAL_BITS:.2f}. If the other checks pass, look for what only training exercises: "
                    "dropout, weights re-initialised inside forward, parameters the optimiser cannot see"]
        return []
