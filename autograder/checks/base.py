"""What a check is, and the helpers every exercise's checks share.

A check grades one part of an exercise in two halves, so that the verdict never depends on code the
student controls:

    run(student, **params)  -> {name: Tensor}    runs in the student's process: calls the student's
                                                 functions and classes on seeded inputs it builds itself
    judge(got, **params)    -> [problem, ...]    runs in the grader's process: rebuilds the same inputs,
                                                 computes the reference answer with the course package or
                                                 PyTorch, and explains every difference (empty = pass)

``python -m autograder`` runs ``run`` in a sandboxed child and ``judge`` in its own process; only tensors
cross between them (safetensors, never pickle). In a notebook (nbgrader's kernel, or a student checking
their work) ``autograder.check`` runs both halves in the kernel. Both paths call the same two functions
with the same parameters, so they give the same verdicts.

``params`` are the keyword literals of the test cell, e.g. ``check("ex1.attention", globals(), seed=3)``:
visible tests use one set, hidden tests others (other seeds, odd shapes), never other code.

A check is declared once, in its registration: its parameters with their defaults and the names of its
outputs. Both halves then receive the same ``Params`` (defaults filled in, unknown names refused) and build
their seeded inputs from it with the same function; the judge only runs once every declared output is there::

    @register("ex3.apply_rope", "apply_rope in the half layout", where="the `apply_rope` cell (part 2)",
              params=dict(seed=0, T=5, D=8, base=10000.0), outputs=("from_zero", "x_after"))
    class ApplyRope:
        def run(student, p): ...      # -> {"from_zero": ..., "x_after": ...}
        def judge(got, p): ...        # -> [problem, ...]

A part that uses an earlier part's function is judged on its own: ``run`` calls it a second time with the
reference version in the student's namespace (``with student.substitute(repeat_kv=reference)``), and the
judge passes the part when that run is right, with a ``Note`` that says which earlier part to fix first.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

Outputs = Dict[str, Tensor]
Problems = List[str]


class StudentError(Exception):
    """Something the student must fix before a check can even run (a missing name, a wrong signature).

    Its message is shown to the student as it is: write it as an instruction."""


class CheckFailed(AssertionError):
    """Raised in the notebook when a check fails; the message is the full explanation."""


class Note(str):
    """A line of a judge's answer that is not a problem: the part passes, and the student reads it."""


@dataclass(frozen=True)
class Check:
    name: str                       # "ex1.attention": exercise prefix, dot, part
    title: str                      # one line a student recognises: "causal scaled dot-product attention"
    run: Callable[..., Outputs]     # run(student, **params) in the student's process
    judge: Callable[..., Problems]  # judge(got, **params) in the grader's process
    where: str = ""                 # where to look when it fails: "the `attention` cell (part 1)"


REGISTRY: Dict[str, Check] = {}


class Params(dict):
    """A check's parameters, defaults filled in: ``p.seed`` or ``p["seed"]``."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def register(name: str, title: str, where: str = "", *, params: Optional[Mapping] = None,
             outputs: Sequence[str] = ()) -> Callable:
    """Class decorator: the class has static methods ``run`` and ``judge``; one instance is registered.

    With ``params`` (the check's parameters and their defaults, declared once) the two halves are called as
    ``run(student, p)`` and ``judge(got, p)`` with one ``Params``; a parameter not declared is an error, and
    the judge sees ``got`` only when it holds every name in ``outputs``."""

    def wrap(cls):
        if name in REGISTRY:
            raise ValueError(f"check {name!r} is registered twice")
        if params is None:
            REGISTRY[name] = Check(name, title, cls.run, cls.judge, where)
            return cls
        defaults = dict(params)

        def bind(given: Mapping) -> Params:
            unknown = sorted(set(given) - set(defaults))
            if unknown:
                raise TypeError(f"{name} has no parameter {', '.join(unknown)} (it has {', '.join(defaults)})")
            return Params(defaults, **given)

        def run(student, **given):
            return cls.run(student, bind(given))

        def judge(got, **given):
            return expect_keys(got, outputs) or cls.judge(got, bind(given))

        REGISTRY[name] = Check(name, title, run, judge, where)
        cls.params = defaults
        return cls

    return wrap


# --------------------------------------------------------------------------------------------------
# The student's side: finding graded names
# --------------------------------------------------------------------------------------------------
class Student:
    """The student's notebook namespace, seen through the names the exercise documents."""

    def __init__(self, namespace: Mapping[str, object]):
        self.namespace = namespace

    def get(self, name: str, signature: str = "") -> Callable:
        """The student's function or class ``name``; a clear StudentError if it is missing or a stub."""
        obj = self.namespace.get(name)
        shown = f"`{name}{signature}`"
        if obj is None:
            raise StudentError(
                f"{shown} is not defined. Define it in its answer cell (keep the name exactly) and run that "
                "cell before this test.")
        if not callable(obj):
            raise StudentError(f"{shown} should be a function or class, but it is a {type(obj).__name__}.")
        return obj

    @contextlib.contextmanager
    def substitute(self, **references: Callable):
        """The student's names ``references`` replaced by the grader's reference versions for the duration:
        a function the student's code calls by name (``repeat_kv`` inside ``gqa_attention``) is then the
        reference one, so a part is judged on its own code. Names the student did not define stay undefined
        afterwards."""
        saved = {name: self.namespace[name] for name in references if name in self.namespace}
        self.namespace.update(references)
        try:
            yield
        finally:
            for name in references:
                if name in saved:
                    self.namespace[name] = saved[name]
                else:
                    self.namespace.pop(name, None)


def call(fn: Callable, *args, **kwargs):
    """Call student code; NotImplementedError (the untouched stub) becomes a StudentError."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as err:
        name = getattr(fn, "__qualname__", getattr(fn, "__name__", "this part"))
        raise StudentError(f"`{name}` still raises NotImplementedError: replace the stub with your code. {err}".strip())


def load_weights(module: torch.nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    """Load the grader's weights into a student module, explaining a name or shape mismatch."""
    if not isinstance(module, torch.nn.Module):
        raise StudentError(f"{what} should be a torch.nn.Module, but it is a {type(module).__name__}.")
    mine = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    wanted = {k: tuple(v.shape) for k, v in state.items()}
    missing, extra = sorted(set(wanted) - set(mine)), sorted(set(mine) - set(wanted))
    if missing or extra:
        raise StudentError(
            f"{what} has the wrong parameter names. Expected exactly {sorted(wanted)}; "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}. The names are listed at the top of the "
            "notebook; buffers that are not weights should be registered with persistent=False.")
    wrong = [f"{k}: yours {mine[k]}, expected {wanted[k]}" for k in wanted if mine[k] != wanted[k]]
    if wrong:
        raise StudentError(f"{what} has parameters of the wrong shape: " + "; ".join(wrong) +
                           ". nn.Linear(in, out) stores its weight as (out, in).")
    module.load_state_dict(dict(state), strict=True)


# --------------------------------------------------------------------------------------------------
# The grader's side: comparing and diagnosing
# --------------------------------------------------------------------------------------------------
def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def randn(gen: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape, generator=gen) * scale


def expect_keys(got: Outputs, keys: Sequence[str]) -> Problems:
    """The child must return exactly these outputs (a tampered run may not)."""
    missing = [k for k in keys if k not in got]
    return [f"the check produced no `{k}` output (did your code stop it early?)" for k in missing]


def mismatch(got: Optional[Tensor], want: Tensor, what: str, *, atol: float, rtol: float = 0.0) -> Optional[str]:
    """None if ``got`` equals ``want`` within tolerance, else a sentence saying how it differs."""
    if got is None:
        return f"{what}: nothing was returned"
    if not isinstance(got, Tensor):
        return f"{what} should be a torch.Tensor, got {type(got).__name__}"
    if tuple(got.shape) != tuple(want.shape):
        return f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    if not got.dtype.is_floating_point and want.dtype.is_floating_point:
        got = got.to(want.dtype)
    if want.dtype.is_floating_point:
        g, w = got.double(), want.double()
        if not torch.isfinite(g).all():
            return f"{what} contains NaN or infinity (a mask filled with -inf on a whole row gives NaN after softmax)"
        if torch.allclose(g, w, atol=atol, rtol=rtol):
            return None
        err = (g - w).abs().max().item()
        return f"{what} differs from the reference by up to {err:.3g} (tolerance {atol:g})"
    if torch.equal(got.to(want.dtype), want):
        return None
    first = int((got.to(want.dtype) != want).flatten().nonzero()[0])
    return f"{what} differs from the reference (first difference at flat index {first})"


def same(got: object, candidate: Tensor, atol: float) -> bool:
    """``got`` equals ``candidate`` within ``atol``, NaN where it has NaN (a mask that hides a whole row gives
    NaN after softmax, and where the NaN is tells which mask it was)."""
    return (isinstance(got, Tensor) and got.shape == candidate.shape and got.dtype.is_floating_point
            and candidate.dtype.is_floating_point
            and torch.allclose(got.double(), candidate.double(), atol=atol, rtol=0.0, equal_nan=True))


def diagnose(got: Tensor, mistakes: Sequence[Tuple[str, Callable[[], Tensor]]], *, atol: float) -> Optional[str]:
    """The hint of the first known mistake whose output equals ``got``: this is how the grader names a bug.

    ``mistakes`` are (hint, thunk) pairs; each thunk computes what a known wrong implementation returns on
    the same inputs (missing scale, wrong softmax axis, ...). Thunks are lazy: most are never evaluated."""
    for hint, wrong in mistakes:
        try:
            candidate = wrong()
        except Exception:  # a mistake model that does not apply to these shapes
            continue
        if candidate is not None and same(got, candidate, atol):  # None: the model does not apply here either
            return hint
    return None


def on_its_own(problems: Problems, alone: Problems, part: str, dependency: str) -> Problems:
    """The verdict of a part that uses an earlier part's function: ``problems`` with the student's version of
    it, ``alone`` with the reference version substituted (``Student.substitute``). The part passes when it is
    right on its own; a note then says which earlier part to fix."""
    if alone or not problems:
        return alone or problems
    return [Note(f"{part} is right with the reference {dependency}, not with yours: fix {dependency} first; "
                 "this part keeps its points")]


def own_and_alone(student, compute, *, alone=None, keys=None, **references):
    """``compute()`` with the student's earlier parts, and ``alone()`` (by default ``compute`` again) with
    ``references`` substituted, as one set of outputs: the run's ``keys`` (by default all it returns), and those
    of the second run prefixed ``alone_``. A run that raises is flagged (``own_failed``, ``alone_failed``) and its
    outputs left empty, so that the judge can still grade the other one; when both raise, the student's own
    error is reported."""
    try:
        with student.substitute(**references):
            substituted = (alone or compute)()
    except Exception:  # noqa: BLE001 - the student's own run below says what is wrong if it fails too
        substituted = None
    try:
        own = compute()
    except Exception:
        if substituted is None:
            raise
        own = None
    keys = list(keys or (own or substituted).keys())
    out = {k: own[k] if own else torch.empty(0) for k in keys}
    out.update({f"alone_{k}": substituted[k] if substituted else torch.empty(0) for k in keys
                if substituted is None or k in substituted})
    out["own_failed"], out["alone_failed"] = torch.tensor(int(own is None)), torch.tensor(int(substituted is None))
    return out


def judge_own_and_alone(got, judge_set, part, dependency):
    """The verdict of a part run with the student's and with the reference ``dependency`` (``own_and_alone``)."""
    if int(got["own_failed"]):
        problems = [f"{part} raised an error with your {dependency}"]
    else:
        problems = judge_set(got)
    if int(got["alone_failed"]):
        return problems
    return on_its_own(problems, judge_set({k[len("alone_"):]: v for k, v in got.items() if k.startswith("alone_")}),
                      part, dependency)


def randomness(first: Tensor, second: Tensor, what: str) -> Optional[str]:
    """A problem when two identical calls gave different outputs (dropout or sampling left on), else None:
    checked before any other diagnosis, since every comparison of a noisy output is noise. Token ids compare
    exactly; NaN in the same places is no sign of randomness (a mask that hides a whole row gives it)."""
    if isinstance(first, Tensor) and isinstance(second, Tensor) and first.shape == second.shape \
            and first.dtype == second.dtype and not torch.equal(first, second) \
            and not (first.dtype.is_floating_point and torch.allclose(first, second, rtol=0, atol=0, equal_nan=True)):
        return (f"{what} gave different outputs for the same input twice: something random runs in evaluation "
                "mode (dropout not switched off by model.eval(), torch.rand in forward, a sampled choice); "
                "in eval mode the output must be deterministic")
    return None


def compare(got: object, want: Tensor, what: str, mistakes: Sequence[Tuple[str, Callable[[], Tensor]]], *,
            atol: float, rtol: float = 0.0) -> Problems:
    """[] when ``got`` matches ``want``, else one problem naming the likely mistake."""
    problem = mismatch(got, want, what, atol=atol, rtol=rtol)
    if problem is None:
        return []
    return [explain(problem, diagnose(got, mistakes, atol=max(atol, 1e-5)))]


def explain(problem: str, hint: Optional[str]) -> str:
    return f"{problem}. Likely mistake: {hint}" if hint else problem


def finite_number(x: Tensor) -> float:
    v = float(x.reshape(-1)[0]) if isinstance(x, Tensor) and x.numel() else math.nan
    return v


# --------------------------------------------------------------------------------------------------
# Verdicts, shared by both paths
# --------------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    name: str
    passed: bool
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def message(self) -> str:
        check = REGISTRY.get(self.name)
        title = check.title if check else self.name
        if self.passed:
            return "\n".join([f"PASS  {title}"] + [f"  note: {n}" for n in self.notes])
        lines = [f"FAIL  {title}"] + [f"  - {p}" for p in self.problems]
        if check and check.where:
            lines.append(f"  Where to look: {check.where}")
        return "\n".join(lines)


def judge_outputs(name: str, got: Optional[Outputs], error: Optional[str], params: Mapping) -> Verdict:
    """The trusted half: a verdict from what the student's side returned (or the error it raised)."""
    check = REGISTRY[name]
    if error is not None:
        return Verdict(name, False, [error])
    try:
        answer = list(check.judge(dict(got or {}), **params))
    except Exception as err:  # malformed outputs must fail the check, never crash the grader
        answer = [f"the outputs could not be judged ({type(err).__name__}: {err}); "
                  "check what your function returns (type, shape, dtype)"]
    problems = [str(p) for p in answer if not isinstance(p, Note)]
    return Verdict(name, not problems, problems, [str(p) for p in answer if isinstance(p, Note)])


def describe_error(err: BaseException) -> str:
    """A student-facing sentence for an exception raised by their code during a check."""
    if isinstance(err, StudentError):
        return str(err)
    where = ""
    tb = err.__traceback__
    while tb is not None:  # the innermost frame that is the student's own code (a notebook cell)
        fname = tb.tb_frame.f_code.co_filename
        if fname.startswith("<cell") or "ipykernel" in fname or fname.startswith("<ipython"):
            where = f" (in {tb.tb_frame.f_code.co_name}, line {tb.tb_lineno} of its cell)"
        tb = tb.tb_next
    return f"your code raised {type(err).__name__}: {err}{where}"
