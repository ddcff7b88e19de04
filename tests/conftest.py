"""Shared fixtures and helpers of the test suite (pytest finds them here; no test module imports another).

``variant``: a test that takes it runs once per small model configuration of ``VARIANTS`` (unless it
parametrizes ``variant`` itself with a subset); ``config_of(name, **overrides)`` builds that ModelConfig.
"""
import os
from pathlib import Path

import pytest
import torch

from transformer_course import ModelConfig

SMALL = dict(vocab_size=50, context_length=64, n_layer=2, n_embd=32, n_head=4)
VARIANTS = {
    "gpt": dict(SMALL),
    "llama-gqa": dict(SMALL, n_kv_head=2, activation="swiglu", norm="rmsnorm", position="rope", bias=False,
                      tie_embeddings=False),
    "rope-interleaved-mqa": dict(SMALL, n_kv_head=1, position="rope", rope_layout="interleaved"),
    "alibi": dict(SMALL, position="alibi"),
    "sinusoidal-post-norm": dict(SMALL, position="sinusoidal", norm_placement="post"),
    "sliding-window": dict(SMALL, position="rope", sliding_window=5, n_kv_head=2),
    "moe": dict(SMALL, n_expert=4, n_expert_active=2, activation="swiglu", position="rope"),
}


def pytest_generate_tests(metafunc):
    if "variant" in metafunc.fixturenames and not any(m.args and m.args[0] == "variant"
                                                       for m in metafunc.definition.iter_markers("parametrize")):
        metafunc.parametrize("variant", list(VARIANTS))


@pytest.fixture
def config_of():
    """``config_of("llama-gqa", n_layer=3)``: the ModelConfig of a variant, with overrides."""
    return lambda name, **overrides: ModelConfig(**{**VARIANTS[name], **overrides})


@pytest.fixture
def small():
    """The common small size (vocabulary 50, 64 positions, 2 layers, width 32, 4 heads) as a dict."""
    return dict(SMALL)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Files whose module-scoped fixtures are expensive (a build of the site, a batch graded in the sandbox, a
# trained model), costliest first: each runs whole on one worker, so that its fixtures are built once, and
# they start first. Every other test is a unit of its own, handed to whichever worker is free, which keeps
# both workers busy to the end (``python3 tasks.py test`` runs ``-n 2 --dist loadscope``; see
# ``pytest_xdist_make_scheduler``).
ONE_WORKER = ("test_book", "test_nbgrader_workflow", "test_hostile", "test_grading", "test_student_edition",
              "test_ring_attention", "test_pretrained", "test_train", "test_data", "test_position_study")


def pytest_xdist_make_scheduler(config, log):
    """With ``--dist loadscope``: the files of ``ONE_WORKER`` whole, every other test on its own, in the order of
    collection. (pytest-xdist 3.8's ``loadgroup`` ignores ``xdist_group`` marks under pytest 9.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerFiles(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return file if Path(file).stem in ONE_WORKER else nodeid

    config.option.loadscopereorder = False  # keep the order of collection: the costly files first
    return OneWorkerFiles(config, log)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(ONE_WORKER)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: each file keeps its own order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine); run on a GPU machine to include it")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # two workers on two cores: threads of one would wait on the other's
