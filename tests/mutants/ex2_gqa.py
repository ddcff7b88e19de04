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
        hint="the causal mask is ignored",
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
]
