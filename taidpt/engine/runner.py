"""The core (Dassl-free) runner behind ``train.py``: train TaI-DPT on captions, test on images.

It follows Dassl's ``TrainerX`` order, and the Dassl plugin (``trainers/taidpt.py``) calls the
methods of :class:`CoreRunner` from its hooks, so both engines give the same numbers for a seed:
seed -> test set -> model, optimiser and schedule -> caption corpus, loader and feature cache ->
resume -> epochs (the LR steps once per epoch) -> test. Model selection uses a held-out
slice of the caption corpus (``TEST.FINAL_MODEL best_val`` with ``DATASET.VAL_CAPTIONS > 0``) or
the last epoch; never the test images.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset
from yacs.config import CfgNode

from taidpt.captions.classes import ClassList
from taidpt.captions.corpus import CaptionCorpus
from taidpt.captions.features import CaptionFeatureStore
from taidpt.engine.caption_training import (
    CaptionBatchEncoder,
    apply_loss,
    caption_loss,
    caption_map,
    make_caption_loader,
    split_validation,
)
from taidpt.engine.checkpoint import latest_checkpoint, load_checkpoint, resolve_checkpoint, save_checkpoint
from taidpt.engine.checks import check_resume_settings, model_meta, preprocess_config, validate_config
from taidpt.engine.environment import select_device
from taidpt.engine.logs import PLAIN, StepClock
from taidpt.engine.metrics_log import EpochStats, TrainingLog
from taidpt.engine.model_factory import load_backbone, load_prompts, provenance
from taidpt.engine.optim import build_lr_scheduler, build_optimizer
from taidpt.evaluation.metrics import format_coop_lines, format_results_table
from taidpt.evaluation.predictions import PREDICTIONS_FILE, save_predictions
from taidpt.evaluation.scoring import ScoredSet, results_from_scores, score_batches
from taidpt.images.loaders import ImageSetDataset, make_test_loader
from taidpt.images.preprocess import input_size
from taidpt.images.readers.common import ImageSet
from taidpt.images.registry import default_cache_dir, load_caption_corpus, load_test_set
from taidpt.methods import CAPTIONS, get_method
from taidpt.networks.model import ImageScorer
from taidpt.utils.atomic import atomic_write_json
from taidpt.utils.seeding import seed_or_zero

log = logging.getLogger("taidpt")


# ----------------------------------------------------------------------------- the run
@dataclass
class RunOptions:
    """CoOp's CLI switches that are not config keys."""

    eval_only: bool = False
    model_dir: str = ""
    load_epoch: int | None = None
    no_train: bool = False
    progress: bool = True
    note: str = ""  # one line logged first (train.py says which engine runs and why)


class CoreRunner:
    """Train and/or evaluate one configuration; mirrors Dassl's ``TrainerX`` lifecycle."""

    def __init__(self, cfg: CfgNode, options: RunOptions | None = None, trainer: str | None = None) -> None:
        self.cfg = cfg
        self.opts = options or RunOptions()
        self.method = get_method(trainer or cfg.TRAINER.NAME)
        self.trainer = self.method.name
        self.device = select_device(cfg)
        self.output_dir = Path(cfg.OUTPUT_DIR)
        self.start_time = time.time()
        self.epoch = 0
        self.checkpoint_path: str | None = None
        self.selection = "last_step"
        self.corpus: CaptionCorpus | None = None
        self.loader: torch.utils.data.DataLoader | None = None
        self.val_rows = np.zeros(0, dtype=np.int64)
        self.best_val = float("-inf")
        self.training_log = TrainingLog.disabled()  # metrics.jsonl (+ TensorBoard) once train() starts

    # ------------------------------------------------------------------ build
    # The Dassl trainer calls these same steps from its hooks, in the same order:
    # load_data (build_data_loader) -> build_model (build_model) -> build_training (before_train).
    def build(self) -> None:
        """Check the config, read the test set, build the model (and its optimiser)."""
        validate_config(self.cfg, self.method)
        self.load_data()
        self.build_model()

    def load_data(self, image_set: ImageSet | None = None, classes: ClassList | None = None) -> None:
        """Read the test set and class list of ``DATASET.NAME``, or take ones already read (Dassl's dataset)."""
        if image_set is None or classes is None:
            image_set, classes = load_test_set(self.cfg)
        self.image_set, self.classes = image_set, classes
        log.info("test set %s: %d images, %d classes%s", self.image_set.name, len(self.image_set.paths),
                 len(self.classes), f", {len(self.image_set.missing)} listed images missing"
                 if self.image_set.missing else "")

    def load_backbone(self) -> torch.nn.Module:
        """Load the frozen CLIP of ``MODEL.BACKBONE`` and check that ``INPUT.SIZE`` fits it."""
        clip_model, self.clip_info = load_backbone(self.cfg, self.device)
        log.info("CLIP %s (%s weights, %d px native), device %s", self.clip_info.name, self.clip_info.source,
                 self.clip_info.image_size, self.device)
        return clip_model

    def build_model(self) -> None:
        """Load CLIP and build the method's model (with optimiser and schedule when it trains)."""
        cfg = self.cfg
        clip_model = self.load_backbone()
        self.model = self.method.build_model(cfg, clip_model, self.classes.names).to(self.device)
        if self.method.trains_on:
            self.optimizer = build_optimizer(self.method.trainable_parameters(self.model), cfg.OPTIM)
            self.scheduler = build_lr_scheduler(self.optimizer, cfg.OPTIM)

    def build_training(self) -> None:
        """Caption corpus, held-out split, caption loader and feature cache (training only)."""
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

    # ------------------------------------------------------------------ checkpoints
    def _state(self, val_result: float | None) -> dict[str, Any]:
        return {
            "state_dict": {k: v.detach().cpu() for k, v in self.model.prompt_learner.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "val_result": val_result,
            "meta": model_meta(self.cfg, self.method, self.classes, self.clip_info),
        }

    def save(self, epoch: int, val_result: float | None = None, is_best: bool = False,
             directory: str | Path | None = None) -> Path:
        """Write ``prompt_learner/model.pth.tar-<epoch>`` (1-based) or ``model-best.pth.tar``."""
        best = self.best_val if self.best_val > float("-inf") else None
        state = {**self._state(val_result), "best_val": val_result if is_best else best}
        return save_checkpoint(directory or self.output_dir, state, epoch=epoch, is_best=is_best)

    def _load_prompts(self, path: Path, ckpt: dict[str, Any] | None = None) -> dict[str, Any]:
        ckpt = ckpt if ckpt is not None else load_checkpoint(path, map_location="cpu")
        load_prompts(self.method, self.model, ckpt, self.classes.names, self.clip_info.name, path)
        self.checkpoint_path = str(path)
        return ckpt

    def load_trained(self, model_dir: str | Path, epoch: int | None = None) -> Path:
        """Load the prompts of a training run for evaluation (``--eval-only --model-dir [--load-epoch]``)."""
        path = resolve_checkpoint(model_dir, epoch)
        ckpt = self._load_prompts(path)
        self.epoch = int(ckpt.get("epoch", 0))
        self.selection = f"loaded {Path(path).name}"
        log.info("loaded prompts from %s (epoch %d)", path, self.epoch)
        return path

    def resume_if_exists(self, directory: str | Path | None = None) -> int:
        """Dassl semantics: continue from ``RESUME`` or from ``OUTPUT_DIR`` when it holds a checkpoint."""
        directory = directory or self.cfg.RESUME or str(self.output_dir)
        path = latest_checkpoint(directory)
        if path is None:
            if self.cfg.RESUME:
                raise FileNotFoundError(f"--resume {self.cfg.RESUME}: no prompt_learner/checkpoint file there")
            return 0
        ckpt = load_checkpoint(path, map_location="cpu")
        check_resume_settings(ckpt.get("meta"), self.cfg, path, self.method.training_keys())
        self._load_prompts(path, ckpt)
        if ckpt.get("optimizer"):
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scheduler.sync_optimizer()
        self.best_val = ckpt.get("best_val", float("-inf")) if ckpt.get("best_val") is not None else float("-inf")
        log.info("resumed from %s (epoch %d)", path, ckpt["epoch"])
        return int(ckpt["epoch"])

    # ------------------------------------------------------------------ train
    # One epoch is begin_epoch -> caption_loss + optimiser step per batch -> scheduler.step() ->
    # end_epoch; the Dassl trainer runs the same calls from its hooks.
    def begin_epoch(self, epoch: int) -> None:
        """Train mode and the caption order of ``epoch`` (a function of (seed, epoch) only)."""
        self.epoch = epoch
        self.model.train()
        self.loader.sampler.set_epoch(epoch)

    def batch_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The TaI-DPT loss of one caption batch (not yet back-propagated)."""
        return caption_loss(self.model, self.encoder, batch, self.method.loss_name(self.cfg))

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimiser step on a batch (:meth:`batch_loss`); returns its loss (the distributed runner shards it)."""
        return apply_loss(self.batch_loss(batch), self.optimizer)

    def validate(self) -> float:
        """Merged mAP on the held-out captions (the model-selection metric; never test images)."""
        if not len(self.val_rows):
            raise ValueError("no held-out captions to validate on: set DATASET.VAL_CAPTIONS > 0")
        self.model.eval()
        return caption_map(self.model, self.encoder, self.val_rows, self.corpus.labels)

    def end_epoch(self, epoch: int, stats: EpochStats | None = None) -> float | None:
        """After the LR step: held-out validation, the epoch's ``metrics.jsonl`` line (given the
        loop's ``stats``; written before the checkpoints, so resuming drops it if they are missing),
        best / periodic / last checkpoints."""
        cfg = self.cfg
        last = epoch + 1 == int(cfg.OPTIM.MAX_EPOCH)
        freq = int(cfg.TRAIN.CHECKPOINT_FREQ)
        val = None
        if len(self.val_rows):
            val = self.validate()
            log.info("epoch %d held-out caption mAP %.2f", epoch + 1, val)
        if stats is not None:
            self.training_log.epoch_done(stats.record(epoch + 1, val))
        if cfg.TEST.FINAL_MODEL == "best_val" and val is not None and val > self.best_val:
            self.best_val = val
            self.save(epoch + 1, val, is_best=True)
            log.info("new best held-out caption mAP %.2f, saved model-best.pth.tar", val)
        if last or (freq > 0 and (epoch + 1) % freq == 0):
            self.save(epoch + 1, val)
        return val

    def finish_training(self) -> None:
        """Deploy the selected prompts: the best held-out epoch (best_val) or the last one."""
        max_epoch = int(self.cfg.OPTIM.MAX_EPOCH)
        self.epoch = max_epoch
        log.info("Finish training", extra=PLAIN)
        if self.cfg.TEST.FINAL_MODEL == "best_val":
            self._load_prompts(resolve_checkpoint(self.output_dir))
            self.selection = "best_val (held-out captions)"
        else:
            self.checkpoint_path = str(resolve_checkpoint(self.output_dir, max_epoch))

    def train(self) -> None:
        cfg = self.cfg
        max_epoch = int(cfg.OPTIM.MAX_EPOCH)
        start = self.resume_if_exists()
        self.training_log = self.open_training_log(start)
        n_batches = len(self.loader)
        clock = StepClock()
        for epoch in range(start, max_epoch):
            self.begin_epoch(epoch)
            lr = self.optimizer.param_groups[0]["lr"]
            t0, losses, spent = time.time(), [], clock.seconds
            for b, batch in enumerate(self.loader):
                with clock:
                    losses.append(self.step(batch))
                if (b + 1) % int(cfg.TRAIN.PRINT_FREQ) == 0 or b + 1 == n_batches:
                    eta = clock.eta((max_epoch - epoch) * n_batches - (b + 1))
                    log.info("epoch [%d/%d] batch [%d/%d] time %.3f loss %.4f (%.4f) lr %.4e eta %s",
                             epoch + 1, max_epoch, b + 1, n_batches, (time.time() - t0) / (b + 1), losses[-1],
                             float(np.mean(losses)), lr, datetime.timedelta(seconds=round(eta)))
            self.scheduler.step()
            self.end_epoch(epoch, EpochStats(losses, lr, clock.seconds - spent))
        self.finish_training()

    def open_training_log(self, resumed_epoch: int) -> TrainingLog:
        """This run's ``metrics.jsonl`` (+ TensorBoard), cut back to ``resumed_epoch``; the distributed
        runner gives the other processes a disabled one."""
        return TrainingLog.open(self.output_dir, resumed_epoch)

    # ------------------------------------------------------------------ test
    def scorer(self) -> ImageScorer:
        return self.model.image_scorer().to(self.device)

    def test_loader(self, rows: range | None = None) -> torch.utils.data.DataLoader:
        """The sequential, explicitly seeded image loader of the test set (both engines use it);
        ``rows`` restricts it to a block of images (distributed evaluation)."""
        cfg = self.cfg
        dataset = ImageSetDataset(self.image_set, preprocess_config(cfg))
        return make_test_loader(dataset if rows is None else Subset(dataset, rows), int(cfg.DATALOADER.TEST.BATCH_SIZE),
                                int(cfg.DATALOADER.NUM_WORKERS), seed=seed_or_zero(cfg.SEED))

    def score_test_set(self) -> ScoredSet:
        """Logits of every readable test image in dataset order (the distributed runner shards this)."""
        acc = score_batches(self.scorer(), self.test_loader(), self.image_set.paths, device=self.device,
                            progress=self.opts.progress)
        return acc.result(self.image_set.name)

    def test(self) -> dict[str, Any]:
        cfg = self.cfg
        scored = self.score_test_set()
        results = results_from_scores(scored, self.classes.names, self.method.merge_rate(cfg),
                                      float(cfg.TEST.THRESHOLD), self.image_set)
        return self.report(results, scored=scored)

    def report(self, results: dict[str, Any], coop_lines: bool = True, scored: ScoredSet | None = None) -> dict[str, Any]:
        """Log the result table (and CoOp's ``=> result`` block), write ``results.json`` and, given
        the scores, ``predictions.npz`` (:mod:`taidpt.evaluation.predictions`)."""
        if scored is not None:
            save_predictions(self.output_dir / PREDICTIONS_FILE, scored, self.image_set, self.classes.names,
                             self.method.merge_rate(self.cfg), self.trainer)
        payload = self._describe(results)
        log.info("%s", format_results_table(results))
        if coop_lines:
            log.info("%s", format_coop_lines(results), extra=PLAIN)
        atomic_write_json(self.output_dir / "results.json", payload)
        log.info("results written to %s", self.output_dir / "results.json")
        self.training_log.test_done(results["mAP"], self.epoch)
        return payload

    def _describe(self, results: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        prov = provenance(cfg, self.method, self.clip_info)
        info: dict[str, Any] = {
            "trainer": prov["trainer"],
            "dataset": prov["dataset"],
            "test_set": self.image_set.name,
            "classes": list(self.classes.names),
            "backbone": prov["backbone"],
            "weights": prov["weights"],
            "pretrained": prov["pretrained"],
            "seed": int(cfg.SEED),
            "image_size": list(input_size(cfg)),
            "protocol": {"voc_difficult": cfg.DATASET.VOC_DIFFICULT if cfg.DATASET.NAME == "VOC2007" else None,
                         "threshold": float(cfg.TEST.THRESHOLD)},
            "taidpt_version": prov["taidpt_version"],
        }
        if self.method.trains_on == CAPTIONS:
            info.update({
                "epochs_trained": self.epoch,
                "model_selection": self.selection,
                "checkpoint": self._relative(self.checkpoint_path),
                **self.method.report_settings(cfg),
            })
            corpus = self.corpus
            if corpus is not None:
                info["captions"] = {"source": corpus.source, "lemmatizer": corpus.lemmatizer,
                                    "n_captions": corpus.n_captions, "n_templates": corpus.n_templates,
                                    "n_val_captions": int(len(self.val_rows)),
                                    "exclude_test_captions": bool(cfg.DATASET.EXCLUDE_TEST_CAPTIONS),
                                    "stats": corpus.stats}
        log.info("elapsed %s", datetime.timedelta(seconds=int(time.time() - self.start_time)))
        # No timings or run-folder paths: the same seed gives a byte-identical results.json (CPU).
        return {**info, **results}

    def _relative(self, path: str | None) -> str | None:
        """A checkpoint inside this run's folder as a path relative to it, others as given."""
        if path is None:
            return None
        try:
            return str(Path(path).resolve().relative_to(self.output_dir.resolve()))
        except ValueError:
            return str(path)

    # ------------------------------------------------------------------ entry
    def run(self) -> dict[str, Any] | None:
        self.build()
        if self.opts.eval_only:
            if self.method.trains_on:
                if not self.opts.model_dir:
                    raise ValueError(f"--eval-only with {self.trainer} needs --model-dir RUN (a training output "
                                     f"directory)")
                self.load_trained(self.opts.model_dir, self.opts.load_epoch)
            return self.test()
        if not self.method.trains_on:
            return None if self.opts.no_train else self.test()
        self.build_training()
        if self.opts.no_train:
            return None
        try:
            self.train()
            return None if self.cfg.TEST.NO_TEST else self.test()
        finally:
            self.training_log.close()


__all__ = ["CoreRunner", "RunOptions"]
