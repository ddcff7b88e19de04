"""Ring attention: exact attention over a sequence split across processes (Liu, Zaharia & Abbeel, 2023).

The sequence of T positions is cut into ``world_size`` contiguous chunks of C = T / world_size positions;
rank r holds the queries, keys and values of positions ``[r*C, (r+1)*C)``. Every rank keeps its queries
and the ranks pass their key/value blocks around a ring (rank r sends to r + 1 and receives from r - 1),
``world_size - 1`` times. At step t rank r holds the block that started on rank ``(r - t) mod world_size``
and folds it into an ``OnlineSoftmax`` (attention.py), the same accumulator the tiled FlashAttention kernel
uses: only where the blocks come from differs. After ``world_size`` steps every rank has seen every key,
and ``acc / l`` is exact attention for its queries, yet no rank ever held more than two key/value blocks.

Shapes use the vocabulary of attention.py, with C (chunk length) in place of T on one rank:

    q: (B, n_head, C, head_dim)    k, v: (B, n_kv_head, C, head_dim)    out: (B, n_head, C, head_dim)

Three entry points:
    ``ring_attention``      one rank's part, called inside an initialised ``torch.distributed`` group.
    ``run_ring_attention``  full tensors in, spawns ``world_size`` CPU processes (gloo), full output back.
    ``simulate_ring``       the same schedule in one process, the ring being a Python list; for teaching.
All three fold blocks with the same function, ``_fold``.
"""
from __future__ import annotations

import math
import os
import tempfile
import traceback
from datetime import timedelta
from pathlib import Path
from typing import List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from .attention import OnlineSoftmax, check_shapes, group_rows, score_dtype, visible

# How long a rank waits for a peer before gloo gives up: long enough for a slow laptop, short enough that
# a deadlock bug ends as an error instead of a silent hang.
_TIMEOUT = timedelta(minutes=5)


# --------------------------------------------------------------------------------------------------
# One step of the ring, shared by the distributed and the simulated versions
# --------------------------------------------------------------------------------------------------
def _source(rank: int, step: int, world_size: int) -> int:
    """The rank whose key/value block rank ``rank`` holds at ``step`` (blocks move to rank + 1 each step)."""
    return (rank - step) % world_size


def _fold(
    acc: OnlineSoftmax, qg: Tensor, kv: Tensor, *, rank: int, src: int, causal: bool, scale: float
) -> None:
    """Fold the key/value block that started on rank ``src`` into ``acc``, the accumulator of rank ``rank``.

    qg: (B, n_kv_head, group * C, head_dim), the queries grouped by the key/value head they read, the group's
        rows stacked (see ``group_rows``). kv: (2, B, n_kv_head, C, head_dim), keys and values stacked so
        that one message carries both.

    Causal masking needs no mask at all except on the diagonal: a block from a later rank (src > rank) lies
    entirely in the future of every query here and is skipped (it is still passed on); a block from an
    earlier rank is entirely in the past and fully visible; only the rank's own block needs ``j <= i``.
    """
    if causal and src > rank:
        return
    k, v = kv[0], kv[1]  # (B, n_kv_head, C, head_dim) each
    C = k.shape[-2]
    scores = (qg @ k.transpose(-1, -2)).to(score_dtype(qg)) * scale  # (B, n_kv_head, group * C, C)
    if causal and src == rank:
        q_pos = rank * C + torch.arange(C, device=qg.device).unsqueeze(1)  # (C, 1) absolute positions
        k_pos = src * C + torch.arange(C, device=qg.device).unsqueeze(0)  # (1, C)
        scores = scores.unflatten(2, (-1, C))  # (B, n_kv_head, group, C, C): a view, the same mask per head
        scores = scores.masked_fill(~visible(q_pos, k_pos, True, None), float("-inf")).flatten(2, 3)
    acc.update(scores, v)


def _finish(acc: OnlineSoftmax, n_head: int, dtype: torch.dtype) -> Tensor:
    """(B, n_kv_head, group * C, head_dim) float32 accumulator -> (B, n_head, C, head_dim) in ``dtype``.

    Every rank folds at least its own block, in which each query sees itself, so no row is empty.
    """
    out = acc.result()
    return out.reshape(out.shape[0], n_head, -1, out.shape[-1]).to(dtype)  # undoes group_rows


# --------------------------------------------------------------------------------------------------
# The distributed version
# --------------------------------------------------------------------------------------------------
def ring_attention(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, scale: Optional[float] = None, group=None
) -> Tensor:
    """This rank's share of exact attention over the whole sequence. Returns (B, n_head, C, head_dim).

    Call it on every rank of ``group`` (default: the whole world) after ``dist.init_process_group``.

    Args:
        q: (B, n_head, C, head_dim), the queries of this rank's chunk, positions ``[rank*C, (rank+1)*C)``.
        k, v: (B, n_kv_head, C, head_dim), the keys and values of the same positions; n_head a multiple
            of n_kv_head (GQA: query heads are grouped, keys and values are never repeated).
        causal: position i attends to positions j <= i of the whole sequence, across chunks.
        scale: multiplier of q kᵀ; default ``1 / sqrt(head_dim)``.
        group: the ``torch.distributed`` process group forming the ring; ranks in the ring are group ranks.

    Every rank must hold a chunk of the same shape and dtype: a small ``all_gather`` of the shapes checks
    the shapes up front and raises the same ValueError on every rank, rather than letting a receive into a
    wrongly sized buffer fail or hang later.

    Overlap. Communication is hidden behind computation, which is the point of the paper: at each step the
    rank first *posts* the send of the block it holds to rank + 1 and the receive of the next block from
    rank - 1 (non-blocking ``isend``/``irecv``), then computes on the block it holds, and only then waits
    for the transfer. While it computes, the next block is already on its way. Two buffers alternate: the
    one being computed on (and sent), and the one being received into.

    Cost per rank: its queries, two key/value blocks and one (B, n_head, C, C) score block in memory; the
    score block could be tiled further as in ``attention(..., impl="tiled")``. With ``causal`` and contiguous
    chunks rank r computes on r + 1 blocks, so the last rank does most of the work; striped or zigzag chunk
    layouts balance this (Brandon et al., 2023, "Striped Attention", arXiv 2311.09431).

    Forward pass only: received blocks are plain tensors, so gradients would reach only this rank's own
    k and v. Inputs that require grad raise a ValueError; wrap inference in ``torch.no_grad()``.
    """
    _check_chunk(q, k, v)
    world_size, rank = dist.get_world_size(group), dist.get_rank(group)
    _check_same_shapes_on_all_ranks(q, k, group, world_size)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    send_to = _global_rank(group, (rank + 1) % world_size)  # the ring: send to the next rank,
    recv_from = _global_rank(group, (rank - 1) % world_size)  # receive from the previous one

    qg = group_rows(q, k.shape[1])  # (B, n_kv_head, group * C, head_dim)
    kv = torch.stack((k, v))  # (2, B, n_kv_head, C, head_dim): a fresh buffer, never the caller's k or v
    spare = torch.empty_like(kv)  # the buffer the next block is received into
    acc = OnlineSoftmax()
    for step in range(world_size):
        last = step == world_size - 1
        if not last:  # post the transfer of the next block first, so that it overlaps the computation below
            ops = [dist.P2POp(dist.isend, kv, send_to, group), dist.P2POp(dist.irecv, spare, recv_from, group)]
            requests = dist.batch_isend_irecv(ops)
        _fold(acc, qg, kv, rank=rank, src=_source(rank, step, world_size), causal=causal, scale=scale)
        if not last:
            for request in requests:
                request.wait()
            kv, spare = spare, kv  # the block just received is held next; the one just sent is free
    return _finish(acc, q.shape[1], q.dtype)


def _global_rank(group, group_rank: int) -> int:
    """Point-to-point ops address peers by global rank; translate a rank within ``group``."""
    return group_rank if group is None else dist.get_global_rank(group, group_rank)


def _check_same_shapes_on_all_ranks(q: Tensor, k: Tensor, group, world_size: int) -> None:
    mine = torch.tensor([*q.shape, k.shape[1]], device=q.device)  # B, n_head, C, head_dim, n_kv_head
    everyone = [torch.empty_like(mine) for _ in range(world_size)]
    dist.all_gather(everyone, mine, group=group)
    if not all(torch.equal(other, mine) for other in everyone):
        shapes = ", ".join(
            f"rank {r}: q {tuple(s[:4].tolist())} n_kv_head {int(s[4])}" for r, s in enumerate(everyone)
        )
        raise ValueError(
            "ring attention needs chunks of equal shape on all ranks (equal chunk length C, same B, heads "
            f"and head_dim); got {shapes}. Split the sequence into world_size chunks of equal length, or "
            "use run_ring_attention, which splits it for you."
        )


# --------------------------------------------------------------------------------------------------
# Running the distributed version from one process (tests, notebooks)
# --------------------------------------------------------------------------------------------------
def run_ring_attention(
    q: Tensor, k: Tensor, v: Tensor, *, world_size: int, causal: bool = False, scale: Optional[float] = None
) -> Tensor:
    """Ring attention over ``world_size`` CPU processes, from a single caller. Returns (B, n_head, T, head_dim).

    q: (B, n_head, T, head_dim); k, v: (B, n_kv_head, T, head_dim); T must be divisible by ``world_size``.
    Spawns ``world_size`` processes (start method "spawn", so it works from a Jupyter notebook) that form a
    gloo process group through a file in a temporary directory (no network port). Rank r loads only its
    own chunk, runs ``ring_attention`` on it and writes its output back; the caller concatenates them.
    Each process uses one intra-op thread, so several workers on a laptop's few cores do not thrash.

    Computation runs on CPU; the result is returned on ``q``'s device and in its dtype. Starting the
    processes costs a few seconds (each imports torch), so this is for demonstrations and tests, not speed.
    In a script (not a notebook), call it under ``if __name__ == "__main__":``, as "spawn" requires.
    A worker's exception is raised here as a RuntimeError carrying the worker's traceback; the other
    workers are terminated, and the temporary directory is removed in every case.
    """
    _check_chunk(q, k, v)
    _check_split(q.shape[2], world_size)
    return _run_on_ring([_split(q, k, v, world_size)], [causal], scale)[0].to(q.device)


def _split(q: Tensor, k: Tensor, v: Tensor, world_size: int) -> List[tuple]:
    """Per-rank (q, k, v) chunks along the positions, on CPU; cloned, so that saving one saves only its chunk."""
    chunks = [[c.clone() for c in t.detach().cpu().chunk(world_size, dim=2)] for t in (q, k, v)]
    return list(zip(*chunks))


def _run_on_ring(jobs: Sequence[List[tuple]], causal: Sequence[bool], scale: Optional[float]) -> List[Tensor]:
    """Run several ring attentions in one set of spawned processes (one process start-up for all).

    jobs[j][r] is the (q, k, v) chunk of rank r for job j; all jobs use the same number of ranks.
    Returns, for every job, the ranks' outputs concatenated along the positions.
    Chunks are not checked here: unequal chunks reach ``ring_attention``, which raises on every rank.
    """
    world_size = len(jobs[0])
    with tempfile.TemporaryDirectory(prefix="ring_attention_") as workdir:
        for j, chunks in enumerate(jobs):
            for r, (qc, kc, vc) in enumerate(chunks):
                job = {"q": qc, "k": kc, "v": vc, "causal": causal[j], "scale": scale}
                torch.save(job, os.path.join(workdir, f"job{j}_rank{r}.pt"))
        context = mp.start_processes(
            _worker, args=(world_size, workdir, len(jobs)), nprocs=world_size, join=False, start_method="spawn"
        )
        try:
            while not context.join():
                pass
        except mp.ProcessRaisedException as err:
            raise RuntimeError(_failure_report(workdir, world_size, err)) from None
        except mp.ProcessExitedException as err:  # no traceback: died from a signal, or while starting up
            raise RuntimeError(
                f"ring attention worker (rank {err.error_index} of {world_size}) died: {err}. If it died while "
                "starting (its traceback is on stderr), note that in a script run_ring_attention must be called "
                "under `if __name__ == \"__main__\":`, because each spawned worker re-imports the main module."
            ) from None
        finally:  # e.g. KeyboardInterrupt in a notebook: leave no orphan workers behind
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
                process.join()
        return [
            torch.cat([torch.load(os.path.join(workdir, f"out{j}_rank{r}.pt")) for r in range(world_size)], dim=2)
            for j in range(len(jobs))
        ]


def _worker(rank: int, world_size: int, workdir: str, n_jobs: int) -> None:
    """Body of one spawned process: join the gloo group, run its chunk of every job, save the outputs."""
    torch.set_num_threads(1)
    store = "file://" + os.path.join(workdir, "store")
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world_size, timeout=_TIMEOUT)
    try:
        for j in range(n_jobs):
            job = torch.load(os.path.join(workdir, f"job{j}_rank{rank}.pt"))
            out = ring_attention(job["q"], job["k"], job["v"], causal=job["causal"], scale=job["scale"])
            torch.save(out, os.path.join(workdir, f"out{j}_rank{rank}.pt"))
    except BaseException:
        # Written before the group is destroyed: only then do the peers notice and fail in turn, so the
        # first error file written is the cause and the later ones are consequences.
        with open(os.path.join(workdir, f"error_rank{rank}.txt"), "w") as file:
            file.write(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()


def _failure_report(workdir: str, world_size: int, err: Exception) -> str:
    """The first worker's traceback in full, then one line per rank that failed because of it."""
    paths = [Path(workdir, f"error_rank{r}.txt") for r in range(world_size)]
    failed = sorted((p.stat().st_mtime_ns, r, p.read_text()) for r, p in enumerate(paths) if p.exists())
    if not failed:  # failed outside ring_attention, e.g. joining the group: torch's own report
        return f"ring attention worker failed:\n{err}"
    _, first, trace = failed[0]
    report = f"ring attention failed on rank {first} of {world_size}; its traceback:\n{trace}"
    if len(failed) > 1:
        others = "\n".join(f"  rank {r}: {text.strip().splitlines()[-1]}" for _, r, text in failed[1:])
        report += f"Then, on the other ranks (usually a consequence):\n{others}"
    return report


# --------------------------------------------------------------------------------------------------
# The same schedule in one process
# --------------------------------------------------------------------------------------------------
def simulate_ring(
    q: Tensor, k: Tensor, v: Tensor, *, world_size: int, causal: bool = False, scale: Optional[float] = None
) -> Tensor:
    """Ring attention's schedule in one process. Returns (B, n_head, T, head_dim), like ``run_ring_attention``.

    q: (B, n_head, T, head_dim); k, v: (B, n_kv_head, T, head_dim); T divisible by ``world_size``.
    The ring is a list whose entry r is the key/value block "rank" r holds; after every step the list is
    rotated by one, which is what the send to rank + 1 does. Each step folds blocks with ``_fold``, the
    function ``ring_attention`` uses, so this is the distributed algorithm minus the processes (and minus
    the overlap, which has nothing to overlap with here).
    """
    _check_chunk(q, k, v)
    _check_split(q.shape[2], world_size)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    queries = [group_rows(qc, k.shape[1]) for qc in q.chunk(world_size, dim=2)]  # (B, n_kv_head, group*C, head_dim)
    held = list(torch.stack((k, v)).chunk(world_size, dim=3))  # held[r]: (2, B, n_kv_head, C, head_dim)
    accs = [OnlineSoftmax() for _ in range(world_size)]
    for step in range(world_size):
        for rank in range(world_size):
            src = _source(rank, step, world_size)
            _fold(accs[rank], queries[rank], held[rank], rank=rank, src=src, causal=causal, scale=scale)
        held = held[-1:] + held[:-1]  # every rank passes its block to rank + 1
    return torch.cat([_finish(acc, q.shape[1], q.dtype) for acc in accs], dim=2)


# --------------------------------------------------------------------------------------------------
# Checks at the public boundary
# --------------------------------------------------------------------------------------------------
def _check_chunk(q: Tensor, k: Tensor, v: Tensor) -> None:
    check_shapes(q, k, v, None)
    if q.shape[2] != k.shape[2]:
        raise ValueError(
            f"ring attention is self-attention over one sequence: q covers {q.shape[2]} positions "
            f"(q.shape[2]) but k and v cover {k.shape[2]} (k.shape[2]). Pass q, k and v of the same positions."
        )
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        raise ValueError(
            "ring attention here is forward-only (gradients would not cross ranks), but an input requires "
            "grad. Call it under torch.no_grad(), or detach the inputs."
        )


def _check_split(T: int, world_size: int) -> None:
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size={world_size!r} must be a positive integer number of ranks.")
    if T % world_size != 0:
        raise ValueError(
            f"T={T} positions cannot be split into world_size={world_size} equal chunks. Choose a world_size "
            f"that divides T; with causal=True you may instead pad the sequence at the end to "
            f"{math.ceil(T / world_size) * world_size} positions (no real position attends to later ones) "
            "and drop the padded rows of the output."
        )
