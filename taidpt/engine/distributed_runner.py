"""Multi-process training and evaluation under ``torchrun``: the same numbers as one process, faster.

    torchrun --nproc_per_node N train.py --trainer TaIDPT ...   (or python -m torch.distributed.run)

:class:`DistributedRunner` is the core runner with five steps replaced:

* **Training step** (:func:`sharded_train_step`). Every process draws the same global caption
  batch (the order is a function of ``(seed, epoch)`` only) and takes its contiguous slice of it.
  The expensive part of a TaI-DPT step is not the captions, whose features are cached, but
  encoding the 2 x C class prompts through the text transformer; so the *classes* are split
  across processes too. Each process encodes its classes, the class embeddings are all-gathered,
  each process computes the loss of its caption slice against all classes, weighted by
  ``slice size / global batch size`` (so the sum over processes is the mean over the global
  batch, also when the batch does not divide evenly), the gradient w.r.t. the class embeddings
  is summed over processes and back-propagated through each process's own prompts, and the
  prompt-learner gradients are summed over processes. Every process then holds the gradient of
  the one-process loss and takes the same optimiser step. This is model parallelism over classes,
  which DistributedDataParallel (replicas computing the same function) does not express; the
  reductions are explicit ``torch.distributed`` all-reduces.
* **Caption corpus and feature cache**: local rank 0 labels the corpus and builds the on-disk
  feature cache first; the other processes then find both complete and memory-map the same
  files (the page cache is shared, so one copy in RAM per machine), each reading only its rows.
* **Checkpoints, logs, results.json**: rank 0 only; the others wait at a barrier after each save,
  so every process can read a checkpoint once it is written (OUTPUT_DIR must be readable by all
  processes: any local folder, or a shared filesystem across machines).
* **Evaluation** (:meth:`DistributedRunner.score_test_set`): each process scores a contiguous block
  of whole test batches; logits, targets and skipped images are all-gathered in dataset order, so
  every batch, score and metric equals the one-process run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from yacs.config import CfgNode

from taidpt.engine import runner, session
from taidpt.methods import CAPTIONS
from taidpt.engine.checkpoint import BEST_FILE, MODEL_NAME, epoch_file
from taidpt.engine.distributed import (
    DistContext,
    all_gather_array,
    all_gather_ints,
    all_gather_rows,
    all_reduce_grads,
    all_reduce_sum,
    barrier,
    broadcast_float,
    destroy_process_group,
    init_process_group,
    launched_by_torchrun,
    main_process_first,
    shard_bounds,
    shard_sizes,
)
from taidpt.evaluation.scoring import ScoredSet, score_batches
from taidpt.engine.metrics_log import TrainingLog
from taidpt.networks.model import TaIDPTModel
from taidpt.engine.caption_training import CaptionBatchEncoder, caption_loss

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


class DistributedRunner(runner.CoreRunner):
    """The core runner in one process of a torchrun group (see the module docstring)."""

    def __init__(self, cfg: CfgNode, options: runner.RunOptions | None = None, trainer: str | None = None) -> None:
        super().__init__(cfg, options, trainer)
        self.dist = DistContext.current()
        self.device = self.dist.device

    def build_training(self) -> None:
        if self.method.trains_on not in (CAPTIONS, None):
            raise ValueError(f"distributed runs cover methods trained on captions (or not trained), not "
                             f"{self.trainer}; run it in one process")
        with main_process_first(self.dist):
            super().build_training()

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        return sharded_train_step(self.model, self.encoder, batch, self.optimizer, self.method.loss_name(self.cfg),
                                  self.dist)

    def resume_if_exists(self, directory: str | Path | None = None) -> int:
        start = super().resume_if_exists(directory)
        starts = all_gather_ints(self.dist, start)
        if len(set(starts)) > 1:
            raise RuntimeError(f"processes found different checkpoints to resume from (epochs {starts}): every process "
                               f"must read the same OUTPUT_DIR (use a shared filesystem across machines)")
        return start

    def open_training_log(self, resumed_epoch: int) -> TrainingLog:
        # Rank 0 alone writes metrics.jsonl and the TensorBoard events, as it does the log and checkpoints.
        return super().open_training_log(resumed_epoch) if self.dist.is_main else TrainingLog.disabled()

    def validate(self) -> float:
        # Every process computes the same value; rank 0's decides, so best-model choices never diverge.
        return broadcast_float(self.dist, super().validate())

    def save(self, epoch: int, val_result: float | None = None, is_best: bool = False,
             directory: str | Path | None = None) -> Path:
        if self.dist.is_main:
            path = super().save(epoch, val_result, is_best, directory)
        else:
            path = Path(directory or self.output_dir) / MODEL_NAME / (BEST_FILE if is_best else epoch_file(epoch))
        barrier(self.dist)
        return path

    def score_test_set(self) -> ScoredSet:
        cfg, ctx = self.cfg, self.dist
        n = len(self.image_set.paths)
        batch_size = int(cfg.DATALOADER.TEST.BATCH_SIZE)
        b_lo, b_hi = shard_bounds(math.ceil(n / batch_size), ctx.rank, ctx.world_size)
        lo, hi = min(b_lo * batch_size, n), min(b_hi * batch_size, n)
        acc = score_batches(self.scorer(), self.test_loader(range(lo, hi)), self.image_set.paths, device=self.device,
                            progress=self.opts.progress)
        scored = acc.result(self.image_set.name) if len(acc) else None
        if scored is None and acc.skipped:
            log.warning("skipped %d unreadable image(s), e.g. %s", len(acc.skipped), ", ".join(acc.skipped[:3]))
        merged = gather_scored(ctx, scored, lo, hi, len(self.classes), list(self.image_set.paths))
        if len(merged.indices) == 0:
            raise RuntimeError(f"no image of {self.image_set.name} could be read ({len(merged.skipped)} skipped)")
        return merged

    def report(self, results: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.dist.is_main:
            return super().report(results, *args, **kwargs)
        return self._describe(results)


def run(cfg: CfgNode, options: runner.RunOptions | None = None) -> dict[str, Any] | None:
    """Run one configuration: across the torchrun group when launched by torchrun, else in this process."""
    if not launched_by_torchrun():
        return session.run(cfg, options)
    if session.runner_class(cfg.TRAINER.NAME) is not runner.CoreRunner:
        raise ValueError(f"torchrun runs methods trained on captions (or not trained); run {cfg.TRAINER.NAME} in "
                         f"one process")
    ctx = init_process_group(use_cuda=bool(cfg.USE_CUDA))
    try:
        options = options or runner.RunOptions()
        what = (f"distributed: {ctx.world_size} processes ({ctx.backend}), captions and class prompts of each "
                f"batch split across them, test images too")
        options = dataclasses.replace(options, progress=options.progress and ctx.is_main,
                                      note=f"{options.note}; {what}" if options.note else what)
        return session.run(cfg, options, runner_cls=DistributedRunner, main_process=ctx.is_main)
    finally:
        destroy_process_group()
