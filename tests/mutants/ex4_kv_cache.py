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
        hint="the model still had its KV cache set up",
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
    # ---- new mistakes (issue 13): part 1, KVCache
    Mutant(
        id="plain-attributes",
        grade_id="kv_cache",
        old="""        self.register_buffer("k", torch.zeros(batch_size, n_kv_head, capacity, head_dim, device=device, dtype=dtype),
                             persistent=False)
        self.register_buffer("v", torch.zeros_like(self.k), persistent=False)""",
        new="""        self.k = torch.zeros(batch_size, n_kv_head, capacity, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)""",
        hint="are not registered buffers",
    ),
    Mutant(
        id="persistent-buffers",
        grade_id="kv_cache",
        old="""dtype=dtype),
                             persistent=False)
        self.register_buffer("v", torch.zeros_like(self.k), persistent=False)""",
        new="""dtype=dtype))
        self.register_buffer("v", torch.zeros_like(self.k))""",
        hint="the cache buffers are in the state dict",
    ),
    Mutant(
        id="dtype-ignored",
        grade_id="kv_cache",
        old="torch.zeros(batch_size, n_kv_head, capacity, head_dim, device=device, dtype=dtype)",
        new="torch.zeros(batch_size, n_kv_head, capacity, head_dim, device=device)",
        hint="pass dtype (and device) to the allocation",
    ),
    Mutant(
        id="device-ignored",
        grade_id="kv_cache",
        old="torch.zeros(batch_size, n_kv_head, capacity, head_dim, device=device, dtype=dtype)",
        new="torch.zeros(batch_size, n_kv_head, capacity, head_dim, dtype=dtype)",
        hint="put its buffers on another device",
    ),
    Mutant(
        id="length-adds-t",
        grade_id="kv_cache",
        old="        self.length = start_pos + T  #",
        new="        self.length += T  #",
        hint="self.length += T is wrong",
    ),
    Mutant(
        id="continuation-refused",
        grade_id="kv_cache",
        old="        if start_pos > self.length:\n",
        new="        if start_pos >= self.length:\n",
        hint="start_pos == length continues the sequence",
    ),
    Mutant(
        id="returns-whole-buffer",
        grade_id="kv_cache",
        old="return self.k[:, :, :self.length], self.v[:, :, :self.length]",
        new="return self.k, self.v",
        hint="update returned the whole buffer",
    ),
    Mutant(
        id="returns-new-only",
        grade_id="kv_cache",
        old="return self.k[:, :, :self.length], self.v[:, :, :self.length]",
        new="return k, v",
        hint="update returned only the new positions",
    ),
    # ---- part 2, CachedSelfAttention: exercise 1's attention mistakes, named here too
    Mutant(
        id="divided-by-head-dim",
        grade_id="cached_attention",
        old="y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)",
        new="y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1 / self.head_dim, enable_gqa=True)",
        hint="divided by head_dim instead of sqrt(head_dim)",
    ),
    Mutant(
        id="mask-off-by-one",
        grade_id="cached_attention",
        old="mask = k_pos <= q_pos  # (T, S), True = may attend",
        new="mask = k_pos < q_pos  # (T, S), True = may attend",
        hint="the causal mask is off by one",
    ),
    Mutant(
        id="inverted-mask",
        grade_id="cached_attention",
        old="mask = k_pos <= q_pos  # (T, S), True = may attend",
        new="mask = k_pos >= q_pos  # (T, S), True = masked",
        hint="the causal mask is inverted",
    ),
    Mutant(  # nn.Transformer habits: a 0/1 mask made float, which SDPA adds to the scores
        id="float-mask",
        grade_id="cached_attention",
        old="mask = k_pos <= q_pos  # (T, S), True = may attend",
        new="mask = (k_pos <= q_pos).float()  # (T, S), 1 = may attend",
        hint="the mask is a float tensor of 0s and 1s",
    ),
    Mutant(
        id="heads-split-without-transpose",
        grade_id="cached_attention",
        old="""        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, T, head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, T, head_dim)""",
        new="""        q = self.q_proj(x).view(B, self.n_head, T, self.head_dim)
        k = self.k_proj(x).view(B, self.n_kv_head, T, self.head_dim)
        v = self.v_proj(x).view(B, self.n_kv_head, T, self.head_dim)""",
        hint="without a transpose",
    ),
    Mutant(
        id="kv-heads-tiled",
        grade_id="cached_attention",
        old="y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)",
        new="n_rep = self.n_head // self.n_kv_head\n"
            "        y = F.scaled_dot_product_attention(q, k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1), attn_mask=mask)",
        hint="expanded in the wrong order",
    ),
    Mutant(
        id="softmax-over-queries",
        grade_id="cached_attention",
        old="y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)",
        new="n_rep = self.n_head // self.n_kv_head\n"
            "        k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)\n"
            "        scores = (q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)).masked_fill(~mask, float('-inf'))\n"
            "        y = torch.softmax(scores, dim=-2) @ v",
        hint="softmax is taken over the query axis",
    ),
    Mutant(  # the student builds the tables with the base of the book's examples instead of using self.rope
        id="rope-base-default",
        grade_id="cached_attention",
        old="cos, sin = self.rope.span(start_pos, start_pos + T)",
        new="cos, sin = RotaryEmbedding(self.head_dim, context_length=256).span(start_pos, start_pos + T)",
        hint="the rotary tables use base 10000",
    ),
    Mutant(
        id="attention-dropout",
        grade_id="cached_attention",
        old="y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)",
        new="y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.1, enable_gqa=True)",
        hint="gave different outputs for the same input twice",
    ),
    # ---- part 3, generate
    Mutant(
        id="cache-without-use-cache",
        grade_id="generate",
        old="    if use_cache:\n        model.setup_cache(",
        new="    if True:  # the cache is always set up\n        model.setup_cache(",
        hint="a cache was set up although use_cache=False",
    ),
    Mutant(
        id="no-finally",
        grade_id="generate",
        old=_GENERATE_BODY,
        new=(
            "    if use_cache:\n"
            "        model.setup_cache(idx.shape[0], idx.shape[1] + max_new_tokens)\n"
            "    step_input, start_pos = idx, 0\n"
            "    for _ in range(max_new_tokens):\n"
            "        if use_cache:\n"
            "            logits = model(step_input, start_pos)\n"
            "            start_pos += step_input.shape[1]\n"
            "        else:\n"
            "            logits = model(idx)\n"
            "        next_token = logits[:, -1].argmax(dim=-1, keepdim=True)\n"
            "        idx = torch.cat([idx, next_token], dim=1)\n"
            "        step_input = next_token\n"
            "    if use_cache:\n"
            "        model.remove_cache()\n"
        ),
        hint="generate left the KV cache set up",
    ),
    Mutant(
        id="error-swallowed",
        grade_id="generate",
        old="    finally:\n",
        new="    except Exception:  # keep what was generated so far\n        pass\n    finally:\n",
        hint="generate returned as if nothing had happened",
    ),
    Mutant(
        id="setup-arguments-swapped",
        grade_id="generate",
        old="model.setup_cache(idx.shape[0], idx.shape[1] + max_new_tokens)",
        new="model.setup_cache(idx.shape[1] + max_new_tokens, idx.shape[0])",
        hint="the arguments are (batch_size, max_len)",
    ),
    Mutant(
        id="cache-too-small",
        grade_id="generate",
        old="model.setup_cache(idx.shape[0], idx.shape[1] + max_new_tokens)",
        new="model.setup_cache(idx.shape[0], max_new_tokens)",
        hint="max_len = idx.shape[1] + max_new_tokens",
    ),
    Mutant(
        id="setup-every-step",
        grade_id="generate",
        old="            if use_cache:\n                logits = model(step_input, start_pos)",
        new="            if use_cache:\n"
            "                model.setup_cache(idx.shape[0], idx.shape[1] + max_new_tokens)\n"
            "                logits = model(step_input, start_pos)",
        hint="setup_cache more than once",
    ),
    Mutant(  # sampling, as the book's text generation does, where the exercise asks for greedy decoding
        id="samples-next-token",
        grade_id="generate",
        old="next_token = logits[:, -1].argmax(dim=-1, keepdim=True)",
        new="next_token = torch.multinomial(torch.softmax(logits[:, -1], dim=-1), 1)",
        hint="greedy decoding takes the argmax",
    ),
]

ALTERNATIVES = [
    Mutant(
        id="index-copy",
        grade_id="kv_cache",
        old="        self.k[:, :, start_pos:start_pos + T] = k  # in place: the buffers never move\n"
            "        self.v[:, :, start_pos:start_pos + T] = v\n",
        new="        positions = torch.arange(start_pos, start_pos + T, device=self.k.device)\n"
            "        self.k.index_copy_(2, positions, k)\n"
            "        self.v.index_copy_(2, positions, v)\n",
    ),
    Mutant(
        id="narrow-copy-empty-buffers",
        grade_id="kv_cache",
        old="""        self.register_buffer("k", torch.zeros(batch_size, n_kv_head, capacity, head_dim, device=device, dtype=dtype),
                             persistent=False)
        self.register_buffer("v", torch.zeros_like(self.k), persistent=False)""",
        new="""        shape = (batch_size, n_kv_head, capacity, head_dim)
        self.register_buffer("k", torch.empty(shape, device=device, dtype=dtype).zero_(), persistent=False)
        self.register_buffer("v", self.k.new_zeros(shape), persistent=False)""",
    ),
    Mutant(
        id="narrow-copy",
        grade_id="kv_cache",
        old="        self.k[:, :, start_pos:start_pos + T] = k  # in place: the buffers never move\n"
            "        self.v[:, :, start_pos:start_pos + T] = v\n",
        new="        self.k.narrow(2, start_pos, T).copy_(k)\n"
            "        self.v.narrow(2, start_pos, T).copy_(v)\n",
    ),
    Mutant(  # attention written out: heads repeated after the cache lookup, a float mask built with torch.where
        id="manual-softmax-where-mask",
        grade_id="cached_attention",
        old="y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)",
        new="n_rep = self.n_head // self.n_kv_head\n"
            "        k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)\n"
            "        bias = torch.where(mask, 0.0, float('-inf'))\n"
            "        scores = torch.einsum('bhtd,bhsd->bhts', q, k) / math.sqrt(self.head_dim) + bias\n"
            "        y = torch.einsum('bhts,bhsd->bhtd', torch.softmax(scores, dim=-1), v)",
    ),
    Mutant(  # without a cache the keys start where the queries do: is_causal's top-left mask is then right
        id="is-causal-without-cache",
        grade_id="cached_attention",
        old="y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)",
        new="if self.cache is None:\n"
            "            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)\n"
            "        else:\n"
            "            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)",
    ),
    Mutant(  # the key/value heads expanded with expand + reshape (a view until the reshape), SDPA without enable_gqa
        id="expand-reshape-heads",
        grade_id="cached_attention",
        old="y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)",
        new="n_rep = self.n_head // self.n_kv_head\n"
            "        k = k[:, :, None].expand(B, self.n_kv_head, n_rep, S, self.head_dim).reshape(B, self.n_head, S, -1)\n"
            "        v = v[:, :, None].expand(B, self.n_kv_head, n_rep, S, self.head_dim).reshape(B, self.n_head, S, -1)\n"
            "        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)",
    ),
    Mutant(  # the prefill before the loop, the position read from the sequence's length
        id="prefill-then-while",
        grade_id="generate",
        old=_GENERATE_BODY,
        new=(
            "    B, T = idx.shape\n"
            "    if not use_cache:\n"
            "        for _ in range(max_new_tokens):\n"
            "            idx = torch.cat([idx, model(idx)[:, -1].argmax(-1, keepdim=True)], dim=1)\n"
            "        return idx\n"
            "    model.setup_cache(B, T + max_new_tokens)\n"
            "    try:\n"
            "        out = [idx]\n"
            "        if max_new_tokens > 0:\n"
            "            out.append(model(idx, 0)[:, -1:].argmax(-1))\n"
            "        while sum(t.shape[1] for t in out) < T + max_new_tokens:\n"
            "            pos = sum(t.shape[1] for t in out) - 1\n"
            "            out.append(model(out[-1], pos)[:, -1:].argmax(-1))\n"
            "        idx = torch.cat(out, dim=1)\n"
            "    finally:\n"
            "        model.remove_cache()\n"
        ),
    ),
]

