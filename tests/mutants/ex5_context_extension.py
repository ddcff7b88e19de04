"""Mistakes students make in exercise 5 (context extension), as mutations of the solution notebook."""
from tests.mutants import Mutant

MUTANTS = [
    Mutant("pi-multiplies", "interpolated_inv_freq",
           "return inv_freq / factor",
           "return inv_freq * factor",
           "the frequencies are multiplied by the factor"),
    Mutant("pi-in-place", "interpolated_inv_freq",
           "return inv_freq / factor",
           "inv_freq /= factor\n    return inv_freq",
           "changed the inv_freq passed in"),
    Mutant("ntk-exponent-d-1", "ntk_inv_freq",
           "factor ** (head_dim / (head_dim - 2))",
           "factor ** (head_dim / (head_dim - 1))",
           "the exponent of the factor is d/(d-1)"),
    Mutant("ntk-no-exponent", "ntk_inv_freq",
           "ntk_base = base * factor ** (head_dim / (head_dim - 2))",
           "ntk_base = base * factor",
           "without the exponent d/(d-2)"),
    Mutant("ntk-on-inv-freq", "ntk_inv_freq",
           "return ntk_base ** -(torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)",
           "return base ** -(torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim) / factor ** (head_dim / (head_dim - 2))",
           "divides every frequency directly"),
    Mutant("pi-scales-base", "apply_scaling",
           "inv_freq = interpolated_inv_freq(rope.inv_freq, factor)",
           "inv_freq = (rope.base * factor) ** -(torch.arange(0, rope.head_dim, 2).float() / rope.head_dim)",
           "the base was scaled (base * factor) instead of the positions"),
    Mutant("scales-in-place", "apply_scaling",
           "scaled = copy.deepcopy(model)",
           "scaled = model",
           "apply_scaling changed the model passed in"),
    Mutant("stale-tables", "apply_scaling",
           "new_rope.cos_cached, new_rope.sin_cached = angles.cos(), angles.sin()",
           "pass  # inv_freq is enough?",
           "cos_cached and sin_cached were not rebuilt"),
    Mutant("stale-inv-freq", "apply_scaling",
           "new_rope.inv_freq = inv_freq  # used for positions past the tables",
           "pass",
           "rope.inv_freq was not set"),
    Mutant("interleaved-tables", "apply_scaling",
           "angles = torch.cat((angles, angles), dim=-1)",
           "angles = angles.repeat_interleave(2, dim=-1)",
           "the cos/sin tables are in the interleaved layout"),
    Mutant("bpb-in-nats", "bits_per_byte",
           "return total_nats / total_tokens / math.log(2)",
           "return total_nats / total_tokens",
           "the result is in nats"),
    Mutant("bpb-current-token", "bits_per_byte",
           "total_nats += F.cross_entropy(logits[0], ids[0, 1:], reduction=\"sum\").item()",
           "total_nats += F.cross_entropy(logits[0], ids[0, :-1], reduction=\"sum\").item()",
           "the targets are not shifted"),
    Mutant("bpb-per-sequence", "bits_per_byte",
           "total_nats += F.cross_entropy(logits[0], ids[0, 1:], reduction=\"sum\").item()\n"
           "            total_tokens += ids.shape[1] - 1",
           "total_nats += F.cross_entropy(logits[0], ids[0, 1:]).item()  # mean of this sequence\n"
           "            total_tokens += 1",
           "the losses are averaged per sequence"),
    Mutant("bpb-count-off-by-one", "bits_per_byte",
           "total_tokens += ids.shape[1] - 1",
           "total_tokens += ids.shape[1]",
           "the count is off by one per sequence"),
    Mutant("bpb-perplexity", "bits_per_byte",
           "return total_nats / total_tokens / math.log(2)",
           "return math.exp(total_nats / total_tokens)",
           "the result is a perplexity"),
    # ---- new mistakes (issue 13) ----
    Mutant("pi-floor-division", "interpolated_inv_freq",
           "return inv_freq / factor",
           "return inv_freq // factor",
           "floor division"),
    Mutant("ntk-exponent-inverted", "ntk_inv_freq",
           "factor ** (head_dim / (head_dim - 2))",
           "factor ** ((head_dim - 2) / head_dim)",
           "the exponent of the factor is (d-2)/d"),
    Mutant("ntk-precedence", "ntk_inv_freq",
           "factor ** (head_dim / (head_dim - 2))",
           "factor ** head_dim / (head_dim - 2)",
           "operator precedence"),
    Mutant("ntk-exponent-on-base", "ntk_inv_freq",
           "ntk_base = base * factor ** (head_dim / (head_dim - 2))",
           "ntk_base = (base * factor) ** (head_dim / (head_dim - 2))",
           "is applied to base * factor"),
    Mutant("ntk-exponent-missing-two", "ntk_inv_freq",
           "torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim",
           "torch.arange(head_dim // 2, dtype=torch.float32) / head_dim",
           "the exponents are -i/d"),
    Mutant("ntk-ignores-base", "ntk_inv_freq",
           "ntk_base = base * factor",
           "ntk_base = 10000.0 * factor",
           "the base argument is ignored"),
    Mutant("shallow-copy", "apply_scaling",
           "scaled = copy.deepcopy(model)",
           "scaled = copy.copy(model)",
           "a shallow copy shares model.rope"),
    Mutant("tables-double-scaled", "apply_scaling",
           "angles = positions.float()[:, None] * inv_freq",
           "angles = (positions.float() / factor)[:, None] * inv_freq",
           "the factor is applied twice in the tables"),
    Mutant("sin-stale", "apply_scaling",
           "new_rope.cos_cached, new_rope.sin_cached = angles.cos(), angles.sin()",
           "new_rope.cos_cached = angles.cos()",
           "only cos_cached was rebuilt"),
    Mutant("ntk-factor-as-base", "apply_scaling",
           "ntk_inv_freq(rope.head_dim, rope.base, factor)",
           "ntk_inv_freq(rope.head_dim, factor)",
           "ntk_inv_freq was given the factor as its base"),
    Mutant("ntk-default-base", "apply_scaling",
           "ntk_inv_freq(rope.head_dim, rope.base, factor)",
           "ntk_inv_freq(rope.head_dim, factor=factor)",
           "use the default base 10000, not the model's"),
    Mutant("no-value-error", "apply_scaling",
           "    elif kind == \"ntk\":\n"
           "        inv_freq = ntk_inv_freq(rope.head_dim, rope.base, factor)\n"
           "    else:\n"
           "        raise ValueError(f\"kind={kind!r} must be 'linear' (position interpolation) or 'ntk'.\")\n",
           "    else:  # ntk\n"
           "        inv_freq = ntk_inv_freq(rope.head_dim, rope.base, factor)\n",
           "must raise a ValueError"),
    Mutant("bpb-log2-of-loss", "bits_per_byte",
           "return total_nats / total_tokens / math.log(2)",
           "return math.log2(total_nats / total_tokens)",
           "the mean loss went through log2"),
    Mutant("bpb-truncated", "bits_per_byte",
           "ids = seq.long()[None]",
           "ids = seq.long()[None, :model.config.context_length]",
           "the sequences are cut to the model's context_length"),
    Mutant("bpb-no-eval", "bits_per_byte",
           "    model.eval()\n",
           "",
           "call model.eval() before the forward passes"),
    Mutant("bpb-uint8", "bits_per_byte",
           "ids = seq.long()[None]",
           "ids = seq[None]",
           "convert each sequence with .long()"),
    Mutant("bpb-sign", "bits_per_byte",
           "total_nats += F.cross_entropy(logits[0], ids[0, 1:], reduction=\"sum\").item()",
           "total_nats += torch.log_softmax(logits[0], -1).gather(-1, ids[0, 1:, None]).sum().item()",
           "the sign is wrong"),
    Mutant("bpb-mean-reduction", "bits_per_byte",
           "F.cross_entropy(logits[0], ids[0, 1:], reduction=\"sum\")",
           "F.cross_entropy(logits[0], ids[0, 1:])",
           "F.cross_entropy averages by default"),
    # ---- part 5: passkey accuracy (issue 14) ----
    Mutant("pk-digit-accuracy", "passkey_accuracy",
           "right += decoded == answer  # exact match: every digit, in order",
           "right += sum(a == b for a, b in zip(decoded, answer)) / len(answer)  # digits right",
           "digit accuracy"),
    Mutant("pk-percentage", "passkey_accuracy",
           "return right / len(samples)",
           "return 100 * right / len(samples)",
           "the result is a percentage"),
    Mutant("pk-five-digits", "passkey_accuracy",
           "for _ in range(len(answer)):",
           "for _ in range(5):  # a pass key has 5 digits",
           "the number of digits is hard-coded"),
    Mutant("pk-logits-before-last", "passkey_accuracy",
           "next_token = logits[:, -1].argmax(dim=-1, keepdim=True)",
           "next_token = logits[:, -2].argmax(dim=-1, keepdim=True)",
           "logits of the last position (logits[:, -1])"),
    Mutant("pk-no-feedback", "passkey_accuracy",
           "ids = torch.cat([ids, next_token], dim=1)  # fed back: the next digit is predicted after this one",
           "# ids stays the prompt: every digit is predicted after the question",
           "predicted from the prompt alone"),
    Mutant("pk-cropped", "passkey_accuracy",
           "ids = sample.ids.long()[None]",
           "ids = sample.ids.long()[None, -model.config.context_length:]  # what the model was trained on",
           "the prompts are cut to the model's context_length"),
    Mutant("pk-cropped-each-step", "passkey_accuracy",
           "logits = model(ids)  # (1, t, vocab)",
           "logits = model(ids[:, -model.config.context_length:])  # as nanoGPT's generate",
           "the prompts are cut to the model's context_length"),
    Mutant("pk-no-eval", "passkey_accuracy",
           "    model.eval()  # no dropout\n",
           "",
           "call model.eval() before decoding"),
    Mutant("pk-with-dot", "passkey_accuracy",
           "right += decoded == answer  # exact match: every digit, in order",
           "right += bytes(decoded).decode(\"latin-1\") == sample.answer + \".\"  # as written in the prompt",
           "without the '.' or newline"),
    Mutant("pk-count", "passkey_accuracy",
           "return right / len(samples)",
           "return right",
           "the number of prompts right is returned, not their share"),
    Mutant("pk-padded-batch", "passkey_accuracy",
           "    right = 0\n"
           "    with torch.no_grad():\n"
           "        for sample in samples:\n"
           "            answer = list(sample.answer.encode(\"ascii\"))  # the key's digits as byte tokens\n"
           "            ids = sample.ids.long()[None]  # (1, n): the whole prompt, also past context_length\n"
           "            decoded = []\n"
           "            for _ in range(len(answer)):\n"
           "                logits = model(ids)  # (1, t, vocab)\n"
           "                next_token = logits[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1): greedy, from the last position\n"
           "                ids = torch.cat([ids, next_token], dim=1)  # fed back: the next digit is predicted after this one\n"
           "                decoded.append(next_token.item())\n"
           "            right += decoded == answer  # exact match: every digit, in order\n",
           "    right = 0\n"
           "    ids = torch.nn.utils.rnn.pad_sequence([s.ids.long() for s in samples], batch_first=True)  # (B, longest)\n"
           "    n = ids.shape[1]\n"
           "    with torch.no_grad():\n"
           "        for _ in range(max(len(s.answer) for s in samples)):\n"
           "            next_token = model(ids)[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)\n"
           "            ids = torch.cat([ids, next_token], dim=1)\n"
           "    for sample, row in zip(samples, ids[:, n:].tolist()):\n"
           "        right += row[:len(sample.answer)] == list(sample.answer.encode(\"ascii\"))\n",
           "padded into one batch"),
]

# Correct answers written differently from the solution: each must keep full marks.
ALTERNATIVES = [
    Mutant("pi-reciprocal", "interpolated_inv_freq",
           "return inv_freq / factor",
           "return inv_freq * (1.0 / factor)"),
    Mutant("pi-clone-div", "interpolated_inv_freq",
           "return inv_freq / factor",
           "return inv_freq.clone().div_(factor)  # in place, on a copy"),
    Mutant("ntk-hf-form", "ntk_inv_freq",
           "return ntk_base ** -(torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)",
           "return 1.0 / (ntk_base ** (torch.arange(0, head_dim, 2).float() / head_dim))"),
    Mutant("ntk-float64", "ntk_inv_freq",
           "return ntk_base ** -(torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)",
           "return (ntk_base ** -(torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)).float()"),
    Mutant("ntk-per-pair", "ntk_inv_freq",
           "return ntk_base ** -(torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)",
           "i2 = torch.arange(0, head_dim, 2, dtype=torch.float64)  # theta_i * factor^(-2i/(d-2))\n"
           "    return (base ** (-i2 / head_dim) * factor ** (-i2 / (head_dim - 2))).float()"),
    Mutant("tables-float64", "apply_scaling",
           "angles = positions.float()[:, None] * inv_freq",
           "angles = positions.double()[:, None] * inv_freq.double()"),
    Mutant("tables-outer", "apply_scaling",
           "angles = positions.float()[:, None] * inv_freq",
           "angles = torch.outer(positions.float(), inv_freq)"),
    Mutant("tables-einsum", "apply_scaling",
           "angles = positions.float()[:, None] * inv_freq",
           "angles = torch.einsum(\"p,f->pf\", positions.float(), inv_freq)"),
    Mutant("tables-repeat", "apply_scaling",
           "angles = torch.cat((angles, angles), dim=-1)",
           "angles = angles.repeat(1, 2)"),
    Mutant("buffers-copied-in-place", "apply_scaling",
           "    new_rope.inv_freq = inv_freq  # used for positions past the tables\n"
           "    new_rope.cos_cached, new_rope.sin_cached = angles.cos(), angles.sin()\n",
           "    new_rope.inv_freq.copy_(inv_freq)  # into the copy's own buffers\n"
           "    new_rope.cos_cached.copy_(angles.cos())\n"
           "    new_rope.sin_cached.copy_(angles.sin())\n"),
    Mutant("tables-for-the-new-length", "apply_scaling",
           "positions = torch.arange(new_rope.context_length)",
           "new_rope.context_length = int(factor * new_rope.context_length)  # tables for the longer inputs\n"
           "    positions = torch.arange(new_rope.context_length)"),
    Mutant("bpb-full-pass", "bits_per_byte",
           "logits = model(ids[:, :-1])",
           "logits = model(ids)[:, :-1]"),
    Mutant("bpb-mean-times-count", "bits_per_byte",
           "total_nats += F.cross_entropy(logits[0], ids[0, 1:], reduction=\"sum\").item()",
           "total_nats += F.cross_entropy(logits[0], ids[0, 1:]).item() * (ids.shape[1] - 1)  # mean times count"),
    Mutant("bpb-log2e", "bits_per_byte",
           "return total_nats / total_tokens / math.log(2)",
           "return total_nats / total_tokens * math.log2(math.e)"),
    # ---- part 5: passkey accuracy ----
    Mutant("pk-package-generate", "passkey_accuracy",
           "            ids = sample.ids.long()[None]  # (1, n): the whole prompt, also past context_length\n"
           "            decoded = []\n"
           "            for _ in range(len(answer)):\n"
           "                logits = model(ids)  # (1, t, vocab)\n"
           "                next_token = logits[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1): greedy, from the last position\n"
           "                ids = torch.cat([ids, next_token], dim=1)  # fed back: the next digit is predicted after this one\n"
           "                decoded.append(next_token.item())\n",
           "            from transformer_course.generate import generate\n"
           "            out = generate(model, sample.ids[None], len(answer), use_cache=True)  # greedy, with the KV cache\n"
           "            decoded = out[0, len(sample.ids):].tolist()\n"),
    Mutant("pk-strings", "passkey_accuracy",
           "right += decoded == answer  # exact match: every digit, in order",
           "right += bytes(decoded).decode(\"ascii\", errors=\"replace\") == sample.answer"),
    Mutant("pk-batched-by-length", "passkey_accuracy",
           "    right = 0\n"
           "    with torch.no_grad():\n"
           "        for sample in samples:\n"
           "            answer = list(sample.answer.encode(\"ascii\"))  # the key's digits as byte tokens\n"
           "            ids = sample.ids.long()[None]  # (1, n): the whole prompt, also past context_length\n"
           "            decoded = []\n"
           "            for _ in range(len(answer)):\n"
           "                logits = model(ids)  # (1, t, vocab)\n"
           "                next_token = logits[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1): greedy, from the last position\n"
           "                ids = torch.cat([ids, next_token], dim=1)  # fed back: the next digit is predicted after this one\n"
           "                decoded.append(next_token.item())\n"
           "            right += decoded == answer  # exact match: every digit, in order\n",
           "    right = 0\n"
           "    groups = {}\n"
           "    for s in samples:  # one batch per prompt length and number of digits: no padding\n"
           "        groups.setdefault((len(s.ids), len(s.answer)), []).append(s)\n"
           "    with torch.no_grad():\n"
           "        for (n, k), group in groups.items():\n"
           "            ids = torch.stack([s.ids for s in group])  # (b, n)\n"
           "            for _ in range(k):\n"
           "                ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)\n"
           "            answers = torch.tensor([list(s.answer.encode()) for s in group])  # (b, k)\n"
           "            right += (ids[:, n:] == answers).all(dim=1).sum().item()\n"),
    Mutant("pk-own-cache", "passkey_accuracy",
           "            decoded = []\n"
           "            for _ in range(len(answer)):\n"
           "                logits = model(ids)  # (1, t, vocab)\n",
           "            decoded = []\n"
           "            model.setup_cache(1, ids.shape[1] + len(answer))\n"
           "            pos, step = 0, ids\n"
           "            for _ in range(len(answer)):\n"
           "                logits = model(step, pos)  # the prompt once, then one token at a time\n"
           "                pos += step.shape[1]\n"
           "                step = logits[:, -1].argmax(dim=-1, keepdim=True)\n"),
    Mutant("pk-train-false", "passkey_accuracy",
           "    model.eval()  # no dropout\n",
           "    model.train(False)  # the same as model.eval()\n"),
]

