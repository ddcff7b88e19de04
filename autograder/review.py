"""Reviewing a submission's own code in the grader's process, before any of it runs.

Student code runs in a sandboxed child, and so do the student halves of the checks. Everything in that
child can be reached and changed by the student's code, so a notebook that reaches for the grader (its
modules, the checks' registry, the functions the checks call), for the interpreter's machinery (frames,
the garbage collector, ``sys.modules``, signals, threads, processes) or that patches shared modules and
classes (``torch.allclose = ...``) is not graded at all: its findings have ``parts == ()`` and the whole
notebook scores zero. Separately, a graded function that calls the course package's implementation of
what the part asks for (or a fused PyTorch function the exercise forbids) gets zero for the parts that use
it: those findings name the parts.

``review(assignment, student_cells, locked_sources)`` reads the code with ``ast`` only; it runs nothing
and imports nothing the submission names. It is conservative where it must guess (an alias of a module is
an alias wherever it is used), and it is tested on every solution and release, which give no finding.

Rules (``Finding.rule``) for tampering, each of which zeroes the notebook:

    grader-access          ``autograder`` anywhere: an import, a name, an attribute, a string (docstrings
                           excepted). A copy of a test cell (``from autograder import check`` and
                           ``check("ex1.attention", globals(), seed=3)``) is allowed: it only checks.
    dynamic-code           dynamic import or evaluation: ``__import__ eval exec compile getattr setattr
                           delattr globals locals vars breakpoint __builtins__ builtins importlib``, and
                           modules that run code hidden in data (``pickle``, ``marshal``, ``code``, ``runpy``,
                           ``doctest``, ``unittest.mock``, ``IPython`` beyond ``IPython.display``, ...),
                           ``operator.attrgetter``/``methodcaller``, ``torch.load`` without
                           ``weights_only``, ``timeit`` given a string of code. ``getattr(x, "name")`` with a
                           literal name (or a loop variable over a literal list of names, as the chapters
                           write it) is read as ``x.name`` and checked as such
    runtime-introspection  ``gc inspect ctypes signal threading _thread multiprocessing concurrent
                           subprocess asyncio faulthandler pty``, ``sys.modules``, ``sys._getframe``,
                           ``sys.settrace``/``setprofile``/``monitoring``, ``sys.meta_path``/``path_hooks``,
                           ``os.system``/``popen``/``fork``/``kill*``/``exec*``/``spawn*``; the attributes
                           ``__globals__ __code__ __closure__ __subclasses__ __bases__ __base__ __mro__
                           __dict__ __getattribute__ __setattr__ __delattr__ __self__ __func__ __defaults__
                           __kwdefaults__ __wrapped__ __loader__ __spec__`` (and a few more) and the frame and
                           traceback attributes ``f_back f_globals f_locals f_builtins f_trace tb_frame
                           gi_frame cr_frame ag_frame``, on anything
    private-access         an attribute with a leading underscore of an imported module, or of anything
                           reached from one (``torch._C``, ``F._canonical_mask``); ``os._exit`` is allowed,
                           and ``self._cache`` or the student's own objects are never concerned
    monkeypatch            assigning to, augmenting or deleting an attribute or item of an imported module,
                           class or function, or of a name that holds one (``t = torch.Tensor;
                           t.data_ptr = ...``; a loop variable, a parameter, a container element or an
                           attribute that received one counts too); a target whose attribute chain has a
                           dunder (``x.__class__.foo = ...``) or whose root is not a plain name
                           (``type(x).foo = ...``); a class that defines ``__torch_function__`` or
                           ``__torch_dispatch__``; ``torch.library``, ``torch.overrides``,
                           ``torch.utils.cpp_extension``. Settings are allowed: ``os.environ[...] = ...``,
                           ``torch.backends.*``, ``plt.rcParams[...]``, ``pandas.options``.
    unreviewable           a cell nested too deeply to be read (no honest cell comes close)

and, zeroing only the parts concerned:

    forbidden-helper       a graded definition (the names a part's checks fetch, ``PARTS``), or anything it
                           uses, refers to a name of ``FORBIDDEN[assignment]`` for that part

Which parts a forbidden helper zeroes: every global name of the notebook (a function, a class, a variable)
is a node; a definition depends on every global name its body mentions, a variable on the expressions
assigned to it (also through ``global`` in a function), stored into it (``x.attr = ...``, ``x[k] = ...``)
or passed to its methods (``x.update(...)``); a function that stores its arguments somewhere depends on
what its callers pass it. Locked cells take part with their assignments (``cos, sin = RotaryEmbedding(...)``
makes ``cos`` depend on ``RotaryEmbedding``). A part is zeroed when a forbidden name is reachable from one
of its graded names. A forbidden name used only outside the graded definitions (a test a student writes
at the end of a cell, which the exercises explicitly allow) changes nothing.
"""
from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple

from .notebook import parse_python, python_source


@dataclass(frozen=True)
class Finding:
    cell: int          # the 1-based cell number used by grade.build_steps (position in the submission's cells)
    line: int          # 1-based line in that cell
    rule: str          # "grader-access", "dynamic-code", "runtime-introspection", "private-access", "monkeypatch",
                       # "unreviewable", "forbidden-helper"
    message: str       # one sentence a student can act on
    parts: tuple = ()  # grade_ids of the parts this finding zeroes; empty tuple = the whole notebook


# --------------------------------------------------------------------------------------------------
# The exercises: what each part grades, and what it must not use
# --------------------------------------------------------------------------------------------------
# assignment -> part (its test cell's grade_id) -> (how the notebook numbers it, the names its checks fetch
# with student.get). tests/test_review.py checks this against the notebooks and autograder/checks.
PARTS: Dict[str, Dict[str, Tuple[str, Tuple[str, ...]]]] = {
    "ex1_transformer": {
        "test_attention": ("part 1", ("attention",)),
        "test_mha": ("part 2", ("MultiHeadAttention",)),
        "test_ffn": ("part 3", ("FeedForward",)),
        "test_block_pre": ("part 4", ("Block",)),
        "test_block_post": ("part 4", ("Block",)),
        "test_decoder": ("part 5", ("TransformerLM",)),
        "test_gradients": ("part 5", ("TransformerLM",)),
        "test_train": ("part 6", ("TransformerLM",)),
    },
    "ex2_gqa": {
        "test_repeat_kv": ("part 1", ("repeat_kv",)),
        "test_gqa_attention": ("part 2", ("gqa_attention",)),
        "test_gqa_module": ("part 3", ("GroupedQueryAttention",)),
        "test_kv_cache_bytes": ("part 4", ("kv_cache_bytes",)),
    },
    "ex3_rope": {
        "test_frequencies": ("part 1", ("rope_frequencies",)),
        "test_apply_rope": ("part 2", ("apply_rope",)),
        "test_rope_scores": ("part 3", ("rope_scores",)),
    },
    "ex4_kv_cache": {
        "test_kv_cache": ("part 1", ("KVCache",)),
        "test_cached_attention": ("part 2", ("CachedSelfAttention",)),
        "test_generate": ("part 3", ("generate",)),
    },
    "ex5_context_extension": {
        "test_interpolation": ("part 1", ("interpolated_inv_freq",)),
        "test_ntk": ("part 2", ("ntk_inv_freq",)),
        "test_apply_scaling": ("part 3", ("apply_scaling",)),
        "test_bits_per_byte": ("part 4", ("bits_per_byte",)),
        "test_passkey_accuracy": ("part 5", ("passkey_accuracy",)),
    },
}


@dataclass(frozen=True)
class Forbidden:
    """Names some parts must not use. A name is a dotted path as the code resolves it through its imports:
    ``a.b`` also covers everything inside ``a.b``; ``*`` matches within one component and ``**`` any number
    of components (``transformer_course.**.attention`` is ``attention`` wherever the package re-exports it);
    ``attr:name`` is an attribute ``name`` of anything (an object the grader passes in)."""
    names: Tuple[str, ...]
    parts: Tuple[str, ...]   # grade_ids; () = every part of the exercise
    what: str                # "the course package's attention"
    why: str                 # "asks you to write it yourself"


TORCH_FUSED_ATTENTION = (
    "torch.**.scaled_dot_product_attention", "torch.**.multi_head_attention_forward", "torch.**.MultiheadAttention",
    "torch.nn.Transformer*", "torch.nn.modules.transformer", "torch.nn.attention", "torch.**.flex_attention",
    "torch.ops",
)
TORCH_FUSED_MODULES = tuple(n for n in TORCH_FUSED_ATTENTION if "scaled_dot_product" not in n)
PACKAGE_ATTENTION = (
    "transformer_course.attention", "transformer_course.multi_head", "transformer_course.model",
    "transformer_course.ring_attention", "transformer_course.**.attention", "transformer_course.**.attention_probs",
    "transformer_course.**.group_rows", "transformer_course.**.MultiHeadAttention",
    "transformer_course.**.TransformerBlock",
)
PACKAGE_ROPE = (
    "transformer_course.positions", "transformer_course.**.rope_inv_freq", "transformer_course.**.rope_cos_sin",
    "transformer_course.**.RotaryEmbedding", "transformer_course.**.apply_rope", "transformer_course.**.rotate_half",
    "transformer_course.**.rope_matrix", "transformer_course.**.RopeScaling",
)
PACKAGE_SCALING = (
    "transformer_course.**.rope_inv_freq", "transformer_course.**.RopeScaling",
    "transformer_course.**.with_rope_scaling", "transformer_course.**.standard_scalings",
    "transformer_course.**.context_extension", "transformer_course.long_context",
)
PACKAGE_KV_CACHE = ("transformer_course.kv_cache", "transformer_course.**.KVCache", "transformer_course.**.RollingKVCache")
PACKAGE_LOSSES = (
    "transformer_course.evaluate", "transformer_course.baselines", "transformer_course.train.evaluate",
    "transformer_course.train.lm_loss", "transformer_course.**.token_losses",
    "transformer_course.**.perplexity_by_length", "transformer_course.**.loss_by_position",
    "transformer_course.**.split_bits_per_byte",
)

FORBIDDEN: Dict[str, Tuple[Forbidden, ...]] = {
    "ex1_transformer": (
        Forbidden(("transformer_course",), (), "the course package",
                  "the exercise asks for plain PyTorch in your answers (the package is what your code is compared "
                  "with)"),
        Forbidden(TORCH_FUSED_ATTENTION, (), "PyTorch's fused attention",
                  "part 1 asks you to write attention with matrix products and torch.softmax, and parts 2, 4 and 5 "
                  "to build on it"),
    ),
    "ex2_gqa": (
        Forbidden(PACKAGE_ATTENTION, ("test_repeat_kv", "test_gqa_attention", "test_gqa_module"),
                  "the course package's attention", "parts 1 to 3 ask you to write repeat_kv, the attention and the "
                  "module yourself"),
        Forbidden(TORCH_FUSED_ATTENTION, ("test_gqa_attention", "test_gqa_module"), "PyTorch's fused attention",
                  "part 2 asks you to write the attention out yourself (the test compares with "
                  "F.scaled_dot_product_attention), and part 3 to use your gqa_attention"),
        Forbidden(("transformer_course.**.kv_cache_bytes",) + PACKAGE_KV_CACHE, ("test_kv_cache_bytes",),
                  "the course package's cache accounting", "part 4 asks you for the formula"),
    ),
    "ex3_rope": (
        Forbidden(PACKAGE_ROPE + ("transformer_course.model", "transformer_course.pretrained",
                                  "transformer_course.multi_head"), (),
                  "the course package's RoPE", "parts 1 to 3 ask you to compute the frequencies and the rotation "
                  "yourself, each part with your previous ones"),
    ),
    "ex4_kv_cache": (
        Forbidden(PACKAGE_KV_CACHE, (), "the course package's KVCache",
                  "part 1 asks you to write the cache (parts 2 and 3 use the cache they are given)"),
        Forbidden(PACKAGE_ATTENTION + TORCH_FUSED_MODULES, ("test_cached_attention",),
                  "the course package's attention", "part 2 asks you to build the mask and call "
                  "F.scaled_dot_product_attention yourself (RotaryEmbedding and apply_rope are given)"),
        Forbidden(("transformer_course.generate", "transformer_course.**.generate", "transformer_course.**.sample_next",
                   "transformer_course.model"), ("test_generate",),
                  "the course package's generation", "part 3 asks you to write the decoding loop yourself"),
    ),
    "ex5_context_extension": (
        Forbidden(PACKAGE_SCALING, ("test_interpolation", "test_ntk", "test_apply_scaling"),
                  "the course package's RoPE scaling", "parts 1 to 3 ask you to compute the scaled frequencies "
                  "yourself (the package's with_rope_scaling is what the check compares with)"),
        Forbidden(("transformer_course.**.RotaryEmbedding", "transformer_course.model", "transformer_course.config",
                   "attr:_build_cache"), ("test_apply_scaling",),
                  "the course package's RoPE tables", "part 3 asks you to set inv_freq and rebuild cos_cached and "
                  "sin_cached of a copy yourself"),
        Forbidden(PACKAGE_LOSSES, ("test_bits_per_byte",), "the course package's evaluation",
                  "part 4 asks you to compute the loss yourself (F.cross_entropy is fine)"),
        Forbidden(PACKAGE_LOSSES + ("transformer_course.**.passkey_accuracy",), ("test_passkey_accuracy",),
                  "the course package's evaluation", "part 5 asks you to decode the keys and score them yourself "
                  "(transformer_course.generate.generate is fine)"),
    ),
}

# The package's top level re-exports these; a reference is matched under the defining module's name.
REEXPORTS = {
    "transformer_course.ModelConfig": "transformer_course.config.ModelConfig",
    "transformer_course.TransformerLM": "transformer_course.model.TransformerLM",
    "transformer_course.TransformerEncoder": "transformer_course.model.TransformerEncoder",
    "transformer_course.EncoderDecoderLM": "transformer_course.model.EncoderDecoderLM",
}

# --------------------------------------------------------------------------------------------------
# The tampering rules' vocabulary
# --------------------------------------------------------------------------------------------------
DYNAMIC_NAMES = {"__import__", "eval", "exec", "compile", "getattr", "setattr", "delattr", "globals", "locals", "vars",
                 "breakpoint", "__builtins__", "builtins", "importlib", "__loader__", "__spec__"}
DUNDER_ATTRS = {"__globals__", "__code__", "__closure__", "__subclasses__", "__bases__", "__base__", "__mro__",
                "__dict__", "__getattribute__", "__setattr__", "__delattr__", "__self__", "__func__", "__defaults__",
                "__kwdefaults__", "__wrapped__", "__loader__", "__spec__", "__builtins__", "__import__", "__objclass__",
                "__reduce__", "__reduce_ex__"}
FRAME_ATTRS = {"f_back", "f_globals", "f_locals", "f_builtins", "f_trace", "tb_frame", "gi_frame", "cr_frame", "ag_frame"}
# Dotted names (a module covers everything in it; "*" within a component) -> rule.
DOTTED_RULES: Dict[str, str] = {
    **{m: "runtime-introspection" for m in (
        "gc", "inspect", "ctypes", "_ctypes", "signal", "_signal", "threading", "_thread", "multiprocessing",
        "_multiprocessing", "concurrent", "subprocess", "_posixsubprocess", "asyncio", "faulthandler", "pty",
        "sys.modules", "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace",
        "sys.setprofile", "sys.gettrace", "sys.getprofile", "sys.monitoring", "sys.meta_path", "sys.path_hooks",
        "sys.path_importer_cache", "sys.addaudithook", "sys.setswitchinterval",
        "os.system", "os.popen", "os.fork", "os.forkpty", "os.kill", "os.killpg", "os.exec*", "os.spawn*",
        "os.posix_spawn*", "os.register_at_fork", "os.pidfd_*", "posix", "nt", "torch.multiprocessing")},
    **{m: "dynamic-code" for m in (
        "importlib", "builtins", "__builtin__", "pickle", "_pickle", "cPickle", "marshal", "copyreg", "shelve",
        "dill", "cloudpickle", "joblib", "code", "codeop", "runpy", "pdb", "bdb", "doctest", "unittest.mock", "mock",
        "pytest", "_pytest", "zipimport", "pkgutil", "imp", "operator.attrgetter", "operator.methodcaller",
        "IPython", "torch.package", "torch.serialization", "torch.hub")},
    **{m: "monkeypatch" for m in ("torch.library", "torch.overrides", "torch.utils.cpp_extension")},
}
ALLOWED_DOTTED = ("IPython.display", "os._exit", "torch.signal")  # exceptions to the rules above
# Library settings that honest notebooks change by assignment; they cannot change a verdict.
ALLOWED_STORES = ("os.environ", "torch.backends", "matplotlib.rcParams", "matplotlib.pyplot.rcParams",
                  "pandas.options", "numpy.random.seed")
# Modules whose attributes of these names reach the module itself (os.sys is sys): a chain is also checked
# from such a component on.
REACHABLE = {"sys", "os", "gc", "inspect", "builtins", "importlib", "ctypes", "subprocess", "threading", "signal",
             "multiprocessing", "pickle", "marshal", "_thread"}
# Calls whose result may be (or hold) one of their arguments: builtins by name, library functions by prefix.
PASSTHROUGH = {"list", "tuple", "set", "frozenset", "dict", "iter", "next", "reversed", "sorted", "min", "max", "sum",
               "filter", "map", "zip", "enumerate"}
PASSTHROUGH_LIBRARIES = ("copy", "functools", "operator", "itertools", "collections", "weakref", "contextlib",
                         "types.SimpleNamespace", "dataclasses.replace")
BUILTIN_NAMES = set(dir(builtins))
CLASS = "<class>"  # a value that is a class object (type(x), x.__class__)
DEF = "<def:"      # "<def:N>": the student's (or a locked cell's) function or class number N
MAX_ROUNDS = 30    # of the alias fixpoint; honest notebooks settle in 3 or 4
MAX_DOTS = 8       # a longer dotted value is not followed further
MAX_VALUES = 64    # values kept per name, attribute or function result


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
def review(assignment: str, student_cells: List[Tuple[int, str]], locked_sources: List[str]) -> List[Finding]:
    """Every finding for a submission, sorted by cell and line (empty: nothing to object to).

    ``student_cells``: (cell number, source) of every code cell the grader runs as the student wrote it;
    ``locked_sources``: the trusted cells' sources, used to learn their imports and variables."""
    trees: List[Tuple[Optional[int], ast.Module]] = []
    findings: List[Finding] = []
    for source in locked_sources:
        tree = _parse(source)
        if tree is not None:
            trees.append((None, tree))
    for cell, source in student_cells:
        tree = _parse(source)
        if tree is not None:
            trees.append((cell, tree))
    try:
        notebook = Notebook(trees)
        findings += notebook.tampering()
        findings += notebook.forbidden(assignment)
    except RecursionError:
        cell = next((c for c, _ in trees if c is not None), 0)
        return [Finding(cell, 1, "unreviewable", "the code is nested too deeply for the grader to read it; split the "
                        "long expressions and deep blocks into smaller pieces")]
    unique: Dict[Tuple, Finding] = {}  # one tampering finding per cell, line and rule
    for f in findings:
        key = (f.cell, f.line, f.rule, f.message if f.parts else "")
        if key in unique:
            unique[key] = Finding(f.cell, f.line, f.rule, unique[key].message,
                                  tuple(sorted(set(unique[key].parts) | set(f.parts))))
        else:
            unique[key] = f
    return sorted(unique.values(), key=lambda f: (f.cell, f.line, f.rule, f.message))


def _parse(source: str) -> Optional[ast.Module]:
    """The cell's syntax tree, of the code the runner runs (``notebook.python_source``: IPython's own
    input transformer); None when it does not parse (the runner reports that)."""
    try:
        return parse_python(python_source(source))
    except (SyntaxError, ValueError, MemoryError):
        return None
    except RecursionError:
        return None  # the runner cannot compile it either


# --------------------------------------------------------------------------------------------------
# Scopes
# --------------------------------------------------------------------------------------------------
class Scope:
    def __init__(self, kind: str, parent: Optional["Scope"], node: Optional[ast.AST], number: int):
        self.kind, self.parent, self.node, self.number = kind, parent, node, number
        self.locals: Set[str] = set()
        self.globals: Set[str] = set()
        self.nonlocals: Set[str] = set()

    def lookup(self, name: str) -> "Scope":
        """The scope a name used here belongs to (Python's rules, class bodies skipped by nested scopes)."""
        scope: Scope = self
        if name in scope.globals:
            return scope.root()
        if name in scope.locals and name not in scope.nonlocals:
            return scope
        scope = scope.parent
        while scope is not None and scope.kind != "module":
            if scope.kind != "class" and name in scope.locals and name not in scope.globals | scope.nonlocals:
                return scope
            scope = scope.parent
        return self.root()

    def root(self) -> "Scope":
        scope = self
        while scope.parent is not None:
            scope = scope.parent
        return scope


SCOPED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp, ast.DictComp,
          ast.GeneratorExp)


def _target_names(target: ast.AST) -> Iterable[str]:
    for node in ast.walk(target):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            yield node.id
        elif isinstance(node, ast.Starred) and isinstance(node.value, ast.Name):
            yield node.value.id


def _params(args: ast.arguments) -> List[ast.arg]:
    return [*args.posonlyargs, *args.args, *([args.vararg] if args.vararg else []), *args.kwonlyargs,
            *([args.kwarg] if args.kwarg else [])]


@dataclass
class Def:
    """A function, lambda or class of the notebook."""
    number: int
    name: str
    node: ast.AST
    scope: Optional[Scope]          # its own scope (functions and lambdas)
    outer: Scope                    # where it is defined
    cell: Optional[int]             # None for a locked cell
    method: bool = False            # a function defined directly in a class body (not a staticmethod)
    class_def: Optional["Def"] = None
    params: List[str] = field(default_factory=list)
    stores_global: bool = False     # keeps something in a global (`global x`, GLOBAL[k] = ..., GLOBAL.update(...))
    stores_param: bool = False      # keeps something in an argument (self.x = ..., d[k] = ..., d.update(...))


def _chain(node: ast.AST) -> Tuple[ast.AST, List[str]]:
    """The root of an attribute/subscript chain and the attribute names along it (root first)."""
    attrs = []
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Attribute):
            attrs.append(node.attr)
        node = node.value
    return node, attrs[::-1]


def _add(have: Set[str], values: Set[str]) -> bool:
    """Add values to a fact; False when nothing was new. Long chains and deep containers are dropped and a
    fact holds at most MAX_VALUES values, so that the fixpoint ends (a value kept is enough to be shared)."""
    new = {v for v in values - have if v.count(".") <= MAX_DOTS and v.count("[]") <= 3}
    if not new or len(have) >= MAX_VALUES:
        return False
    have |= set(sorted(new)[: MAX_VALUES - len(have)])
    return True


def _dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _private(name: str) -> bool:
    return name.startswith("_") and not _dunder(name)


def _strip(values: Iterable[str]) -> Set[str]:
    """The elements of containers: "x[]" -> "x"; a value that is not a container stays (an item of a module's
    dict or list is reached from the module)."""
    return {v[:-2] if v.endswith("[]") else v for v in values}


def _shared(values: Iterable[str]) -> bool:
    """A value the student does not own: a module, or a class or function reached from one, or a class."""
    return any(not v.endswith("[]") and not v.startswith(DEF) for v in values)


TENSOR_CLASSES = {"torch.Tensor", "torch.nn.Parameter", "torch.nn.parameter.Parameter", "torch._C.TensorBase",
                  "torch._tensor.Tensor"}


def _dotted(values: Iterable[str]) -> Set[str]:
    return {v for v in values if not v.endswith("[]") and not v.startswith("<")}


def _normalise(dotted: str) -> str:
    for short, full in REEXPORTS.items():
        if dotted == short or dotted.startswith(short + "."):
            return full + dotted[len(short):]
    return dotted


def _pattern(name: str) -> "re.Pattern":
    parts = []
    for i, comp in enumerate(name.split(".")):
        if comp == "**":
            parts.append(r"(?:\.[^.]+)*")
        else:
            parts.append(("" if i == 0 else r"\.") + re.escape(comp).replace(r"\*", "[^.]*"))
    return re.compile("".join(parts) + r"(?:\..*)?")


def _matches(dotted: str, name: str) -> bool:
    return bool(_pattern(name).fullmatch(dotted))


def _dotted_rule(dotted: str) -> Optional[Tuple[str, str]]:
    """(rule, the matched name) when a dotted reference is one the tampering rules forbid."""
    comps = dotted.split(".")
    if any("autograder" in c.lower() for c in comps):
        return "grader-access", dotted
    if any(_matches(dotted, ok) for ok in ALLOWED_DOTTED):
        return None
    starts = [0] + [i for i, c in enumerate(comps) if i > 0 and c in REACHABLE]
    for i in starts:
        sub = ".".join(comps[i:])
        if any(_matches(sub, ok) for ok in ALLOWED_DOTTED):
            continue
        for name, rule in DOTTED_RULES.items():
            if _matches(sub, name):
                return rule, sub
    if comps[0] != "__future__" and any(_private(c) for c in comps):
        return "private-access", dotted
    return None


# --------------------------------------------------------------------------------------------------
# The notebook: scopes, aliases, references
# --------------------------------------------------------------------------------------------------
class Notebook:
    def __init__(self, trees: List[Tuple[Optional[int], ast.Module]]):
        self.trees = trees
        self.module = Scope("module", None, None, 0)
        self.scopes: Dict[int, Scope] = {}      # id(node) -> the scope the node opens
        self.where: Dict[int, Scope] = {}       # id(node) -> the scope a node is evaluated in
        self.cell_of: Dict[int, Optional[int]] = {}
        self.defs: Dict[int, Def] = {}          # id(node) -> Def
        self.by_number: Dict[int, Def] = {}
        self.defs_named: Dict[str, List[Def]] = {}
        self.star_modules: Set[str] = set()
        self.bound_anywhere: Set[str] = set()
        self.docstrings: Set[int] = set()
        self.grader_check = False               # the student imported `check` from autograder (a test cell's copy)
        self.allowed_nodes: Set[int] = set()    # the `check` and `globals` names of such test-cell calls
        for cell, tree in trees:
            for node in ast.walk(tree):
                for child in ast.iter_child_nodes(node):
                    child._review_parent = node  # type: ignore[attr-defined]
            self._scopes(tree, self.module, cell)
        self.name_uses: Dict[str, List[ast.Name]] = {}
        for cell, tree in trees:
            for node in ast.walk(tree):
                if isinstance(node, ast.Name):
                    self.name_uses.setdefault(node.id, []).append(node)
        # Alias facts: bindings[(scope number, name)] -> values; fields[attr] -> values; returns[def] -> values.
        self.bindings: Dict[Tuple[int, str], Set[str]] = {}
        self.fields: Dict[str, Set[str]] = {}
        self.returns: Dict[int, Set[str]] = {}
        self.events: List[Tuple] = []
        for cell, tree in trees:
            self._events(tree)
        self._fixpoint()
        for d in self.by_number.values():
            if isinstance(d.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                self._mark_stores(d)

    # ---- pass 1: scopes, definitions, docstrings ---------------------------------------------------
    def _scopes(self, tree: ast.Module, module: Scope, cell: Optional[int]) -> None:
        stack: List[Tuple[ast.AST, Scope, Optional[Def]]] = [(tree, module, None)]
        while stack:
            node, scope, owner_class = stack.pop()
            self.where[id(node)] = scope
            self.cell_of[id(node)] = cell
            body = getattr(node, "body", None)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body:
                first = body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                    self.docstrings.add(id(first.value))
            if isinstance(node, SCOPED):
                kind = "class" if isinstance(node, ast.ClassDef) else "comp" if isinstance(
                    node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)) else "function"
                inner = Scope(kind, scope, node, len(self.scopes) + 1)
                self.scopes[id(node)] = inner
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                    name = getattr(node, "name", "<lambda>")
                    if not isinstance(node, ast.Lambda):
                        scope.locals.add(name)
                        self.bound_anywhere.add(name)
                    d = Def(len(self.by_number) + 1, name, node, inner if kind == "function" else None, scope, cell)
                    if kind == "function":
                        d.params = [a.arg for a in _params(node.args)]
                        inner.locals.update(d.params)
                        self.bound_anywhere.update(d.params)
                        decorators = [ast.unparse(x) for x in getattr(node, "decorator_list", [])]
                        d.method = owner_class is not None and scope.kind == "class" and "staticmethod" not in decorators
                        d.class_def = owner_class if scope.kind == "class" else None
                    self.defs[id(node)] = d
                    self.by_number[d.number] = d
                    self.defs_named.setdefault(name, []).append(d)
                # Decorators, defaults, bases and a comprehension's first iterable are evaluated outside.
                outside: List[ast.AST] = []
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    outside += [*getattr(node, "decorator_list", []), *node.args.defaults,
                                *[d for d in node.args.kw_defaults if d is not None]]
                    if not isinstance(node, ast.Lambda):
                        outside += [a.annotation for a in _params(node.args) if a.annotation is not None]
                        outside += [node.returns] if node.returns is not None else []
                elif isinstance(node, ast.ClassDef):
                    outside += [*node.decorator_list, *node.bases, *[k.value for k in node.keywords]]
                else:
                    outside.append(node.generators[0].iter)
                ids = {id(x) for x in outside}
                for child in outside:
                    stack.append((child, scope, owner_class))
                for child in ast.iter_child_nodes(node):
                    if id(child) not in ids:
                        stack.append((child, inner, self.defs.get(id(node)) if kind == "class" else None))
                continue
            if isinstance(node, ast.Global):
                scope.globals.update(node.names)
            elif isinstance(node, ast.Nonlocal):
                scope.nonlocals.update(node.names)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                target = scope
                if isinstance(self._parent_namedexpr(node), ast.NamedExpr):
                    while target.kind == "comp":
                        target = target.parent
                target.locals.add(node.id)
                self.bound_anywhere.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name == "*":
                        self.star_modules.add(node.module or "")
                        continue
                    name = alias.asname or alias.name.split(".")[0]
                    scope.locals.add(name)
                    self.bound_anywhere.add(name)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                scope.locals.add(node.name)
                self.bound_anywhere.add(node.name)
            elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
                scope.locals.add(node.name)
                self.bound_anywhere.add(node.name)
            elif isinstance(node, ast.MatchMapping) and node.rest:
                scope.locals.add(node.rest)
                self.bound_anywhere.add(node.rest)
            for child in ast.iter_child_nodes(node):
                stack.append((child, scope, owner_class if isinstance(node, ast.ClassDef) else owner_class))

    def _parent_namedexpr(self, node: ast.AST) -> Optional[ast.AST]:
        return getattr(node, "_review_parent", None)

    # ---- pass 2: alias events ----------------------------------------------------------------------
    def _events(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            scope = self.where.get(id(node), self.module)
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name == "*":
                        continue
                    if isinstance(node, ast.Import):
                        value = alias.name if alias.asname else alias.name.split(".")[0]
                        name = alias.asname or alias.name.split(".")[0]
                    else:
                        base = "." * node.level + (node.module or "")
                        value, name = f"{base}.{alias.name}", alias.asname or alias.name
                    self._bind(scope, name, {_normalise(value)})
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                d = self.defs[id(node)]
                self._bind(scope, node.name, {f"{DEF}{d.number}>"})
                if isinstance(node, ast.ClassDef):
                    continue
                self._param_defaults(d)
            elif isinstance(node, ast.Lambda):
                d = self.defs[id(node)]
                self._param_defaults(d)
                self.events.append(("return", d.number, node.body, self.scopes[id(node)], False))
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    self.events.append(("assign", target, node.value, scope, False))
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                self.events.append(("assign", node.target, node.value, scope, False))
            elif isinstance(node, ast.NamedExpr):
                self.events.append(("assign", node.target, node.value, self.where.get(id(node.target), scope), False))
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                self.events.append(("assign", node.target, node.iter, scope, True))
            elif isinstance(node, ast.comprehension):
                self.events.append(("assign", node.target, node.iter, self.where.get(id(node.target), scope), True))
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        self.events.append(("assign", item.optional_vars, item.context_expr, scope, False))
            elif isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom)) and node.value is not None:
                owner = self._owner_function(node)
                if owner is not None:
                    self.events.append(("return", owner.number, node.value, scope, isinstance(node, ast.YieldFrom)))
            elif isinstance(node, ast.Call):
                self.events.append(("call", node, scope))

    def _owner_function(self, node: ast.AST) -> Optional[Def]:
        parent = getattr(node, "_review_parent", None)
        while parent is not None:
            if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return self.defs.get(id(parent))
            parent = getattr(parent, "_review_parent", None)
        return None

    def _param_defaults(self, d: Def) -> None:
        args = d.node.args
        positional = [*args.posonlyargs, *args.args]
        for arg, default in zip(positional[len(positional) - len(args.defaults):], args.defaults):
            self.events.append(("assign", ast.Name(arg.arg, ast.Store()), default, d.outer, False, d.scope))
        for arg, default in zip(args.kwonlyargs, args.kw_defaults):
            if default is not None:
                self.events.append(("assign", ast.Name(arg.arg, ast.Store()), default, d.outer, False, d.scope))

    def _mark_stores(self, d: Def) -> None:
        """Does the function keep what it is given, in a global or in one of its arguments?"""
        for node in ast.walk(d.node):
            root = None
            if isinstance(node, (ast.Global, ast.Nonlocal)):
                d.stores_global = True
            elif isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, (ast.Store, ast.Del)):
                root, _ = _chain(node)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and any(
                    not isinstance(a, ast.Constant) for a in [*node.args, *[k.value for k in node.keywords]]):
                root, _ = _chain(node.func)  # self.items.append(x), REGISTRY.update(f=f)
            if not isinstance(root, ast.Name):
                continue
            scope = self.where.get(id(root), d.scope)
            if root.id in d.params and scope.lookup(root.id) is d.scope:
                d.stores_param = True
            elif scope.lookup(root.id) is self.module and not _dotted(self.resolve_import(root.id)):
                d.stores_global = True

    def resolve_import(self, name: str) -> Set[str]:
        return self.bindings.get((self.module.number, name), set())

    def _bind(self, scope: Scope, name: str, values: Set[str]) -> bool:
        return _add(self.bindings.setdefault((scope.lookup(name).number, name), set()), values)

    def _fixpoint(self) -> None:
        for _ in range(MAX_ROUNDS):
            changed = False
            for event in self.events:
                changed |= self._apply(event)
            if not changed:
                return

    def _apply(self, event: Tuple) -> bool:
        kind = event[0]
        if kind == "assign":
            target, value, scope, iterate = event[1:5]
            bind_scope = event[5] if len(event) > 5 else scope
            values = self.resolve(value, scope)
            if iterate:
                values = _strip(values)
            return self._assign(target, values, bind_scope)
        if kind == "return":
            number, value, scope, iterate = event[1:]
            values = self.resolve(value, scope)
            values = _strip(values) if iterate else values
            return _add(self.returns.setdefault(number, set()), values)
        node, scope = event[1], event[2]
        return self._call(node, scope)

    def _assign(self, target: ast.AST, values: Set[str], scope: Scope) -> bool:
        if not values:
            return False
        if isinstance(target, ast.Name):
            changed = _add(self.fields.setdefault(target.id, set()), values) if scope.kind == "class" else False
            return self._bind(scope, target.id, values) or changed  # a class attribute is a field too
        if isinstance(target, (ast.Tuple, ast.List)):
            changed = False
            for elt in target.elts:  # unpacking: every name may get any element (or the container)
                changed |= self._assign(elt, values | _strip(values), scope)
            return changed
        if isinstance(target, ast.Starred):
            return self._assign(target.value, values | {v + "[]" for v in values}, scope)
        if isinstance(target, ast.Attribute):
            return _add(self.fields.setdefault(target.attr, set()), values)
        if isinstance(target, ast.Subscript):  # x[k] = module: x becomes a container of it
            root, attrs = _chain(target)
            if isinstance(root, ast.Name) and not attrs:
                return self._bind(scope, root.id, {v + "[]" for v in values})
        return False

    def _call(self, node: ast.Call, scope: Scope) -> bool:
        """Arguments that hold shared objects flow into the parameters of the functions they reach."""
        args = [(i, self.resolve(a.value if isinstance(a, ast.Starred) else a, scope), isinstance(a, ast.Starred))
                for i, a in enumerate(node.args)]
        keywords = [(k.arg, self.resolve(k.value, scope)) for k in node.keywords]
        shared = set().union(*[v for _, v, _ in args], *[v for _, v in keywords]) if (args or keywords) else set()
        shared = {v for v in shared | _strip(shared) if not v.startswith(DEF)}
        if not shared:
            return False
        changed = False
        targets = self._callees(node.func, scope)
        known = targets is not None
        everyone = [(d, True) for d in self.by_number.values() if d.scope is not None]
        for d, skip in (targets if targets is not None else everyone):
            names = d.params[1:] if (d.method and skip) else d.params
            if isinstance(d.node, ast.ClassDef):
                continue
            for i, values, starred in args:
                if starred or not known:
                    for p in names:
                        changed |= self._bind(d.scope, p, values | _strip(values))
                elif i < len(names):
                    changed |= self._bind(d.scope, names[i], values)
            for name, values in keywords:
                for p in (names if name is None or not known else [name] if name in names else names[-1:]):
                    changed |= self._bind(d.scope, p, values)
        # Callbacks: a function passed along with a shared object may receive it (map(f, [torch])).
        for a in [*node.args, *[k.value for k in node.keywords]]:
            for v in self.resolve(a, scope):
                d = self._def(v)
                if d is not None:
                    if d.scope is not None:
                        for p in d.params:
                            changed |= self._bind(d.scope, p, shared)
        return changed

    def _static_getattr(self, call: ast.Call) -> Optional[List[str]]:
        """The attribute names of ``getattr(x, name[, default])`` when they are known without running anything:
        a string literal, or the variable of an enclosing loop or comprehension over a literal tuple or list of
        strings, or over a global variable that is only ever such a list and only ever looped over
        (``{k: getattr(cfg, k) for k in ("n_layer", "n_head")}``). None otherwise."""
        if not (isinstance(call.func, ast.Name) and call.func.id == "getattr" and len(call.args) in (2, 3)
                and not call.keywords):
            return None
        name = call.args[1]
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            return [name.value]
        if not isinstance(name, ast.Name):
            return None
        parent = getattr(call, "_review_parent", None)
        while parent is not None and not isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.Module)):
            loops = parent.generators if isinstance(parent, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)) \
                else [parent] if isinstance(parent, (ast.For, ast.AsyncFor)) else []
            for loop in loops:
                if isinstance(loop.target, ast.Name) and loop.target.id == name.id:
                    values = self._literal_list(loop.iter)
                    if values and all(isinstance(v, ast.Constant) and isinstance(v.value, str) for v in values):
                        return [v.value for v in values]
                    return None
            parent = getattr(parent, "_review_parent", None)
        return None


    def _literal_list(self, node: ast.AST) -> Optional[List[ast.AST]]:
        if isinstance(node, (ast.Tuple, ast.List)):
            return node.elts
        if not isinstance(node, ast.Name) or self.where.get(id(node), self.module).lookup(node.id) is not self.module:
            return None
        values = None
        for use in self.name_uses.get(node.id, []):
            parent = getattr(use, "_review_parent", None)
            if isinstance(use.ctx, ast.Store) and isinstance(parent, ast.Assign) and parent.targets == [use] and \
                    isinstance(parent.value, (ast.Tuple, ast.List)):
                values = (values or []) + parent.value.elts
            elif not (isinstance(use.ctx, ast.Load) and isinstance(parent, (ast.For, ast.comprehension))
                      and parent.iter is use):
                return None
        return values

    def _def(self, value: str) -> Optional[Def]:
        """The definition a value "<def:N>" is (None for anything else, a container of definitions too)."""
        match = re.fullmatch(r"<def:(\d+)>", value)
        return self.by_number.get(int(match.group(1))) if match else None

    def _callees(self, func: ast.AST, scope: Scope) -> Optional[List[Tuple[Def, bool]]]:
        """The notebook's functions a call may reach, with whether a method's `self` is skipped; [] for a
        library function; None when it cannot be told (then every function may be reached)."""
        values = self.resolve(func, scope)
        found: List[Tuple[Def, bool]] = []
        for v in values:
            d = self._def(v)
            if d is not None:
                if isinstance(d.node, ast.ClassDef):  # a constructor: its __init__, self skipped
                    found += [(m, True) for m in self.defs_named.get("__init__", []) if m.class_def is d]
                else:
                    via_class = isinstance(func, ast.Attribute) and any(
                        isinstance(getattr(self._def(x), "node", None), ast.ClassDef)
                        for x in self.resolve(func.value, scope))
                    found.append((d, not via_class))
        if isinstance(func, ast.Attribute):
            found += [(d, True) for d in self.defs_named.get(func.attr, []) if d.scope is not None]
        if found:
            return found
        if _dotted(values) or isinstance(func, ast.Attribute) or (isinstance(func, ast.Name) and func.id in BUILTIN_NAMES):
            return []  # a library's function or a method of a library's object (x.to(torch.float32))
        return None

    # ---- what an expression may be -----------------------------------------------------------------
    def resolve(self, node: ast.AST, scope: Scope) -> Set[str]:
        """The values an expression may have, as far as sharing goes: dotted names of library objects
        ("torch.nn.functional"), CLASS, the notebook's definitions ("<def:N>"), containers of those ("x[]")."""
        if isinstance(node, ast.Name):
            owner = scope.lookup(node.id)
            values = set(self.bindings.get((owner.number, node.id), ()))
            if not values and owner is self.module and self.star_modules and node.id not in self.bound_anywhere \
                    and node.id not in BUILTIN_NAMES:
                values = {_normalise(f"{m}.{node.id}") for m in self.star_modules}
            return values
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value, scope)
            out = {_normalise(f"{b}.{node.attr}") for b in _dotted(base)}
            out |= self.fields.get(node.attr, set())
            if node.attr == "__class__" or (CLASS in base):
                out.add(CLASS)
            for b in base:  # a method or attribute of the notebook's own class
                cls = self._def(b)
                if cls is not None:
                    out |= {f"{DEF}{d.number}>" for d in self.defs_named.get(node.attr, []) if d.class_def is cls}
            return out
        if isinstance(node, ast.Subscript):
            return _strip(self.resolve(node.value, scope))
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            out = set()
            for elt in node.elts:
                if isinstance(elt, ast.Starred):
                    out |= {v + "[]" for v in _strip(self.resolve(elt.value, scope))}
                else:
                    out |= {v + "[]" for v in self.resolve(elt, scope)}
            return out
        if isinstance(node, ast.Dict):
            out = set()
            for part in [*node.keys, *node.values]:
                if part is not None:
                    out |= {v + "[]" for v in self.resolve(part, scope)}
            return out
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            return {v + "[]" for v in self.resolve(node.elt, self.scopes.get(id(node), scope))}
        if isinstance(node, ast.DictComp):
            inner = self.scopes.get(id(node), scope)
            return {v + "[]" for v in self.resolve(node.key, inner) | self.resolve(node.value, inner)}
        if isinstance(node, ast.IfExp):
            return self.resolve(node.body, scope) | self.resolve(node.orelse, scope)
        if isinstance(node, ast.BoolOp):
            return set().union(*[self.resolve(v, scope) for v in node.values])
        if isinstance(node, ast.NamedExpr):
            return self.resolve(node.value, scope)
        if isinstance(node, ast.Starred):
            return self.resolve(node.value, scope)
        if isinstance(node, ast.Lambda):
            return {f"{DEF}{self.defs[id(node)].number}>"}
        if isinstance(node, (ast.Await, ast.Yield, ast.YieldFrom)):
            return set()
        if isinstance(node, ast.Call):
            return self._call_result(node, scope)
        return set()

    def _call_result(self, node: ast.Call, scope: Scope) -> Set[str]:
        func = node.func
        names = self._static_getattr(node)
        if names is not None:  # getattr(x, "name", default)
            return set().union(*[self.resolve(ast.Attribute(node.args[0], n, ast.Load()), scope) for n in names])
        if isinstance(func, ast.Name) and func.id == "type" and len(node.args) == 1:
            return {CLASS}
        if isinstance(func, ast.Name) and func.id == "super":
            return {CLASS}
        callee = self.resolve(func, scope)
        passthrough = (isinstance(func, ast.Name) and func.id in PASSTHROUGH and func.id in BUILTIN_NAMES
                       and not callee) or any(_matches(d, p) for d in _dotted(callee) for p in PASSTHROUGH_LIBRARIES)
        if passthrough:
            out: Set[str] = set()
            for a in [*node.args, *[k.value for k in node.keywords]]:
                values = self.resolve(a, scope)
                out |= values | _strip(values) | _strip(_strip(values))
            return out
        out = set()
        for v in callee:
            d = self._def(v)
            if d is not None:
                out |= self.returns.get(d.number, set())
        if isinstance(func, ast.Lambda):
            out |= self.returns.get(self.defs[id(func)].number, set())
        if isinstance(func, ast.Attribute):
            for d in self.defs_named.get(func.attr, []):
                out |= self.returns.get(d.number, set())
            held = {v for v in self.resolve(func.value, scope) if v.endswith("[]")}
            out |= held | _strip(held)  # d.get("t"), d.values(), items.pop(): what the container holds
        elif isinstance(func, ast.Call) and any(_matches(d, p) for d in _dotted(self.resolve(func.func, scope))
                                                for p in PASSTHROUGH_LIBRARIES):
            out |= callee | _strip(callee)  # weakref.ref(torch)(), operator.itemgetter(0)([torch])
            for a in [*node.args, *[k.value for k in node.keywords]]:
                out |= _strip(self.resolve(a, scope))
        if not callee and not isinstance(func, ast.Attribute) and not (
                isinstance(func, ast.Name) and func.id in BUILTIN_NAMES):
            for values in self.returns.values():  # a call of something unknown may return what any function does
                out |= values
        return out

    # ---- tampering -----------------------------------------------------------------------------------
    def tampering(self) -> List[Finding]:
        findings: List[Finding] = []
        for cell, tree in self.trees:
            if cell is None:
                continue
            self._test_cell_copies(tree)
        for cell, tree in self.trees:
            if cell is None:
                continue
            for node in ast.walk(tree):
                findings += self._tamper(node, cell)
        return findings

    def _test_cell_copies(self, tree: ast.Module) -> None:
        """`from autograder import check` and `check("name", globals(), k=literal)`, as in a test cell."""
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module == "autograder" and node.level == 0 and \
                    [(a.name, a.asname) for a in node.names] == [("check", None)]:
                self.grader_check = True
                self.allowed_nodes.update({id(node), *[id(a) for a in node.names]})
        for node in tree.body:
            call = node.value if isinstance(node, ast.Expr) else None
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "check"
                    and len(call.args) == 2 and isinstance(call.args[0], ast.Constant)
                    and isinstance(call.args[0].value, str) and ast.unparse(call.args[1]) == "globals()"
                    and all(k.arg and _literal(k.value) for k in call.keywords)):
                self.allowed_nodes.update({id(call.func), id(call.args[1].func)})

    def _tamper(self, node: ast.AST, cell: int) -> List[Finding]:
        line = getattr(node, "lineno", 1)
        scope = self.where.get(id(node), self.module)
        out: List[Finding] = []

        def add(rule: str, message: str) -> None:
            out.append(Finding(cell, line, rule, message))

        # grader-access: the word anywhere (identifiers, strings), docstrings excepted
        if id(node) not in self.allowed_nodes and id(node) not in self.docstrings:
            for name, value in ast.iter_fields(node):
                texts = value if isinstance(value, list) else [value]
                for text in texts:
                    if isinstance(text, bytes):
                        text = text.decode("latin-1")
                    if isinstance(text, str) and "autograder" in text.lower() and name != "kind":
                        what = "the string" if isinstance(node, ast.Constant) else "the name"
                        add("grader-access", f"{what} {_short(text)!r} refers to the grader: student code must not "
                            "import, name or look up the grader's modules; remove it")
                        break
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if id(node) in self.allowed_nodes:
                return out
            for alias in node.names:
                if isinstance(node, ast.Import):
                    dotted = alias.name
                else:
                    dotted = ("." * node.level + (node.module or "")) + ("" if alias.name == "*" else "." + alias.name)
                found = _dotted_rule(_normalise(dotted.lstrip(".")))
                if found:
                    add(found[0], _dotted_message(found[0], f"import {dotted.lstrip('.')}", found[1]))
            return out
        if isinstance(node, ast.Name):
            if id(node) in self.allowed_nodes:
                return out
            call = getattr(node, "_review_parent", None)
            names = self._static_getattr(call) if isinstance(call, ast.Call) and call.func is node else None
            if node.id == "getattr" and names is not None:  # getattr(x, "name"): reviewed as x.name
                for name in names:
                    if name in DUNDER_ATTRS or name in FRAME_ATTRS or "autograder" in name.lower():
                        add("runtime-introspection", f"getattr(..., {name!r}) reaches into the interpreter's "
                            "internals; remove it and use ordinary attributes and calls")
                out += self._dotted_findings(call, scope, cell, line)
            elif node.id in DYNAMIC_NAMES and isinstance(node.ctx, ast.Load):
                add("dynamic-code", f"`{node.id}` looks names up or runs code at run time, which lets code reach the "
                    "grader; call functions and read attributes directly by name instead")
            elif self.grader_check and node.id == "check" and isinstance(node.ctx, ast.Load):
                add("grader-access", "`check` from the grader may only be called as in a test cell, "
                    "check(\"name\", globals(), ...); remove this use of it")
            elif isinstance(node.ctx, ast.Load) and not self._is_chain_part(node):
                out += self._dotted_findings(node, scope, cell, line)
            return out
        if isinstance(node, ast.Attribute):
            if node.attr in DUNDER_ATTRS or node.attr in FRAME_ATTRS:
                add("runtime-introspection", f"`.{node.attr}` reaches into the interpreter's internals (functions' "
                    "globals, frames, classes' internals); remove it and use ordinary attributes and calls")
            if not self._is_chain_part(node):
                out += self._dotted_findings(node, scope, cell, line)
            return out
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, (ast.Attribute, ast.Subscript)) and isinstance(t.ctx, (ast.Store, ast.Del)):
                        problem = self._patch(t, scope)
                        if problem:
                            verb = "deletes" if isinstance(node, ast.Delete) else "changes"
                            add("monkeypatch", f"`{_short(ast.unparse(t))}` {verb} {problem}; keep your changes "
                                "to your own objects (define your own function or subclass instead)")
            return out
        if isinstance(node, (ast.For, ast.AsyncFor, ast.With, ast.AsyncWith, ast.comprehension)):
            targets = [node.target] if not isinstance(node, (ast.With, ast.AsyncWith)) else [
                i.optional_vars for i in node.items if i.optional_vars is not None]
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, (ast.Attribute, ast.Subscript)):
                        problem = self._patch(t, scope)
                        if problem:
                            add("monkeypatch", f"`{_short(ast.unparse(t))}` changes {problem}; loop over your own "
                                "variables instead")
            return out
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Assign)) and any(
                        n in ("__torch_function__", "__torch_dispatch__")
                        for n in ([item.name] if hasattr(item, "name") else list(_target_names(item.targets[0])))):
                    add("monkeypatch", f"the class `{node.name}` overrides how torch runs its functions "
                        "(__torch_function__/__torch_dispatch__); write ordinary tensor code instead")
            for base in node.bases:  # a tensor that answers data_ptr() or is_contiguous() as it likes
                if _dotted(self.resolve(base, scope)) & TENSOR_CLASSES:
                    add("monkeypatch", f"the class `{node.name}` subclasses a torch tensor class, which could "
                        "change what the grader observes of your tensors; use plain tensors")
            return out
        if isinstance(node, ast.Call):
            callee = _dotted(self.resolve(node.func, scope))
            keywords = {k.arg: k.value for k in node.keywords}
            if "torch.load" in callee and (("weights_only" in keywords and not (
                    isinstance(keywords["weights_only"], ast.Constant) and keywords["weights_only"].value is True))
                    or "pickle_module" in keywords):
                add("dynamic-code", "torch.load without weights_only=True can run code stored in the file; load "
                    "weights only (torch.load(path, weights_only=True))")
            if any(_matches(d, "timeit") for d in callee):
                given = [*node.args[:2], *[v for k, v in keywords.items() if k in ("stmt", "setup")]]
                if any(not isinstance(a, ast.Lambda) and not any(
                        v.startswith(DEF) for v in self.resolve(a, scope)) for a in given):
                    add("dynamic-code", "timeit runs code given as a string; pass it a function (a lambda) or use "
                        "time.perf_counter()")
        return out

    def _is_chain_part(self, node: ast.AST) -> bool:
        parent = getattr(node, "_review_parent", None)
        return isinstance(parent, ast.Attribute) and parent.value is node

    def _dotted_findings(self, node: ast.AST, scope: Scope, cell: int, line: int) -> List[Finding]:
        """The outermost attribute chain (or a lone name): what it resolves to may be forbidden. Each prefix
        is tried, so that `sys.modules.get` is found as `sys.modules`."""
        out = []
        current: Optional[ast.AST] = node
        seen: Set[str] = set()
        while current is not None:
            for dotted in sorted(_dotted(self.resolve(current, scope))):
                found = _dotted_rule(dotted)
                if found and found[1] not in seen:
                    seen.add(found[1])
                    out.append(Finding(cell, line, found[0], _dotted_message(found[0], f"`{_short(ast.unparse(node))}`",
                                                                           found[1])))
            current = current.value if isinstance(current, ast.Attribute) else None
            if out:
                break
        return out

    def _patch(self, target: ast.AST, scope: Scope) -> Optional[str]:
        """Why storing into ``target`` (an attribute or item) changes something the student does not own."""
        root, attrs = _chain(target)
        if any(_dunder(a) for a in attrs):
            return "a special (dunder) attribute, which changes how Python or a library behaves"
        if not isinstance(root, ast.Name):
            return "an object reached through an expression (a call such as type(x), an item, an attribute)"
        value = target.value  # the object being changed
        values = self.resolve(value, scope)
        if _shared(values):
            dotted = sorted(_dotted(values))
            allowed = [ok for ok in ALLOWED_STORES if isinstance(target, ast.Subscript) or ok != "os.environ"]
            if dotted and len(dotted) == len(values) and all(any(_matches(d, ok) for ok in allowed) for d in dotted):
                return None
            shown = f" ({dotted[0]})" if dotted and dotted[0] != ast.unparse(value) else ""
            return f"`{_short(ast.unparse(value))}`{shown}, a module, class or function shared with the grader"
        return None

    # ---- forbidden helpers ---------------------------------------------------------------------------
    def forbidden(self, assignment: str) -> List[Finding]:
        parts = PARTS.get(assignment)
        rules = FORBIDDEN.get(assignment, ())
        if not parts or not rules:
            return []
        graph = self._dependencies()
        found: Dict[Tuple, Tuple[int, str, Set[str]]] = {}  # (cell, line, reference) -> (path length, message, parts)
        for gid, (label, names) in parts.items():
            applicable = [r for r in rules if not r.parts or gid in r.parts]
            for name in names:
                for ref, path, (cell, line, written) in self._reachable(graph, name):
                    rule = next((r for r in applicable if any(_ref_matches(ref, n) for n in r.names)), None)
                    if rule is None:
                        continue
                    shown = ref[len("attr:"):] if ref.startswith("attr:") else ref
                    resolved = "" if written in (shown, f".{shown}") or written.endswith("." + shown) else f" ({shown})"
                    via = f", through {' -> '.join(f'`{p}`' for p in path[1:])}" if len(path) > 1 else ""
                    message = (f"`{name}` ({label}) uses {rule.what}, `{_short(written)}`{resolved}{via}: {rule.why}; "
                               "the graded parts may use only what the notebook's \"What is graded\" table allows")
                    key = (cell, line, ref)
                    if key not in found or len(path) < found[key][0]:
                        found[key] = (len(path), message, found.get(key, (0, "", set()))[2])
                    found[key][2].add(gid)
        return [Finding(cell, line, "forbidden-helper", message, tuple(sorted(gids)))
                for (cell, line, _), (_, message, gids) in found.items()]

    def _dependencies(self) -> Dict[str, List[Tuple[str, Tuple[Optional[int], int, str]]]]:
        """node -> [(what it refers to, (cell, line, as written))]: "g:name" for the notebook's global names,
        dotted library names, "attr:name" for attributes."""
        graph: Dict[str, List] = {}

        def edge(owner: str, ref: str, site) -> None:
            graph.setdefault(owner, []).append((ref, site))

        for cell, tree in self.trees:
            for stmt in tree.body:
                owners = self._owners(stmt, student=cell is not None)
                for owner in owners:
                    for ref, site in self._refs(stmt, cell):
                        edge(owner, ref, site)
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    for owner in owners - {f"g:{stmt.name}"}:  # the globals it stores into get what it is given
                        edge(owner, f"g:{stmt.name}", (cell, stmt.lineno, stmt.name))
            if cell is None:
                continue
            # Calls of functions that keep what they are given: in a global (the function's node gets the
            # arguments), or in an argument (a global passed as an argument, or the object a method is called on).
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                scope = self.where.get(id(node), self.module)
                args = [*node.args, *[k.value for k in node.keywords]]
                for d, _ in (self._callees(node.func, scope) or []):
                    owners = {self._global_owner(d)} if d.stores_global else set()
                    if d.stores_param:
                        receiver = _chain(node.func.value)[0] if isinstance(node.func, ast.Attribute) else None
                        for a in [*args, receiver]:
                            a = a.value if isinstance(a, ast.Starred) else a
                            if isinstance(a, ast.Name) and scope.lookup(a.id) is self.module and not _dotted(
                                    self.resolve(a, scope)):
                                owners.add(f"g:{a.id}")
                    for owner in owners:
                        for a in args:
                            for ref, site in self._refs(a, cell):
                                edge(owner, ref, site)
        return graph

    def _global_owner(self, d: Def) -> str:
        while d.outer is not self.module:
            node = d.outer.node
            if node is None or id(node) not in self.defs:
                break
            d = self.defs[id(node)]
        return f"g:{d.name}"

    def _owners(self, stmt: ast.stmt, student: bool) -> Set[str]:
        """The global names a top-level statement defines or changes (its references flow into them)."""
        owners: Set[str] = set()
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            owners.add(f"g:{stmt.name}")
        for node in ast.walk(stmt):
            scope = self.where.get(id(node), self.module)
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                if scope.lookup(node.id) is self.module:
                    owners.add(f"g:{node.id}")
            elif isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, (ast.Store, ast.Del)):
                root, _ = _chain(node)
                if isinstance(root, ast.Name) and scope.lookup(root.id) is self.module:
                    owners.add(f"g:{root.id}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)) and scope is self.module:
                owners |= {f"g:{a.asname or a.name.split('.')[0]}" for a in node.names if a.name != "*"}
            elif student and isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                root, _ = _chain(node.func)  # x.update(...), x.items.append(...): the arguments go into x
                if isinstance(root, ast.Name) and scope.lookup(root.id) is self.module and not _dotted(
                        self.resolve(root, scope)):  # torch.cat(...) changes nothing in torch
                    owners.add(f"g:{root.id}")
        return owners

    def _refs(self, node: ast.AST, cell: Optional[int]) -> Iterable[Tuple[str, Tuple[Optional[int], int, str]]]:
        for sub in ast.walk(node):
            scope = self.where.get(id(sub), self.module)
            line = getattr(sub, "lineno", 1)
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                if scope.lookup(sub.id) is self.module:
                    yield f"g:{sub.id}", (cell, line, sub.id)
                for dotted in _dotted(self.resolve(sub, scope)):
                    yield dotted, (cell, line, sub.id)
            elif isinstance(sub, ast.Attribute):
                yield f"attr:{sub.attr}", (cell, line, ast.unparse(sub))
                for dotted in _dotted(self.resolve(sub, scope)):
                    yield dotted, (cell, line, ast.unparse(sub))
            elif isinstance(sub, ast.Call) and self._static_getattr(sub) is not None:
                for name in self._static_getattr(sub):
                    yield f"attr:{name}", (cell, line, ast.unparse(sub))
                for dotted in _dotted(self.resolve(sub, scope)):
                    yield dotted, (cell, line, ast.unparse(sub))

    def _reachable(self, graph, name: str):
        """(reference, path of global names, site) for everything the global ``name`` depends on. The site is
        in the student's code: a locked cell's reference is shown where the student's code used that name."""
        start = f"g:{name}"
        seen = {start}
        queue = [(start, [name], None)]
        while queue:
            node, path, student_site = queue.pop(0)
            for ref, site in graph.get(node, []):
                here = site if site[0] is not None else student_site
                if here is None:
                    continue
                if ref.startswith("g:"):
                    if ref not in seen:
                        seen.add(ref)
                        queue.append((ref, path + [ref[2:]], here))
                    continue
                yield ref, path, here


def _ref_matches(ref: str, name: str) -> bool:
    if name.startswith("attr:") or ref.startswith("attr:"):
        return ref == name
    return _matches(ref, name)


def _literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, SyntaxError, TypeError, RecursionError):
        return False


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dotted_message(rule: str, written: str, name: str) -> str:
    if rule == "grader-access":
        return (f"{written} refers to the grader ({name}): student code must not import, name or look up the "
                "grader's modules; remove it")
    if rule == "dynamic-code":
        return (f"{written} uses `{name}`, which imports modules or runs code at run time; import what you need "
                "with a plain import statement and call it directly")
    if rule == "runtime-introspection":
        return (f"{written} uses `{name}`, which inspects or controls the running interpreter (frames, objects, "
                "signals, threads or processes); the exercise needs none of it: remove it")
    if rule == "monkeypatch":
        return f"{written} uses `{name}`, which changes how torch itself behaves; write ordinary PyTorch code instead"
    return (f"{written} is a private part of a library (`{name}`: a name starting with an underscore); use the "
            "library's public functions")
