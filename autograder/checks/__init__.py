"""All checks, registered by name (``ex1.attention``, ...), and the student-side runner they share."""
from __future__ import annotations

import contextlib
import io
import warnings
from typing import Mapping, Optional, Tuple

from torch import Tensor

from . import ex1_transformer, ex2_gqa, ex3_rope, ex4_kv_cache, ex5_context_extension  # noqa: F401 (registers)
from .base import REGISTRY, CheckFailed, Outputs, Student, StudentError, describe_error

__all__ = ["REGISTRY", "CheckFailed", "StudentError", "run_student_side"]


def run_student_side(name: str, namespace: Mapping, params: Mapping) -> Tuple[Optional[Outputs], Optional[str]]:
    """Run a check's student half: (outputs, None), or (None, a student-facing error).

    Warnings and stderr from the student's code are swallowed here: nbgrader scores a test cell 0 when it
    writes anything to stderr, and a warning from correct code must not cost points."""
    check = REGISTRY[name]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            got = check.run(Student(namespace), **params)
    except Exception as err:  # anything the student's code raises is reported, never propagated
        return None, describe_error(err)
    if not isinstance(got, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in got.items()):
        return None, "the check's student side returned something other than named tensors"
    return {k: v.detach().cpu().contiguous().clone() for k, v in got.items()}, None
