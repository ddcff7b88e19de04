"""Mistakes students make in exercise 3 (RoPE), as mutations of the solution notebook."""
from tests.mutants import Mutant

MUTANTS = [
    Mutant("exponent-i-over-d", "rope_frequencies",
           "torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim",
           "torch.arange(head_dim // 2, dtype=torch.float32) / head_dim",
           "the exponent is -i/head_dim instead of -2i/head_dim"),
    Mutant("not-inverted", "rope_frequencies",
           "return base ** -exponents",
           "return base ** exponents",
           "the frequencies are not inverted"),
    Mutant("interleaved-pairs", "apply_rope",
           "    x1, x2 = x.chunk(2, dim=-1)  # the two halves, each (B, n_head, T, head_dim // 2)\n"
           "    rotated_half = torch.cat((-x2, x1), dim=-1)  # each pair (a, b) -> (-b, a): a quarter turn\n"
           "    return x * angles.cos() + rotated_half * angles.sin()",
           "    half = angles[:, : head_dim // 2]\n"
           "    x_even, x_odd = x[..., 0::2], x[..., 1::2]  # pairs (2i, 2i + 1), as in the RoFormer paper\n"
           "    out_even = x_even * half.cos() - x_odd * half.sin()\n"
           "    out_odd = x_even * half.sin() + x_odd * half.cos()\n"
           "    return torch.stack((out_even, out_odd), dim=-1).flatten(-2)",
           "coordinates are paired as neighbours (2i, 2i+1)"),
    Mutant("tables-repeat-interleave", "apply_rope",
           "angles = torch.cat((angles, angles), dim=-1)",
           "angles = angles.repeat_interleave(2, dim=-1)",
           "the cos/sin tables repeat each angle twice side by side"),
    Mutant("rotate-minus-theta", "apply_rope",
           "rotated_half = torch.cat((-x2, x1), dim=-1)",
           "rotated_half = torch.cat((x2, -x1), dim=-1)",
           "the rotation goes the wrong way"),
    Mutant("cos-sin-swapped", "apply_rope",
           "return x * angles.cos() + rotated_half * angles.sin()",
           "return x * angles.sin() + rotated_half * angles.cos()",
           "cos and sin are swapped"),
    Mutant("positions-from-one", "apply_rope",
           "angles = positions.float()[:, None] * inv_freq",
           "angles = (positions.float() + 1)[:, None] * inv_freq",
           "positions are off by one"),
    Mutant("positions-ignored", "apply_rope",
           "angles = positions.float()[:, None] * inv_freq",
           "angles = torch.arange(x.shape[-2]).float()[:, None] * inv_freq",
           "`positions` is ignored"),
    Mutant("base-ignored", "apply_rope",
           "inv_freq = rope_frequencies(head_dim, base)",
           "inv_freq = rope_frequencies(head_dim)",
           "the `base` argument is ignored"),
    Mutant("in-place", "apply_rope",
           "return x * angles.cos() + rotated_half * angles.sin()",
           "return x.mul_(angles.cos()).add_(rotated_half * angles.sin())",
           "changed its input x in place"),
    Mutant("k-not-rotated", "rope_scores",
           "k_rot = apply_rope(k, k_positions, base)",
           "k_rot = k",
           "k is not rotated"),
    Mutant("k-at-query-positions", "rope_scores",
           "k_rot = apply_rope(k, k_positions, base)",
           "k_rot = apply_rope(k, q_positions, base)",
           "k is rotated with the query positions"),
    Mutant("scaled-scores", "rope_scores",
           "return q_rot @ k_rot.transpose(-2, -1)",
           "return q_rot @ k_rot.transpose(-2, -1) / q.shape[-1] ** 0.5",
           "the scores are divided by sqrt(head_dim)"),

    # ---- found for issue 13: each named, each costing its own part only ----------------------------------
    Mutant("freq-float64", "rope_frequencies",
           "torch.arange(0, head_dim, 2, dtype=torch.float32)",
           "torch.arange(0, head_dim, 2, dtype=torch.float64)",
           "the frequencies must be a float32 tensor"),
    Mutant("freq-integer-division", "rope_frequencies",
           "torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim",
           "torch.arange(0, head_dim, 2) // head_dim",
           "integer division"),
    Mutant("freq-over-half-head-dim", "rope_frequencies",
           "torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim",
           "torch.arange(0, head_dim, 2, dtype=torch.float32) / (head_dim // 2)",
           "divided by head_dim/2 instead of head_dim"),
    Mutant("freq-i-from-one", "rope_frequencies",
           "torch.arange(0, head_dim, 2, dtype=torch.float32)",
           "torch.arange(2, head_dim + 1, 2, dtype=torch.float32)",
           "i starts at 1"),
    Mutant("freq-base-ignored", "rope_frequencies",
           "return base ** -exponents",
           "return 10000.0 ** -exponents",
           "the `base` argument is ignored"),
    Mutant("freq-precedence", "rope_frequencies",
           "    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim  # 2i / head_dim, (head_dim // 2,)\n"
           "    return base ** -exponents",
           "    i = torch.arange(head_dim // 2, dtype=torch.float32)\n"
           "    return base ** -2 * i / head_dim",
           "operator precedence"),
    Mutant("freq-linspace", "rope_frequencies",
           "exponents = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim",
           "exponents = torch.linspace(0, 1, head_dim // 2)",
           "linspace over head_dim/2 points"),
    Mutant("freq-per-coordinate", "rope_frequencies",
           "torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim",
           "2 * torch.arange(head_dim, dtype=torch.float32) / head_dim",
           "there is one frequency per pair"),
    Mutant("positions-shifted-to-zero", "apply_rope",
           "angles = positions.float()[:, None] * inv_freq",
           "angles = (positions - positions[0]).float()[:, None] * inv_freq",
           "shifted to start at 0"),
    Mutant("positions-assumed-consecutive", "apply_rope",
           "angles = positions.float()[:, None] * inv_freq",
           "angles = (positions[0] + torch.arange(x.shape[-2])).float()[:, None] * inv_freq",
           "the positions are assumed consecutive"),
    Mutant("rotate-half-no-minus", "apply_rope",
           "rotated_half = torch.cat((-x2, x1), dim=-1)",
           "rotated_half = torch.cat((x2, x1), dim=-1)",
           "rotate_half lost its minus sign"),
    Mutant("even-odd-halves", "apply_rope",
           "x1, x2 = x.chunk(2, dim=-1)",
           "x1, x2 = x[..., ::2], x[..., 1::2]",
           "are the even and odd coordinates"),
    Mutant("tables-stack-flatten", "apply_rope",
           "angles = torch.cat((angles, angles), dim=-1)",
           "angles = torch.stack((angles, angles), dim=-1).flatten(-2)",
           "the cos/sin tables repeat each angle twice side by side"),
    Mutant("complex-interleaved", "apply_rope",
           "    angles = torch.cat((angles, angles), dim=-1)  # (T, head_dim): coordinates i and i + head_dim/2 share angle i\n"
           "    x1, x2 = x.chunk(2, dim=-1)  # the two halves, each (B, n_head, T, head_dim // 2)\n"
           "    rotated_half = torch.cat((-x2, x1), dim=-1)  # each pair (a, b) -> (-b, a): a quarter turn\n"
           "    return x * angles.cos() + rotated_half * angles.sin()",
           "    turns = torch.polar(torch.ones_like(angles), angles)  # (T, head_dim // 2) unit complex numbers\n"
           "    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())  # Meta's Llama code\n"
           "    return torch.view_as_real(pairs * turns).flatten(-2)",
           "paired as neighbours (2i, 2i+1)"),
    Mutant("scores-base-not-passed", "rope_scores",
           "    q_rot = apply_rope(q, q_positions, base)  # (B, n_head, T, head_dim)\n"
           "    k_rot = apply_rope(k, k_positions, base)  # (B, n_head, S, head_dim)\n",
           "    q_rot = apply_rope(q, q_positions)\n"
           "    k_rot = apply_rope(k, k_positions)\n",
           "`base` is not passed on to apply_rope"),
    Mutant("scores-transposed", "rope_scores",
           "return q_rot @ k_rot.transpose(-2, -1)",
           "return k_rot @ q_rot.transpose(-2, -1)",
           "the scores are transposed"),
    Mutant("scores-einsum-transposed", "rope_scores",
           "return q_rot @ k_rot.transpose(-2, -1)",
           "return torch.einsum(\"bhtd,bhsd->bhst\", q_rot, k_rot)",
           "the scores are transposed"),
    Mutant("scores-softmax", "rope_scores",
           "return q_rot @ k_rot.transpose(-2, -1)",
           "return torch.softmax(q_rot @ k_rot.transpose(-2, -1), dim=-1)",
           "a softmax is applied"),
    Mutant("q-not-rotated", "rope_scores",
           "q_rot = apply_rope(q, q_positions, base)",
           "q_rot = q",
           "q is not rotated"),
    Mutant("q-at-key-positions", "rope_scores",
           "q_rot = apply_rope(q, q_positions, base)",
           "q_rot = apply_rope(q, k_positions, base)",
           "q with the key positions"),
    Mutant("scores-matching-rows", "rope_scores",
           "return q_rot @ k_rot.transpose(-2, -1)",
           "return (q_rot * k_rot).sum(dim=-1)",
           "only the matching rows are multiplied"),
]

# Correct answers written differently from the solution: each must keep full marks.
ALTERNATIVES = [
    Mutant("freq-exp-log", "rope_frequencies",
           "return base ** -exponents",
           "return torch.exp(-exponents * math.log(base))",
           ),
    Mutant("freq-float64-cast", "rope_frequencies",
           "    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim  # 2i / head_dim, (head_dim // 2,)\n"
           "    return base ** -exponents",
           "    i = torch.arange(head_dim // 2, dtype=torch.float64)\n"
           "    return (1.0 / base ** (2 * i / head_dim)).to(torch.float32)",
           ),
    Mutant("complex-half-layout", "apply_rope",
           "    angles = torch.cat((angles, angles), dim=-1)  # (T, head_dim): coordinates i and i + head_dim/2 share angle i\n"
           "    x1, x2 = x.chunk(2, dim=-1)  # the two halves, each (B, n_head, T, head_dim // 2)\n"
           "    rotated_half = torch.cat((-x2, x1), dim=-1)  # each pair (a, b) -> (-b, a): a quarter turn\n"
           "    return x * angles.cos() + rotated_half * angles.sin()",
           "    x1, x2 = x.chunk(2, dim=-1)  # pair i is the complex number x1[i] + j x2[i]\n"
           "    z = torch.complex(x1, x2) * torch.polar(torch.ones_like(angles), angles)\n"
           "    return torch.cat((z.real, z.imag), dim=-1)",
           ),
    Mutant("float64-tables", "apply_rope",
           "    angles = positions.float()[:, None] * inv_freq  # (T, head_dim // 2): the angle of pair i at each position\n",
           "    angles = positions.to(torch.float64)[:, None] * inv_freq.to(torch.float64)  # computed in float64\n",
           ),
    Mutant("einsum-angles-stacked-rotation", "apply_rope",
           "    angles = positions.float()[:, None] * inv_freq  # (T, head_dim // 2): the angle of pair i at each position\n"
           "    angles = torch.cat((angles, angles), dim=-1)  # (T, head_dim): coordinates i and i + head_dim/2 share angle i\n"
           "    x1, x2 = x.chunk(2, dim=-1)  # the two halves, each (B, n_head, T, head_dim // 2)\n"
           "    rotated_half = torch.cat((-x2, x1), dim=-1)  # each pair (a, b) -> (-b, a): a quarter turn\n"
           "    return x * angles.cos() + rotated_half * angles.sin()",
           "    angles = torch.einsum(\"t,f->tf\", positions.float(), inv_freq).repeat(1, 2)  # (T, head_dim)\n"
           "    x1, x2 = x.chunk(2, dim=-1)\n"
           "    rotated_half = torch.stack((-x2, x1), dim=-2).flatten(-2)  # (..., 2, head_dim // 2) -> [-x2, x1]\n"
           "    return (x * angles.cos() + rotated_half * angles.sin()).to(x.dtype)",
           ),
    Mutant("scores-einsum", "rope_scores",
           "return q_rot @ k_rot.transpose(-2, -1)",
           "return torch.einsum(\"bhtd,bhsd->bhts\", q_rot, k_rot)",
           ),
]
