"""Tests for transformer_course.data: the byte tokenizer, the corpus split, batches and synthetic tasks.

Oracles: Python's own UTF-8 codec for the tokenizer; SHA-256 from hashlib for the split rule; the files
on disk for the corpus; the documented prompt layout (text parsed back with str methods and regular
expressions) for the synthetic tasks. Everything here is exact: no tolerances.
"""
import hashlib
import random
import re

import pytest
import torch

from transformer_course.data import (
    EOT,
    LONG_DOC_BYTES,
    PASSKEY_FILLER,
    PASSKEY_INTRO,
    PASSKEY_QUESTION,
    ByteTokenizer,
    CorpusNotFoundError,
    associative_recall_sample,
    documents,
    load_split,
    long_documents,
    passkey_prompt_length,
    passkey_sample,
    passkey_training_text,
    random_batch,
    split_of,
)

tok = ByteTokenizer()


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------
TEXTS = ["", "def f(x):\n    return x\n", "naïve café", "λ → ∞", "emoji 🐍 done", "\x00\x7f"]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_round_trip(text):
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")), "tokens must be the UTF-8 bytes"
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids, dtype=torch.long)) == text, "decode must accept a tensor"


def test_every_byte_value():
    assert tok.vocab_size == 256
    for b in range(128):  # a single byte is valid UTF-8 on its own only below 128
        assert tok.encode(tok.decode([b])) == [b]
    for b in range(128, 256):  # a stray continuation/lead byte decodes to U+FFFD rather than failing
        assert tok.decode([b]) == "\ufffd"
    every = bytes(range(256)).decode("utf-8", errors="replace")
    assert tok.decode(list(range(256))) == every
    for cp in list(range(0x80, 0xD800, 97)) + list(range(0xE000, 0x110000, 4099)):  # 2-, 3- and 4-byte characters
        assert tok.decode(tok.encode(chr(cp))) == chr(cp)


@pytest.mark.parametrize("bad", [[256], [-1], [65, 300]])
def test_decode_rejects_ids_outside_the_byte_range(bad):
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        tok.decode(bad)


# --------------------------------------------------------------------------------------------------
# The split
# --------------------------------------------------------------------------------------------------
def test_split_of_is_the_documented_hash_rule():
    for i in range(300):
        name = f"pkg{i % 7}/module_{i}.py"
        bucket = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 100
        assert split_of(name) == ("val" if bucket < 10 else "train")
    names = [f"file_{i}.py" for i in range(2000)]
    share = sum(split_of(n) == "val" for n in names) / len(names)
    assert 0.08 < share < 0.12, f"{share:.1%} of synthetic names are val; expected about 10%"


def _write_corpus(root, names, reverse=False):
    for name in sorted(names, reverse=reverse):  # creation order differs between the two folders
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"# {name}\nx = {len(name)}\n".encode())


NAMES = [f"mod_{i}.py" for i in range(40)] + [f"pkg/sub_{i}.py" for i in range(20)]


def test_temporary_corpus_split_is_independent_of_order_and_of_other_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write_corpus(a, NAMES)
    extras = [f"extra_{i}.py" for i in range(30)] + ["tests/test_x.py", "site-packages/lib.py", "__pycache__/c.py"]
    _write_corpus(b, NAMES + extras, reverse=True)
    (b / "notes.txt").write_text("not python")

    docs_a, docs_b = documents(a), documents(b)
    assert [d.name for d in docs_a] == sorted(NAMES), "documents() must be sorted by name"
    assert [d.name for d in docs_b] == sorted(NAMES + extras[:30]), "skip test dirs, site-packages, non-.py files"
    assert {d.name: split_of(d.name) for d in docs_a} == {d.name: split_of(d.name) for d in docs_b if d.name in NAMES}

    for split in ("train", "val"):
        expected = b"".join(d.read() + bytes([EOT]) for d in docs_a if split_of(d.name) == split)
        assert load_split(split, root=a).numpy().tobytes() == expected, f"{split}: documents each followed by EOT"
    only_common = [d for d in docs_b if d.name in NAMES and split_of(d.name) == "val"]
    assert (load_split("val", root=a).numpy().tobytes()
            == b"".join(d.read() + bytes([EOT]) for d in only_common)), "other files must not move a file's split"
    assert {split_of(n) for n in NAMES} == {"train", "val"}, "pick NAMES so that both splits are exercised"


def test_long_documents_in_a_temporary_corpus(tmp_path):
    long_val = next(f"long_{i}.py" for i in range(100) if split_of(f"long_{i}.py") == "val")
    long_train = next(f"long_{i}.py" for i in range(100) if split_of(f"long_{i}.py") == "train")
    short_val = next(f"short_{i}.py" for i in range(100) if split_of(f"short_{i}.py") == "val")
    for name, size in ((long_val, 9000), (long_train, 9000), (short_val, 100)):
        (tmp_path / name).write_bytes(b"#" * size)
    assert [name for name, _ in long_documents(root=tmp_path)] == [long_val]
    assert [name for name, _ in long_documents(min_bytes=50, root=tmp_path)] == sorted([long_val, short_val])


def test_empty_folder_raises_a_helpful_error(tmp_path):
    with pytest.raises(CorpusNotFoundError, match="root=") as err:
        documents(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(ValueError, match="'train' or 'val'"):
        load_split("test", root=tmp_path)


@pytest.fixture(scope="module")
def stdlib():
    """The real corpus, read once for this module (about 12 MB)."""
    docs = documents()
    return {"docs": docs, "train": load_split("train"), "val": load_split("val"), "long": long_documents()}


def test_stdlib_split_is_about_ten_percent(stdlib):
    docs = stdlib["docs"]
    assert len(docs) > 200, f"only {len(docs)} standard-library files found"
    n_val = sum(split_of(d.name) == "val" for d in docs)
    assert 0.05 <= n_val / len(docs) <= 0.15, f"{n_val} of {len(docs)} files are val; expected about 10%"
    share = len(stdlib["val"]) / (len(stdlib["val"]) + len(stdlib["train"]))
    assert 0.05 <= share <= 0.15, f"val holds {share:.1%} of the bytes; expected about 10%"
    assert [d.name for d in docs] == sorted(d.name for d in docs)


def test_stdlib_splits_are_eot_separated_documents(stdlib):
    for split in ("train", "val"):
        data = stdlib[split]
        n_docs = sum(split_of(d.name) == split for d in stdlib["docs"])
        assert data.dtype == torch.uint8
        assert data[-1].item() == EOT, f"{split} must end with EOT"
        assert (data == EOT).sum().item() == n_docs, f"{split}: one EOT after each of its {n_docs} documents"
    first_val = next(d for d in stdlib["docs"] if split_of(d.name) == "val").read()
    assert stdlib["val"][: len(first_val) + 1].numpy().tobytes() == first_val + bytes([EOT])


def test_stdlib_long_documents_are_long_and_held_out(stdlib):
    long_docs = stdlib["long"]
    assert len(long_docs) >= 5, f"only {len(long_docs)} long held-out documents"
    by_name = {d.name: d for d in stdlib["docs"]}
    assert [name for name, _ in long_docs] == sorted(name for name, _ in long_docs)
    for name, data in long_docs:
        assert len(data) >= LONG_DOC_BYTES and data.dtype == torch.uint8
        assert split_of(name) == "val", f"{name} is a training file: long_documents must be held out"
        assert data.numpy().tobytes() == by_name[name].read()
    expected = {n for n, d in by_name.items() if split_of(n) == "val" and len(d.read()) >= LONG_DOC_BYTES}
    assert {name for name, _ in long_docs} == expected, "every long val document, and only those"


# --------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------
def test_random_batch_windows():
    data = (torch.arange(5000) % 251).to(torch.uint8)  # position i holds i mod 251: windows are identifiable
    x, y = random_batch(data, batch_size=6, seq_len=32, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (6, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]), "y must be x shifted left by one"
    for xb, yb in zip(x, y):
        start = next(s for s in range(len(data) - 32) if torch.equal(data[s:s + 32].long(), xb))
        assert torch.equal(data[start + 1:start + 33].long(), yb), "y must continue x in the data"
    x2, _ = random_batch(data, 6, 32, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2), "the same generator seed must give the same batch"
    with pytest.raises(ValueError, match="seq_len"):
        random_batch(data[:32], 2, 32, torch.Generator())
    x, y = random_batch(data[:33], 2, 32, torch.Generator())  # exactly one window: it is the only choice
    assert torch.equal(x[0], data[:32].long()) and torch.equal(y[1], data[1:33].long())


# --------------------------------------------------------------------------------------------------
# Passkey retrieval
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_tokens", [150, 500, 2048])  # 150: the shortest prompt, no filler
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_passkey_sample_layout(n_tokens, depth):
    s = passkey_sample(n_tokens, depth, random.Random(1))
    text = tok.decode(s.ids)
    assert s.ids.shape == (n_tokens,) and s.ids.dtype == torch.int64
    assert re.fullmatch(r"\d{5}", s.answer)
    assert text[s.key_offset:].startswith(f"The pass key is {s.answer}. Remember it. {s.answer} is the pass key.\n")
    assert text.startswith(PASSKEY_INTRO) and text.endswith(PASSKEY_QUESTION)
    assert text.count(s.answer) == 2, "the key appears only in its line"
    filler = text[len(PASSKEY_INTRO):-len(PASSKEY_QUESTION)].replace(text[s.key_offset:].split("\n")[0] + "\n", "")
    sentences = filler.rstrip(" ")
    assert len(filler) - len(sentences) < max(len(x) for x in re.findall(r"[^.]*\.\s", PASSKEY_FILLER)), \
        "the padding is shorter than any sentence"
    assert (PASSKEY_FILLER * (len(filler) // len(PASSKEY_FILLER) + 1)).startswith(sentences), "filler is repeated text"
    assert not sentences or sentences.endswith((".", ".\n")), "the filler ends with a whole sentence"
    before = s.key_offset - len(PASSKEY_INTRO)
    assert before in (0, len(filler)) or filler[before - 2:before] in (". ", ".\n"), \
        "the key line starts at a sentence boundary"
    bounds = [0, len(filler)] + [m.end() for m in re.finditer(r"\.\s", filler)]
    assert abs(before - depth * len(filler)) == min(abs(b - depth * len(filler)) for b in bounds), \
        f"key after {before} of {len(filler)} filler bytes: not the boundary nearest depth {depth}"


def test_passkey_depth_zero_and_one_are_the_ends():
    s0 = passkey_sample(600, 0.0, random.Random(0))
    assert s0.key_offset == len(PASSKEY_INTRO), "depth 0: the key line follows the intro directly"
    s1 = passkey_sample(600, 1.0, random.Random(0))
    key_line = f"The pass key is {s1.answer}. Remember it. {s1.answer} is the pass key.\n"
    assert tok.decode(s1.ids).endswith(key_line + PASSKEY_QUESTION), "depth 1: the key line precedes the question"


def test_passkey_is_deterministic_and_validates():
    a, b = passkey_sample(400, 0.5, random.Random(7)), passkey_sample(400, 0.5, random.Random(7))
    assert torch.equal(a.ids, b.ids) and a.answer == b.answer
    keys = {passkey_sample(400, 0.5, random.Random(seed)).answer for seed in range(20)}
    assert len(keys) > 15, "different seeds must give different keys"
    key_line = "The pass key is 12345. Remember it. 12345 is the pass key.\n"
    shortest = len(PASSKEY_INTRO) + len(key_line) + len(PASSKEY_QUESTION)
    assert passkey_prompt_length() == shortest
    assert passkey_sample(shortest, 0.5, random.Random(0)).ids.shape == (shortest,), "no filler at all is allowed"
    with pytest.raises(ValueError, match=f"too short.*{shortest}"):
        passkey_sample(shortest - 1, 0.5, random.Random(0))
    for depth in (-0.1, 1.5):
        with pytest.raises(ValueError, match="depth"):
            passkey_sample(400, depth, random.Random(0))


@pytest.mark.parametrize("n_tokens", [256, 1024])
def test_passkey_training_text_ends_with_the_answer(n_tokens):
    seq = passkey_training_text(n_tokens, random.Random(3))
    text = tok.decode(seq)
    assert seq.shape == (n_tokens + 1,), "n_tokens + 1 tokens: inputs seq[:-1], targets seq[1:]"
    key = re.search(r"The pass key is (\d{5})\. Remember it", text).group(1)
    assert text.endswith(PASSKEY_QUESTION + key + ".\n"), "the question must be followed by its own answer"


# --------------------------------------------------------------------------------------------------
# Associative recall
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_pairs", [1, 5, 400])  # 400 pairs of 3-letter keys: collisions unless prevented
def test_associative_recall_answer_is_the_queried_value(n_pairs):
    ids, answer = associative_recall_sample(n_pairs, random.Random(n_pairs))
    text = tok.decode(ids)
    body, query = text.split("; ")
    pairs = [p.split("=") for p in body.split(", ")]
    keys = [k for k, _ in pairs]
    assert len(pairs) == n_pairs and len(set(keys)) == n_pairs, "keys must be distinct"
    assert all(re.fullmatch(r"[a-z]{3}", k) and re.fullmatch(r"\d\d", v) for k, v in pairs)
    assert query.endswith("=") and query[:-1] in keys
    assert answer == dict(pairs)[query[:-1]]
    again = associative_recall_sample(n_pairs, random.Random(n_pairs))
    assert torch.equal(again[0], ids) and again[1] == answer
