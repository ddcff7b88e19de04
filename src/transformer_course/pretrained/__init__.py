"""Models shipped with the course: trained by this package's own code and committed with it.

    from transformer_course import pretrained
    model = pretrained.load("course-llama")            # a TransformerLM, in eval mode
    print(pretrained.card("course-llama"))              # how it was made and how good it is

Each model is a folder here with model.safetensors, config.json, the training config and history, and
a model card (README.md, written by ``model_card.write_card``) that gives the commands that reproduce it.
A model trained in stages (course-llama: language modelling, then a retrieval fine-tune from that
checkpoint) keeps the files of each earlier stage in a sub-folder ``stage1/``, ``stage2/``, ...; the
folder's own files are those of the last stage.
"""
from __future__ import annotations

from pathlib import Path
import json
from typing import List, Tuple

HERE = Path(__file__).resolve().parent


def available() -> List[str]:
    return sorted(p.name for p in HERE.iterdir() if (p / "model.safetensors").exists())


def resolve(name_or_path) -> Path:
    """A shipped model's folder by name, or an existing checkpoint folder as given."""
    path = Path(name_or_path)
    if (path / "model.safetensors").exists():
        return path
    if (HERE / str(name_or_path) / "model.safetensors").exists():
        return HERE / str(name_or_path)
    raise ValueError(f"{name_or_path!r} is neither a shipped model ({', '.join(available()) or 'none'}) "
                     "nor a folder holding model.safetensors and config.json.")


def load(name: str = "course-llama", *, device=None):
    """The shipped model ``name`` (or a checkpoint folder) as a TransformerLM in eval mode."""
    from ..checkpoint import load_checkpoint  # torch is imported only when a model is loaded

    return load_checkpoint(resolve(name), device=device).eval()


def card(name: str = "course-llama") -> str:
    return (resolve(name) / "README.md").read_text()


def stages(name: str = "course-llama") -> List[Tuple[dict, dict]]:
    """The training stages of a shipped model, first to last: (training config, summary) of each run."""
    folder = resolve(name)
    earlier = sorted(p for p in folder.glob("stage*") if (p / "train_config.json").exists())
    return [(json.loads((f / "train_config.json").read_text()), json.loads((f / "summary.json").read_text()))
            for f in earlier + [folder]]


def run_tokens(train_config: dict) -> int:
    """The tokens one training run reads: steps × batch size × sequence length."""
    return train_config["steps"] * train_config["batch_size"] * train_config["seq_len"]


def training_tokens(name: str = "course-llama") -> int:
    """The tokens a shipped model was trained on, over all its stages."""
    return sum(run_tokens(cfg) for cfg, _ in stages(name))
