"""Checks for exercise 4, the KV cache.

Graded names (stated at the top of the notebook). Positions are explicit, as in ``transformer_course``:
    KVCache(batch_size, n_kv_head, capacity, head_dim, *, device=None, dtype=None)   an nn.Module
        k, v: (batch_size, n_kv_head, capacity, head_dim) buffers allocated once, in __init__, on ``device`` in
            ``dtype`` (register_buffer(..., persistent=False): moved by .to(), out of the state dict)
        length: number of positions stored (0 .. length - 1); capacity (given): k.shape[2]
        update(k, v, start_pos) -> (k_all, v_all): stores k, v (B, n_kv_head, T, head_dim) at
            [start_pos, start_pos + T), sets length = start_pos + T, returns views of the buffers
            (B, n_kv_head, length, head_dim); ValueError for a gap (start_pos > length) and when it would overflow
    CachedSelfAttention(n_embd, n_head, n_kv_head, *, context_length=256, rope_base=10000.0)   (__init__ given)
        forward(x, start_pos=0): (B, T, C) -> (B, T, C) for tokens at start_pos ..; weights q_proj, k_proj,
        v_proj, o_proj (no biases); self.cache is None or an object with .update(k, v, start_pos) (the grader
        plugs in its own)
    generate(model, idx, max_new_tokens, use_cache=True) -> (B, T + max_new_tokens), greedy
        model: model(idx, start_pos) -> logits, model.setup_cache(batch_size, max_len), model.remove_cache(),
        model.cache_length (the grader passes the package's TransformerLM); the cache is removed at the end,
        also when the model raises (try/finally)

Each part is graded on its own: part 2 runs with the grader's cache (the package's), part 3 with the package's
model, and neither calls a name the student defines in another part (TinyLM, which calls KVCache and
CachedSelfAttention, is given and not graded), so no reference needs substituting.
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

from .base import (StudentError, call, diagnose, expect_keys, explain, load_weights, mismatch, randn, randomness,
                   register, seeded)
from .mistakes import attention_mistakes, causal_allowed

ATOL = 1e-5  # float32 attention on activations of size ~1: a correct answer agrees to ~1e-6

REALLOCATED = ("the cache was reallocated: k/v moved to new memory (their data_ptr changed). Allocate the buffers "
               "once in __init__ and write into them with slice assignment (self.k[:, :, start_pos:end] = k); "
               "torch.cat allocates and copies a new tensor at every step")
RESTART_REALLOCATED = ("update(k, v, start_pos=0) allocated new buffers (the data_ptr of k/v changed): a new sequence "
                       "keeps the memory and simply overwrites it from position 0")
IGNORES_START_POS = ("update must write at start_pos, not after the positions already stored: an earlier start_pos "
                     "overwrites from there (0 starts a new sequence), self.k[:, :, start_pos:start_pos + T] = k")
LENGTH_ON_REWRITE = ("set self.length = start_pos + T also when start_pos goes back: what was stored after the "
                     "rewritten positions is no longer part of the sequence")
LENGTH_ADDS_T = ("length is where the sequence ends, not a count of the positions written: self.length += T is "
                 "wrong as soon as start_pos goes back (a new sequence at 0, a rewind); "
                 "set self.length = start_pos + T")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


# --------------------------------------------------------------------------------------------------
# Part 1: KVCache
# --------------------------------------------------------------------------------------------------
def _ints(t):
    """A tensor of the student's side as a list of ints (NaN, which cannot be an int, becomes -1)."""
    return [int(x) if x == x else -1 for x in t.reshape(-1).double().tolist()]


def _flag(t):
    values = _ints(t)
    return values[0] if values else -1


def _text(message: str, limit: int = 600) -> torch.Tensor:
    """A message as bytes in a tensor (only tensors cross from the student's side to the judge)."""
    return torch.tensor(list(message.encode("utf-8", "replace")[:limit]), dtype=torch.uint8)


def _untext(t) -> str:
    return bytes(_ints(t)).decode("utf-8", "replace") if isinstance(t, torch.Tensor) else ""


def _dtype(name):
    if name not in DTYPES:
        raise ValueError(f"ex4.kv_cache: dtype must be one of {sorted(DTYPES)}, not {name!r}")
    return DTYPES[name]


def _chunks(seed, B, n_kv_head, D, lengths, dtype=torch.float32):
    gen = seeded(seed)
    return [(randn(gen, B, n_kv_head, T, D).to(dtype), randn(gen, B, n_kv_head, T, D).to(dtype)) for T in lengths]


def _script(p):
    """The updates the check makes, in order: (what, start_pos, k, v), in the cache's dtype.

    The sequence of ``lengths`` from position 0, one update that does not fit, then a new sequence at
    start_pos=0 (two positions), a continuation at 2, a rewrite at 1 (length goes back to 2) and a gap at 3."""
    B, H, capacity, D, dtype = p.B, p.n_kv_head, p.capacity, p.D, _dtype(p.dtype)
    stored = sum(p.lengths)
    if stored > capacity or capacity < 4:
        raise ValueError(f"ex4.kv_cache: lengths {list(p.lengths)} must fit in capacity={capacity} >= 4")
    ops, start = [], 0
    for i, (k, v) in enumerate(_chunks(p.seed, B, H, D, p.lengths, dtype)):
        ops.append((f"update number {i + 1} of the first sequence", start, k, v))
        start += k.shape[2]
    extra = torch.zeros(B, H, capacity - stored + 1, D, dtype=dtype)  # one position more than fits
    ops.append(("an update beyond the capacity", stored, extra, extra.clone()))
    (k0, v0), (k1, v1), (k2, v2), (k3, v3) = _chunks(p.seed + 1, B, H, D, (2, 1, 1, 1), dtype)
    ops += [("a new sequence at start_pos=0", 0, k0, v0), ("its continuation at start_pos=2", 2, k1, v1),
            ("a rewrite of position 1", 1, k2, v2), ("an update that leaves a gap", 3, k3, v3)]
    return ops


def _buffers(cache):
    bufs = []
    for name in ("k", "v"):
        buf = getattr(cache, name, None)
        if not isinstance(buf, torch.Tensor):
            raise StudentError(f"your KVCache has no tensor attribute `{name}`: allocate it in __init__ with shape "
                               f"(batch_size, n_kv_head, capacity, head_dim), register_buffer(\"{name}\", ...).")
        bufs.append(buf)
    return bufs


def _length(cache):
    if not hasattr(cache, "length"):
        raise StudentError("your KVCache has no attribute `length` (the number of positions stored): set "
                           "self.length = 0 in __init__ and self.length = start_pos + T in update.")
    return int(cache.length)


def _shares(t, buf):
    return isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()


def _pair(result, what):
    if not (isinstance(result, (tuple, list)) and len(result) == 2
            and all(isinstance(t, torch.Tensor) for t in result)):
        raise StudentError(f"{what} should return a pair of tensors (k_all, v_all), got {type(result).__name__}.")
    return result


def _registration(cache):
    """[k registered as a buffer, v registered], [k in the state dict, v in the state dict] (1/0)."""
    try:
        buffers = {name: buf for name, buf in cache.named_buffers(recurse=False)}
        state = cache.state_dict()
    except Exception:  # noqa: BLE001 - not an nn.Module: nothing is registered
        return [0, 0], [0, 0]
    registered = [int(name in buffers and buffers[name] is getattr(cache, name, None)) for name in ("k", "v")]
    return registered, [int(name in state) for name in ("k", "v")]


def _on_meta(KVCache):
    """KVCache(1, 1, 2, 1, device="meta") without a dtype: [k on meta, v on meta] and the buffers' dtype.

    The meta device allocates nothing, so it shows whether ``device`` reaches the buffers on any machine."""
    try:
        cache = KVCache(1, 1, 2, 1, device="meta")
        k, v = _buffers(cache)
    except StudentError:
        raise
    except Exception as err:  # noqa: BLE001 - reported by the judge
        return {"meta": torch.tensor([-1, -1]), "meta_error": _text(f"{type(err).__name__}: {err}")}
    return {"meta": torch.tensor([int(k.device.type == "meta"), int(v.device.type == "meta")]),
            "meta_dtype": torch.zeros(1, dtype=k.dtype)}


@register("ex4.kv_cache", "KVCache: a preallocated cache written at explicit positions",
          where="the `KVCache` cell (part 1)",
          params=dict(seed=0, B=2, n_kv_head=2, capacity=7, D=4, lengths=(3, 1, 1, 2), dtype="bfloat16"),
          outputs=("k_shape", "v_shape", "k_dtype", "v_dtype", "registered", "in_state_dict", "meta", "length0",
                   "capacity", "ptrs", "status", "lengths", "views"))
class Cache:
    @staticmethod
    def run(student, p):
        KVCache = student.get("KVCache", "(batch_size, n_kv_head, capacity, head_dim, *, device=None, dtype=None)")
        cache = call(KVCache, p.B, p.n_kv_head, p.capacity, p.D, dtype=_dtype(p.dtype))
        k_buf, v_buf = _buffers(cache)
        registered, in_state = _registration(cache)
        out = {"k_shape": torch.tensor(k_buf.shape), "v_shape": torch.tensor(v_buf.shape),
               "k_dtype": torch.zeros(1, dtype=k_buf.dtype), "v_dtype": torch.zeros(1, dtype=v_buf.dtype),
               "registered": torch.tensor(registered), "in_state_dict": torch.tensor(in_state),
               "length0": torch.tensor(_length(cache))}
        reported = getattr(cache, "capacity", None)
        out["capacity"] = torch.tensor(int(reported) if isinstance(reported, (int, torch.Tensor)) else -1)
        ptrs, status, lengths_after, views = [[k_buf.data_ptr(), v_buf.data_ptr()]], [], [], []
        for i, (_, start_pos, k, v) in enumerate(_script(p)):
            k_in, v_in = k.clone(), v.clone()
            try:
                k_all, v_all = _pair(call(cache.update, k_in, v_in, start_pos), f"update(k, v, start_pos={start_pos})")
                status.append(0)
                out[f"k{i}"], out[f"v{i}"] = k_all.clone(), v_all.clone()  # views: later writes would change them
            except StudentError:
                raise
            except Exception as err:  # noqa: BLE001 - recorded, and judged against the reference's behaviour
                status.append(1 if isinstance(err, ValueError) else 2)
                out[f"error{i}"] = _text(f"{type(err).__name__}: {err}")
                k_all = v_all = None
            k_buf, v_buf = _buffers(cache)
            ptrs.append([k_buf.data_ptr(), v_buf.data_ptr()])
            lengths_after.append(_length(cache))
            if k_all is None or (_shares(k_all, k_buf) and _shares(v_all, v_buf)):
                views.append(1)
            else:  # 2: update handed back the tensors it was given (only the new positions)
                views.append(2 if _shares(k_all, k_in) or _shares(v_all, v_in) else 0)
        out["ptrs"] = torch.tensor(ptrs, dtype=torch.int64)  # data_ptr of (k, v): after __init__, after each update
        out["status"] = torch.tensor(status)  # 0 returned, 1 ValueError, 2 another exception
        out["lengths"] = torch.tensor(lengths_after)
        out["views"] = torch.tensor(views)
        out.update(_on_meta(KVCache))
        return out

    @staticmethod
    def judge(got, p):
        script = _script(p)
        problems = []
        shape = [p.B, p.n_kv_head, p.capacity, p.D]
        for name in ("k", "v"):
            if _ints(got[f"{name}_shape"]) != shape:
                problems.append(
                    f"{name} has shape {tuple(_ints(got[f'{name}_shape']))} right after __init__, expected "
                    f"(batch_size, n_kv_head, capacity, head_dim) = {tuple(shape)}: allocate the whole buffer once, "
                    "in __init__ (torch.zeros), so that decoding never allocates")
        want_dtype = _dtype(p.dtype)
        wrong = [name for name in ("k", "v") if got[f"{name}_dtype"].dtype != want_dtype]
        if wrong:
            problems.append(
                f"KVCache(..., dtype=torch.{p.dtype}) made {' and '.join(wrong)} of dtype "
                f"{str(got[wrong[0] + '_dtype'].dtype).replace('torch.', '')}: pass dtype (and device) to the "
                "allocation, torch.zeros(..., device=device, dtype=dtype), so that a half-precision model gets a "
                "half-precision cache (half the memory)")
        meta = _ints(got["meta"])
        if meta[:1] == [-1]:
            problems.append(f"KVCache(1, 1, 2, 1, device=\"meta\") raised {_untext(got.get('meta_error'))}: allocate "
                            "with torch.zeros(..., device=device, dtype=dtype) and nothing else that needs the data")
        elif meta != [1, 1]:
            problems.append("KVCache(..., device=\"meta\") put its buffers on another device: pass device to the "
                            "allocation, torch.zeros(..., device=device, dtype=dtype) (a model on the GPU needs its "
                            "cache there; never hard-code a device)")
        elif "meta_dtype" in got and got["meta_dtype"].dtype != torch.float32:
            problems.append(f"KVCache(...) without a dtype made buffers of dtype {got['meta_dtype'].dtype}: with "
                            "dtype=None torch.zeros gives the default float32")
        registered, in_state = _ints(got["registered"]), _ints(got["in_state_dict"])
        if registered != [1, 1]:
            names = " and ".join(n for n, r in zip("kv", registered) if not r) or "k and v"
            problems.append(
                f"{names} are not registered buffers (they are missing from module.buffers()), so .to(device) and "
                f".to(dtype) leave them behind: self.register_buffer(\"k\", torch.zeros(...), persistent=False) "
                "instead of self.k = torch.zeros(...)")
        elif in_state != [0, 0]:
            problems.append(
                "the cache buffers are in the state dict: register them with persistent=False, "
                "self.register_buffer(\"k\", ..., persistent=False), so that saving or loading a model's weights "
                "does not save or expect its cache")
        if _flag(got["capacity"]) != p.capacity:
            problems.append(f"capacity is {_flag(got['capacity'])}, expected {p.capacity}: it is the number of "
                            "positions the buffers hold, self.k.shape[2]")
        if _flag(got["length0"]) != 0:
            problems.append(f"a new cache has length {_flag(got['length0'])}; it must start empty, self.length = 0")
        status, lengths_after, views = _ints(got["status"]), _ints(got["lengths"]), _ints(got["views"])
        ptrs = got["ptrs"]
        n = len(status)
        if ptrs.dim() != 2 or ptrs.shape != (n + 1, 2) or len(lengths_after) != n or len(views) != n:
            return problems + ["the check's record of the updates is malformed (did your code stop it early?)"]
        moved = [i for i in range(n) if not torch.equal(ptrs[i + 1], ptrs[i])]
        if moved:
            restarts = all(script[i][1] == 0 for i in moved) and any(script[i][1] == 0 and i > 0 for i in moved)
            problems.append(RESTART_REALLOCATED if restarts and len(moved) < n else REALLOCATED)
        if 0 in views:
            problems.append("update returned a copy, not a view of the cache buffer: return self.k[:, :, :length] "
                            "(slicing makes a view; .clone() or torch.cat copy, which costs memory and time at every "
                            "step)")
        problem = _first_wrong_update(got, script, status, lengths_after, p.capacity)
        return problems + ([problem] if problem else [])


def _first_wrong_update(got, script, status, lengths_after, capacity):
    """The first update whose outcome differs from the package's cache given the same calls, explained."""
    B, H, _, D = script[0][2].shape
    reference = ReferenceKVCache(B, H, capacity, D, dtype=script[0][2].dtype)
    before = 0  # the student's length before the update
    for i, (what, start_pos, k, v) in enumerate(script):
        T = k.shape[2]
        call_text = f"{what}, update(k, v, start_pos={start_pos}) with T={T}"
        try:
            want_k, want_v = reference.update(k, v, start_pos)
            want_error = None
        except ValueError as err:
            want_error = str(err)
        state = f"(length {before} before, capacity={capacity})"
        if want_error is not None:
            if status[i] == 0 and start_pos > before:
                gap = (f"position {before} was" if start_pos == before + 1
                       else f"positions {before} .. {start_pos - 1} were")
                return (f"{call_text} {state} raised no error: {gap} never stored; raise ValueError when "
                        "start_pos > length")
            if status[i] == 0:
                return (f"{call_text} {state} raised no error: check start_pos + T > capacity in update and raise "
                        "ValueError saying that the cache is full")
            if status[i] == 2:
                said = _untext(got.get(f"error{i}")).split(":")[0] or "an exception"
                return (f"{call_text} {state} raised an exception other than ValueError ({said}, probably PyTorch's "
                        "own shape error): check start_pos + T > capacity (and start_pos > length) yourself, before "
                        "writing, and raise ValueError with a message that says what happened")
            before = lengths_after[i]
            continue
        if status[i] != 0:
            said = _untext(got.get(f"error{i}")).rstrip(".")
            hint = ""
            if status[i] == 1 and start_pos + T == capacity and start_pos <= before:
                hint = (f" The cache was not full: a cache of capacity={capacity} positions must accept exactly "
                        "capacity positions (check start_pos + T > capacity).")
            elif start_pos < before:
                hint = f" Likely mistake: {IGNORES_START_POS}."
            elif status[i] == 1 and start_pos == before:
                hint = (" Likely mistake: start_pos == length continues the sequence (0 on a new cache) and must be "
                        "accepted: raise for a gap only when start_pos > length.")
            return f"{call_text} {state} raised {said}.{hint}"
        got_length, want_length = lengths_after[i], start_pos + T
        got_k = got.get(f"k{i}")
        if got_length != want_length:
            wrote_at = lambda at: (isinstance(got_k, torch.Tensor) and got_k.dim() == 4 and got_k.shape[2] >= at + T
                                   and torch.equal(got_k[:, :, at:at + T].double(), k.double()))
            if start_pos < before and got_length == before + T and wrote_at(start_pos) and not wrote_at(before):
                hint = LENGTH_ADDS_T
            elif start_pos < before and got_length == before + T:
                hint = IGNORES_START_POS
            elif start_pos < before and got_length == max(before, want_length):
                hint = LENGTH_ON_REWRITE
            elif got_length == before:
                hint = "length does not advance: set self.length = start_pos + T in update"
            else:
                hint = "length counts the positions stored, 0 .. length - 1: self.length = start_pos + T"
            return explain(f"after {call_text} {state}, length is {got_length}, expected start_pos + T = "
                           f"{want_length}", hint)
        for name, want in (("k", want_k), ("v", want_v)):
            returned = got.get(f"{name}{i}")
            problem = mismatch(returned, want, f"the {name}_all returned by {call_text}", atol=0)
            if problem:
                hint = (f" (it should hold positions 0 .. {want_length - 1}: what was stored before "
                        f"start_pos={start_pos}, then the {T} new ones)")
                n_returned = returned.shape[2] if isinstance(returned, torch.Tensor) and returned.dim() == 4 else -1
                if n_returned == capacity != want_length:
                    hint = (". Likely mistake: update returned the whole buffer, capacity positions, not the "
                            "positions stored: return self.k[:, :, :self.length], self.v[:, :, :self.length]")
                elif n_returned == T != want_length:
                    hint = (f". Likely mistake: update returned only the new positions (T={T}): return every position "
                            "stored, self.k[:, :, :self.length] (the new queries attend to all of them)")
                return problem + hint
        before = got_length
    return None


# --------------------------------------------------------------------------------------------------
# Part 2: CachedSelfAttention
# --------------------------------------------------------------------------------------------------
RESTART = (2, 1)     # a second sequence, fed after the first at start_pos=0 without removing the cache
OFFSET = 5           # start_pos of a call without a cache


class _GraderCache(ReferenceKVCache):
    """The package's cache, with clear messages when the attention passes the wrong shapes or position."""

    expected_start = None  # the start_pos the check gave forward

    def update(self, k, v, start_pos=None):
        B, n_kv_head, _, head_dim = self.k.shape
        for name, t in (("k", k), ("v", v)):
            if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[0] != B or t.shape[1] != n_kv_head \
                    or t.shape[3] != head_dim:
                shown = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise StudentError(
                    f"cache.update got {name} of shape {shown}, but the cache stores (B={B}, n_kv_head={n_kv_head}, "
                    f"T, head_dim={head_dim}): pass the n_kv_head key/value heads, after RoPE and before any repeat "
                    "(a cache of n_head copies would waste exactly the memory GQA saves).")
        if start_pos is None:
            raise StudentError("cache.update(k, v) was called without start_pos: pass the position of x's first "
                               "token, self.cache.update(k, v, start_pos).")
        if self.expected_start is not None and int(start_pos) != self.expected_start:
            raise StudentError(
                f"forward(x, start_pos={self.expected_start}) stored its keys and values at "
                f"start_pos={int(start_pos)}: "
                "pass the start_pos that forward was given, self.cache.update(k, v, start_pos) (the cache's length "
                "is where the last call ended, not where this one starts).")
        return super().update(k, v, int(start_pos))


def _attn_state(seed, n_embd, n_head, n_kv_head):
    gen = seeded(seed)
    hd = n_embd // n_head
    s = 1 / math.sqrt(n_embd)
    return {"q_proj.weight": randn(gen, n_head * hd, n_embd, scale=s),
            "k_proj.weight": randn(gen, n_kv_head * hd, n_embd, scale=s),
            "v_proj.weight": randn(gen, n_kv_head * hd, n_embd, scale=s),
            "o_proj.weight": randn(gen, n_embd, n_head * hd, scale=s)}


def _attn_inputs(p):
    """The first sequence (B, sum(lengths), C) and the second, fed from start_pos=0 after it."""
    return (randn(seeded(p.seed + 1000), p.B, sum(p.lengths), p.n_embd),
            randn(seeded(p.seed + 3000), p.B, sum(RESTART), p.n_embd))


def _rope(p, base=None):
    return RotaryEmbedding(p.n_embd // p.n_head, base=p.rope_base if base is None else base,
                           context_length=p.context_length)


def _qkv(state, x, n_head, n_kv_head, rope, positions, *, split="right", rotate_k=True):
    """q (B, n_head, S, hd), k, v (B, n_kv_head, S, hd) of x at ``positions`` (S,), RoPE applied (to k unless
    ``rotate_k`` is False). ``split="no-transpose"``: exercise 1's bug, (B, S, C).view(B, n_head, S, hd)
    without the transpose, so each "head" holds pieces of several positions."""
    B, S, C = x.shape
    hd = C // n_head
    q, k, v = (x @ state[f"{name}_proj.weight"].T for name in "qkv")  # (B, S, heads·hd)
    heads = (n_head, n_kv_head, n_kv_head)
    if split == "right":
        q, k, v = (t.view(B, S, h, hd).transpose(1, 2) for t, h in zip((q, k, v), heads))  # (B, h, S, hd)
    else:
        q, k, v = (t.reshape(B, h, S, hd) for t, h in zip((q, k, v), heads))
    cos, sin = rope(positions)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin) if rotate_k else k, v


def _merge(y, state, merge="right"):
    """(B, n_head, T, hd) -> o_proj of the heads concatenated, (B, T, C); ``merge="no-transpose"`` reshapes
    without moving the head axis back (the heads' values land at the wrong positions)."""
    B, H, T, hd = y.shape
    y = y.transpose(1, 2).reshape(B, T, H * hd) if merge == "right" else y.reshape(B, T, H * hd)
    return y @ state["o_proj.weight"].T


def _manual_steps(state, x, n_head, n_kv_head, lengths, rope, *, positions="absolute", mask="right", keys="all",
                  rotate_k=True, first=0, split="right", merge="right"):
    """What a (possibly wrong) attention returns for each chunk of ``lengths``, written out; x holds the
    positions first .. first + S - 1 (without a cache, ``lengths`` is one chunk and ``keys`` is "new").

    positions: "absolute" (right) or "restart" (every call rotates its tokens as positions 0..T-1).
    mask: "right" (query at absolute position p sees keys <= p), "top_left" (SDPA's is_causal with a cache:
        query i sees keys 0..i), "index" (absolute query positions against key indices 0..S-1), "none".
    keys: "all" (cached + new, right) or "new" (update's result ignored).
    split, merge: exercise 1's head-split and head-merge bugs (see ``_qkv``, ``_merge``), for one chunk.
    """
    S = x.shape[1]
    if positions == "absolute":
        pos = torch.arange(first, first + S)
    else:
        pos = torch.cat([torch.arange(T) for T in lengths])
    if split != "right" and len(lengths) != 1:
        raise ValueError("the head-split bug is modelled for a call without a cache (one chunk)")
    q_all, k_all, v_all = _qkv(state, x, n_head, n_kv_head, rope, pos, split=split, rotate_k=rotate_k)
    outs = []
    for a, T in zip([sum(lengths[:i]) for i in range(len(lengths))], lengths):
        b = a + T
        lo = a if keys == "new" else 0
        q, k, v = q_all[:, :, a:b], k_all[:, :, lo:b], v_all[:, :, lo:b]
        q_pos = torch.arange(first + a, first + b)[:, None]
        k_pos = torch.arange(first + lo, first + b)[None, :]
        if mask == "right":
            allowed = k_pos <= q_pos
        elif mask == "top_left":
            allowed = torch.ones(T, b - lo, dtype=torch.bool).tril()
        elif mask == "index":
            allowed = torch.arange(b - lo)[None, :] <= q_pos
        else:
            allowed = None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True)
        outs.append(_merge(y, state, merge))
    return outs


def _chunk_mistakes(state, x, p, rope, a, b, first=0):
    """attention_mistakes (the shared models: scale, softmax axis, every wrong mask, GQA head order) for the
    queries a .. b - 1 of x attending to keys 0 .. b - 1, each followed by the output projection."""
    q, k, v = _qkv(state, x[:, :b], p.n_head, p.n_kv_head, rope, torch.arange(first, first + b))
    q = q[:, :, a:]
    T, S = q.shape[2], b
    sdpa = lambda allowed: F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True)
    # PyTorch's SDPA gives zeros, not NaN, for a query that may see no key: the shared models fill with -inf.
    with_sdpa = [
        ("the causal mask is off by one: it hides the diagonal (k_pos < q_pos), so a position cannot see itself "
         "and the first position sees no key at all (SDPA then returns zeros for it); key j must be visible to "
         "query i when j <= i (k_pos <= q_pos)", lambda: sdpa(causal_allowed(T, S, -1))),
        ("the causal mask is inverted: True must mean 'may attend'; you hid the past and kept the future "
         "(k_pos >= q_pos or k_pos > q_pos); use k_pos <= q_pos", lambda: sdpa(~causal_allowed(T, S))),
        ("the causal mask is inverted: True must mean 'may attend'; you hid the past and kept the future "
         "(k_pos >= q_pos or k_pos > q_pos); use k_pos <= q_pos", lambda: sdpa(~causal_allowed(T, S, -1))),
        ("the mask is a float tensor of 0s and 1s: SDPA adds a float mask to the scores, so nothing is hidden "
         "(the allowed keys just get +1); pass the boolean mask itself (True = may attend), or 0 / -inf",
         lambda: sdpa(causal_allowed(T, S).float())),
    ]
    return [(hint, lambda wrong=wrong: _merge(wrong(), state))
            for hint, wrong in attention_mistakes(q, k, v, causal=True) + with_sdpa]


def _whole_mistakes(state, x, p, rope, first=0):
    """The mistakes visible on a call without a cache: the head split and merge, RoPE, the shared models."""
    H, Hkv, S = p.n_head, p.n_kv_head, x.shape[1]
    one = (S,)
    steps = lambda **kw: _manual_steps(state, x, H, Hkv, one, rope, keys="new", first=first, **kw)[0]
    mistakes = [
        ("the heads are split with a reshape to (B, n_head, T, head_dim) without a transpose: each 'head' then "
         "holds pieces of several positions; use .view(B, T, n_head, head_dim).transpose(1, 2) for q, k and v",
         lambda: steps(split="no-transpose")),
        ("the heads are split with a reshape to (B, n_head, T, head_dim) without a transpose, and merged back the "
         "same way; use .view(B, T, n_head, head_dim).transpose(1, 2), and .transpose(1, 2).reshape(B, T, C)",
         lambda: steps(split="no-transpose", merge="no-transpose")),
        ("the heads are concatenated in the wrong order: (B, n_head, T, head_dim) must be transposed back to "
         "(B, T, n_head, head_dim) before .reshape(B, T, C)", lambda: steps(merge="no-transpose")),
        ("RoPE is not applied to the keys (apply_rope to both q and k)", lambda: steps(rotate_k=False)),
    ]
    if p.rope_base != 10000.0:
        mistakes.append((f"the rotary tables use base 10000, not the rope_base={p.rope_base:g} the layer was "
                         "built with: take cos, sin from self.rope.span(start_pos, start_pos + T)",
                         lambda: _manual_steps(state, x, H, Hkv, one, _rope(p, base=10000.0), keys="new",
                                               first=first)[0]))
    return mistakes + _chunk_mistakes(state, x, p, rope, 0, S, first)


@register("ex4.attention", "CachedSelfAttention: cached attention gives the uncached outputs",
          where="the `CachedSelfAttention` cell (part 2)",
          params=dict(seed=0, B=2, n_embd=32, n_head=4, n_kv_head=2, lengths=(4, 1, 1, 2, 1), rope_base=500.0,
                      context_length=64),
          outputs=("full", "full_again", "offset") + tuple(f"restart{i}" for i in range(len(RESTART))))
class Attention:
    @staticmethod
    def run(student, p):
        CSA = student.get("CachedSelfAttention",
                          "(n_embd, n_head, n_kv_head, *, context_length=256, rope_base=10000.0)")
        attn = call(CSA, p.n_embd, p.n_head, p.n_kv_head, context_length=p.context_length, rope_base=p.rope_base)
        load_weights(attn, _attn_state(p.seed, p.n_embd, p.n_head, p.n_kv_head), "your CachedSelfAttention")
        if isinstance(attn, torch.nn.Module):
            attn.eval()  # decoding runs in evaluation mode
        x, x2 = _attn_inputs(p)
        forward = getattr(attn, "forward", attn)
        out = {}
        with torch.no_grad():
            attn.cache = None
            out["full"] = call(forward, x)
            out["full_again"] = call(forward, x)  # the same call twice: randomness is told apart from a bad mask
            out["offset"] = call(forward, x[:, :3], OFFSET)  # without a cache, at positions OFFSET ..
            cache = _GraderCache(p.B, p.n_kv_head, max(x.shape[1], x2.shape[1]), p.n_embd // p.n_head)
            attn.cache = cache
            for key, seq, pieces in (("step", x, p.lengths), ("restart", x2, RESTART)):
                start = 0
                for i, T in enumerate(pieces):
                    cache.expected_start = start
                    out[f"{key}{i}"] = call(forward, seq[:, start:start + T], start)
                    start += T
            attn.cache = None
        return out

    @staticmethod
    def judge(got, p):
        missing = expect_keys(got, [f"step{i}" for i in range(len(p.lengths))])
        if missing:
            return missing
        H, Hkv = p.n_head, p.n_kv_head
        state = _attn_state(p.seed, p.n_embd, H, Hkv)
        x, x2 = _attn_inputs(p)
        S = x.shape[1]
        reference = MultiHeadAttention(p.n_embd, H, Hkv, bias=False, impl="sdpa")
        reference.load_state_dict(state)
        rope = _rope(p)
        with torch.no_grad():
            want = reference(x, rope=rope.span(0, S))  # (B, S, C): the uncached outputs at every position
            want2 = reference(x2, rope=rope.span(0, x2.shape[1]))
            want_offset = reference(x[:, :3], start_pos=OFFSET, rope=rope.span(OFFSET, OFFSET + 3))
        noisy = randomness(got["full"], got["full_again"], "forward(x) without a cache")
        if noisy:
            return [noisy]
        problem = mismatch(got["full"], want, "without a cache, forward(x) on the whole sequence", atol=ATOL)
        if problem:
            hint = diagnose(got["full"], [
                ("there is no causal mask: a position sees later positions",
                 lambda: _manual_steps(state, x, H, Hkv, (S,), rope, mask="none")[0]),
            ] + _whole_mistakes(state, x, p, rope), atol=ATOL)
            return [explain(problem, hint)]
        problem = mismatch(got["offset"], want_offset, f"without a cache, forward(x, start_pos={OFFSET}) for 3 tokens",
                           atol=ATOL)
        if problem:
            x3 = x[:, :3]
            hint = diagnose(got["offset"], [
                ("the mask compares the queries' absolute positions with key indices 0 .. S-1: without a cache the "
                 "keys are x's own, at positions start_pos .. start_pos + T - 1, so query i sees keys 0 .. i",
                 lambda: _manual_steps(state, x3, H, Hkv, (3,), rope, mask="index", first=OFFSET)[0]),
                ("there is no causal mask without a cache",
                 lambda: _manual_steps(state, x3, H, Hkv, (3,), rope, mask="none", first=OFFSET)[0]),
            ] + _whole_mistakes(state, x3, p, rope, first=OFFSET), atol=ATOL)
            return [explain(problem, hint)]
        wrong = {
            "the positions restart at 0 at every call: the new tokens must be rotated at their absolute positions "
            "start_pos, ..., start_pos + T - 1 (self.rope.span(start_pos, start_pos + T))": dict(positions="restart"),
            "the causal mask is aligned to the top-left corner (is_causal=True with a cache): query i sees keys "
            "0..i instead of the keys up to its own position start_pos + i; build the mask from absolute positions":
                dict(mask="top_left"),
            "with a cache there is no causal mask: the new tokens of a chunk see each other's future":
                dict(mask="none"),
            "the new tokens attend only to themselves: use the (k_all, v_all) that cache.update returns, "
            "which hold every cached position": dict(keys="new"),
            "RoPE is not applied to the keys (apply_rope to both q and k, before caching)": dict(rotate_k=False),
        }
        for key, seq, pieces, full, what in (("step", x, p.lengths, want, ""),
                                             ("restart", x2, RESTART, want2, " of a new sequence, from start_pos=0")):
            start = 0
            for i, T in enumerate(pieces):
                problem = mismatch(got[f"{key}{i}"], full[:, start:start + T],
                                   f"with a cache, call {i + 1}{what} (T={T} new tokens at start_pos={start})",
                                   atol=ATOL)
                if problem:
                    hint = diagnose(got[f"{key}{i}"], [
                        (h, lambda kw=kw: _manual_steps(state, seq, H, Hkv, pieces, rope, **kw)[i])
                        for h, kw in wrong.items()
                    ] + _chunk_mistakes(state, seq, p, rope, start, start + T), atol=ATOL)
                    return [explain(problem + " (cached outputs must equal the uncached ones at the same positions)",
                                    hint)]
                start += T
        return []


# --------------------------------------------------------------------------------------------------
# Part 3: generate
# --------------------------------------------------------------------------------------------------
LEFT_CACHE = ("after generate(..., use_cache=True) returned, the model still had its KV cache set up: remove it when "
              "generation ends, model.remove_cache() in a finally: block, so that the model is uncached again "
              "afterwards")


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
        elif name == "tok_emb.weight":
            state[name] = randn(gen, *shape)
        else:
            state[name] = randn(gen, *shape, scale=1 / math.sqrt(shape[1]))
    return state


def _prompts(seed, B, lengths):
    gen = seeded(seed + 2000)
    return [torch.randint(1, 256, (B, T), generator=gen) for T in lengths]


class _InjectedFailure(RuntimeError):
    """What the graded model raises, on purpose, at one decoding step of the last generate call."""


class _GradedLM(TransformerLM):
    """The package's model, recording what generate feeds it and stopping at the mistakes that corrupt a cache."""

    def __init__(self, config):
        super().__init__(config)
        self.calls = []  # (tokens fed, start_pos)
        self.fresh, self.use_cache, self.next_pos, self.step = True, True, 0, 0
        self.prompt_shape, self.new_tokens, self.setups = (0, 0), 0, 0
        self.fail_at, self.failed = None, False  # the decoding step at which forward raises, and whether it did

    def setup_cache(self, batch_size, max_len=None, **kwargs):
        B, T = self.prompt_shape
        n = self.new_tokens
        self.setups += 1
        if not self.use_cache:
            raise StudentError(
                "generate(..., use_cache=False) called model.setup_cache: a cache was set up although use_cache=False. "
                "Without the cache no cache is set up at all (if use_cache: model.setup_cache(...)), and every step "
                "runs model(idx) on the whole sequence.")
        if self.setups > 1:
            raise StudentError(
                "generate called model.setup_cache more than once in one call: a new cache forgets every position "
                "stored. Set it up once, before the prefill, for the prompt and the new tokens.")
        if not isinstance(batch_size, int) or batch_size != B:
            raise StudentError(
                f"generate called model.setup_cache({batch_size}, {max_len}) for a prompt of shape (B, T) = "
                f"({B}, {T}): the arguments are (batch_size, max_len), batch_size = idx.shape[0] (one cache row per "
                "sequence).")
        if int(self.config.context_length if max_len is None else max_len) < T + n - 1:  # the last token is never fed
            raise StudentError(
                f"generate called model.setup_cache({batch_size}, {max_len}): the cache would be full before the end, "
                f"since the prompt and the new tokens take {T} + {n} = {T + n} positions: "
                "max_len = idx.shape[1] + max_new_tokens.")
        return super().setup_cache(batch_size, max_len, **kwargs)

    def forward(self, idx, start_pos=0):
        cached = self.cache_length
        T = idx.shape[1] if isinstance(idx, torch.Tensor) and idx.dim() == 2 else -1
        start_pos = int(start_pos)
        first, self.fresh = self.fresh, False
        self.step = 0 if first else self.step + 1
        self.calls.append((T, start_pos))
        if self.fail_at is not None and self.step == self.fail_at:
            self.failed = True
            raise _InjectedFailure(f"the grader's model fails on purpose at decoding step {self.step}")
        if not self.use_cache and cached is not None:
            raise StudentError(
                "generate(..., use_cache=False) ran the model with a KV cache set up: without the cache, set none up "
                "and run model(idx) on the whole sequence at every step.")
        if not self.use_cache and start_pos != 0:
            raise StudentError(
                f"generate(..., use_cache=False) ran the model at start_pos={start_pos}: without the cache every step "
                "runs the whole sequence, from position 0 (model(idx)).")
        if self.use_cache and cached is None:
            raise StudentError("generate(..., use_cache=True) ran the model without a cache: call "
                               "model.setup_cache(batch_size, max_len) before the first forward.")
        if self.use_cache and first and start_pos != 0:
            earlier = f", the position after the {cached} positions cached from an earlier prompt" if cached else ""
            raise StudentError(
                f"generate(..., use_cache=True) fed the prompt at start_pos={start_pos}{earlier}: a new prompt starts "
                "at position 0, model(idx, 0) (it overwrites whatever the cache held).")
        if self.use_cache and not first and T != 1:
            raise StudentError(
                f"with the cache, a decoding step fed {T} tokens to the model: after the prompt (the prefill), feed "
                "only the newest token, shape (B, 1); the cache already holds the keys and values of the others.")
        if self.use_cache and not first and start_pos != self.next_pos:
            raise StudentError(
                f"with the cache, decoding step {self.step} fed its token at start_pos={start_pos}, but it sits at "
                f"position {self.next_pos} (the number of tokens before it): pass each new token's position, "
                "model(next_token, start_pos)" + (" (without start_pos the model writes every token at position 0 "
                                                 "and forgets the others)" if start_pos == 0 else "") + ".")
        if self.use_cache:
            self.next_pos = start_pos + max(T, 0)
        return super().forward(idx, start_pos)


def _call_generate(generate, model, prompt, n, use_cache):
    model.fresh, model.use_cache, model.setups = True, use_cache, 0
    model.prompt_shape, model.new_tokens = tuple(prompt.shape), n
    out = call(generate, model, prompt.clone(), n, use_cache=use_cache)
    if not isinstance(out, torch.Tensor):
        raise StudentError(f"generate should return a tensor of token ids, got {type(out).__name__}.")
    return out


def _cached(model):
    """Positions the model's cache holds after a call, -1 without a cache."""
    length = model.cache_length
    return -1 if length is None else int(length)


@register("ex4.generate", "generate: cached greedy decoding gives exactly the uncached tokens",
          where="the `generate` cell (part 3)",
          params=dict(seed=0, B=2, prompt_lengths=(5, 3), max_new_tokens=6, n_layer=2, fail_at=2),
          outputs=("cached1", "cached2", "uncached", "uncached_again", "calls", "n_calls", "left", "failure"))
class Generate:
    @staticmethod
    def run(student, p):
        generate = student.get("generate", "(model, idx, max_new_tokens, use_cache=True)")
        config = _lm_config(p.n_layer)
        model = _GradedLM(config)
        model.load_state_dict(_lm_state(p.seed, config))
        model.eval()
        p1, p2 = _prompts(p.seed, p.B, p.prompt_lengths)
        n = p.max_new_tokens
        out = {"cached1": _call_generate(generate, model, p1, n, True)}
        n1, left = len(model.calls), [_cached(model)]
        out["cached2"] = _call_generate(generate, model, p2, n, True)  # the model as the first call left it
        n2 = len(model.calls)
        left.append(_cached(model))
        model.remove_cache()  # each of the calls below starts from an uncached model, whatever the ones above left
        out["uncached"] = _call_generate(generate, model, p1, n, False)
        out["uncached_again"] = _call_generate(generate, model, p1, n, False)  # randomness is told apart first
        out["calls"] = torch.tensor(model.calls, dtype=torch.int64).reshape(-1, 2)
        out["n_calls"] = torch.tensor([n1, n2 - n1, len(model.calls) - n2])  # the last two calls: uncached
        out["left"] = torch.tensor(left)
        # The model fails at decoding step fail_at: the exception must come out, and the cache must be gone.
        model.remove_cache()
        model.fail_at = p.fail_at
        try:
            _call_generate(generate, model, p1, n, True)
            raised = 0
        except _InjectedFailure:
            raised = 1
        except StudentError:
            raise
        except Exception:  # noqa: BLE001 - another exception came out: the failure was not hidden
            raised = 2
        finally:
            model.fail_at = None
        out["failure"] = torch.tensor([raised, _cached(model), int(model.failed)])
        return out

    @staticmethod
    def judge(got, p):
        config = _lm_config(p.n_layer)
        reference = TransformerLM(config)
        reference.load_state_dict(_lm_state(p.seed, config))
        reference.eval()
        p1, p2 = _prompts(p.seed, p.B, p.prompt_lengths)
        n = p.max_new_tokens
        if all(isinstance(got[key], torch.Tensor) for key in ("uncached", "uncached_again")):
            noisy = randomness(got["uncached"].double(), got["uncached_again"].double(),
                               "generate(model, prompt, n, use_cache=False)")
            if noisy:
                return [noisy + "; greedy decoding takes the argmax of the last position's logits"]
        problems = []
        for key, prompt, what in (("cached1", p1, "generate(model, prompt, n, use_cache=True)"),
                                  ("cached2", p2, "a second generate(..., use_cache=True) with another prompt"),
                                  ("uncached", p1, "generate(model, prompt, n, use_cache=False)")):
            problem = _greedy_problem(got[key], prompt, n, reference, what)
            if problem:
                problems.append(problem)
        left = _ints(got["left"])
        if any(length != -1 for length in left):
            problems.append(LEFT_CACHE)
        raised, after, failed = (_ints(got["failure"]) + [-1, -1, -1])[:3]
        if failed == 1:  # the model did raise (a generate that stops early never reaches the failing step)
            if raised == 0:
                problems.append(
                    f"the model raised an error at decoding step {p.fail_at} and generate returned as if nothing had "
                    "happened: let the exception propagate (try: ... finally: model.remove_cache(), no except), so "
                    "that a failure is not mistaken for a result")
            elif after != -1:
                problems.append(
                    f"when the model raised an error during generation (here at decoding step {p.fail_at}), generate "
                    "left the KV cache set up: remove it in a finally: block (try: ... finally: model.remove_cache()), "
                    "so that a failure does not leave the model cached")
        # The prefill feeds the prompt at position 0, then every step feeds one token at its position.
        calls, counts = got["calls"], _ints(got["n_calls"])
        if not problems and len(counts) == 3 and calls.dim() == 2 and calls.shape[0] == sum(counts):
            for part, (start, m, T) in enumerate(((0, counts[0], p.prompt_lengths[0]),
                                                  (counts[0], counts[1], p.prompt_lengths[1]))):
                fed = calls[start:start + m]
                want = torch.tensor([[T, 0]] + [[1, T + i] for i in range(m - 1)], dtype=torch.int64).reshape(-1, 2)
                if m != n or not torch.equal(fed, want):
                    problems.append(
                        f"with the cache, generate should call the model {n} times: once with the whole "
                        f"prompt at start_pos=0, then with one new token per step at its position; it was called with "
                        f"(tokens fed, start_pos) = {[tuple(r) for r in fed.tolist()]}")
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
