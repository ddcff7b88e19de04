"""Mistakes students make in exercise 4 (the KV cache), as mutations of the solution notebook."""
from tests.mutants import Mutant

MUTANTS = [
    # ---- part 1: KVCache
    Mutant(
        id="pos-not-advanced",
        grade_id="kv_cache",
        old="        self.pos += T\n",
        new="",
        hint="pos does not advance",
    ),
    Mutant(
        id="torch-cat",
        grade_id="kv_cache",
        old="        self.k_cache[:, :, self.pos:self.pos + T] = k\n        self.v_cache[:, :, self.pos:self.pos + T] = v\n",
        new="        self.k_cache = torch.cat([self.k_cache[:, :, :self.pos], k], dim=2)\n"
            "        self.v_cache = torch.cat([self.v_cache[:, :, :self.pos], v], dim=2)\n",
        hint="the cache was reallocated",
    ),
    Mutant(
        id="returns-copies",
        grade_id="kv_cache",
        old="return self.k_cache[:, :, :self.pos], self.v_cache[:, :, :self.pos]",
        new="return self.k_cache[:, :, :self.pos].clone(), self.v_cache[:, :, :self.pos].clone()",
        hint="update returned a copy, not a view",
    ),
    Mutant(
        id="no-capacity-check",
        grade_id="kv_cache",
        old="        if self.pos + T > self.max_len:\n",
        new="        if False:\n",
        hint="raised an exception other than ValueError",
    ),
    Mutant(
        id="capacity-off-by-one",
        grade_id="kv_cache",
        old="        if self.pos + T > self.max_len:\n",
        new="        if self.pos + T >= self.max_len:\n",
        hint="must accept exactly max_len positions",
    ),
    Mutant(
        id="reset-keeps-pos",
        grade_id="kv_cache",
        old="        \"\"\"Empty the cache for a new sequence, keeping its memory.\"\"\"\n"
            "        ### BEGIN SOLUTION\n        self.pos = 0\n",
        new="        \"\"\"Empty the cache for a new sequence, keeping its memory.\"\"\"\n"
            "        ### BEGIN SOLUTION\n        self.k_cache.zero_()\n        self.v_cache.zero_()\n",
        hint="reset() did not set pos back to 0",
    ),
    Mutant(
        id="reset-reallocates",
        grade_id="kv_cache",
        old="        \"\"\"Empty the cache for a new sequence, keeping its memory.\"\"\"\n"
            "        ### BEGIN SOLUTION\n        self.pos = 0\n",
        new="        \"\"\"Empty the cache for a new sequence, keeping its memory.\"\"\"\n"
            "        ### BEGIN SOLUTION\n        self.k_cache = torch.zeros_like(self.k_cache)\n"
            "        self.v_cache = torch.zeros_like(self.v_cache)\n        self.pos = 0\n",
        hint="reset() allocated new buffers",
    ),
    # ---- part 2: CachedSelfAttention
    Mutant(
        id="rope-positions-from-zero",
        grade_id="cached_attention",
        old="cos, sin = self.rope.span(start, start + T)",
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
        old="            k, v = self.cache.update(k, v)",
        new="            self.cache.update(k, v)",
        hint="the new tokens attend only to themselves",
    ),
    Mutant(
        id="repeat-before-cache",
        grade_id="cached_attention",
        old="        if self.cache is not None:\n            k, v = self.cache.update(k, v)",
        new="        k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)\n"
            "        v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)\n"
            "        if self.cache is not None:\n            k, v = self.cache.update(k, v)",
        hint="pass the n_kv_head key/value heads",
    ),
    Mutant(
        id="keys-not-rotated",
        grade_id="cached_attention",
        old="q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)",
        new="q = apply_rope(q, cos, sin)",
        hint="RoPE is not applied to the keys",
    ),
    # ---- part 3: generate
    Mutant(
        id="feeds-whole-sequence",
        grade_id="generate",
        old="logits = model(step_input if use_cache else idx)",
        new="logits = model(idx)",
        hint="feed only the newest token",
    ),
    Mutant(
        id="cache-never-removed",
        grade_id="generate",
        old="            model.remove_cache()  # leave the model uncached, as it was",
        new="            pass",
        hint="with a KV cache still set up from an earlier call",
    ),
    Mutant(
        id="cache-not-reset-between-prompts",
        grade_id="generate",
        old=(
            "    if use_cache:\n"
            "        model.setup_cache(idx.shape[0], idx.shape[1] + max_new_tokens)  # a fresh, empty cache for this prompt\n"
            "    try:\n"
            "        step_input = idx  # the prefill: the whole prompt once\n"
            "        for _ in range(max_new_tokens):\n"
            "            logits = model(step_input if use_cache else idx)  # (B, T_in, vocab)\n"
            "            next_token = logits[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)\n"
            "            idx = torch.cat([idx, next_token], dim=1)\n"
            "            step_input = next_token  # decoding: only the newest token\n"
            "    finally:\n"
            "        if use_cache:\n"
            "            model.remove_cache()  # leave the model uncached, as it was\n"
        ),
        new=(  # the cache is set up once, for a generous length, and reused as it is for the next prompt
            "    if use_cache and model.cache_length is None:\n"
            "        model.setup_cache(idx.shape[0], 64)\n"
            "    step_input = idx\n"
            "    for _ in range(max_new_tokens):\n"
            "        logits = model(step_input if use_cache else idx)\n"
            "        next_token = logits[:, -1].argmax(dim=-1, keepdim=True)\n"
            "        idx = torch.cat([idx, next_token], dim=1)\n"
            "        step_input = next_token\n"
        ),
        hint="was not reset between prompts",
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
