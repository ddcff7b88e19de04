"""Mistakes students make in exercise 1 (a decoder-only transformer), as mutations of the solution notebook."""
from tests.mutants import Mutant

_QKV = """        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, head_dim)
        k = self.k_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, head_dim)
        v = self.v_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, head_dim)"""

_MASK = """.tril()  # key j visible to query i when j <= i
        scores = scores.masked_fill(~allowed, float("-inf"))"""

_PRE = """            x = x + self.attn(self.norm1(x))
            x = x + self.ffn(self.norm2(x))"""

MUTANTS = [
    # Part 1: attention
    Mutant("no-scale", "attention", "q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])", "q @ k.transpose(-2, -1)",
           "not divided by sqrt(head_dim)"),
    Mutant("scale-by-head-dim", "attention", "/ math.sqrt(q.shape[-1])", "/ q.shape[-1]",
           "divided by head_dim instead of sqrt(head_dim)"),
    Mutant("softmax-wrong-axis", "attention", "torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=-2)",
           "softmax is taken over the query axis"),
    Mutant("mask-inverted", "attention", "scores.masked_fill(~allowed,", "scores.masked_fill(allowed,",
           "the causal mask is inverted"),
    Mutant("mask-triu", "attention", ".tril()  #", ".triu()  #", "attend to the future instead of the past"),
    Mutant("mask-off-by-one-hides-self", "attention", ".tril()  #", ".tril(-1)  #",
           "it hides the diagonal, so a position cannot see itself"),
    Mutant("mask-off-by-one-finite-fill", "attention", _MASK, _MASK.replace(".tril()", ".tril(-1)").replace(
        'float("-inf")', "-1e9"), "the first position, with every key masked, averages all values"),
    Mutant("mask-off-by-one-sees-next", "attention", ".tril()  #", ".tril(1)  #", "each position also sees the next one"),
    Mutant("mask-ignores-causal-flag", "attention", "    if causal:\n", "    if True:\n",
           "causal=False still applies the causal mask"),
    # Part 2: multi-head attention
    Mutant("heads-split-without-transpose", "mha", _QKV, _QKV.replace(
        ".view(B, T, self.n_head, self.head_dim).transpose(1, 2)", ".view(B, self.n_head, T, self.head_dim)"),
        "reshape to (B, n_head, T, head_dim) without a transpose"),
    Mutant("heads-never-transposed", "mha", _QKV, _QKV.replace(".transpose(1, 2)", ""),
           "attention runs over the heads instead of the positions"),
    Mutant("heads-merged-without-transpose", "mha", "y = y.transpose(1, 2).reshape(B, T, C)", "y = y.reshape(B, T, C)",
           "the heads are concatenated in the wrong order"),
    Mutant("no-output-projection", "mha", "return self.o_proj(y)", "return y", "o_proj is not applied"),
    Mutant("mha-not-causal", "mha", "attention(q, k, v, causal=True)", "attention(q, k, v, causal=False)",
           "MultiHeadAttention must call attention(..., causal=True)"),
    # Part 3: feed-forward network
    Mutant("ffn-relu", "ffn", "F.gelu(self.up(x))", "F.relu(self.up(x))", "the activation is ReLU"),
    Mutant("ffn-no-activation", "ffn", "self.down(F.gelu(self.up(x)))", "self.down(self.up(x))",
           "there is no activation between up and down"),
    Mutant("ffn-gelu-tanh", "ffn", "F.gelu(self.up(x))", 'F.gelu(self.up(x), approximate="tanh")',
           "GELU's tanh approximation"),
    # Part 4: the block
    Mutant("no-attention-residual", "block", "x = x + self.attn(self.norm1(x))", "x = self.attn(self.norm1(x))",
           "the residual around attention is missing"),
    Mutant("no-ffn-residual", "block", "x = x + self.ffn(self.norm2(x))", "x = self.ffn(self.norm2(x))",
           "the residual around the FFN is missing"),
    Mutant("both-residuals-from-input", "block", _PRE,
           "            h = x + self.attn(self.norm1(x))\n            x = x + self.ffn(self.norm2(h))",
           "the second residual adds the block's input"),
    Mutant("parallel-block", "block", _PRE, "            x = x + self.attn(self.norm1(x)) + self.ffn(self.norm2(x))",
           "both sub-layers read the block's input"),
    Mutant("ffn-step-post-norm", "block", "x = x + self.ffn(self.norm2(x))", "x = self.norm2(x + self.ffn(x))",
           "the FFN step normalises after the residual"),
    Mutant("norm-flag-inverted", "block", "if self.pre_norm:", "if not self.pre_norm:",
           "pre_norm=True computes a post-norm block"),
    Mutant("norms-swapped", "block", _PRE,
           "            x = x + self.attn(self.norm2(x))\n            x = x + self.ffn(self.norm1(x))",
           "norm1 and norm2 are swapped"),
    Mutant("post-norm-no-residual", "block", "x = self.norm1(x + self.attn(x))", "x = self.norm1(self.attn(x))",
           "the residual around attention is missing: x = norm1(x + attn(x))"),
    # Part 5: the model
    Mutant("no-position-embedding", "decoder", "x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))",
           "x = self.tok_emb(idx)", "the position embedding is not added"),
    Mutant("embedding-scaled", "decoder", "x = self.tok_emb(idx) + self.pos_emb(",
           "x = self.tok_emb(idx) * math.sqrt(self.tok_emb.embedding_dim) + self.pos_emb(",
           "the token embedding is scaled by sqrt(n_embd)"),
    Mutant("untied-output-layer", "decoder", "self.lm_head.weight = self.tok_emb.weight  # tied", "pass  # tied",
           "the output layer is not tied to the token embedding"),
    Mutant("no-final-norm", "decoder", "return self.lm_head(self.norm_f(x))", "return self.lm_head(x)",
           "the final LayerNorm (norm_f) is not applied"),
    Mutant("post-norm-blocks", "decoder", "Block(n_embd, n_head, ffn_hidden)", "Block(n_embd, n_head, ffn_hidden, pre_norm=False)",
           "the blocks are post-norm"),
    Mutant("returns-probabilities", "decoder", "return self.lm_head(self.norm_f(x))",
           "return torch.softmax(self.lm_head(self.norm_f(x)), dim=-1)", "the model returns probabilities"),
    Mutant("blocks-in-python-list", "decoder", "nn.ModuleList(Block(n_embd, n_head, ffn_hidden) for _ in range(n_layer))",
           "[Block(n_embd, n_head, ffn_hidden) for _ in range(n_layer)]", "use nn.ModuleList"),
]
