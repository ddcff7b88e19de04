"""Mistakes students make in exercise 4 (the KV cache), as mutations of the solution notebook."""
from tests.mutants import Mutant

_GENERATE_BODY = (
    "    if use_cache:\n"
    "        model.setup_cache(idx.shape[0], idx.shape[1] + max_new_tokens)  # room for the prompt and the new tokens\n"
    "    try:\n"
    "        step_input, start_pos = idx, 0  # the prefill: the whole prompt once, at positions 0 .. T-1\n"
    "        for _ in range(max_new_tokens):\n"
    "            if use_cache:\n"
    "                logits = model(step_input, start_pos)  # (B, T_in, vocab): T_in tokens at positions start_pos ..\n"
    "                start_pos += step_input.shape[1]  # the position of the next token fed\n"
    "            else:\n"
    "                logits = model(idx)  # (B, T, vocab): the whole sequence so far, from position 0\n"
    "            next_token = logits[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)\n"
    "            idx = torch.cat([idx, next_token], dim=1)\n"
    "            step_input = next_token  # decoding: only the newest token\n"
    "    finally:\n"
    "        if use_cache:\n"
    "            model.remove_cache()  # leave the model uncached, as it was\n"
)

MUTANTS = [
    # ---- part 1: KVCache
    Mutant(
        id="length-not-set",
        grade_id="kv_cache",
        old="        self.length = start_pos + T  #",
        new="        pass  # forgot: self.length = start_pos + T;",
        hint="length does not advance",
    ),
    Mutant(
        id="torch-cat",
        grade_id="kv_cache",
        old="        self.k[:, :, start_pos:start_pos + T] = k  # in place: the buffers never move\n"
            "        self.v[:, :, start_pos:start_pos + T] = v\n",
        new="        self.k = torch.cat([self.k[:, :, :start_pos], k], dim=2)\n"
            "        self.v = torch.cat([self.v[:, :, :start_pos], v], dim=2)\n",
        hint="the cache was reallocated",
    ),
    Mutant(
        id="returns-copies",
        grade_id="kv_cache",
        old="return self.k[:, :, :self.length], self.v[:, :, :self.length]",
        new="return self.k[:, :, :self.length].clone(), self.v[:, :, :self.length].clone()",
        hint="update returned a copy, not a view",
    ),
    Mutant(
        id="no-capacity-check",
        grade_id="kv_cache",
        old="        if start_pos + T > self.capacity:\n",
        new="        if False:\n",
        hint="raised an exception other than ValueError",
    ),
    Mutant(
        id="capacity-off-by-one",
        grade_id="kv_cache",
        old="        if start_pos + T > self.capacity:\n",
        new="        if start_pos + T >= self.capacity:\n",
        hint="must accept exactly capacity positions",
    ),
    Mutant(  # was "reset() keeps pos": a restart at an earlier start_pos keeps the old length
        id="length-kept-on-rewrite",
        grade_id="kv_cache",
        old="        self.length = start_pos + T  #",
        new="        self.length = max(self.length, start_pos + T)  # the cache only grows;",
        hint="set self.length = start_pos + T also when start_pos goes back",
    ),
    Mutant(  # was "reset() reallocates": a new sequence gets new buffers
        id="restart-reallocates",
        grade_id="kv_cache",
        old="        T = k.shape[2]\n",
        new="        T = k.shape[2]\n"
            "        if start_pos == 0:  # a new sequence: fresh buffers\n"
            "            self.k = torch.zeros_like(self.k)\n"
            "            self.v = torch.zeros_like(self.v)\n",
        hint="update(k, v, start_pos=0) allocated new buffers",
    ),
    Mutant(
        id="ignores-start-pos",
        grade_id="kv_cache",
        old="        T = k.shape[2]\n",
        new="        T = k.shape[2]\n        start_pos = self.length  # always append after what is stored\n",
        hint="update must write at start_pos",
    ),
    Mutant(
        id="no-gap-check",
        grade_id="kv_cache",
        old="        if start_pos > self.length:\n",
        new="        if False:\n",
        hint="never stored; raise ValueError when start_pos > length",
    ),
    # ---- part 2: CachedSelfAttention
    Mutant(
        id="rope-positions-from-zero",
        grade_id="cached_attention",
        old="cos, sin = self.rope.span(start_pos, start_pos + T)",
        new="cos, sin = self.rope.span(0, T)",
        hint="the positions restart at 0",
    ),
    Mutant(
        id="is-causal-with-cache",
        grade_id="cached_attention",
        old="y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)",
        new="y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)",
        hint="aligned to the top-left corner",
    ),
    Mutant(
        id="no-mask-with-cache",
        grade_id="cached_attention",
        old="mask = k_pos <= q_pos  # (T, S), True = may attend",
        new="mask = None if self.cache is not None else k_pos <= q_pos",
        hint="with a cache there is no causal mask",
    ),
    Mutant(
        id="update-result-ignored",
        grade_id="cached_attention",
        old="            k, v = self.cache.update(k, v, start_pos)",
        new="            self.cache.update(k, v, start_pos)",
        hint="the new tokens attend only to themselves",
    ),
    Mutant(
        id="repeat-before-cache",
        grade_id="cached_attention",
        old="        if self.cache is not None:\n            k, v = self.cache.update(k, v, start_pos)",
        new="        k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)\n"
            "        v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)\n"
            "        if self.cache is not None:\n            k, v = self.cache.update(k, v, start_pos)",
        hint="pass the n_kv_head key/value heads",
    ),
    Mutant(
        id="keys-not-rotated",
        grade_id="cached_attention",
        old="q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)",
        new="q = apply_rope(q, cos, sin)",
        hint="RoPE is not applied to the keys",
    ),
    Mutant(  # the implicit-position habit: the position read from the cache instead of the argument
        id="start-pos-from-cache",
        grade_id="cached_attention",
        old="        B, T, C = x.shape\n",
        new="        B, T, C = x.shape\n        start_pos = self.cache.length if self.cache is not None else 0\n",
        hint="pass the start_pos that forward was given",
    ),
    Mutant(
        id="key-positions-from-zero",
        grade_id="cached_attention",
        old="k_pos = torch.arange(first_key, start_pos + T, device=x.device)[None, :]",
        new="k_pos = torch.arange(S, device=x.device)[None, :]",
        hint="without a cache the keys are x's own",
    ),
    # ---- part 3: generate
    Mutant(
        id="feeds-whole-sequence",
        grade_id="generate",
        old="logits = model(step_input, start_pos)",
        new="logits = model(idx)",
        hint="feed only the newest token",
    ),
    Mutant(
        id="no-start-pos",
        grade_id="generate",
        old="logits = model(step_input, start_pos)",
        new="logits = model(step_input)",
        hint="pass each new token's position",
    ),
    Mutant(
        id="cache-never-removed",
        grade_id="generate",
        old="            model.remove_cache()  # leave the model uncached, as it was",
        new="            pass",
        hint="with a KV cache still set up from an earlier call",
    ),
    Mutant(  # the cache is set up once, for a generous length, and the positions are read from it
        id="cache-kept-between-prompts",
        grade_id="generate",
        old=_GENERATE_BODY,
        new=(
            "    if use_cache and model.cache_length is None:\n"
            "        model.setup_cache(idx.shape[0], 64)\n"
            "    step_input = idx\n"
            "    for _ in range(max_new_tokens):\n"
            "        logits = model(step_input, model.cache_length) if use_cache else model(idx)\n"
            "        next_token = logits[:, -1].argmax(dim=-1, keepdim=True)\n"
            "        idx = torch.cat([idx, next_token], dim=1)\n"
            "        step_input = next_token\n"
        ),
        hint="a new prompt starts at position 0",
    ),
    Mutant(
        id="logits-first-position",
        grade_id="generate",
        old="next_token = logits[:, -1].argmax(dim=-1, keepdim=True)",
        new="next_token = logits[:, 0].argmax(dim=-1, keepdim=True)",
        hint="logits of the first position",
    ),
    Mutant(
        id="one-token-short",
        grade_id="generate",
        old="for _ in range(max_new_tokens):",
        new="for _ in range(max_new_tokens - 1):",
        hint="exactly max_new_tokens new tokens",
    ),
]
