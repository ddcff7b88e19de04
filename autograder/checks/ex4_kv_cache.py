"""Checks for exercise 4, the KV cache.

Graded names (stated at the top of the notebook):
    KVCache(batch_size, n_kv_head, max_len, head_dim, *, device=None, dtype=None)
        k_cache, v_cache: (batch_size, n_kv_head, max_len, head_dim) buffers allocated once, in __init__
        pos: number of positions stored (the absolute position of the next token)
        update(k, v) -> (k_all, v_all): stores k, v (B, n_kv_head, T, head_dim) at [pos, pos + T), advances pos,
            returns views of the buffers (B, n_kv_head, pos, head_dim); ValueError when it would overflow
        reset(): pos = 0, keeping the memory
    CachedSelfAttention(n_embd, n_head, n_kv_head, *, max_len=256, rope_base=10000.0)   (__init__ given)
        forward(x): (B, T, C) -> (B, T, C); weights q_proj, k_proj, v_proj, o_proj (no biases);
        self.cache is None or an object with .pos and .update(k, v) (the grader plugs in its own)
    generate(model, idx, max_new_tokens, use_cache=True) -> (B, T + max_new_tokens), greedy
        model: model(idx) -> logits, model.setup_cache(batch_size, max_len), model.reset_cache(),
        model.remove_cache(), model.cache_length (the grader passes the package's TransformerLM)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from transformer_course.config import ModelConfig
from transformer_course.generate import generate as reference_generate
from transformer_course.kv_cache import KVCache as ReferenceKVCache
from transformer_course.model import TransformerLM
from transformer_course.multi_head import MultiHeadAttention
from transformer_course.positions import RotaryEmbedding, apply_rope

from .base import StudentError, call, diagnose, expect_keys, explain, load_weights, mismatch, randn, register, seeded

ATOL = 1e-5  # float32 attention on activations of size ~1: a correct answer agrees to ~1e-6

REALLOCATED = ("the cache was reallocated: k_cache/v_cache moved to new memory (their data_ptr changed). Allocate "
               "the buffers once in __init__ and write into them with slice assignment "
               "(self.k_cache[:, :, pos:pos + T] = k); torch.cat allocates and copies a new tensor at every step")


# --------------------------------------------------------------------------------------------------
# Part 1: KVCache
# --------------------------------------------------------------------------------------------------
def _ints(t):
    """A tensor of the student's side as a list of ints (NaN, which cannot be an int, becomes -1)."""
    return [int(x) if x == x else -1 for x in t.reshape(-1).double().tolist()]


def _flag(t):
    values = _ints(t)
    return values[0] if values else -1


def _chunks(seed, B, n_kv_head, D, lengths):
    gen = seeded(seed)
    return [(randn(gen, B, n_kv_head, T, D), randn(gen, B, n_kv_head, T, D)) for T in lengths]


def _buffers(cache):
    bufs = []
    for name in ("k_cache", "v_cache"):
        buf = getattr(cache, name, None)
        if not isinstance(buf, torch.Tensor):
            raise StudentError(f"your KVCache has no tensor attribute `{name}`: allocate it in __init__ with shape "
                               "(batch_size, n_kv_head, max_len, head_dim).")
        bufs.append(buf)
    return bufs


def _pos(cache):
    if not hasattr(cache, "pos"):
        raise StudentError("your KVCache has no attribute `pos` (the number of positions stored): set self.pos = 0 "
                           "in __init__ and advance it in update.")
    return int(cache.pos)


def _shares(t, buf):
    return isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()


def _pair(result, what):
    if not (isinstance(result, (tuple, list)) and len(result) == 2
            and all(isinstance(t, torch.Tensor) for t in result)):
        raise StudentError(f"{what} should return a pair of tensors (k_all, v_all), got {type(result).__name__}.")
    return result


@register("ex4.kv_cache", "KVCache: a preallocated cache that grows without reallocation",
          where="the `KVCache` cell (part 1)")
class Cache:
    @staticmethod
    def run(student, seed=0, B=2, n_kv_head=2, max_len=7, D=4, lengths=(3, 1, 1, 2)):
        KVCache = student.get("KVCache", "(batch_size, n_kv_head, max_len, head_dim)")
        cache = call(KVCache, B, n_kv_head, max_len, D)
        k_buf, v_buf = _buffers(cache)
        out = {"k_shape": torch.tensor(k_buf.shape), "v_shape": torch.tensor(v_buf.shape)}
        first = [k_buf.data_ptr(), v_buf.data_ptr()]
        ptrs, positions, views = [first], [_pos(cache)], []
        stored = 0
        for i, (k, v) in enumerate(_chunks(seed, B, n_kv_head, D, lengths)):
            try:
                k_all, v_all = _pair(call(cache.update, k.clone(), v.clone()), "update(k, v)")
            except StudentError:
                raise
            except Exception as err:  # explain the failure with what the cache did before it
                extra = ""
                if isinstance(err, ValueError) and stored + k.shape[2] <= max_len:
                    extra = (f" The cache was not full: a cache of max_len={max_len} positions must accept exactly "
                             f"max_len positions (check pos + T > max_len).")
                if ptrs[-1] != first:
                    extra += " Note: " + REALLOCATED + "."
                said = str(err).rstrip(".")
                raise StudentError(f"update number {i + 1} (T={k.shape[2]}, with {stored} positions stored, "
                                   f"max_len={max_len}) raised {type(err).__name__}: {said}.{extra}") from err
            stored += k.shape[2]
            k_buf, v_buf = _buffers(cache)
            ptrs.append([k_buf.data_ptr(), v_buf.data_ptr()])
            positions.append(_pos(cache))
            views.append([_shares(k_all, k_buf), _shares(v_all, v_buf)])
            out[f"k_all{i}"], out[f"v_all{i}"] = k_all.clone(), v_all.clone()  # views: later writes would change them
        overflow = max_len - stored + 1  # one position more than fits
        extra_k = torch.zeros(B, n_kv_head, overflow, D)
        try:
            cache.update(extra_k, extra_k.clone())
            raised = 0
        except ValueError:
            raised = 1
        except Exception:  # noqa: BLE001 - reported as "not a ValueError"
            raised = 2
        call(cache.reset)
        k_buf, v_buf = _buffers(cache)
        out["pos_reset"] = torch.tensor(_pos(cache))
        ptrs.append([k_buf.data_ptr(), v_buf.data_ptr()])
        (k_new, v_new), = _chunks(seed + 1, B, n_kv_head, D, (2,))
        out["k_reset"], out["v_reset"] = _pair(call(cache.update, k_new.clone(), v_new.clone()), "update(k, v)")
        out["ptrs"] = torch.tensor(ptrs, dtype=torch.int64)  # data_ptr of (k_cache, v_cache): start, updates, reset
        out["positions"] = torch.tensor(positions)
        out["views"] = torch.tensor(views)
        out["overflow"] = torch.tensor(raised)
        return out

    @staticmethod
    def judge(got, seed=0, B=2, n_kv_head=2, max_len=7, D=4, lengths=(3, 1, 1, 2)):
        keys = ["k_shape", "v_shape", "pos_reset", "k_reset", "v_reset", "ptrs", "positions", "views", "overflow"]
        keys += [f"{kv}_all{i}" for i in range(len(lengths)) for kv in "kv"]
        missing = expect_keys(got, keys)
        if missing:
            return missing
        problems = []
        shape = [B, n_kv_head, max_len, D]
        for name in ("k", "v"):
            if _ints(got[f"{name}_shape"]) != shape:
                problems.append(
                    f"{name}_cache has shape {tuple(_ints(got[f'{name}_shape']))} right after __init__, expected "
                    f"(batch_size, n_kv_head, max_len, head_dim) = {tuple(shape)}: allocate the whole buffer once, "
                    "in __init__ (torch.zeros), so that decoding never allocates")
        want_pos = [0] + [sum(lengths[:i + 1]) for i in range(len(lengths))]
        got_pos = _ints(got["positions"])
        if got_pos != want_pos:
            if len(set(got_pos)) == 1:
                problems.append(f"pos does not advance: it stayed {got_pos[0]} through updates of T={list(lengths)} "
                                "new positions; add T to self.pos in update")
            else:
                problems.append(f"after updates of T={list(lengths)} new positions, pos was {got_pos}, expected "
                                f"{want_pos} (pos counts the positions stored)")
        chunks = _chunks(seed, B, n_kv_head, D, lengths)
        for i in range(len(lengths)):
            for j, name in enumerate(("k", "v")):
                want = torch.cat([c[j] for c in chunks[:i + 1]], dim=2)  # everything stored so far, in order
                problem = mismatch(got[f"{name}_all{i}"], want,
                                   f"the {name}_all returned by update number {i + 1}", atol=0)
                if problem:
                    problems.append(problem + f" (it should hold the {want.shape[2]} positions stored so far, in "
                                              "the order they were added)")
                    break
            else:
                continue
            break
        ptrs = got["ptrs"]
        n_updates = len(lengths)
        if ptrs.dim() != 2 or ptrs.shape[1] != 2:
            return problems + ["the check's record of buffer addresses is malformed (did your code stop it early?)"]
        if ptrs.shape[0] >= n_updates + 2 and not torch.equal(ptrs[1:n_updates + 1], ptrs[:1].expand(n_updates, 2)):
            problems.append(REALLOCATED)
        views = got["views"]
        if views.numel() and not bool(views.all()):
            problems.append("update returned a copy, not a view of the cache buffer: return "
                            "self.k_cache[:, :, :self.pos] (slicing makes a view; .clone() or torch.cat copy, which "
                            "costs memory and time at every step)")
        raised = _flag(got["overflow"])
        if raised == 0:
            problems.append(f"an update beyond max_len={max_len} positions raised no error: check pos + T > max_len "
                            "in update and raise ValueError saying that the cache is full")
        elif raised == 2:
            problems.append(f"an update beyond max_len={max_len} positions raised an exception other than ValueError "
                            "(probably PyTorch's own shape error): check pos + T > max_len yourself, before writing, "
                            "and raise ValueError with a message that says the cache is full")
        if _flag(got["pos_reset"]) != 0:
            problems.append(f"reset() did not set pos back to 0 (it is {_flag(got['pos_reset'])})")
        if ptrs.shape[0] >= n_updates + 2 and not torch.equal(ptrs[-1], ptrs[-2]):  # reset itself moved them
            problems.append("reset() allocated new buffers (the data_ptr of k_cache/v_cache changed): keep the memory "
                            "and only set pos = 0; the old entries are simply overwritten")
        (k_new, v_new), = _chunks(seed + 1, B, n_kv_head, D, (2,))
        for name, want in (("k", k_new), ("v", v_new)):
            problem = mismatch(got[f"{name}_reset"], want, f"the {name}_all returned by the first update after reset()",
                               atol=0)
            if problem:
                problems.append(problem + " (after reset the cache holds only the new positions)")
                break
        return problems


# --------------------------------------------------------------------------------------------------
# Part 2: CachedSelfAttention
# --------------------------------------------------------------------------------------------------
MAX_LEN = 64  # RoPE table size of the attention under test (positions beyond it are computed anyway)


class _GraderCache(ReferenceKVCache):
    """The package's cache with the interface of the exercise (``pos``) and a clear message on a shape error."""

    @property
    def pos(self) -> int:
        return self.length

    def update(self, k, v):
        B, n_kv_head, _, head_dim = self.k.shape
        for name, t in (("k", k), ("v", v)):
            if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[0] != B or t.shape[1] != n_kv_head \
                    or t.shape[3] != head_dim:
                shown = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise StudentError(
                    f"cache.update got {name} of shape {shown}, but the cache stores (B={B}, n_kv_head={n_kv_head}, "
                    f"T, head_dim={head_dim}): pass the n_kv_head key/value heads, after RoPE and before any repeat "
                    "(a cache of n_head copies would waste exactly the memory GQA saves).")
        return super().update(k, v)


def _attn_state(seed, n_embd, n_head, n_kv_head):
    gen = seeded(seed)
    hd = n_embd // n_head
    s = 1 / math.sqrt(n_embd)
    return {"q_proj.weight": randn(gen, n_head * hd, n_embd, scale=s),
            "k_proj.weight": randn(gen, n_kv_head * hd, n_embd, scale=s),
            "v_proj.weight": randn(gen, n_kv_head * hd, n_embd, scale=s),
            "o_proj.weight": randn(gen, n_embd, n_head * hd, scale=s)}


def _attn_input(seed, B, S, n_embd):
    return randn(seeded(seed + 1000), B, S, n_embd)


def _manual_steps(state, x, n_head, n_kv_head, lengths, *, positions="absolute", mask="right", keys="all",
                  rotate_k=True):
    """What a (possibly wrong) cached attention returns for each chunk of ``lengths``, written out.

    positions: "absolute" (right) or "restart" (every call rotates its tokens as positions 0..T-1).
    mask: "right" (query at absolute position p sees keys <= p), "top_left" (SDPA's is_causal with a cache:
        query i sees keys 0..i), "none". keys: "all" (cached + new, right) or "new" (update's result ignored).
    """
    B, S, C = x.shape
    hd = C // n_head
    rope = RotaryEmbedding(hd, context_length=MAX_LEN)
    q = (x @ state["q_proj.weight"].T).view(B, S, n_head, hd).transpose(1, 2)
    k = (x @ state["k_proj.weight"].T).view(B, S, n_kv_head, hd).transpose(1, 2)
    v = (x @ state["v_proj.weight"].T).view(B, S, n_kv_head, hd).transpose(1, 2)
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    if positions == "absolute":
        pos = torch.arange(S)
    else:
        pos = torch.cat([torch.arange(T) for T in lengths])
    cos, sin = rope(pos)
    q = apply_rope(q, cos, sin)
    k = apply_rope(k, cos, sin) if rotate_k else k
    outs = []
    for a, T in zip(starts, lengths):
        b = a + T
        lo = a if keys == "new" else 0
        kk, vv = k[:, :, lo:b], v[:, :, lo:b]
        q_pos = torch.arange(a, b)[:, None]
        k_pos = torch.arange(lo, b)[None, :]
        if mask == "right":
            allowed = k_pos <= q_pos
        elif mask == "top_left":
            allowed = torch.ones(T, b - lo, dtype=torch.bool).tril()
        else:
            allowed = None
        y = F.scaled_dot_product_attention(q[:, :, a:b], kk, vv, attn_mask=allowed, enable_gqa=True)
        outs.append(y.transpose(1, 2).reshape(B, T, C) @ state["o_proj.weight"].T)
    return outs


@register("ex4.attention", "CachedSelfAttention: cached attention gives the uncached outputs",
          where="the `CachedSelfAttention` cell (part 2)")
class Attention:
    @staticmethod
    def run(student, seed=0, B=2, n_embd=32, n_head=4, n_kv_head=2, lengths=(4, 1, 1, 2, 1)):
        CSA = student.get("CachedSelfAttention", "(n_embd, n_head, n_kv_head, *, max_len=256, rope_base=10000.0)")
        attn = call(CSA, n_embd, n_head, n_kv_head, max_len=MAX_LEN)
        load_weights(attn, _attn_state(seed, n_embd, n_head, n_kv_head), "your CachedSelfAttention")
        x = _attn_input(seed, B, sum(lengths), n_embd)
        out = {}
        with torch.no_grad():
            attn.cache = None
            out["full"] = call(getattr(attn, "forward", attn), x)
            attn.cache = _GraderCache(B, n_kv_head, sum(lengths), n_embd // n_head)
            start = 0
            for i, T in enumerate(lengths):
                out[f"step{i}"] = call(getattr(attn, "forward", attn), x[:, start:start + T])
                start += T
            attn.cache = None
        return out

    @staticmethod
    def judge(got, seed=0, B=2, n_embd=32, n_head=4, n_kv_head=2, lengths=(4, 1, 1, 2, 1)):
        missing = expect_keys(got, ["full"] + [f"step{i}" for i in range(len(lengths))])
        if missing:
            return missing
        state = _attn_state(seed, n_embd, n_head, n_kv_head)
        S = sum(lengths)
        x = _attn_input(seed, B, S, n_embd)
        reference = MultiHeadAttention(n_embd, n_head, n_kv_head, bias=False, impl="sdpa")
        reference.load_state_dict(state)
        rope = RotaryEmbedding(n_embd // n_head, context_length=MAX_LEN)
        with torch.no_grad():
            want = reference(x, rope=rope.span(0, S))  # (B, S, C): the uncached outputs at every position
        problem = mismatch(got["full"], want, "without a cache, forward(x) on the whole sequence", atol=ATOL)
        if problem:
            hint = diagnose(got["full"], [
                ("RoPE is not applied to the keys (apply_rope to both q and k)",
                 lambda: torch.cat(_manual_steps(state, x, n_head, n_kv_head, (S,), rotate_k=False), dim=1)),
                ("there is no causal mask: a position sees later positions",
                 lambda: torch.cat(_manual_steps(state, x, n_head, n_kv_head, (S,), mask="none"), dim=1)),
            ], atol=ATOL)
            return [explain(problem, hint)]
        wrong = {
            "the positions restart at 0 at every call: the new tokens must be rotated at their absolute positions "
            "cache.pos, ..., cache.pos + T - 1 (read cache.pos before update)": dict(positions="restart"),
            "the causal mask is aligned to the top-left corner (is_causal=True with a cache): query i sees keys "
            "0..i instead of the keys up to its own position cache.pos + i; build the mask from absolute positions":
                dict(mask="top_left"),
            "with a cache there is no causal mask: the new tokens of a chunk see each other's future":
                dict(mask="none"),
            "the new tokens attend only to themselves: use the (k_all, v_all) that cache.update returns, "
            "which hold every cached position": dict(keys="new"),
            "RoPE is not applied to the keys (apply_rope to both q and k, before caching)": dict(rotate_k=False),
        }
        start = 0
        for i, T in enumerate(lengths):
            problem = mismatch(got[f"step{i}"], want[:, start:start + T],
                               f"with a cache, call {i + 1} (T={T} new tokens after {start} cached)", atol=ATOL)
            if problem:
                hint = diagnose(got[f"step{i}"], [
                    (h, lambda kw=kw: _manual_steps(state, x, n_head, n_kv_head, lengths, **kw)[i])
                    for h, kw in wrong.items()
                ], atol=ATOL)
                return [explain(problem + " (cached outputs must equal the uncached ones at the same positions)", hint)]
            start += T
        return []


# --------------------------------------------------------------------------------------------------
# Part 3: generate
# --------------------------------------------------------------------------------------------------
def _lm_config(n_layer=2):
    return ModelConfig.from_name("tiny-llama", n_layer=n_layer, n_embd=32, n_head=4, n_kv_head=2, ffn_hidden=64,
                                 context_length=64)


def _lm_state(seed, config):
    """Seeded weights of size ~1/sqrt(fan_in): logits of size ~1, so greedy choices are clear-cut."""
    gen = seeded(seed)
    shapes = TransformerLM(config).state_dict()  # a tiny model: building it on the CPU is quicker than on "meta"
    state = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name].shape)
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.endswith("norm_f.weight"):
            state[name] = 1 + randn(gen, *shape, scale=0.1)
        elif name == "embed.tok_emb.weight":
            state[name] = randn(gen, *shape)
        else:
            state[name] = randn(gen, *shape, scale=1 / math.sqrt(shape[1]))
    return state


def _prompts(seed, B, lengths):
    gen = seeded(seed + 2000)
    return [torch.randint(1, 256, (B, T), generator=gen) for T in lengths]


class _GradedLM(TransformerLM):
    """The package's model, recording what generate feeds it and stopping at the mistakes that corrupt a cache."""

    def __init__(self, config):
        super().__init__(config)
        self.calls = []  # (tokens fed, cached positions before the call or -1 without a cache)
        self.fresh, self.use_cache = True, True

    def forward(self, idx):
        cached = self.cache_length
        T = idx.shape[1] if isinstance(idx, torch.Tensor) and idx.dim() == 2 else -1
        first, self.fresh = self.fresh, False
        self.calls.append((T, -1 if cached is None else cached))
        if not self.use_cache and cached is not None:
            raise StudentError(
                "generate(..., use_cache=False) ran the model with a KV cache still set up from an earlier call: "
                "with use_cache=True, remove the cache when generation ends (model.remove_cache(), in a finally: "
                "block), so that the model is uncached again afterwards.")
        if self.use_cache and cached is None:
            raise StudentError("generate(..., use_cache=True) ran the model without a cache: call "
                               "model.setup_cache(batch_size, max_len) before the first forward.")
        if self.use_cache and first and cached:
            raise StudentError(
                f"the cache still held {cached} positions from the previous prompt when generate started: the cache "
                "was not reset between prompts. Set up a fresh cache (model.setup_cache) or call model.reset_cache() "
                "at the start of every generate.")
        if self.use_cache and not first and T != 1:
            raise StudentError(
                f"with the cache, a decoding step fed {T} tokens to the model: after the prompt (the prefill), feed "
                "only the newest token, shape (B, 1); the cache already holds the keys and values of the others "
                "(feeding the whole sequence again stores every position twice).")
        return super().forward(idx)


def _call_generate(generate, model, prompt, n, use_cache):
    model.fresh, model.use_cache = True, use_cache
    out = call(generate, model, prompt.clone(), n, use_cache=use_cache)
    if not isinstance(out, torch.Tensor):
        raise StudentError(f"generate should return a tensor of token ids, got {type(out).__name__}.")
    return out


@register("ex4.generate", "generate: cached greedy decoding gives exactly the uncached tokens",
          where="the `generate` cell (part 3)")
class Generate:
    @staticmethod
    def run(student, seed=0, B=2, prompt_lengths=(5, 3), max_new_tokens=6, n_layer=2):
        generate = student.get("generate", "(model, idx, max_new_tokens, use_cache=True)")
        config = _lm_config(n_layer)
        model = _GradedLM(config)
        model.load_state_dict(_lm_state(seed, config))
        model.eval()
        p1, p2 = _prompts(seed, B, prompt_lengths)
        out = {"cached1": _call_generate(generate, model, p1, max_new_tokens, True)}
        n1 = len(model.calls)
        out["cached2"] = _call_generate(generate, model, p2, max_new_tokens, True)
        n2 = len(model.calls)
        out["uncached"] = _call_generate(generate, model, p1, max_new_tokens, False)
        out["calls"] = torch.tensor(model.calls, dtype=torch.int64).reshape(-1, 2)
        out["n_calls"] = torch.tensor([n1, n2 - n1, len(model.calls) - n2])
        return out

    @staticmethod
    def judge(got, seed=0, B=2, prompt_lengths=(5, 3), max_new_tokens=6, n_layer=2):
        missing = expect_keys(got, ["cached1", "cached2", "uncached", "calls", "n_calls"])
        if missing:
            return missing
        config = _lm_config(n_layer)
        reference = TransformerLM(config)
        reference.load_state_dict(_lm_state(seed, config))
        reference.eval()
        p1, p2 = _prompts(seed, B, prompt_lengths)
        problems = []
        for key, prompt, what in (("cached1", p1, "generate(model, prompt, n, use_cache=True)"),
                                  ("cached2", p2, "a second generate(..., use_cache=True) with another prompt"),
                                  ("uncached", p1, "generate(model, prompt, n, use_cache=False)")):
            problem = _greedy_problem(got[key], prompt, max_new_tokens, reference, what)
            if problem:
                problems.append(problem)
        # The prefill feeds the prompt to an empty cache, then every step feeds one token.
        calls, counts = got["calls"], _ints(got["n_calls"])
        if not problems and len(counts) == 3 and calls.dim() == 2 and calls.shape[0] == sum(counts):
            for part, (start, n, T) in enumerate(((0, counts[0], prompt_lengths[0]),
                                                  (counts[0], counts[1], prompt_lengths[1]))):
                fed = calls[start:start + n]
                want = torch.tensor([[T, 0]] + [[1, T + i] for i in range(n - 1)], dtype=torch.int64).reshape(-1, 2)
                if n != max_new_tokens or not torch.equal(fed, want):
                    problems.append(
                        f"with the cache, generate should call the model {max_new_tokens} times: once with the whole "
                        f"prompt on an empty cache, then with one new token per step; it was called with "
                        f"(tokens fed, positions cached) = {[tuple(r) for r in fed.tolist()]}")
                    break
        return problems


def _greedy_problem(got, prompt, n, reference, what):
    B, T = prompt.shape
    if not isinstance(got, torch.Tensor) or got.dtype.is_floating_point or got.dtype == torch.bool:
        return f"{what} should return integer token ids, got {getattr(got, 'dtype', type(got).__name__)}"
    if tuple(got.shape) != (B, T + n):
        return (f"{what} returned shape {tuple(got.shape)}, expected (B, prompt length + max_new_tokens) = "
                f"({B}, {T} + {n}): return the prompt followed by exactly max_new_tokens new tokens")
    got = got.long()
    if not torch.equal(got[:, :T], prompt):
        return f"{what}: the output must start with the prompt unchanged"
    with torch.no_grad():
        want = reference_generate(reference, prompt, n, use_cache=False)
        if torch.equal(got, want):
            return None
        # Accept a different token only where the reference itself is torn (float round-off between two maxima).
        logits = reference(got[:, :-1]).float()  # (B, T + n - 1, vocab): logits[:, t] predicts token t + 1
        for t in range(T, T + n):
            row = logits[:, t - 1]
            chosen = row.gather(1, got[:, t:t + 1]).squeeze(1)
            gap = row.max(dim=1).values - chosen
            bad = (gap > 1e-4).nonzero()
            if len(bad):
                b = int(bad[0])
                best = int(row[b].argmax())
                hint = None
                if int(got[b, t]) == int(logits[b, 0].argmax()) and best != int(got[b, t]):
                    hint = ("the next token is taken from the logits of the first position; use the last one, "
                            "logits[:, -1]")
                problem = (f"{what}: new token {t - T + 1} of sequence {b} is {int(got[b, t])}, but the greedy choice "
                           f"(the reference model's argmax on the same prefix) is {best}")
                return explain(problem, hint)
    return None
