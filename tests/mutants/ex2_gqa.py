"""Mistakes students make in exercise 2 (grouped-query attention), as mutations of the solution notebook."""
from tests.mutants import Mutant

MUTANTS = [
    Mutant(
        id="repeat-not-interleave",
        grade_id="repeat_kv",
        old="    x = x[:, :, None].expand(B, n_kv_head, n_rep, T, head_dim)  # (B, n_kv_head, n_rep, T, head_dim), no copy yet\n"
            "    return x.reshape(B, n_kv_head * n_rep, T, head_dim)  # the copy happens here",
        new="    return x.repeat(1, n_rep, 1, 1)",
        hint="expanded in the wrong order",
    ),
    Mutant(
        id="repeat-positions",
        grade_id="repeat_kv",
        old="    x = x[:, :, None].expand(B, n_kv_head, n_rep, T, head_dim)  # (B, n_kv_head, n_rep, T, head_dim), no copy yet\n"
            "    return x.reshape(B, n_kv_head * n_rep, T, head_dim)  # the copy happens here",
        new="    return x.repeat_interleave(n_rep, dim=2)",
        hint="along the wrong axis",
    ),
    Mutant(
        id="no-scale",
        grade_id="gqa_attention",
        old="scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])",
        new="scores = q @ k.transpose(-2, -1)",
        hint="not divided by sqrt(head_dim)",
    ),
    Mutant(
        id="causal-ignored",
        grade_id="gqa_attention",
        old="    if causal:\n",
        new="    if False:\n",
        hint="the mask is ignored",  # the shared wording of mistakes.attention_mistakes
    ),
    Mutant(
        id="softmax-query-axis",
        grade_id="gqa_attention",
        old="return torch.softmax(scores, dim=-1) @ v",
        new="return torch.softmax(scores, dim=-2) @ v",
        hint="softmax is taken over the query axis",
    ),
    Mutant(
        id="kv-full-width",
        grade_id="gqa_module",
        old="self.k_proj = nn.Linear(n_embd, n_kv_head * self.head_dim, bias=False)",
        new="self.k_proj = nn.Linear(n_embd, n_head * self.head_dim, bias=False)",
        hint="the key/value projections are n_kv_head heads wide",
    ),
    Mutant(
        id="no-divisibility-check",
        grade_id="gqa_module",
        old="        if n_kv_head < 1 or n_head % n_kv_head:\n"
            "            raise ValueError(f\"n_kv_head={n_kv_head} must divide n_head={n_head} \"\n"
            "                             f\"(choose from {[d for d in range(1, n_head + 1) if n_head % d == 0]}).\")\n",
        new="",
        hint="did not raise a ValueError",
    ),
    Mutant(
        id="module-not-causal",
        grade_id="gqa_module",
        old="y = gqa_attention(q, k, v, causal=True)",
        new="y = gqa_attention(q, k, v, causal=False)",
        hint="the attention is not causal",
    ),
    Mutant(
        id="no-o-proj",
        grade_id="gqa_module",
        old="return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))",
        new="return y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)",
        hint="o_proj is not applied",
    ),
    Mutant(
        id="no-factor-2",
        grade_id="kv_cache_bytes",
        old="return 2 * n_layer * n_kv_head",
        new="return n_layer * n_kv_head",
        hint="the factor 2 is missing",
    ),
    Mutant(
        id="no-n-layer",
        grade_id="kv_cache_bytes",
        old="return 2 * n_layer * n_kv_head",
        new="return 2 * n_kv_head",
        hint="n_layer is missing",
    ),
    Mutant(
        id="elements-not-bytes",
        grade_id="kv_cache_bytes",
        old=" * batch_size * bytes_per_element",
        new=" * batch_size",
        hint="counts elements, not bytes",
    ),

    # ---- found for issue 13: each named, each costing its own part only ----------------------------------
    Mutant(
        id="repeat-cat-tiles",
        grade_id="repeat_kv",
        old="    x = x[:, :, None].expand(B, n_kv_head, n_rep, T, head_dim)  # (B, n_kv_head, n_rep, T, head_dim), no copy yet\n"
            "    return x.reshape(B, n_kv_head * n_rep, T, head_dim)  # the copy happens here",
        new="    return torch.cat([x] * n_rep, dim=1)",
        hint="expanded in the wrong order",
    ),
    Mutant(
        id="repeat-expand-wrong-axis",
        grade_id="repeat_kv",
        old="x = x[:, :, None].expand(B, n_kv_head, n_rep, T, head_dim)",
        new="x = x[:, None].expand(B, n_rep, n_kv_head, T, head_dim)",
        hint="expanded in the wrong order",
    ),
    Mutant(
        id="repeat-expand-view",
        grade_id="repeat_kv",
        old="return x.reshape(B, n_kv_head * n_rep, T, head_dim)",
        new="return x.view(B, n_kv_head * n_rep, T, head_dim)",
        hint="use .reshape(...)",
    ),
    Mutant(
        id="repeat-batch-axis",
        grade_id="repeat_kv",
        old="    x = x[:, :, None].expand(B, n_kv_head, n_rep, T, head_dim)  # (B, n_kv_head, n_rep, T, head_dim), no copy yet\n"
            "    return x.reshape(B, n_kv_head * n_rep, T, head_dim)  # the copy happens here",
        new="    return torch.repeat_interleave(x, n_rep, dim=0)",
        hint="not the batch (dim=0)",
    ),
    Mutant(
        id="repeat-float32-buffer",
        grade_id="repeat_kv",
        old="    x = x[:, :, None].expand(B, n_kv_head, n_rep, T, head_dim)  # (B, n_kv_head, n_rep, T, head_dim), no copy yet\n"
            "    return x.reshape(B, n_kv_head * n_rep, T, head_dim)  # the copy happens here",
        new="    out = torch.zeros(B, n_kv_head * n_rep, T, head_dim)\n"
            "    for h in range(n_kv_head * n_rep):\n"
            "        out[:, h] = x[:, h // n_rep]\n"
            "    return out",
        hint="must keep x's dtype",
    ),
    Mutant(
        id="scale-by-head-dim",
        grade_id="gqa_attention",
        old="scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])",
        new="scores = q @ k.transpose(-2, -1) / q.shape[-1]",
        hint="divided by head_dim instead of sqrt(head_dim)",
    ),
    Mutant(
        id="scale-by-n-head",
        grade_id="gqa_attention",
        old="scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])",
        new="scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[1])",
        hint="divided by sqrt(n_head)",
    ),
    Mutant(
        id="mask-hides-diagonal",
        grade_id="gqa_attention",
        old="allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()",
        new="allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(-1)",
        hint="the causal mask is off by one",
    ),
    Mutant(
        id="mask-sees-next",
        grade_id="gqa_attention",
        old="allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()",
        new="allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(1)",
        hint="each position also sees the next one",
    ),
    Mutant(
        id="mask-inverted",
        grade_id="gqa_attention",
        old="scores = scores.masked_fill(~allowed, float(\"-inf\"))",
        new="scores = scores.masked_fill(allowed, float(\"-inf\"))",
        hint="the causal mask is inverted",
    ),
    Mutant(
        id="mask-after-softmax",
        grade_id="gqa_attention",
        old="        scores = scores.masked_fill(~allowed, float(\"-inf\"))\n"
            "    return torch.softmax(scores, dim=-1) @ v  # (B, n_head, T, head_dim)",
        new="        return torch.softmax(scores, dim=-1).masked_fill(~allowed, 0.0) @ v\n"
            "    return torch.softmax(scores, dim=-1) @ v  # (B, n_head, T, head_dim)",
        hint="the mask is applied after the softmax",
    ),
    Mutant(
        id="mask-filled-with-zero",
        grade_id="gqa_attention",
        old="scores = scores.masked_fill(~allowed, float(\"-inf\"))",
        new="scores = scores.masked_fill(~allowed, 0.0)",
        hint="set to 0 instead of -inf",
    ),
    Mutant(
        id="mask-always-on",
        grade_id="gqa_attention",
        old="    if causal:\n",
        new="    if True:  # the mask is always built\n",
        hint="causal=False still applies the causal mask",
    ),
    Mutant(
        id="inline-tiled-repeat",
        grade_id="gqa_attention",
        old="    k = repeat_kv(k, n_head // n_kv_head)  # (B, n_head, T, head_dim)\n"
            "    v = repeat_kv(v, n_head // n_kv_head)  # (B, n_head, T, head_dim)\n",
        new="    k = k.repeat(1, n_head // n_kv_head, 1, 1)\n"
            "    v = v.repeat(1, n_head // n_kv_head, 1, 1)\n",
        hint="query head h must read key/value head h // n_rep",
    ),
    Mutant(
        id="attention-dropout",
        grade_id="gqa_attention",
        old="return torch.softmax(scores, dim=-1) @ v",
        new="return F.dropout(torch.softmax(scores, dim=-1), p=0.1) @ v",
        hint="gave different outputs for the same input twice",
    ),
    Mutant(
        id="attention-returns-float32",
        grade_id="gqa_attention",
        old="return torch.softmax(scores, dim=-1) @ v",
        new="return (torch.softmax(scores, dim=-1) @ v).float()",
        hint="return the inputs' dtype",
    ),
    Mutant(
        id="split-without-transpose",
        grade_id="gqa_module",
        old="        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, head_dim)\n"
            "        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, T, head_dim)\n"
            "        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, T, head_dim)\n",
        new="        q = self.q_proj(x).view(B, self.n_head, T, self.head_dim)\n"
            "        k = self.k_proj(x).view(B, self.n_kv_head, T, self.head_dim)\n"
            "        v = self.v_proj(x).view(B, self.n_kv_head, T, self.head_dim)\n",
        hint="the heads are split with a reshape to (B, n_head, T, head_dim) without a transpose",
    ),
    Mutant(
        id="merge-without-transpose",
        grade_id="gqa_module",
        old="return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))",
        new="return self.o_proj(y.reshape(B, T, self.n_head * self.head_dim))",
        hint="the heads are concatenated in the wrong order",
    ),
    Mutant(
        id="merge-with-view",
        grade_id="gqa_module",
        old="return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))",
        new="return self.o_proj(y.transpose(1, 2).view(B, T, self.n_head * self.head_dim))",
        hint="call .contiguous() before .view",
    ),
    Mutant(
        id="keys-values-swapped",
        grade_id="gqa_module",
        old="y = gqa_attention(q, k, v, causal=True)",
        new="y = gqa_attention(q, v, k, causal=True)",
        hint="the keys and values are swapped",
    ),
    Mutant(
        id="module-functional-dropout",
        grade_id="gqa_module",
        old="y = gqa_attention(q, k, v, causal=True)",
        new="y = F.dropout(gqa_attention(q, k, v, causal=True), p=0.1)",
        hint="training=self.training",
    ),
    Mutant(
        id="divisibility-assert",
        grade_id="gqa_module",
        old="        if n_kv_head < 1 or n_head % n_kv_head:\n"
            "            raise ValueError(f\"n_kv_head={n_kv_head} must divide n_head={n_head} \"\n"
            "                             f\"(choose from {[d for d in range(1, n_head + 1) if n_head % d == 0]}).\")\n",
        new="        assert n_head % n_kv_head == 0, \"n_kv_head must divide n_head\"\n",
        hint="raised an exception that is not a ValueError",
    ),
    Mutant(
        id="divisibility-reversed",
        grade_id="gqa_module",
        old="if n_kv_head < 1 or n_head % n_kv_head:",
        new="if n_kv_head < 1 or n_kv_head % n_head:",
        hint="not n_kv_head % n_head",
    ),
]

# Correct answers written differently from the solution: each must keep full marks.
ALTERNATIVES = [
    Mutant(
        id="repeat-interleave",
        grade_id="repeat_kv",
        old="    if n_rep == 1:\n"
            "        return x\n"
            "    B, n_kv_head, T, head_dim = x.shape\n"
            "    x = x[:, :, None].expand(B, n_kv_head, n_rep, T, head_dim)  # (B, n_kv_head, n_rep, T, head_dim), no copy yet\n"
            "    return x.reshape(B, n_kv_head * n_rep, T, head_dim)  # the copy happens here",
        new="    return torch.repeat_interleave(x, n_rep, dim=1)",
    ),
    Mutant(
        id="repeat-index-select",
        grade_id="repeat_kv",
        old="    x = x[:, :, None].expand(B, n_kv_head, n_rep, T, head_dim)  # (B, n_kv_head, n_rep, T, head_dim), no copy yet\n"
            "    return x.reshape(B, n_kv_head * n_rep, T, head_dim)  # the copy happens here",
        new="    heads = torch.arange(n_kv_head * n_rep, device=x.device) // n_rep  # output head h reads head h // n_rep\n"
            "    return x.index_select(1, heads)",
    ),
    Mutant(
        id="repeat-stack-flatten",
        grade_id="repeat_kv",
        old="    x = x[:, :, None].expand(B, n_kv_head, n_rep, T, head_dim)  # (B, n_kv_head, n_rep, T, head_dim), no copy yet\n"
            "    return x.reshape(B, n_kv_head * n_rep, T, head_dim)  # the copy happens here",
        new="    out = torch.empty(B, n_kv_head * n_rep, T, head_dim, dtype=x.dtype, device=x.device)\n"
            "    for r in range(n_rep):\n"
            "        out[:, r::n_rep] = x\n"
            "    return out",
    ),
    Mutant(
        id="grouped-einsum",
        grade_id="gqa_attention",
        old="    k = repeat_kv(k, n_head // n_kv_head)  # (B, n_head, T, head_dim)\n"
            "    v = repeat_kv(v, n_head // n_kv_head)  # (B, n_head, T, head_dim)\n"
            "    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, n_head, T, T)\n"
            "    if causal:\n"
            "        T, S = scores.shape[-2:]\n"
            "        allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()  # True = may attend\n"
            "        scores = scores.masked_fill(~allowed, float(\"-inf\"))\n"
            "    return torch.softmax(scores, dim=-1) @ v  # (B, n_head, T, head_dim)",
        new="    B, _, T, D = q.shape\n"
            "    g = q.view(B, n_kv_head, n_head // n_kv_head, T, D)  # query heads grouped by their key/value head\n"
            "    scores = torch.einsum(\"bkgtd,bksd->bkgts\", g, k) * D ** -0.5\n"
            "    if causal:\n"
            "        future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)\n"
            "        scores = scores.masked_fill(future, -1e9)\n"
            "    y = torch.einsum(\"bkgts,bksd->bkgtd\", scores.softmax(dim=-1), v)\n"
            "    return y.reshape(B, n_head, T, D)",
    ),
    Mutant(
        id="additive-mask-where",
        grade_id="gqa_attention",
        old="        allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()  # True = may attend\n"
            "        scores = scores.masked_fill(~allowed, float(\"-inf\"))\n",
        new="        allowed = torch.arange(S, device=q.device)[None, :] <= torch.arange(T, device=q.device)[:, None]\n"
            "        scores = torch.where(allowed, scores, torch.tensor(float(\"-inf\"), dtype=scores.dtype))\n",
    ),
    Mutant(
        id="module-permute-unflatten",
        grade_id="gqa_module",
        old="        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, head_dim)\n"
            "        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, T, head_dim)\n"
            "        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, T, head_dim)\n"
            "        y = gqa_attention(q, k, v, causal=True)  # (B, n_head, T, head_dim)\n"
            "        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))  # (B, T, n_embd)",
        new="        q = self.q_proj(x).unflatten(-1, (self.n_head, self.head_dim)).permute(0, 2, 1, 3)\n"
            "        k = self.k_proj(x).unflatten(-1, (self.n_kv_head, self.head_dim)).permute(0, 2, 1, 3)\n"
            "        v = self.v_proj(x).unflatten(-1, (self.n_kv_head, self.head_dim)).permute(0, 2, 1, 3)\n"
            "        k, v = repeat_kv(k, self.n_head // self.n_kv_head), repeat_kv(v, self.n_head // self.n_kv_head)\n"
            "        y = gqa_attention(q, k, v)  # causal by default; k and v already expanded\n"
            "        return self.o_proj(y.permute(0, 2, 1, 3).flatten(2))",
    ),
]
