"""The process group of a ``torchrun`` launch and the few collectives taidpt needs from it.

``torchrun`` (``python -m torch.distributed.run``) starts one process per slot and gives each its
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address in the environment;
:func:`init_process_group` reads them (``env://``), binds the process to GPU ``LOCAL_RANK`` and
picks NCCL there, Gloo on CPU. Everything else here is a thin layer over ``torch.distributed``:
contiguous shard bounds, all-gathers of row blocks whose sizes differ by rank, gradient sums, and
"main process first" for work that fills an on-disk cache.

A runner is given its group (:class:`DistContext`); a process on its own gets
:meth:`DistContext.single`, for which every collective here is the identity and no
``torch.distributed`` call is made.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist

ENV_TIMEOUT = "TAIDPT_DIST_TIMEOUT_MIN"
ENV_BACKEND = "TAIDPT_DIST_BACKEND"
DEFAULT_TIMEOUT_MIN = 60.0
SINGLE = "single"  # the backend of a process on its own: no torch.distributed group behind it


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the group, and the device its collectives run on."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, writes checkpoints and ``results.json``."""
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """Local rank 0: the process of each machine that fills on-disk caches first."""
        return self.local_rank == 0

    @property
    def is_distributed(self) -> bool:
        """Whether a ``torch.distributed`` group stands behind this context (False: a process on its own)."""
        return self.backend != SINGLE

    @classmethod
    def single(cls, device: torch.device) -> "DistContext":
        """The trivial group of one process, on ``device``: every collective is the identity."""
        return cls(0, 1, 0, SINGLE, device)

    @classmethod
    def current(cls) -> "DistContext":
        """The context of the initialised default process group."""
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised: launch with torchrun")
        backend = str(dist.get_backend())
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)


def launched_by_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """True when the environment describes a group of more than one process (torchrun sets it)."""
    env = os.environ if env is None else env
    try:
        return int(env.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise ValueError(f"WORLD_SIZE={env.get('WORLD_SIZE')!r} is not an integer") from None


def init_process_group(use_cuda: bool = True) -> DistContext:
    """Join the group torchrun described: NCCL on GPU ``LOCAL_RANK`` when CUDA is usable, else Gloo.

    ``TAIDPT_DIST_BACKEND`` overrides the backend; ``TAIDPT_DIST_TIMEOUT_MIN`` (default 60) bounds
    every collective, including the wait while local rank 0 builds the caption feature cache.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = use_cuda and torch.cuda.is_available()
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) are "
                             f"visible: use --nproc_per_node {torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local_rank)
    backend = os.environ.get(ENV_BACKEND) or ("nccl" if cuda else "gloo")
    minutes = float(os.environ.get(ENV_TIMEOUT, DEFAULT_TIMEOUT_MIN))
    dist.init_process_group(backend=backend, init_method="env://",
                            timeout=datetime.timedelta(minutes=minutes))
    return DistContext.current()


def destroy_process_group(finished: DistContext | None = None) -> None:
    """Leave the group (no-op when none is initialised).

    Given the group of a run that ``finished``, wait for every process first: Gloo can abort a
    process whose peers tear their connections down while it is still leaving (seen as SIGABRT,
    "terminate called without an active exception"). After a failure no barrier is attempted.
    """
    if dist.is_initialized():
        if finished is not None:
            barrier(finished)
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every process (on NCCL, on this process's GPU)."""
    if not ctx.is_distributed:
        return
    if ctx.backend == "nccl":
        dist.barrier(device_ids=[ctx.device.index])
    else:
        dist.barrier()


@contextlib.contextmanager
def main_process_first(ctx: DistContext) -> Iterator[None]:
    """Run the body on local rank 0 first and on the other processes once it has finished.

    Used around work that fills an on-disk cache (labelled corpus, caption features): the first
    process builds it, the others then find it complete and only memory-map it.
    """
    if not ctx.is_local_main:
        barrier(ctx)
    yield
    if ctx.is_local_main:
        barrier(ctx)


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank`` when ``n`` items are split into contiguous shards.

    Shard sizes differ by at most one (the first ``n % world_size`` ranks take one more); with
    ``n < world_size`` the last ranks get empty shards.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a group of {world_size}")
    base, extra = divmod(int(n), world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def shard_sizes(n: int, world_size: int) -> list[int]:
    """Sizes of the shards of :func:`shard_bounds`, rank by rank."""
    return [hi - lo for lo, hi in (shard_bounds(n, r, world_size) for r in range(world_size))]


def all_gather_ints(ctx: DistContext, value: int) -> list[int]:
    """``value`` of every rank, in rank order."""
    if not ctx.is_distributed:
        return [int(value)]
    local = torch.tensor([int(value)], dtype=torch.int64, device=ctx.device)
    out = [torch.zeros_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(out, local)
    return [int(t.item()) for t in out]


def all_gather_rows(ctx: DistContext, rows: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """Concatenate every rank's ``rows`` [n_r, ...] in rank order; ``counts[r]`` is n_r.

    Collectives need equal shapes, so each block is padded to the largest count and trimmed after.
    The result carries no autograd history.
    """
    if not ctx.is_distributed:
        return rows.detach().to(ctx.device)[: sum(counts)].clone()
    width = max(counts) if counts else 0
    pad = torch.zeros((width, *rows.shape[1:]), dtype=rows.dtype, device=ctx.device)
    pad[: rows.shape[0]] = rows.detach().to(ctx.device)
    blocks = [torch.empty_like(pad) for _ in range(ctx.world_size)]
    dist.all_gather(blocks, pad)
    return torch.cat([b[:c] for b, c in zip(blocks, counts)])


def all_gather_array(ctx: DistContext, rows: np.ndarray) -> np.ndarray:
    """:func:`all_gather_rows` for a numpy array whose row count differs by rank."""
    counts = all_gather_ints(ctx, rows.shape[0])
    out = all_gather_rows(ctx, torch.from_numpy(np.ascontiguousarray(rows)), counts)
    return out.cpu().numpy()


def all_reduce_grads(ctx: DistContext, tensors: Sequence[torch.Tensor]) -> None:
    """Replace each tensor's ``.grad`` by its sum over ranks, in one collective.

    A tensor keeps ``grad is None`` only when it has no gradient on any rank (so an optimiser
    skips it exactly as in one process); a rank without a gradient where others have one adds zeros.
    """
    if not ctx.is_distributed:
        return
    present = torch.tensor([t.grad is not None for t in tensors], dtype=torch.float32, device=ctx.device)
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    chosen = [t for t, p in zip(tensors, present.tolist()) if p > 0]
    if not chosen:
        return
    flat = torch.cat([(t.grad if t.grad is not None else torch.zeros_like(t)).reshape(-1).to(ctx.device)
                      for t in chosen])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in chosen:
        t.grad = flat[offset : offset + t.numel()].view_as(t).to(t.device).clone()
        offset += t.numel()


def all_reduce_sum(ctx: DistContext, value: torch.Tensor) -> torch.Tensor:
    """The sum of a (small) tensor over ranks, as a new tensor."""
    out = value.detach().to(ctx.device).clone()
    if ctx.is_distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_float(ctx: DistContext, value: float | None) -> float | None:
    """Rank 0's ``value`` on every rank (None travels as NaN); a process on its own gets ``value`` itself."""
    if not ctx.is_distributed:
        return value
    t = torch.tensor([float("nan") if value is None else float(value)], dtype=torch.float64, device=ctx.device)
    dist.broadcast(t, src=0)
    out = float(t.item())
    return None if np.isnan(out) else out
