"""Text to train and evaluate on, found on every machine that runs the course, and synthetic tasks.

The corpus is the Python standard library's own source files: long, structured documents whose names
are defined far above their use, so long context has something to offer. Nothing is downloaded.

    tok = ByteTokenizer()
    train = load_split("train")                         # uint8 tensor of the training documents
    x, y = random_batch(train, batch_size=8, seq_len=256, generator=torch.Generator().manual_seed(0))
    docs = long_documents()                             # held-out documents of at least 8 KiB

Split: each file goes to "train" or "val" by a hash of its path relative to the library root, so the
split does not depend on the file system's order or on which other files exist. Different Python
versions ship different files; the split of a given file never changes.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import random
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import Tensor

EOT = 0  # document separator: the NUL byte never occurs in Python source
VAL_PERCENT = 10
LONG_DOC_BYTES = 8192
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}


class ByteTokenizer:
    """Bytes are tokens: vocabulary 256, no training, no unknown tokens (UTF-8 encodes everything).

    ``decode`` replaces an incomplete UTF-8 sequence (a model can emit one) with U+FFFD.
    """

    vocab_size = 256
    eot = EOT

    def encode(self, text: str) -> List[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        bad = [i for i in ids if int(i) != i or not 0 <= int(i) < 256]
        if bad:
            raise ValueError(f"token ids must be bytes in [0, 256); got {bad[:5]}.")
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class CorpusNotFoundError(FileNotFoundError):
    """The standard library's sources are missing (some minimal installs strip them)."""


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@dataclass(frozen=True)
class Document:
    name: str  # path relative to the standard library root, with forward slashes
    path: Path

    def read(self) -> bytes:
        return self.path.read_bytes()


def documents(root: Optional[Path] = None) -> List[Document]:
    """Every ``.py`` file of the standard library (tests and installed packages excluded), sorted by name."""
    root = stdlib_root() if root is None else Path(root)
    files = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in SKIP_DIRS]  # prune: never walk into site-packages
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    if not files:
        raise CorpusNotFoundError(
            f"no Python source files under {root}: this Python installation ships without its standard "
            "library sources (some Docker images and embedded builds strip them). Use a regular CPython "
            "installation (python.org, pyenv, conda, or Debian's python3.x with libpython3.x-stdlib), "
            "or pass root= a folder of .py files."
        )
    return sorted((Document(p.relative_to(root).as_posix(), p) for p in files), key=lambda d: d.name)


def split_of(name: str) -> str:
    """"val" for about VAL_PERCENT % of names, chosen by SHA-256 of the name; "train" otherwise."""
    bucket = int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "val" if bucket < VAL_PERCENT else "train"


def load_split(split: str, root: Optional[Path] = None) -> Tensor:
    """All documents of ``split`` ("train" or "val"), each followed by EOT, as one uint8 tensor."""
    if split not in ("train", "val"):
        raise ValueError(f"split={split!r} must be 'train' or 'val'.")
    chunks = []
    for doc in documents(root):
        if split_of(doc.name) == split:
            chunks.append(doc.read())
            chunks.append(bytes([EOT]))
    if not chunks:
        raise CorpusNotFoundError(f"the {split!r} split is empty: no file of the corpus hashes into it; add files to root=.")
    return torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8)


def long_documents(min_bytes: int = LONG_DOC_BYTES, root: Optional[Path] = None) -> List[Tuple[str, Tensor]]:
    """Held-out ("val") documents of at least ``min_bytes`` bytes, as (name, uint8 tensor), sorted by name."""
    out = []
    for doc in documents(root):
        if split_of(doc.name) == "val":
            data = doc.read()
            if len(data) >= min_bytes:
                out.append((doc.name, torch.frombuffer(bytearray(data), dtype=torch.uint8)))
    return out


def random_batch(data: Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """Random windows of ``seq_len + 1`` tokens: inputs x and next-token targets y, each (B, seq_len) int64."""
    if len(data) < seq_len + 1:
        raise ValueError(f"data holds {len(data)} tokens, too few for windows of seq_len={seq_len} + 1.")
    starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=generator)  # last start: len - seq_len - 1
    windows = torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()]).long()  # (B, seq_len + 1)
    return windows[:, :-1], windows[:, 1:]


# --------------------------------------------------------------------------------------------------
# Synthetic long-context tasks
# --------------------------------------------------------------------------------------------------
# Landmark Attention's filler, key line and question; its intro is 148 bytes, more than half of a 256-token
# context, so the course uses a one-line intro that leaves the filler (and the key's depth) room to vary.
PASSKEY_INTRO = "A pass key is hidden in the text below. Remember it.\n"
PASSKEY_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
PASSKEY_QUESTION = "What is the pass key? The pass key is "


@dataclass
class PasskeySample:
    """A passkey prompt (Mohtashami & Jaggi, 2023): ``ids`` ends with the question; the answer follows."""

    ids: Tensor  # (n,) int64, the prompt
    answer: str  # the digits the model should produce next
    key_offset: int  # index in ids where the key's line starts
    depth: float  # where the key was asked to be, 0 = start of the filler, 1 = end


def _filler(room: int) -> Tuple[str, List[int]]:
    """``room`` bytes of filler: whole sentences of ``PASSKEY_FILLER`` in turn, then spaces for the few bytes
    that no whole sentence fits; and the offsets where a sentence may start (its boundaries, the end included)."""
    sentences = re.findall(r"[^.]*\.\s", PASSKEY_FILLER)  # each with the space or newline that follows it
    text, bounds = "", [0]
    for sentence in itertools.cycle(sentences):
        if len(text) + len(sentence) > room:
            break
        text += sentence
        bounds.append(len(text))
    text += " " * (room - len(text))
    if bounds[-1] != room:
        bounds.append(room)
    return text, bounds


def _key_line(key: str) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key.\n"


def passkey_prompt_length(digits: int = 5) -> int:
    """The length of the shortest passkey prompt (no filler at all): ``passkey_sample`` needs at least this."""
    return len(PASSKEY_INTRO) + len(_key_line("0" * digits)) + len(PASSKEY_QUESTION)


def passkey_sample(n_tokens: int, depth: float, rng: random.Random, digits: int = 5) -> PasskeySample:
    """A prompt of exactly ``n_tokens`` bytes hiding a ``digits``-digit key at ``depth`` of the filler.

    Layout: intro, filler up to the depth, "The pass key is K. Remember it. K is the pass key.", filler,
    the question (Landmark Attention's format). The filler repeats its sentences whole, padded with spaces
    at its end to make the length exact; the key line goes at the sentence boundary nearest ``depth``.
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth={depth} must be in [0, 1] (0 = key right after the intro, 1 = just before the question).")
    key = "".join(rng.choice("0123456789") for _ in range(digits))
    key_line = _key_line(key)
    room = n_tokens - passkey_prompt_length(digits)
    if room < 0:
        raise ValueError(f"n_tokens={n_tokens} is too short for a passkey prompt: it needs at least "
                         f"{passkey_prompt_length(digits)}.")
    filler, bounds = _filler(room)
    cut = min(bounds, key=lambda b: (abs(b - depth * room), b))
    text = PASSKEY_INTRO + filler[:cut] + key_line + filler[cut:] + PASSKEY_QUESTION
    ids = torch.tensor(list(text.encode("ascii")), dtype=torch.long)
    return PasskeySample(ids=ids, answer=key, key_offset=len(PASSKEY_INTRO) + cut, depth=depth)


PASSKEY_ANSWER_TOKENS = 5 + len(".\n")  # what follows the question in training: the key's 5 digits, then ".\n"


def passkey_training_text(n_tokens: int, rng: random.Random) -> Tensor:
    """A passkey prompt (the key at a random depth) followed by its answer and ".\n", ``n_tokens + 1`` long.

    The last ``PASSKEY_ANSWER_TOKENS`` tokens are the answer. Needs ``n_tokens >= passkey_training_length()``.
    """
    sample = passkey_sample(n_tokens + 1 - PASSKEY_ANSWER_TOKENS, rng.random(), rng)
    tail = torch.tensor(list((sample.answer + ".\n").encode("ascii")), dtype=torch.long)
    return torch.cat([sample.ids, tail])  # (n_tokens + 1,)


def passkey_training_length() -> int:
    """The smallest ``n_tokens`` that ``passkey_training_text`` accepts (a prompt with no filler)."""
    return passkey_prompt_length() + PASSKEY_ANSWER_TOKENS - 1


def associative_recall_sample(n_pairs: int, rng: random.Random) -> Tuple[Tensor, str]:
    """``k1=v1, k2=v2, ... ; kq=`` with distinct 3-letter keys and 2-digit values: answer ``vq``.

    Recalling the value needs the pair's position, found by content: the simplest test of an
    induction-style lookup over a long context (Ba et al., 2016; Arora et al., 2023, "Zoology").
    """
    if not 1 <= n_pairs <= 1000:
        raise ValueError(f"n_pairs={n_pairs} must be between 1 and 1000 (keys are 3 distinct letters).")
    letters = "abcdefghijklmnopqrstuvwxyz"
    keys: List[str] = []
    while len(keys) < n_pairs:
        k = "".join(rng.choice(letters) for _ in range(3))
        if k not in keys:
            keys.append(k)
    values = [f"{rng.randrange(100):02d}" for _ in keys]
    q = rng.randrange(n_pairs)
    text = ", ".join(f"{k}={v}" for k, v in zip(keys, values)) + f"; {keys[q]}="
    return torch.tensor(list(text.encode("ascii")), dtype=torch.long), values[q]
