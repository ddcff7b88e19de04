"""Training a language model on the course corpus, on a CPU, repeatably.

    from transformer_course.train import TrainConfig, train
    result = train(TrainConfig(preset="tiny-llama", steps=300, out_dir="checkpoints/demo"))

or ``python -m transformer_course train --preset tiny-llama --steps 300 --out-dir checkpoints/demo``.

AdamW with linear warm-up and cosine decay, gradient clipping, periodic validation, a progress bar
with loss and tokens per second, checkpoints in safetensors with the model config beside them as JSON.

Repeatable: the batch of step s depends only on (seed, s), never on what ran before, so a run resumed
from a checkpoint continues exactly as the uninterrupted run would have (bit for bit on a CPU: tests
check it). Validation always uses the same windows of the "val" split.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .checkpoint import load_checkpoint, save_checkpoint
from .config import ModelConfig
from .data import PASSKEY_ANSWER_TOKENS, load_split, passkey_training_length, passkey_training_text, random_batch
from .model import TransformerLM
from .pretrained import resolve
from .results import machine_info

log = logging.getLogger(__name__)
VAL_SEED = 1234  # the fixed validation batches of every run (exercise 1's grader uses the same ones)
IGNORE = -100  # the target of a position that is not trained (F.cross_entropy's ignore_index)
STEP_SEED_STRIDE = 1_000_003  # a prime: the seed of step t of run seed s is s * stride + t, distinct for every (s, t)


def step_seed(seed: int, step: int) -> int:
    """The seed of one training step: batches (and dropout) are a function of (run seed, step), so resuming repeats them."""
    return seed * STEP_SEED_STRIDE + step


@dataclass
class TrainConfig:
    """Everything that determines a training run (saved in every checkpoint).

    preset/model: the model, as a preset name with ``model`` overrides (e.g. ``{"n_layer": 2}``).
    init_from: a checkpoint folder or a shipped model name to start from (fine-tuning); its config is
        used, updated by ``model`` (e.g. a longer ``context_length`` and a ``rope_scaling``).
    passkey_fraction: share of the rows of each batch that end in a passkey prompt and its answer (see
        ``batch_at``); the answer's tokens are a loss term of their own (see ``training_loss``).
    passkey_full_rows: share of those prompts that fill their whole row; the others vary in length.
    """

    preset: str = "tiny-llama"
    model: dict = field(default_factory=dict)
    init_from: Optional[str] = None
    steps: int = 1000
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 200
    eval_batches: int = 16
    passkey_fraction: float = 0.0
    passkey_full_rows: float = 0.5  # share of the passkey prompts that fill their whole row (see batch_at)
    moe_aux_weight: float = 0.01  # weight of the experts' load-balancing loss (Fedus et al., 2021, use 0.01)
    seed: int = 0
    out_dir: Optional[str] = None
    save_interval: int = 0  # 0: save only at the end

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "seq_len", "eval_interval", "eval_batches"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)} must be a positive integer.")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr; got min_lr={self.min_lr}, lr={self.lr}.")
        for key in ("passkey_fraction", "passkey_full_rows"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key}={getattr(self, key)} must be in [0, 1].")
        if self.passkey_fraction and self.seq_len < passkey_training_length():
            raise ValueError(f"seq_len={self.seq_len} is too short for passkey rows (they need at least "
                             f"{passkey_training_length()} tokens): use passkey_fraction=0 or a longer seq_len.")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr`` at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def batch_at(step: int, cfg: TrainConfig, data: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The training batch of ``step``, a pure function of (seed, step) so that resuming repeats nothing:
    inputs x, targets y (``IGNORE`` where nothing is trained) and ``answer``, True at the targets that are
    a passkey's answer; each (batch_size, seq_len).

    Rows are random windows of ``data``. The first ``round(passkey_fraction * batch_size)`` of them end in
    a passkey prompt followed by its answer (``data.passkey_training_text``, the key at a random depth).
    A share ``passkey_full_rows`` of these prompts fill the whole row, as in evaluation; the others have a
    random length from half the row to all of it and follow the start of their window's text. With prompts
    of one length only, the model learns to copy a key that sits right before the question and no other
    (``results/passkey_runs-cpu.json``); the varied lengths teach it to look the key up. The prompt's own
    tokens are not trained (the filler and question are the same every time); the text is.
    """
    gen = torch.Generator().manual_seed(step_seed(cfg.seed, step))
    x, y = random_batch(data, cfg.batch_size, cfg.seq_len, gen)
    x, y = x.clone(), y.clone()  # views of one tensor of windows: a target written must not change an input
    answer = torch.zeros_like(y, dtype=torch.bool)
    T = cfg.seq_len
    rng = random.Random(step_seed(cfg.seed, step))
    for i in range(round(cfg.passkey_fraction * cfg.batch_size)):
        full = cfg.passkey_full_rows and rng.random() < cfg.passkey_full_rows  # 0: no draw at all
        n = T if full else rng.randint(max(passkey_training_length(), T // 2), T)
        row = torch.cat([x[i, :T - n], passkey_training_text(n, rng)])  # (T + 1,): text, then prompt and answer
        x[i], y[i] = row[:-1], row[1:]
        y[i, max(0, T - n - 1):T - PASSKEY_ANSWER_TOKENS] = IGNORE  # the prompt's tokens (and the seam before it)
        answer[i, T - PASSKEY_ANSWER_TOKENS:] = True
    return x, y, answer


def lm_loss(model: TransformerLM, x: Tensor, y: Tensor) -> Tensor:
    """Mean next-token cross-entropy in nats (divide by ln 2 for bits per byte with the byte tokenizer)."""
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def training_loss(model: TransformerLM, x: Tensor, y: Tensor, answer: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
    """(loss to minimise, mean loss on the passkey answers or None): the mean next-token loss on the text
    targets, plus the mean loss on the answer targets when the batch has any. Each is a mean over its own
    tokens, so the few answer tokens (7 a row) are not drowned by the thousands of text tokens."""
    logits = model(x)
    losses = F.cross_entropy(logits.flatten(0, 1), y.flatten().clamp(min=0), reduction="none").view_as(y)
    text = (y != IGNORE) & ~answer
    if not answer.any():
        return losses[text].mean(), None
    answer_loss = losses[answer].mean()
    return losses[text].mean() + answer_loss, answer_loss


@torch.no_grad()
def evaluate(model: TransformerLM, data: Tensor, seq_len: int, batches: int, batch_size: int = 16) -> float:
    """Mean loss (nats per token) on fixed windows of ``data`` (the same windows on every call)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(VAL_SEED)
    total = 0.0
    for _ in range(batches):
        x, y = random_batch(data, batch_size, seq_len, gen)
        total += lm_loss(model, x, y).item()
    model.train(was_training)
    return total / batches


def make_optimizer(model: TransformerLM, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms, biases)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=False, foreach=False)


def _initial_model(cfg: TrainConfig) -> TransformerLM:
    if cfg.init_from is None:
        return TransformerLM(ModelConfig.from_name(cfg.preset, **cfg.model))
    base = load_checkpoint(resolve(cfg.init_from))
    config = ModelConfig.from_dict({**base.config.to_dict(), **cfg.model})
    model = TransformerLM(config)
    model.load_state_dict(base.state_dict())
    return model


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    model: TransformerLM
    history: list  # one dict per logged step: step, lr, train_loss, val_loss (at eval steps), tokens_per_second
    val_loss: float
    seconds: float


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True, data: Optional[dict] = None,
          on_step: Optional[Callable[[int], None]] = None) -> TrainResult:
    """Train per ``cfg``; with ``resume`` continue from the checkpoint in ``cfg.out_dir``.

    data: optional {"train": tensor, "val": tensor} (tests pass small ones); default the stdlib corpus.
    on_step: called with the step index before each step (the benchmark times steps with it).
    """
    torch.manual_seed(cfg.seed)
    data = data or {"train": load_split("train"), "val": load_split("val")}
    model = _initial_model(cfg)
    optimizer = make_optimizer(model, cfg)
    start, history = 0, []
    if resume:
        if cfg.out_dir is None or not (Path(cfg.out_dir) / "train_state.pt").exists():
            raise FileNotFoundError(f"resume=True but {cfg.out_dir}/train_state.pt does not exist: train without resume first.")
        saved = load_checkpoint(cfg.out_dir)
        model.load_state_dict(saved.state_dict())
        state = torch.load(Path(cfg.out_dir) / "train_state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        history = json.loads((Path(cfg.out_dir) / "history.json").read_text())
    model.train()
    bar = _progress(range(start, cfg.steps), progress)
    began, tokens, window_start = time.perf_counter(), 0, time.perf_counter()
    val_loss = float("nan")
    for step in bar:
        if on_step is not None:
            on_step(step)
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y, answer = batch_at(step, cfg, data["train"])
        torch.manual_seed(step_seed(cfg.seed, step))  # dropout, if any, is a function of the step too
        loss, answer_loss = training_loss(model, x, y, answer)
        if model.config.n_expert:
            loss = loss + cfg.moe_aux_weight * model.aux_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        tokens += x.numel()
        rate = tokens / (time.perf_counter() - window_start)  # training tokens per second since the last evaluation
        row = {"step": step + 1, "lr": lr, "train_loss": loss.item()}
        if answer_loss is not None:
            row["answer_loss"] = answer_loss.item()
        last = step + 1 == cfg.steps
        if (step + 1) % cfg.eval_interval == 0 or last:
            row["tokens_per_second"] = rate
            val_loss = evaluate(model, data["val"], cfg.seq_len, cfg.eval_batches, cfg.batch_size)
            row["val_loss"] = val_loss
            tokens, window_start = 0, time.perf_counter()
            log.info("step %d: train %.3f, val %.3f bits per byte, %.0f tokens/s", step + 1, row["train_loss"] / math.log(2),
                     val_loss / math.log(2), rate)
        history.append(row)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix({"loss": f"{row['train_loss']:.3f}", "val": "-" if math.isnan(val_loss) else f"{val_loss:.3f}",
                             "tok/s": f"{rate:.0f}"}, refresh=False)
        if cfg.out_dir and (last or (cfg.save_interval and (step + 1) % cfg.save_interval == 0)):
            save_checkpoint(cfg.out_dir, model, optimizer=optimizer, step=step + 1, train_config=cfg, history=history)
    seconds = time.perf_counter() - began
    if cfg.out_dir:
        summary = {"val_loss": val_loss, "val_bits_per_byte": val_loss / math.log(2), "seconds": seconds,
                   "steps": cfg.steps, "resumed_from_step": start, "machine": machine_info()}
        (Path(cfg.out_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return TrainResult(model=model.eval(), history=history, val_loss=val_loss, seconds=seconds)


def _progress(steps, enabled: bool):
    if not enabled:
        return steps
    from tqdm.auto import tqdm

    return tqdm(steps, desc="training", unit="step", dynamic_ncols=True)
