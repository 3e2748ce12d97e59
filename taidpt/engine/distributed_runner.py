"""The work a runner splits over its process group under ``torchrun``: one process's numbers, faster.

:func:`sharded_train_step` (the caption runner's step): every process takes its slice of the same
global caption batch and encodes its share of the 2 x C class prompts; the class embeddings are
all-gathered, each slice's loss is weighted by ``slice size / global batch size`` and the gradients
are summed, so every process takes the one-process step (model parallelism over classes, which
DistributedDataParallel does not express). :func:`score_block` (every runner's evaluation): each
process scores a block of whole test batches, gathered back in dataset order (:func:`gather_scored`).
Rank 0 alone writes files (:class:`taidpt.engine.runner.Runner`); methods trained on images run in
one process (:func:`taidpt.engine.runners.runner_class`). The manual: docs/scaling.md.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from taidpt.engine.caption_training import CaptionBatchEncoder, caption_loss
from taidpt.engine.distributed import (
    DistContext,
    all_gather_array,
    all_gather_rows,
    all_reduce_grads,
    all_reduce_sum,
    shard_bounds,
    shard_sizes,
)
from taidpt.evaluation.scoring import ScoredSet, score_batches
from taidpt.images.readers.common import ImageSet
from taidpt.networks.model import ImageScorer, TaIDPTModel

log = logging.getLogger("taidpt")


def sharded_train_step(model: TaIDPTModel, encoder: CaptionBatchEncoder, batch: dict[str, torch.Tensor],
                       optimizer: torch.optim.Optimizer, loss_name: str, ctx: DistContext) -> float:
    """One optimiser step on a global caption batch split over captions and classes; returns the
    loss of the global batch (the same value on every process)."""
    n_cls = model.prompt_learner.n_cls
    c_lo, c_hi = shard_bounds(n_cls, ctx.rank, ctx.world_size)
    optimizer.zero_grad(set_to_none=True)
    if c_hi > c_lo:
        own = model.class_embeddings(slice(c_lo, c_hi))
    else:  # more processes than classes: this one encodes none
        dim = int(model.text.text_projection.shape[1])
        own = tuple(torch.zeros(0, dim, device=ctx.device) for _ in range(2))
    counts = shard_sizes(n_cls, ctx.world_size)
    text = tuple(all_gather_rows(ctx, t, counts).to(own[0].device).requires_grad_() for t in own)

    n = len(batch["index"])
    lo, hi = shard_bounds(n, ctx.rank, ctx.world_size)
    if hi > lo:
        shard = {k: v[lo:hi] for k, v in batch.items()}
        loss = caption_loss(model, encoder, shard, loss_name, text=text) * ((hi - lo) / n)
        loss.backward()
    else:  # a global batch smaller than the group: nothing to add here
        loss = torch.zeros((), device=ctx.device)
    all_reduce_grads(ctx, text)
    pairs = [(t, full.grad[c_lo:c_hi]) for t, full in zip(own, text) if full.grad is not None and t.requires_grad]
    if pairs:
        torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
    all_reduce_grads(ctx, list(model.prompt_learner.parameters()))
    optimizer.step()
    return float(all_reduce_sum(ctx, loss).item())


def gather_scored(ctx: DistContext, acc_scored: ScoredSet | None, lo: int, hi: int, n_classes: int,
                  paths: list[str]) -> ScoredSet:
    """Every process's scores of its block ``[lo, hi)`` of the test set, concatenated in dataset order.

    ``acc_scored`` is None when no image of the block could be read. Skipped images are the block's
    indices that were not scored, so they are named in dataset order too.
    """
    empty = np.zeros((0, n_classes), dtype=np.float32)
    s = acc_scored or ScoredSet(empty, empty, empty.astype(np.int8), np.zeros(0, dtype=np.int64))
    indices = np.asarray(s.indices, dtype=np.int64)
    skipped = np.setdiff1d(np.arange(lo, hi, dtype=np.int64), indices)
    has_local = all_reduce_sum(ctx, torch.tensor([float(s.local_logits is not None and len(indices) > 0)]))
    glob = all_gather_array(ctx, s.global_logits.astype(np.float32))
    local = all_gather_array(ctx, (s.local_logits if s.local_logits is not None else empty).astype(np.float32))
    targets = all_gather_array(ctx, s.targets.astype(np.float32)).astype(np.int8)
    order_idx = all_gather_array(ctx, indices)
    all_skipped = all_gather_array(ctx, skipped)
    order = np.argsort(order_idx, kind="stable")
    return ScoredSet(glob[order], local[order] if float(has_local.item()) > 0 else None, targets[order],
                     order_idx[order], [paths[i] for i in np.sort(all_skipped)])


def score_block(ctx: DistContext, scorer: ImageScorer, loader_of: Callable[[range], DataLoader], image_set: ImageSet,
                batch_size: int, n_classes: int, progress: bool) -> ScoredSet:
    """This process's block of whole test batches scored (``loader_of(rows)`` loads them), and every
    process's blocks gathered in dataset order (:func:`gather_scored`)."""
    n = len(image_set.paths)
    b_lo, b_hi = shard_bounds(math.ceil(n / batch_size), ctx.rank, ctx.world_size)
    lo, hi = min(b_lo * batch_size, n), min(b_hi * batch_size, n)
    acc = score_batches(scorer, loader_of(range(lo, hi)), image_set.paths, device=ctx.device, progress=progress)
    scored = acc.result(image_set.name) if len(acc) else None
    if scored is None and acc.skipped:
        log.warning("skipped %d unreadable image(s), e.g. %s", len(acc.skipped), ", ".join(acc.skipped[:3]))
    merged = gather_scored(ctx, scored, lo, hi, n_classes, list(image_set.paths))
    if len(merged.indices) == 0:
        raise RuntimeError(f"no image of {image_set.name} could be read ({len(merged.skipped)} skipped)")
    return merged


__all__ = ["gather_scored", "score_block", "sharded_train_step"]
