"""Mistakes students make in exercise 1 (a decoder-only transformer), as mutations of the solution notebook."""
from tests.mutants import Mutant

_QKV = """        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, head_dim)
        k = self.k_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, head_dim)
        v = self.v_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, head_dim)"""

_MASK = """.tril()  # key j visible to query i when j <= i
        scores = scores.masked_fill(~allowed, float("-inf"))"""

_PRE = """            x = x + self.attn(self.norm1(x))
            x = x + self.ffn(self.norm2(x))"""

# The Block cell from its first line to the second norm: a hand-written LayerNorm goes above the class and
# replaces nn.LayerNorm in both norms (one replacement, as a Mutant makes).
_BLOCK_TOP = '''class Block(nn.Module):
    """Transformer block: (B, T, n_embd) -> (B, T, n_embd).

    Submodules: norm1, attn (MultiHeadAttention), norm2, ffn (FeedForward); norms are nn.LayerNorm(n_embd).
    pre_norm=True: x + f(norm(x)); pre_norm=False (post-norm): norm(x + f(x)).
    """

    def __init__(self, n_embd, n_head, ffn_hidden, pre_norm=True):
        super().__init__()
        ### BEGIN SOLUTION
        self.pre_norm = pre_norm
        self.norm1 = nn.LayerNorm(n_embd)
        self.attn = MultiHeadAttention(n_embd, n_head)
        self.norm2 = nn.LayerNorm(n_embd)'''

_LAYER_NORM = """class LayerNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased: divide by n
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


"""


def _hand_written_norm(old: str = "", new: str = "") -> str:
    """The Block cell's top with both norms a hand-written LayerNorm (``old`` -> ``new`` in its code)."""
    return _LAYER_NORM.replace(old, new) + _BLOCK_TOP.replace("nn.LayerNorm(n_embd)\n", "LayerNorm(n_embd)\n").replace(
        "self.norm2 = nn.LayerNorm(n_embd)", "self.norm2 = LayerNorm(n_embd)")


_NORMS = """nn.LayerNorm(n_embd)
        self.attn = MultiHeadAttention(n_embd, n_head)
        self.norm2 = nn.LayerNorm(n_embd)"""
_EMBED = "x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))"
_CONTEXT_CHECK = """        if T > self.context_length:
            raise ValueError(f"the sequence has {T} tokens but context_length={self.context_length}: shorten it.")
"""
_MASK_THEN_SOFTMAX = """        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)"""
_SOFTMAX_THEN_MASK = """    weights = torch.softmax(scores, dim=-1)
    if causal:
        weights = weights.masked_fill(~allowed, 0.0)"""

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
    # New in issue 13. Part 1: attention
    Mutant("attention-dropout-always-on", "attention", "weights = torch.softmax(scores, dim=-1)",
           "weights = F.dropout(torch.softmax(scores, dim=-1), p=0.1)",
           "gave different outputs for the same input twice"),
    Mutant("scale-multiplied", "attention", "/ math.sqrt(q.shape[-1])", "* math.sqrt(q.shape[-1])",
           "multiplied by sqrt(head_dim) instead of divided by it"),
    Mutant("mask-after-softmax", "attention", _MASK_THEN_SOFTMAX, _SOFTMAX_THEN_MASK,
           "the mask is applied after the softmax"),
    # Part 2: multi-head attention
    Mutant("values-from-key-projection", "mha", "v = self.v_proj(x)", "v = self.k_proj(x)", "computed with k_proj"),
    Mutant("heads-split-strided", "mha", _QKV, _QKV.replace(
        ".view(B, T, self.n_head, self.head_dim).transpose(1, 2)", ".view(B, T, self.head_dim, self.n_head).permute(0, 3, 1, 2)"),
        "the heads are split along the wrong axis"),
    Mutant("mha-adds-residual", "mha", "return self.o_proj(y)", "return x + self.o_proj(y)",
           "MultiHeadAttention adds its input to its output"),
    Mutant("mha-dropout-in-training", "mha", "return self.o_proj(y)",
           "return F.dropout(self.o_proj(y), p=0.1, training=self.training)", "in training mode gave different outputs"),
    # Part 3: feed-forward network
    Mutant("ffn-hidden-is-4x", "ffn", "self.up = nn.Linear(n_embd, ffn_hidden)\n        self.down = nn.Linear(ffn_hidden, n_embd)",
           "self.up = nn.Linear(n_embd, 4 * n_embd)\n        self.down = nn.Linear(4 * n_embd, n_embd)",
           "has parameters of the wrong shape"),
    Mutant("ffn-adds-residual", "ffn", "return self.down(F.gelu(self.up(x)))", "return x + self.down(F.gelu(self.up(x)))",
           "FeedForward adds its input to its output"),
    # Part 4: the block (LayerNorm's epsilon shows on the small-variance input)
    Mutant("layer-norm-eps-1e-6", "block", _NORMS, _NORMS.replace("nn.LayerNorm(n_embd)", "nn.LayerNorm(n_embd, eps=1e-6)"),
           "the epsilon is not the one given"),
    Mutant("layer-norm-eps-outside-sqrt", "block", _BLOCK_TOP,
           _hand_written_norm("torch.sqrt(var + self.eps)", "(torch.sqrt(var) + self.eps)"),
           "the epsilon is added after the square root"),
    Mutant("layer-norm-no-eps", "block", _BLOCK_TOP, _hand_written_norm("torch.sqrt(var + self.eps)", "torch.sqrt(var)"),
           "there is no epsilon"),
    Mutant("layer-norm-unbiased-variance", "block", _BLOCK_TOP,
           _hand_written_norm("((x - mean) ** 2).mean(-1, keepdim=True)  # biased: divide by n", "x.var(-1, keepdim=True)"),
           "the variance is the unbiased one"),
    Mutant("block-dropout-in-training", "block", "x = x + self.attn(self.norm1(x))",
           "x = x + F.dropout(self.attn(self.norm1(x)), p=0.1, training=self.training)",
           "in training mode gave different outputs"),
    # Part 5: the model
    Mutant("embedding-dropout-in-training", "decoder", _EMBED, _EMBED + "\n        x = F.dropout(x, p=0.1, training=self.training)",
           "in training mode gave different outputs for the same input twice"),
    Mutant("embedding-dropout-left-on-in-eval", "decoder", _EMBED, _EMBED + "\n        x = F.dropout(x, p=0.1)",
           "gave different outputs for the same input twice: something random runs in evaluation mode"),
    Mutant("no-context-length-check", "decoder", _CONTEXT_CHECK, "", "it must raise a ValueError"),
    Mutant("plain-tensor-attribute", "decoder", "self.context_length = context_length\n",
           "self.context_length = context_length\n        self.positions = torch.arange(context_length)\n",
           "as a plain tensor attribute"),
    Mutant("final-norm-eps-1e-6", "decoder", "self.norm_f = nn.LayerNorm(n_embd)", "self.norm_f = nn.LayerNorm(n_embd, eps=1e-6)",
           "in norm_f: the epsilon is not the one given"),
]

# Correct answers written differently from the solution: each must keep full marks.
ALTERNATIVES = [
    Mutant("attention-einsum", "attention", "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])",
           'scores = torch.einsum("bhtd,bhsd->bhts", q, k) * q.shape[-1] ** -0.5'),
    Mutant("attention-where-finite-fill", "attention", 'scores = scores.masked_fill(~allowed, float("-inf"))',
           "scores = torch.where(allowed, scores, torch.full_like(scores, -1e9))"),
    Mutant("heads-split-reshape-permute", "mha", _QKV, _QKV.replace(
        ".view(B, T, self.n_head, self.head_dim).transpose(1, 2)", ".reshape(B, T, self.n_head, -1).permute(0, 2, 1, 3)")),
    Mutant("ffn-gelu-module", "ffn", "return self.down(F.gelu(self.up(x)))", "return self.down(nn.GELU()(self.up(x)))"),
    Mutant("hand-written-layer-norm", "block", _BLOCK_TOP, _hand_written_norm()),
    Mutant("positions-registered-buffer", "decoder", "self.context_length = context_length\n",
           "self.context_length = context_length\n"
           "        self.register_buffer(\"positions\", torch.arange(context_length), persistent=False)\n"),
]
