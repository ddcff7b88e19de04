"""The review of a submission's code, in the grader's process, before it runs (autograder/review.py).

No honest notebook gives a finding (every solution and release, the chapters' code and a list of unusual but
honest snippets); every hostile snippet does, with the right rule; a graded function that calls the package's
implementation (directly, through a locked alias, through a helper) zeroes exactly the parts that use it."""
from __future__ import annotations

import ast
import json
import re
import time
from pathlib import Path

import pytest

from autograder.notebook import ASSIGNMENTS, RELEASE, SOLUTIONS, load_assignment, nbgrader, source_of
from autograder.notebook import python_source
from autograder.review import FORBIDDEN, PARTS, Finding, review

REPO = Path(__file__).resolve().parent.parent


def as_submission(path: Path):
    """(student cells, locked sources) of a notebook, as the grader builds them: code cells that nbgrader
    locks come from the source; every other code cell is the student's, numbered by its position."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    student, locked = [], []
    for n, cell in enumerate(cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        if nbgrader(cell).get("locked"):
            locked.append(source_of(cell))
        else:
            student.append((n, source_of(cell)))
    return student, locked


def with_cell(assignment: str, source: str, after: str = None, replace: str = None):
    """The solution of ``assignment`` as a submission, with one student cell added at the end (or after the
    answer cell defining ``after``), or with the answer cell defining ``replace`` rewritten."""
    student, locked = as_submission(SOLUTIONS / assignment / f"{assignment}.ipynb")
    if replace is not None:
        i = next(i for i, (_, s) in enumerate(student) if re.search(rf"^(def|class) {replace}\b", s, re.M))
        student[i] = (student[i][0], source)
        return student, locked
    student = [(2 * n, s) for n, s in student]  # room for the new cell between two others
    cell = 100 if after is None else next(n for n, s in student if re.search(rf"^(def|class) {after}\b", s, re.M)) + 1
    return sorted(student + [(cell, source)]), locked


def findings(assignment: str, source: str, **where):
    student, locked = with_cell(assignment, source, **where)
    return review(assignment, student, locked)


# --------------------------------------------------------------------------------------------------
# Honest code
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("root", [SOLUTIONS, RELEASE], ids=["solution", "release"])
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_no_finding_on_solutions_and_releases(assignment, root):
    student, locked = as_submission(root / assignment / f"{assignment}.ipynb")
    assert student and locked
    started = time.monotonic()
    assert review(assignment, student, locked) == []
    assert time.monotonic() - started < 2


def test_no_finding_on_the_chapters():
    """The chapters' code (as if a student had pasted it in; the set-up cell is the exercises' locked one)."""
    setup = as_submission(SOLUTIONS / "ex1_transformer" / "ex1_transformer.ipynb")[1][0]
    for path in sorted((REPO / "book").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = [(n, source_of(c)) for n, c in enumerate(cells, 1) if c["cell_type"] == "code"]
        student = [(n, s) for n, s in code if s != setup]
        assert student, path
        assert review("ex1_transformer", student, [setup]) == [], path.name


HONEST = {
    "einsum attention": '''
def attention(q, k, v, causal=True):
    scores = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.shape[-1])
    if causal:
        T = q.shape[-2]
        scores = scores.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf"))
    return torch.einsum("bhts,bhsd->bhtd", nn.functional.softmax(scores, dim=-1), v)
''',
    "a helper function": '''
def _causal_mask(T, device):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()

def attention(q, k, v, causal=True):
    s = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    if causal:
        s = s.masked_fill(~_causal_mask(q.shape[-2], q.device), float("-inf"))
    return s.softmax(-1) @ v
''',
    "a nested class and a lambda": '''
class FeedForward(nn.Module):
    class _Act(nn.Module):
        def forward(self, x):
            return F.gelu(x)

    def __init__(self, n_embd, ffn_hidden):
        super().__init__()
        self.up, self.down = nn.Linear(n_embd, ffn_hidden), nn.Linear(ffn_hidden, n_embd)
        self.act = self._Act()
        self.apply_all = lambda x: self.down(self.act(self.up(x)))

    def forward(self, x):
        return self.apply_all(x)
''',
    "__class__.__name__ in a print, os.environ.get": '''
m = MultiHeadAttention(16, 2)
print(m.__class__.__name__, type(m).__name__, os.environ.get("COURSE_GRADING", "0"))
if os.environ.get("NO_PLOTS"):
    print("no plots")
''',
    "comprehensions and dicts": '''
shapes = {name: tuple(p.shape) for name, p in TransformerLM(32, 8, 16, 2, 2, 32).named_parameters()}
sizes = [n for n in (s[0] for s in shapes.values()) if n > 4]
counts = {}
for key in shapes:
    counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + 1
print(sorted(counts.items()), sum(sizes))
''',
    "weights copied in place, a private attribute of self": '''
class Probe(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self._cache = None
        self.__hidden = 0

    def forward(self, x):
        if self._cache is None:
            self._cache = x.detach()
        return self.lin(x)

probe = Probe()
with torch.no_grad():
    probe.lin.weight.data.copy_(torch.eye(4))
    probe.lin.bias.data = torch.zeros(4)
    probe.lin.weight[0, 0] = 2.0
probe.lin.weight.requires_grad_(False)
''',
    "seeds, sys.exit, os._exit in an unused branch": '''
torch.manual_seed(1234)
gen = torch.Generator().manual_seed(0)
x = torch.randn(2, 3, generator=gen, dtype=torch.float64).to(torch.float32)
if x.isnan().any():
    sys.exit("NaN")
if False:
    os._exit(0)
''',
    "matplotlib and magics": '''
%matplotlib inline
!pip list
fig, ax = plt.subplots(figsize=(4, 3)) if "plt" in dir() else (None, None)
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([1, 2], [3, 4], label="loss")
ax.set(xlabel="step", ylabel="loss", title="it falls")
plt.close(fig)
''',
    "testing against SDPA after the answer, as part 1 allows": '''
q, k, v = torch.randn(3, 2, 2, 5, 4).unbind(0)
assert torch.allclose(attention(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)
reference = nn.functional.scaled_dot_product_attention(q, k, v)
print((attention(q, k, v, causal=False) - reference).abs().max())
''',
    "a copy of a test cell": '''
from autograder import check
check("ex1.attention", globals())
check("ex1.attention", globals(), seed=5, T=3)
''',
    "getattr with literal names, hasattr, isinstance": '''
cfg = dict(n_embd=16, n_head=2)
lin = nn.Linear(2, 2)
print([getattr(lin, name) is not None for name in ("weight", "bias")], getattr(torch, "float8_e4m3fn", None))
print(hasattr(lin, "weight"), isinstance(lin.weight, torch.Tensor), callable(attention))
''',
    "a class attribute, a dataclass, a decorator": '''
import dataclasses, functools

@dataclasses.dataclass
class Settings:
    lr: float = 3e-4
    steps: int = 10

class Counter:
    calls = 0

    @staticmethod
    def bump():
        Counter.calls += 1

@functools.lru_cache(maxsize=None)
def mask(T):
    return torch.ones(T, T, dtype=torch.bool).tril()

Counter.bump()
settings = dataclasses.replace(Settings(), steps=20)
settings.lr = 1e-3
''',
    "timeit with a lambda, time, copy": '''
import copy, timeit
model = TransformerLM(32, 8, 16, 2, 1, 32)
twin = copy.deepcopy(model)
twin.lm_head.weight = twin.tok_emb.weight
print(timeit.timeit(lambda: model(torch.zeros(1, 8, dtype=torch.long)), number=2), time.perf_counter())
''',
    "loops over modules' outputs and the optimiser": '''
model = TransformerLM(32, 8, 16, 2, 1, 32)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
for group in opt.param_groups:
    group["lr"] = 5e-4
for name, module in model.named_modules():
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        module.weight.data *= 0.5
os.environ["COURSE_NOTE"] = "set by me"
torch.backends.cudnn.deterministic = True
plt.rcParams["figure.figsize"] = (6, 4)
''',
}


@pytest.mark.parametrize("name", sorted(HONEST))
def test_no_finding_on_honest_code(name):
    assert findings("ex1_transformer", HONEST[name]) == []


def test_honest_code_in_other_exercises():
    assert findings("ex4_kv_cache", "cache = KVCache(1, 2, 8, 4)\nk, v = cache.update(torch.zeros(1, 2, 3, 4), "
                    "torch.zeros(1, 2, 3, 4), 0)\nprint(cache.length, cache.capacity, k.shape)\n") == []
    assert findings("ex5_context_extension", "scaled = apply_scaling(model, 'ntk', 2.0)\nprint(scaled.rope"
                    ".inv_freq[:4], bits_per_byte(scaled, [long_documents()[0][1][:300]]))\n") == []
    assert findings("ex3_rope", "x = torch.randn(1, 2, 5, 8)\nassert torch.allclose(apply_rope(x, torch.arange(5)), "
                    "package_apply_rope(x, *RotaryEmbedding(8)(torch.arange(5))), atol=1e-5)\n") == []


# --------------------------------------------------------------------------------------------------
# Tampering: the whole notebook
# --------------------------------------------------------------------------------------------------
HOSTILE = [
    # (exercise, rule, snippet)
    ("ex1", "grader-access", "import autograder.checks\nautograder.checks.REGISTRY.clear()"),
    ("ex1", "grader-access", "from autograder.checks import REGISTRY\nREGISTRY['ex1.attention'] = REGISTRY['ex1.ffn']"),
    ("ex1", "grader-access", "from autograder.checks.base import Student\nStudent.get = lambda self, n, s='': attention"),
    ("ex1", "grader-access", "from autograder import check as c\nc('ex1.attention', {})"),
    ("ex1", "grader-access", "name = 'autograder'\nprint(name)"),
    ("ex2", "grader-access", "target = 'auto' 'grader.checks'\nprint(target)"),
    ("ex1", "monkeypatch", "torch.allclose = lambda *a, **k: True"),
    ("ex1", "monkeypatch", "torch.Tensor.data_ptr = lambda self: 0"),
    ("ex1", "monkeypatch", "t = torch.Tensor\nt.data_ptr = lambda self: 0"),
    ("ex1", "monkeypatch", "F2 = F\nF2.softmax = lambda x, dim=-1: x"),
    ("ex1", "monkeypatch", "del torch.allclose"),
    ("ex1", "monkeypatch", "os.environ.get = None"),
    ("ex1", "monkeypatch", "import contextlib\nwith contextlib.nullcontext(torch) as t:\n    t.allclose = None"),
    ("ex1", "monkeypatch", "d = {'t': torch.Tensor}\nT = d.get('t')\nT.cpu = None"),
    ("ex1", "monkeypatch", "x = [torch]\n(y,) = x\ny.allclose = None"),
    ("ex1", "monkeypatch", "m = next(iter([torch.Tensor]))\nm.numpy = None"),
    ("ex1", "monkeypatch", "class P:\n    def go(self, mod):\n        mod.equal = None\nP().go(torch)"),
    ("ex1", "monkeypatch", "fix = lambda mod: mod.__setattr__\nnn.Module.forward = None"),
    ("ex1", "monkeypatch", "torch.nn.functional.gelu += 0"),
    ("ex1", "monkeypatch", "x = torch.zeros(1)\ntype(x).add = lambda *a: a[0]"),
    ("ex1", "monkeypatch", "x = torch.zeros(1)\nx.__class__.add = lambda *a: a[0]"),
    ("ex1", "monkeypatch", "x = torch.zeros(1)\ncls = type(x)\ncls.sum = lambda *a: 0"),
    ("ex1", "monkeypatch", "for m in (torch, F):\n    m.allclose = None"),
    ("ex1", "monkeypatch", "mods = [torch]\nmods[0].equal = None"),
    ("ex1", "monkeypatch", "def patch(module):\n    module.isfinite = None\npatch(torch)"),
    ("ex1", "monkeypatch", "def patch(module=torch.Tensor):\n    module.clone = None\npatch()"),
    ("ex1", "monkeypatch", "class Holder:\n    target = torch\nHolder.target.allclose = None"),
    ("ex1", "monkeypatch", "def get():\n    return torch.Tensor\nT = get()\nT.detach = None"),
    ("ex2", "monkeypatch", "import torch as t2\nt2.nn.Module.load_state_dict = lambda *a, **k: None"),
    ("ex2", "monkeypatch", "from torch import Tensor as T\nT.cpu = lambda self: self"),
    ("ex2", "monkeypatch", "class Sneaky(torch.Tensor):\n    @classmethod\n    def __torch_function__(cls, f, t, a=(), k=None):\n        return 0"),
    ("ex2", "monkeypatch", "class Steady(torch.Tensor):\n    def data_ptr(self):\n        return 12345"),  # a cache 'keeps' its buffer
    ("ex1", "monkeypatch", "import torch.library"),
    ("ex1", "dynamic-code", "m = __import__('auto' + 'grader')"),
    ("ex1", "dynamic-code", "print(getattr(torch, 'all' + 'close'))"),
    ("ex1", "dynamic-code", "setattr(torch, 'allclose', None)"),
    ("ex1", "dynamic-code", "exec('print(1)')"),
    ("ex1", "dynamic-code", "print(eval('1 + 1'))"),
    ("ex1", "dynamic-code", "code = compile('x = 1', '<x>', 'exec')"),
    ("ex1", "dynamic-code", "print(vars(torch)['allclose'])"),
    ("ex1", "dynamic-code", "print(globals()['attention'])"),
    ("ex1", "dynamic-code", "import importlib\nm = importlib.import_module('torch')"),
    ("ex1", "dynamic-code", "m = importlib.import_module('torch')"),  # importlib from the locked set-up cell
    ("ex1", "dynamic-code", "import builtins\nbuiltins.print = None"),
    ("ex1", "dynamic-code", "__builtins__['len'] = None"),
    ("ex1", "dynamic-code", "import pickle\npickle.loads(b'')"),
    ("ex1", "dynamic-code", "import operator\nT = operator.attrgetter('Tensor')(torch)"),
    ("ex1", "dynamic-code", "state = torch.load('w.pt', weights_only=False)"),
    ("ex1", "dynamic-code", "import timeit\ntimeit.timeit('print(1)', number=1)"),
    ("ex1", "runtime-introspection", "import gc\nfor o in gc.get_objects():\n    pass"),
    ("ex1", "runtime-introspection", "import inspect\nframe = inspect.currentframe()"),
    ("ex1", "runtime-introspection", "import sys\nframe = sys._getframe(1)"),
    ("ex1", "runtime-introspection", "def f():\n    try:\n        raise ValueError\n    except ValueError as e:\n        return e.__traceback__.tb_frame.f_back.f_globals"),
    ("ex1", "runtime-introspection", "for name, module in list(sys.modules.items()):\n    pass"),
    ("ex1", "runtime-introspection", "mods = os.sys.modules"),
    ("ex1", "runtime-introspection", "classes = object.__subclasses__()"),
    ("ex1", "runtime-introspection", "walk = ().__class__.__base__.__subclasses__()"),
    ("ex1", "runtime-introspection", "g = attention.__globals__"),
    ("ex1", "runtime-introspection", "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)"),
    ("ex1", "runtime-introspection", "import threading\nthreading.Thread(target=print, daemon=True).start()"),
    ("ex1", "runtime-introspection", "subprocess.run(['sleep', '100'])"),  # subprocess from the locked set-up cell
    ("ex1", "runtime-introspection", "os.system('echo hi')"),
    ("ex1", "runtime-introspection", "pid = os.fork()"),
    ("ex1", "runtime-introspection", "import ctypes\nctypes.pythonapi.Py_IncRef"),
    ("ex1", "runtime-introspection", "from multiprocessing import Process"),
    ("ex1", "runtime-introspection", "import sys\nsys.settrace(lambda *a: None)"),
    ("ex1", "runtime-introspection", "print(F.softmax.__self__)"),
    ("ex1", "private-access", "lib = torch._C"),
    ("ex1", "private-access", "print(F._canonical_mask)"),
    ("ex1", "private-access", "from torch import _C"),
]


@pytest.mark.parametrize("exercise,rule,snippet", HOSTILE, ids=[f"{r}:{s.splitlines()[-1][:40]}" for _, r, s in HOSTILE])
def test_hostile_code_is_found(exercise, rule, snippet):
    assignment = next(a for a in ASSIGNMENTS if a.startswith(exercise))
    found = findings(assignment, snippet)
    assert found, snippet
    assert rule in {f.rule for f in found}, found
    assert all(f.parts == () for f in found if f.rule != "forbidden-helper")
    assert all(f.cell == 100 for f in found), found
    for f in found:
        assert f.message and f.line >= 1


def test_hostile_code_in_a_graded_function_is_found_too():
    source = '''
def attention(q, k, v, causal=True):
    torch.allclose = lambda *a, **k: True
    return q
'''
    found = findings("ex1_transformer", source, replace="attention")
    assert [f.rule for f in found] == ["monkeypatch"] and found[0].line == 3


def test_magics_are_read_as_ipython_runs_them_and_bad_syntax_gives_nothing():
    """IPython's own transformer: line for line, magics and shell escapes become calls on get_ipython()."""
    assert python_source("%time x = 1\n!ls\ny = 2") == (
        "get_ipython().run_line_magic('time', 'x = 1')\nget_ipython().system('ls')\ny = 2\n")
    assert python_source("%%time\nx = 1\n!ls") == "\nx = 1\nget_ipython().system('ls')\n"  # the body runs
    assert [(f.rule, f.line) for f in findings("ex1_transformer", "%%capture out\nimport gc\n")] == [
        ("runtime-introspection", 2)]  # so the review reads it
    assert findings("ex1_transformer", "%%bash\nimport gc\n") == []  # not Python: it never runs
    assert findings("ex1_transformer", "%load_ext autoreload\nfor i in range(2):\n    %time print(i)\n") == []
    assert findings("ex1_transformer", "def broken(:\n    import gc") == []
    assert [f.rule for f in findings("ex1_transformer", "for i in range(2):\n    %time i\n    import gc\n")] == [
        "runtime-introspection"]


def test_a_deeply_nested_cell_is_unreviewable_not_a_crash():
    found = findings("ex1_transformer", "x = " + "[" * 90 + "]" * 90)
    assert all(f.rule == "unreviewable" for f in found)


# --------------------------------------------------------------------------------------------------
# Forbidden helpers: exactly the parts that use them
# --------------------------------------------------------------------------------------------------
EX1_ALL = ("test_attention", "test_block_post", "test_block_pre", "test_decoder", "test_gradients", "test_mha",
           "test_train")
EX1_MHA_UP = ("test_block_post", "test_block_pre", "test_decoder", "test_gradients", "test_mha", "test_train")
FORBIDDEN_CASES = [
    # (assignment, graded name replaced, new source, the parts zeroed)
    ("ex1_transformer", "attention", '''
def attention(q, k, v, causal=True):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
''', EX1_ALL),
    ("ex1_transformer", "attention", '''
from transformer_course.attention import attention as reference

def attention(q, k, v, causal=True):
    return reference(q, k, v, causal=causal)
''', EX1_ALL),
    ("ex1_transformer", "MultiHeadAttention", '''
class MultiHeadAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.inner = nn.MultiheadAttention(n_embd, n_head, batch_first=True)

    def forward(self, x):
        return self.inner(x, x, x, need_weights=False)[0]
''', EX1_MHA_UP),
    ("ex1_transformer", "FeedForward", '''
import transformer_course.layers as layers

class FeedForward(layers.FeedForward):
    pass
''', ("test_block_post", "test_block_pre", "test_decoder", "test_gradients", "test_ffn", "test_train")),
    ("ex1_transformer", "TransformerLM", '''
class TransformerLM(nn.Module):
    def __init__(self, vocab_size, context_length, n_embd, n_head, n_layer, ffn_hidden):
        super().__init__()
        layer = nn.TransformerDecoderLayer(n_embd, n_head, ffn_hidden, batch_first=True, norm_first=True)
        self.blocks = nn.ModuleList(layer for _ in range(n_layer))
''', ("test_decoder", "test_gradients", "test_train")),
    ("ex2_gqa", "gqa_attention", '''
def gqa_attention(q, k, v, causal=True):
    return package_attention(q, k, v, causal=causal)
''', ("test_gqa_attention", "test_gqa_module")),
    ("ex2_gqa", "gqa_attention", '''
def _fast(q, k, v, causal):
    return nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)

def gqa_attention(q, k, v, causal=True):
    return _fast(q, k, v, causal)
''', ("test_gqa_attention", "test_gqa_module")),
    ("ex2_gqa", "gqa_attention", '''
import functools
impl = functools.partial(package_attention)

def gqa_attention(q, k, v, causal=True):
    return impl(q, k, v, causal=causal)
''', ("test_gqa_attention", "test_gqa_module")),
    ("ex2_gqa", "GroupedQueryAttention", '''
class GroupedQueryAttention(MultiHeadAttention):
    def __init__(self, n_embd, n_head, n_kv_head):
        super().__init__(n_embd, n_head, n_kv_head, bias=False)
''', ("test_gqa_module",)),
    ("ex2_gqa", "kv_cache_bytes", '''
from transformer_course import accounting

def kv_cache_bytes(n_layer, n_kv_head, head_dim, seq_len, batch_size, bytes_per_element):
    return accounting.kv_cache_bytes(ModelConfig(n_layer=n_layer), seq_len, batch_size)
''', ("test_kv_cache_bytes",)),
    ("ex3_rope", "apply_rope", '''
def apply_rope(x, positions, base=10000.0):
    cos, sin = RotaryEmbedding(x.shape[-1], base=base)(positions)
    return package_apply_rope(x, cos, sin)
''', ("test_apply_rope", "test_rope_scores")),
    ("ex3_rope", "rope_frequencies", '''
from transformer_course.positions import rope_inv_freq

def rope_frequencies(head_dim, base=10000.0):
    return rope_inv_freq(head_dim, base)[0]
''', ("test_apply_rope", "test_frequencies", "test_rope_scores")),
    ("ex4_kv_cache", "KVCache", '''
from transformer_course.kv_cache import KVCache as _Package

class KVCache(_Package):
    pass
''', ("test_kv_cache",)),
    ("ex4_kv_cache", "generate", '''
def generate(model, idx, max_new_tokens, use_cache=True):
    return package_generate(model, idx, max_new_tokens, use_cache=use_cache)
''', ("test_generate",)),
    ("ex5_context_extension", "ntk_inv_freq", '''
def ntk_inv_freq(head_dim, base=10000.0, factor=1.0):
    return rope_inv_freq(head_dim, base, RopeScaling("ntk", factor, 256))[0]
''', ("test_apply_scaling", "test_ntk")),
    ("ex5_context_extension", "apply_scaling", '''
def apply_scaling(model, kind, factor):
    return with_rope_scaling(model, RopeScaling(kind, factor, original_context_length=256))
''', ("test_apply_scaling",)),
    ("ex5_context_extension", "bits_per_byte", '''
from transformer_course.evaluate import token_losses

def bits_per_byte(model, sequences):
    losses = torch.cat([token_losses(model, s.long()[None])[0] for s in sequences])
    return losses.mean().item() / math.log(2)
''', ("test_bits_per_byte",)),
    ("ex5_context_extension", "passkey_accuracy", '''
from transformer_course import evaluate

def passkey_accuracy(model, samples):
    rows = [evaluate.passkey_accuracy(model, [len(s.ids)], [s.depth]) for s in samples]
    return sum(r[0]["accuracy"] for r in rows) / len(rows)
''', ("test_passkey_accuracy",)),
]


@pytest.mark.parametrize("assignment,name,source,parts", FORBIDDEN_CASES,
                         ids=[f"{a[:3]}:{n}:{i}" for i, (a, n, _, _) in enumerate(FORBIDDEN_CASES)])
def test_forbidden_helpers_zero_exactly_the_parts_that_use_them(assignment, name, source, parts):
    found = findings(assignment, source, replace=name)
    assert found and all(f.rule == "forbidden-helper" for f in found), found
    assert tuple(sorted(set().union(*[f.parts for f in found]))) == tuple(sorted(parts)), found
    assert f"`{name}`" in found[0].message or any(f"`{name}`" in f.message for f in found)


def test_a_forbidden_helper_defined_in_another_cell_and_reached_through_a_global():
    student, locked = with_cell("ex2_gqa", "helpers = {}\nhelpers['fast'] = package_attention\n", after="repeat_kv")
    i = next(i for i, (_, s) in enumerate(student) if "def gqa_attention" in s)
    student[i] = (student[i][0], "def gqa_attention(q, k, v, causal=True):\n    return helpers['fast'](q, k, v, "
                                 "causal=causal)\n")
    found = review("ex2_gqa", student, locked)
    assert found and {f.rule for f in found} == {"forbidden-helper"}
    assert {f.parts for f in found} == {("test_gqa_attention", "test_gqa_module")}
    assert any("package_attention" in f.message and "through `helpers`" in f.message for f in found), found


def test_a_locked_variable_computed_with_the_package_counts():
    """ex3's locked cell computes cos, sin with RotaryEmbedding; a graded function that reads them uses it."""
    source = "def apply_rope(x, positions, base=10000.0):\n    x1, x2 = x.chunk(2, dim=-1)\n" \
             "    return x * cos[positions] + torch.cat((-x2, x1), -1) * sin[positions]\n"
    found = findings("ex3_rope", source, replace="apply_rope")
    assert found and {f.rule for f in found} == {"forbidden-helper"}
    assert set().union(*[f.parts for f in found]) == {"test_apply_rope", "test_rope_scores"}
    assert all(f.line == 3 for f in found)


def test_what_the_exercises_allow_is_not_forbidden():
    # ex4 part 2 is told to use RotaryEmbedding, apply_rope and F.scaled_dot_product_attention (the solution does).
    student, locked = as_submission(SOLUTIONS / "ex4_kv_cache" / "ex4_kv_cache.ipynb")
    assert "F.scaled_dot_product_attention" in "".join(s for _, s in student)
    assert review("ex4_kv_cache", student, locked) == []
    # ex5 part 3 may copy the model and read its rope's attributes; part 4 may use F.cross_entropy.
    assert findings("ex5_context_extension", '''
def bits_per_byte(model, sequences):
    nats = sum(F.cross_entropy(model(s.long()[None, :-1])[0], s.long()[1:], reduction="sum").item() for s in sequences)
    return nats / sum(len(s) - 1 for s in sequences) / math.log(2)
''', replace="bits_per_byte") == []
    # ex5 part 5 may decode with the package's generate.
    assert findings("ex5_context_extension", '''
from transformer_course.generate import generate

def passkey_accuracy(model, samples):
    right = [generate(model, s.ids[None], len(s.answer))[0, len(s.ids):].tolist() == list(s.answer.encode())
             for s in samples]
    return sum(right) / len(samples)
''', replace="passkey_accuracy") == []


# --------------------------------------------------------------------------------------------------
# The tables agree with the notebooks and the checks
# --------------------------------------------------------------------------------------------------
def _fetched_names(module: Path) -> dict:
    """check name -> the names its student half fetches with student.get (also through module helpers)."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}

    def gets(node, seen=()):
        names = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "get" \
                    and isinstance(sub.func.value, ast.Name) and sub.func.value.id == "student":
                names.add(sub.args[0].value)
            elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in helpers \
                    and sub.func.id not in seen:
                names |= gets(helpers[sub.func.id], (*seen, sub.func.id))
        return names

    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "register":
                    out[deco.args[0].value] = gets(node)
    return out


def test_parts_table_matches_the_notebooks_and_the_checks():
    fetched = {}
    for module in sorted((REPO / "autograder" / "checks").glob("ex*.py")):
        fetched.update(_fetched_names(module))
    assert set(PARTS) == set(ASSIGNMENTS)
    for a in ASSIGNMENTS:
        spec = load_assignment(a)
        assert set(PARTS[a]) == set(spec.parts), a
        for gid, part in spec.parts.items():
            wanted = set().union(*[fetched[c.name] for c in part.calls])
            assert set(PARTS[a][gid][1]) == wanted, (a, gid)
        for rule in FORBIDDEN[a]:
            assert set(rule.parts) <= set(spec.parts), (a, rule.parts)


def test_every_exercise_lists_its_allowed_helpers():
    for a in ASSIGNMENTS:
        for root in (SOLUTIONS, RELEASE):
            cells = json.loads((root / a / f"{a}.ipynb").read_text(encoding="utf-8"))["cells"]
            graded = [source_of(c) for c in cells if c["cell_type"] == "markdown" and "## What is graded" in source_of(c)]
            assert len(graded) == 1 and "Allowed helpers" in graded[0], (root, a)


def test_finding_is_the_documented_record():
    f = Finding(3, 2, "monkeypatch", "m", ())
    assert (f.cell, f.line, f.rule, f.message, f.parts) == (3, 2, "monkeypatch", "m", ())
    with pytest.raises(Exception):
        f.cell = 4


def test_notebooks_are_read_and_validated_by_nbformat(tmp_path):
    from autograder.notebook import NotebookError, load_json

    good = json.loads((REPO / "solutions" / "ex2_gqa" / "ex2_gqa.ipynb").read_text())
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(good))
    assert load_json(path).cells[1].cell_type == "markdown"  # a NotebookNode: attribute access works
    broken = json.loads(json.dumps(good))
    broken["cells"][1]["cell_type"] = "spreadsheet"
    path.write_text(json.dumps(broken))
    with pytest.raises(NotebookError, match="not a valid notebook.*save it again"):
        load_json(path)


def test_the_grader_parses_code_safely_from_several_threads():
    """``grade_folder(jobs=2)`` reviews notebooks in threads. Python 3.11's ``ast.parse`` is not safe there: a
    thread switch inside its tree constructor (here forced by finalisers the garbage collector runs, with a
    tiny switch interval) raises "SystemError: AST constructor recursion depth mismatch". ``parse_python`` is
    what the grader calls; ``ast.parse`` itself, under the same load, is the control that shows the load bites."""
    import sys
    import threading

    from autograder.notebook import parse_python

    source = "\n".join(f"def f{i}(a, b):\n    return [x * (a + b) for x in range({i}) if x % 2]" for i in range(100))

    class Finalised:
        def __del__(self):
            sum(range(50))

    def errors(parse) -> list:
        found = []

        def work():
            for _ in range(60):
                for _ in range(50):
                    garbage = Finalised()
                    garbage.cycle = garbage  # freed by the collector, in whichever thread runs it
                try:
                    parse(source)
                except SystemError as err:
                    found.append(str(err))

        threads = [threading.Thread(target=work) for _ in range(4)]
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(interval)
        return found

    assert errors(parse_python) == []
    if sys.version_info[:2] == (3, 11):
        assert errors(ast.parse), "the control raised nothing: the load no longer reproduces the race"
