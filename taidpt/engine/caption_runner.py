"""The caption runner: train prompts on captions (TaI-DPT), select on held-out captions, test on images.

Training data: the caption corpus of ``DATASET.NAME`` (labelled by the class list) plus the
template sentences, a held-out slice of its captions (``DATASET.VAL_CAPTIONS``) and the method's
on-disk caption feature cache. Model selection uses the held-out captions
(``TEST.FINAL_MODEL best_val``) or the last epoch; never the test images.

In a process group (:mod:`taidpt.engine.distributed_runner`) local rank 0 builds the corpus and the
cache first, each step splits the captions and the classes of a batch across the processes, and
rank 0's held-out score decides.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from yacs.config import CfgNode

from taidpt.captions.corpus import CaptionCorpus
from taidpt.captions.features import CaptionFeatureStore
from taidpt.engine.caption_training import (
    CaptionBatchEncoder,
    caption_loss,
    caption_map,
    make_caption_loader,
    split_validation,
)
from taidpt.engine.checkpoint import resolve_checkpoint
from taidpt.engine.distributed import DistContext, broadcast_float, main_process_first
from taidpt.engine.distributed_runner import sharded_train_step
from taidpt.engine.runner import Runner, RunOptions
from taidpt.images.registry import default_cache_dir, load_caption_corpus

log = logging.getLogger("taidpt")


class CaptionRunner(Runner):
    """Prompts trained on labelled captions, selected on held-out ones, tested on images."""

    def __init__(self, cfg: CfgNode, options: RunOptions | None = None, trainer: str | None = None,
                 group: DistContext | None = None) -> None:
        super().__init__(cfg, options, trainer, group)
        self.corpus: CaptionCorpus | None = None
        self.val_rows = np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------------ build
    def build_training(self) -> None:
        """Caption corpus, held-out split, caption loader and feature cache (local rank 0 first)."""
        with main_process_first(self.group):
            self._build_training()

    def _build_training(self) -> None:
        cfg = self.cfg
        if self.corpus is None:
            self.corpus = load_caption_corpus(cfg, self.classes, progress=self.opts.progress)
            log.info("caption corpus: %d captions + %d template sentences (%s, lemmatizer %s)",
                     self.corpus.n_captions, self.corpus.n_templates, self.corpus.source, self.corpus.lemmatizer)
        corpus = self.corpus
        seed = int(cfg.SEED)
        train_caps, self.val_rows = split_validation(corpus.n_captions, float(cfg.DATASET.VAL_CAPTIONS), seed)
        template_rows = np.arange(corpus.n_captions, len(corpus))
        self.train_rows = np.concatenate([train_caps, template_rows])
        self.loader = make_caption_loader(corpus.labels, self.train_rows, int(cfg.DATALOADER.TRAIN_X.BATCH_SIZE), seed)
        token_ids = self.model.text.tokenize(corpus.texts)
        store = None
        cache_dtype = self.method.caption_cache_dtype(cfg)
        if cache_dtype is not None:
            t0 = time.time()
            store = CaptionFeatureStore.open_or_build(
                default_cache_dir(cfg), self.model, self.corpus.texts, token_ids,
                dtype=cache_dtype, device=self.device, progress=self.opts.progress)
            log.info("cached features of %d sentences in %.1f s", len(store), time.time() - t0)
        self.encoder = CaptionBatchEncoder(self.model, token_ids, store, self.device)
        if cfg.TEST.FINAL_MODEL == "best_val" and len(self.val_rows) == 0:
            raise ValueError("TEST.FINAL_MODEL best_val needs held-out captions: set DATASET.VAL_CAPTIONS > 0 "
                             "(selecting on test images is what the reference did, and is not allowed here)")

    # ------------------------------------------------------------------ train
    def batch_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The TaI-DPT loss of one caption batch (not yet back-propagated)."""
        return caption_loss(self.model, self.encoder, batch, self.method.loss_name(self.cfg))

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimiser step on a batch; a group splits its captions and classes (:func:`sharded_train_step`)."""
        if self.group.is_distributed:
            return sharded_train_step(self.model, self.encoder, batch, self.optimizer,
                                      self.method.loss_name(self.cfg), self.group)
        return super().step(batch)

    def validate(self) -> float:
        """Merged mAP on the held-out captions (the model-selection metric; never test images)."""
        if not len(self.val_rows):
            raise ValueError("no held-out captions to validate on: set DATASET.VAL_CAPTIONS > 0")
        self.model.eval()
        # Every process computes the same value; rank 0's decides, so best-model choices never diverge.
        return broadcast_float(self.group, caption_map(self.model, self.encoder, self.val_rows, self.corpus.labels))

    def held_out_score(self, epoch: int) -> float | None:
        if not len(self.val_rows):
            return None
        val = self.validate()
        log.info("epoch %d held-out caption mAP %.2f", epoch + 1, val)
        return val

    def save_epoch(self, epoch: int, val: float | None) -> None:
        """``model-best.pth.tar`` on a new best held-out score (``best_val``), then the periodic and last ones."""
        if self.cfg.TEST.FINAL_MODEL == "best_val" and val is not None and val > self.best_val:
            self.best_val = val
            self.save(epoch + 1, val, is_best=True)
            log.info("new best held-out caption mAP %.2f, saved model-best.pth.tar", val)
        super().save_epoch(epoch, val)

    def select_final_model(self) -> None:
        """The best held-out epoch (``best_val``) or the last one."""
        if self.cfg.TEST.FINAL_MODEL == "best_val":
            self._load_prompts(resolve_checkpoint(self.output_dir))
            self.selection = "best_val (held-out captions)"
        else:
            super().select_final_model()

    # ------------------------------------------------------------------ results
    def describe(self, results: dict[str, Any]) -> dict[str, Any]:
        """The run's settings, then the training (prompt selection, captions), then ``results``."""
        return super().describe({**self.training_fields(), **results})

    def training_fields(self) -> dict[str, Any]:
        cfg = self.cfg
        info = {**self.selection_fields(), **self.method.report_settings(cfg)}
        corpus = self.corpus
        if corpus is not None:
            info["captions"] = {"source": corpus.source, "lemmatizer": corpus.lemmatizer,
                                "n_captions": corpus.n_captions, "n_templates": corpus.n_templates,
                                "n_val_captions": int(len(self.val_rows)),
                                "exclude_test_captions": bool(cfg.DATASET.EXCLUDE_TEST_CAPTIONS),
                                "stats": corpus.stats}
        return info


__all__ = ["CaptionRunner"]
