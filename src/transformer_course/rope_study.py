"""Two RoPE-scaling questions on the shipped model, measured zero-shot on the held-out long documents.

    python -m transformer_course rope-study          # writes results/rope_study-cpu.json

1. YaRN's temperature. YaRN (Peng et al., 2023, arXiv:2309.00071) changes the frequencies *and*
   multiplies the logits by ``(0.1 ln s + 1)^2``. At the course model's training length (L = 256) almost
   every RoPE pair turns fewer than ``beta_fast`` = 32 times over L, so YaRN's frequencies are close to
   position interpolation's; does the temperature then do anything? Each length s·L (s = 2, 4, 8) is read
   with YaRN as shipped and with ``attention_factor=1.0`` (the same frequencies, no temperature).
2. Llama 3.1's scaling (Grattafiori et al., 2024, arXiv:2407.21783): the same ramp in turns over L as
   YaRN's, with bounds 1 and 4 instead of 1 and 32, and no temperature. Evaluated beside YaRN.

Every row uses the metric of ``long_context.losses_at``: bits per byte, the mean over all positions of the
first ``length + 1`` bytes of each document, and the mean over the positions at or past L only. The file
records the machine and the command, as every results file does.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from .config import RopeScaling
from .data import long_documents
from .evaluate import with_rope_scaling
from .long_context import losses_at
from .results import machine_info, write

log = logging.getLogger(__name__)

VARIANTS = ("yarn", "yarn, no temperature", "llama3")  # the rows of the study, per length


def scaling(variant: str, factor: float, L: int) -> RopeScaling:
    """The RopeScaling of ``variant`` (one of ``VARIANTS``) for ``factor`` times the training length L."""
    if variant == "yarn":
        return RopeScaling("yarn", factor, L)  # attention_factor None: the paper's 0.1 ln s + 1
    if variant == "yarn, no temperature":
        return RopeScaling("yarn", factor, L, attention_factor=1.0)  # same frequencies, logits unchanged
    if variant == "llama3":
        return RopeScaling("llama3", factor, L)  # low_freq_factor 1, high_freq_factor 4: Llama 3.1's values
    raise ValueError(f"variant={variant!r} is not one of {VARIANTS}.")


def rope_study(model_name: str = "course-llama", multiples: Sequence[int] = (2, 4, 8),
               max_docs: Optional[int] = None, command: str = "") -> dict:
    """The study as a dict: one row per (variant, length), zero-shot on ``data.long_documents()``.

    max_docs: use only the first documents (a quick smoke run); None: all of them, as the book reports.
    """
    from . import pretrained

    model = pretrained.load(model_name)
    L = model.config.context_length
    docs = long_documents()
    if max_docs is not None:
        docs = docs[:max_docs]
    rows = []
    for s in multiples:
        if s <= 1:
            raise ValueError(f"multiples={list(multiples)}: each must be > 1 (a length past L).")
        for variant in VARIANTS:
            scaled = with_rope_scaling(model, scaling(variant, float(s), L))
            row = {"variant": variant, "factor": float(s), **losses_at(scaled, docs, s * L, L)}
            rows.append(row)
            log.info("rope study: %s at %d: %.3f bits/byte", variant, s * L, row["bits_per_byte"])
    return {"machine": machine_info(), "command": command, "model": model_name, "training_length": L,
            "multiples": list(multiples), "documents": [name for name, _ in docs], "rows": rows}


def write_rope_study(out_dir: str = "results", command: str = "", **kwargs) -> Path:
    """Run ``rope_study(**kwargs)`` and write ``<out_dir>/rope_study-cpu.json``; returns the path."""
    return write(rope_study(command=command, **kwargs), "rope_study-cpu", out_dir)
