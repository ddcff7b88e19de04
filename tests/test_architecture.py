"""The package's shape: modules in layers without import cycles, the documented keys are the real ones."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import transformer_course
from transformer_course import EncoderDecoderLM, ModelConfig, TransformerLM
from transformer_course.model import __doc__ as MODEL_DOC

PACKAGE = Path(transformer_course.__file__).parent


def _package_imports(path: Path) -> set:
    """The package modules that ``path`` imports (``from .x import``, ``from ..x import``), at any depth of the file."""
    here = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[: len(here) - node.level]  # the package the relative import starts from
            target = base + tuple(node.module.split(".")) if node.module else base
            found.add(target[0] if target else "__init__")
    return found


def _graph() -> dict:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        graph.setdefault(top, set()).update(_package_imports(path) - {top})
    return graph


def test_no_import_cycles():
    graph, state = _graph(), {}

    def visit(node, trail):
        if state.get(node) == "done":
            return
        if state.get(node) == "open":
            cycle = trail[trail.index(node):] + [node]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        state[node] = "open"
        for other in sorted(graph.get(node, ())):
            visit(other, trail + [node])
        state[node] = "done"

    for node in sorted(graph):
        visit(node, [])


def test_config_is_the_leaf_and_the_library_configures_no_logging():
    assert _graph()["config"] == set(), "config.py must import nothing of the package"
    for path in PACKAGE.rglob("*.py"):
        if path.name != "cli.py":
            assert "basicConfig" not in path.read_text(), f"{path.name} configures logging: only the commands may"


def test_every_module_is_listed_in_the_package_docstring():
    modules = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_")} | {"pretrained"}
    missing = sorted(m for m in modules if not re.search(rf"\b{m}\b", transformer_course.__doc__))
    assert not missing, f"modules missing from transformer_course/__init__.py's list: {missing}"


def _documented_keys(config: ModelConfig, text: str) -> set:
    """Expand the key patterns of model.py's docstring (``blocks.{i}.attn.{q,k,v,o}_proj``) for ``config``."""
    keys = set()
    for pattern in re.findall(r"[a-z_]+\.[\w.{},\[\]]+|\b(?:tok_emb|pos_emb|norm_f|lm_head)\b", text):
        expanded = [pattern.replace("[", "").replace("]", "").rstrip(".;,")]
        for _ in range(4):
            nxt = []
            for p in expanded:
                m = re.search(r"\{([^}]*)\}", p)
                if not m:
                    nxt.append(p)
                    continue
                choices = [str(i) for i in range(config.n_layer)] if m.group(1) == "i" else m.group(1).split(",")
                nxt += [p[:m.start()] + c + p[m.end():] for c in choices]
            expanded = nxt
        keys.update(expanded)
    return keys


@pytest.mark.parametrize("preset", ["tiny-gpt", "tiny-llama"])
def test_the_documented_state_dict_keys_are_the_real_ones(preset):
    config = ModelConfig.from_name(preset, n_layer=2)
    real = set(TransformerLM(config).state_dict())
    documented = _documented_keys(config, MODEL_DOC.split("EncoderDecoderLM adds")[0])
    # every real key starts with a documented prefix (the docstring names modules, their parameters follow)
    unexplained = sorted(k for k in real if not any(k == d or k.startswith(d + ".") for d in documented))
    assert not unexplained, f"keys that model.py's docstring does not document: {unexplained}"
    assert "tok_emb.weight" in real and "blocks.1.attn.q_proj.weight" in real and "lm_head.weight" in real


def test_encoder_decoder_keys_follow_the_docstring():
    model = EncoderDecoderLM(ModelConfig.from_name("tiny-gpt", n_layer=1))
    keys = set(model.state_dict())
    for key in ("encoder_blocks.0.attn.q_proj.weight", "encoder_norm.weight", "blocks.0.cross_attn.k_proj.weight",
                "blocks.0.norm_cross.weight", "norm_f.weight", "tok_emb.weight", "pos_emb.weight"):
        assert key in keys, key


def test_the_pytest_plugin_and_the_grader_package_import_no_torch():
    """pytest loads the grader's plugin on every run (an entry point): it, ``import autograder`` and nbgrader's
    configuration must stay light; the checks and torch load when a notebook is graded."""
    code = ("import sys, autograder, autograder.pytest_plugin, autograder.nbgrader_setup; "
            "print(sorted(m for m in ('torch', 'autograder.checks', 'transformer_course') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_reading_a_notebook_builds_no_iri_parsers():
    """tasks.py removes rfc3987-syntax after the install: with it, importing jsonschema (nbformat's validator,
    so every nbgrader command, the grader and the book build) builds about 25 Earley parsers, 1.7 s each time."""
    code = "import sys, nbformat.validator; print('rfc3987_syntax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", ("rfc3987-syntax is installed again (a later pip install brought it back): "
                                    f"{sys.executable} -m pip uninstall rfc3987-syntax")
