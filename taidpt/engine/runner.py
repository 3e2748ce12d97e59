"""The base runner: what every method's run shares (build, checkpoints, the epoch loop, test, report).

It follows Dassl's ``TrainerX`` order, and the Dassl plugin (``trainers/taidpt.py``) calls its steps
from its hooks, so both engines give the same numbers for a seed: seed -> test set -> model,
optimiser and schedule -> training data -> resume -> epochs (the LR steps once per epoch) -> test.
A method that trains nothing runs on :class:`Runner` as it is; the caption and image runners add
their training data, loss, validation and results fields (:mod:`taidpt.engine.runners` picks one).

A runner is given its process group (a process alone has the trivial one): rank 0 alone writes
files, and a group scores the test set in blocks (:mod:`taidpt.engine.distributed_runner`).
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Subset
from yacs.config import CfgNode

from taidpt.captions.classes import ClassList
from taidpt.engine.caption_training import apply_loss
from taidpt.engine.checkpoint import (
    BEST_FILE,
    MODEL_NAME,
    epoch_file,
    latest_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from taidpt.engine.checks import check_resume_settings, model_meta, preprocess_config, validate_config
from taidpt.engine.distributed import DistContext, all_gather_ints, barrier
from taidpt.engine.distributed_runner import score_block
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
from taidpt.images.registry import load_test_set
from taidpt.methods import get_method
from taidpt.networks.model import ImageScorer
from taidpt.utils.atomic import atomic_write_json
from taidpt.utils.seeding import seed_or_zero

log = logging.getLogger("taidpt")


@dataclass
class RunOptions:
    """CoOp's CLI switches that are not config keys."""

    eval_only: bool = False
    model_dir: str = ""
    load_epoch: int | None = None
    no_train: bool = False
    progress: bool = True
    note: str = ""  # one line logged first (train.py says which engine runs and why)


class Runner:
    """Train (given a subclass's data and loss) and/or evaluate one configuration in a process group."""

    runs_distributed: ClassVar[bool] = True  # whether a torchrun group may run it

    def __init__(self, cfg: CfgNode, options: RunOptions | None = None, trainer: str | None = None,
                 group: DistContext | None = None) -> None:
        self.cfg = cfg
        self.opts = options or RunOptions()
        self.method = get_method(trainer or cfg.TRAINER.NAME)
        self.trainer = self.method.name
        self.group = group or DistContext.single(select_device(cfg))
        self.device = self.group.device
        self.output_dir = Path(cfg.OUTPUT_DIR)
        self.start_time = time.time()
        self.epoch = 0
        self.checkpoint_path: str | None = None
        self.selection = "last_step"
        self.loader: torch.utils.data.DataLoader | None = None
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
        if self.method.trains():
            self.optimizer = build_optimizer(self.method.trainable_parameters(self.model), cfg.OPTIM)
            self.scheduler = build_lr_scheduler(self.optimizer, cfg.OPTIM)

    def build_training(self) -> None:
        """The training data and its loader (a trained method's runner builds them)."""
        raise TypeError(f"{self.trainer} has nothing to train")

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
        """Write ``prompt_learner/model.pth.tar-<epoch>`` (1-based) or ``model-best.pth.tar`` (rank 0;
        the others wait at a barrier, so that every process can read it once this returns)."""
        if self.group.is_main:
            best = self.best_val if self.best_val > float("-inf") else None
            state = {**self._state(val_result), "best_val": val_result if is_best else best}
            path = save_checkpoint(directory or self.output_dir, state, epoch=epoch, is_best=is_best)
        else:
            path = Path(directory or self.output_dir) / MODEL_NAME / (BEST_FILE if is_best else epoch_file(epoch))
        barrier(self.group)
        return path

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
        start = self._resume(directory or self.cfg.RESUME or str(self.output_dir))
        starts = all_gather_ints(self.group, start)
        if len(set(starts)) > 1:
            raise RuntimeError(f"processes found different checkpoints to resume from (epochs {starts}): every process "
                               f"must read the same OUTPUT_DIR (use a shared filesystem across machines)")
        return start

    def _resume(self, directory: str | Path) -> int:
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
    # One epoch is begin_epoch -> batch_loss + optimiser step per batch -> scheduler.step() ->
    # end_epoch; the Dassl trainer runs the same calls from its hooks.
    def begin_epoch(self, epoch: int) -> None:
        """Train mode and the sample order of ``epoch`` (a function of (seed, epoch) only)."""
        self.epoch = epoch
        self.model.train()
        self.loader.sampler.set_epoch(epoch)

    def batch_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The training loss of one batch (not yet back-propagated)."""
        raise TypeError(f"{self.trainer} has nothing to train")

    def step(self, batch: dict[str, Any]) -> float:
        """One optimiser step on a batch (:meth:`batch_loss`); returns its loss."""
        return apply_loss(self.batch_loss(batch), self.optimizer)

    def validate(self) -> float:
        """The model-selection score on held-out data (``test(split="val")`` under Dassl)."""
        raise ValueError(f"{self.trainer} has no validation split")

    def held_out_score(self, epoch: int) -> float | None:
        """The model-selection score after ``epoch``, None where the runner holds nothing out."""
        return None

    def end_epoch(self, epoch: int, stats: EpochStats | None = None) -> float | None:
        """After the LR step: held-out validation, the epoch's ``metrics.jsonl`` line (given the
        loop's ``stats``; written before the checkpoints, so resuming drops it if they are missing),
        then the epoch's checkpoints."""
        val = self.held_out_score(epoch)
        if stats is not None:
            self.training_log.epoch_done(stats.record(epoch + 1, val))
        self.save_epoch(epoch, val)
        return val

    def save_epoch(self, epoch: int, val: float | None) -> None:
        """The periodic (``TRAIN.CHECKPOINT_FREQ``) and last checkpoints."""
        freq = int(self.cfg.TRAIN.CHECKPOINT_FREQ)
        if epoch + 1 == int(self.cfg.OPTIM.MAX_EPOCH) or (freq > 0 and (epoch + 1) % freq == 0):
            self.save(epoch + 1, val)

    def finish_training(self) -> None:
        """Deploy the selected prompts (:meth:`select_final_model`)."""
        self.epoch = int(self.cfg.OPTIM.MAX_EPOCH)
        log.info("Finish training", extra=PLAIN)
        self.select_final_model()

    def select_final_model(self) -> None:
        """The last epoch's prompts (already in the model)."""
        self.checkpoint_path = str(resolve_checkpoint(self.output_dir, self.epoch))

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
        """This run's ``metrics.jsonl`` (+ TensorBoard), cut back to ``resumed_epoch``; written by rank 0
        alone, as the log and the checkpoints are."""
        return TrainingLog.open(self.output_dir, resumed_epoch) if self.group.is_main else TrainingLog.disabled()

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
        """Logits of every readable test image in dataset order; a group scores a block of whole
        batches per process and gathers them."""
        if self.group.is_distributed:
            return score_block(self.group, self.scorer(), self.test_loader, self.image_set,
                               int(self.cfg.DATALOADER.TEST.BATCH_SIZE), len(self.classes), self.opts.progress)
        acc = score_batches(self.scorer(), self.test_loader(), self.image_set.paths, device=self.device,
                            progress=self.opts.progress)
        return acc.result(self.image_set.name)

    def test(self) -> dict[str, Any]:
        cfg = self.cfg
        scored = self.score_test_set()
        results = results_from_scores(scored, self.classes.names, self.method.merge_rate(cfg),
                                      float(cfg.TEST.THRESHOLD), self.image_set)
        return self.report(results, scored=scored)

    def report(self, results: dict[str, Any], coop_lines: bool = True,
               scored: ScoredSet | None = None) -> dict[str, Any]:
        """Log the result table (and CoOp's ``=> result`` block), write ``results.json`` and, given
        the scores, ``predictions.npz`` (:mod:`taidpt.evaluation.predictions`); rank 0 only."""
        if not self.group.is_main:
            return self.describe(results)
        if scored is not None:
            save_predictions(self.output_dir / PREDICTIONS_FILE, scored, self.image_set, self.classes.names,
                             self.method.merge_rate(self.cfg), self.trainer)
        payload = self.describe(results)
        log.info("%s", format_results_table(results))
        if coop_lines:
            log.info("%s", format_coop_lines(results), extra=PLAIN)
        atomic_write_json(self.output_dir / "results.json", payload)
        log.info("results written to %s", self.output_dir / "results.json")
        self.training_log.test_done(results["mAP"], self.epoch)
        return payload

    def describe(self, results: dict[str, Any]) -> dict[str, Any]:
        """``results.json``: the run's settings, then ``results`` (a trained runner adds its own fields)."""
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
        log.info("elapsed %s", datetime.timedelta(seconds=int(time.time() - self.start_time)))
        # No timings or run-folder paths: the same seed gives a byte-identical results.json (CPU).
        return {**info, **results}

    def selection_fields(self) -> dict[str, Any]:
        """Which prompts a trained run tested: epochs, how they were selected, their checkpoint."""
        return {"epochs_trained": self.epoch, "model_selection": self.selection,
                "checkpoint": self._relative(self.checkpoint_path)}

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
            if self.method.trains():
                if not self.opts.model_dir:
                    raise ValueError(f"--eval-only with {self.trainer} needs --model-dir RUN (a training output "
                                     f"directory)")
                self.load_trained(self.opts.model_dir, self.opts.load_epoch)
            return self.test()
        if not self.method.trains():
            return None if self.opts.no_train else self.test()
        self.build_training()
        if self.opts.no_train:
            return None
        try:
            self.train()
            return None if self.cfg.TEST.NO_TEST else self.test()
        finally:
            self.training_log.close()


__all__ = ["RunOptions", "Runner"]
