"""Dassl trainers for every registered taidpt method: thin adapters over taidpt's core runner.

Each method of ``taidpt.methods`` (TaIDPT, ZeroshotCLIPDense, DualCoOp, CoOpMultiLabel, and any
method registered later) is registered in Dassl's ``TRAINER_REGISTRY`` under its name, as a
subclass of :class:`PromptTuningTrainer` (methods that train) or :class:`FrozenModelTrainer`
(methods that do not); no method is named here.

Every hook delegates to the method's core runner (``self.core``, picked by
:func:`taidpt.engine.runners.runner_class`), the object the Dassl-free ``train.py --engine core``
path runs, so the two engines share the data, model, optimiser, schedule, loss, checkpoint format
and metrics, and give the same numbers for a seed:

============================  ===========================================================
Dassl hook                    what runs
============================  ===========================================================
``check_cfg``                 the core's ``validate_config`` (+ the evaluator must be MultiLabelEvaluator)
``build_data_loader``         Dassl's ``build_dataset`` (``datasets/taidpt_datasets.py``), then
                              ``core.load_data`` and the core's image ``test_loader``
``build_model``               ``core.build_model``; only the prompt learner is registered, as
                              ``prompt_learner``, with the core's optimiser and schedule
``before_train``              ``core.build_training`` (captions, loader, feature cache), then
                              Dassl's resume / TensorBoard set-up
``before_epoch``              ``core.begin_epoch`` (the caption order of this epoch)
``forward_backward``          ``core.batch_loss`` + ``model_backward_and_update``; the LR is
                              stepped after the last batch (``TrainerX`` never does it)
``after_epoch``               ``core.end_epoch`` (held-out caption validation, checkpoints)
``after_train``               ``core.finish_training``, then ``test``
``test``                      Dassl-style loop over the core's loader into the evaluator,
                              then ``core.report`` (``results.json``, ``predictions.npz``)
``load_model``                ``core.load_trained`` (CoOp-style: an empty directory is a no-op)
``save_model``                the core's checkpoint writer (Dassl's layout, plus class names)
``resume_model_if_exist``     ``core.resume_if_exists``
============================  ===========================================================

Dassl quirks avoided on purpose: its warm-up schedulers fail to build on torch >= 2.x (the core's
closed-form schedule is used), its ``load_model`` crashes on a checkpoint without a validation
result, and its ``after_epoch`` selects ``best_val`` on the *test* images when there is no
validation loader (the core selects on held-out captions).

Import this module once (CoOp style: ``import trainers.taidpt``); it also registers the
evaluator. CoOp registers ``ZeroshotCLIP``, hence the distinct name ``ZeroshotCLIPDense``.
"""

from __future__ import annotations

import datetime
import logging
import time
from types import SimpleNamespace
from typing import Any

import torch
from dassl.data.datasets import build_dataset
from dassl.engine import TRAINER_REGISTRY, TrainerX
from tqdm import tqdm

from taidpt.engine.checkpoint import BEST_FILE, MODEL_NAME
from taidpt.images.loaders import split_ok
from taidpt.images.registry import DATASETS
from taidpt.engine.checks import validate_config
from taidpt.engine.logs import setup_logging
from taidpt.engine.runner import RunOptions
from taidpt.engine.runners import runner_class
from taidpt.methods import get_method, method_names

from .evaluator import MultiLabelEvaluator

EVALUATOR = MultiLabelEvaluator.__name__


def enable_taidpt_logging(verbose: bool) -> None:
    """Make taidpt's log lines visible under Dassl.

    Importing ``dassl.data`` runs ``logging.disable(logging.WARNING)`` (in its wilds module), which
    silences every INFO and WARNING record of the process, taidpt's skipped-image warnings
    included; that switch is turned back off. A CoOp ``train.py`` also sets up no handler for
    taidpt's logger: one printing to stdout (Dassl's tee into log.txt) is added.
    """
    if logging.root.manager.disable:
        logging.disable(logging.NOTSET)
    if not logging.getLogger("taidpt").handlers:
        setup_logging(None, verbose)


class CoreBackedTrainer(TrainerX):
    """Hooks shared by both trainers; ``kind`` names the core trainer that runs (not registered)."""

    kind = ""

    # ------------------------------------------------------------------ build
    def check_cfg(self, cfg: Any) -> None:
        enable_taidpt_logging(bool(cfg.VERBOSE))
        if cfg.TEST.EVALUATOR != EVALUATOR:
            raise ValueError(f"TEST.EVALUATOR must be {EVALUATOR} for {self.kind}, got {cfg.TEST.EVALUATOR!r} "
                             f"(Dassl's Classification cannot score multi-hot labels)")
        validate_config(cfg, get_method(self.kind))

    def build_data_loader(self) -> None:
        dataset = build_dataset(self.cfg)
        if not (hasattr(dataset, "image_set") and hasattr(dataset, "class_list")):
            raise ValueError(f"DATASET.NAME {self.cfg.DATASET.NAME} is not a taidpt dataset: {self.kind} needs one "
                            f"of datasets/taidpt_datasets.py ({', '.join(DATASETS)})")
        self.core = runner_class(self.kind)(self.cfg, RunOptions(), trainer=self.kind)
        self.core.load_data(dataset.image_set, dataset.class_list)
        self.train_loader_x = None  # the caption loader: built in before_train, so eval-only needs no captions
        self.train_loader_u = None
        self.val_loader = None  # model selection uses held-out captions, never images
        self.test_loader = self.core.test_loader()
        self.num_classes = dataset.num_classes
        self.num_source_domains = len(self.cfg.DATASET.SOURCE_DOMAINS)
        self.lab2cname = dataset.lab2cname
        # CoOp-style code reads self.dm.dataset.classnames; there is no DataManager (see datasets/).
        self.dm = SimpleNamespace(dataset=dataset, num_classes=self.num_classes, lab2cname=self.lab2cname,
                                  num_source_domains=self.num_source_domains, train_loader_x=None,
                                  train_loader_u=None, val_loader=None, test_loader=self.test_loader)
        self._scorer: torch.nn.Module | None = None

    def build_model(self) -> None:
        self.core.build_model()
        self.model = self.core.model

    # ------------------------------------------------------------------ test
    def model_inference(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(merged, global, local)`` logits; inside :meth:`test` the class embeddings are computed once."""
        scorer = self._scorer if self._scorer is not None else self.core.scorer().eval()
        return scorer(input)

    def validate(self) -> float:
        """The model-selection score (``test(split="val")``); refused where there is none."""
        raise ValueError(f"{self.kind} has no validation split (images are test-only)")

    @torch.no_grad()
    def test(self, split: str | None = None) -> float:
        """Score the test images (unreadable ones skipped and counted), write ``results.json``,
        return the merged mAP. ``split="val"`` scores the held-out captions instead."""
        split = split or self.cfg.TEST.SPLIT
        if split == "val":
            return self.validate()
        self.set_model_mode("eval")
        self.evaluator.reset()
        self._scorer = self.core.scorer().eval()
        print("Evaluate on the *test* set")
        dataset = self.test_loader.dataset
        try:
            for batch in tqdm(self.test_loader, disable=not self.core.opts.progress):
                batch, bad = split_ok(batch)
                if bad:
                    self.evaluator.skip([dataset.path(i) for i in bad])
                if batch["img"].shape[0] == 0:
                    continue
                input, label = self.parse_batch_test(batch)
                self.evaluator.process(self.model_inference(input), label)
            summary = self.evaluator.evaluate()
        finally:
            self._scorer = None
        for key, value in summary.items():
            self.write_scalar(f"test/{key}", value, self.epoch)
        self.core.report({**self.evaluator.results, **self.core.image_set.result_fields()}, coop_lines=False,
                         scored=self.evaluator.scored)
        return next(iter(summary.values()))


class PromptTuningTrainer(CoreBackedTrainer):
    """A method that trains prompts (on captions or on images), tested on images."""

    def build_model(self) -> None:
        super().build_model()
        self.register_model(MODEL_NAME, self.core.model.prompt_learner, self.core.optimizer, self.core.scheduler)

    def before_train(self) -> None:
        self.core.build_training()
        self.train_loader_x = self.dm.train_loader_x = self.core.loader
        super().before_train()

    def resume_model_if_exist(self, directory: str) -> int:
        return self.core.resume_if_exists(directory)

    def before_epoch(self) -> None:
        self.core.begin_epoch(self.epoch)

    def forward_backward(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        loss = self.core.batch_loss(batch)
        self.model_backward_and_update(loss)
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}

    def after_epoch(self) -> None:
        self.core.end_epoch(self.epoch)

    def after_train(self) -> None:
        self.core.finish_training()
        if not self.cfg.TEST.NO_TEST:
            self.test()
        print(f"Elapsed: {datetime.timedelta(seconds=round(time.time() - self.time_start))}")
        self.close_writer()

    def validate(self) -> float:
        return self.core.validate()

    def save_model(self, epoch: int, directory: str, is_best: bool = False, val_result: float | None = None,
                   model_name: str = "") -> None:
        """Dassl's signature (``epoch`` 0-based), the core's file format."""
        if model_name not in ("", BEST_FILE):
            raise ValueError(f"taidpt checkpoints are model.pth.tar-<epoch> or {BEST_FILE}, not {model_name!r}")
        if is_best or model_name == BEST_FILE:
            self.core.save(epoch + 1, val_result, is_best=True, directory=directory)
        if model_name != BEST_FILE:
            self.core.save(epoch + 1, val_result, directory=directory)

    def load_model(self, directory: str, epoch: int | None = None) -> None:
        """Load ``<directory>/prompt_learner/model.pth.tar-<epoch>`` (or the best / last file).

        As in CoOp, an empty ``directory`` only prints a note. Reference checkpoints (keys
        ``ctx``, ``ctx_double`` plus buffers) load too; a different class list is refused.
        """
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        self.core.load_trained(directory, epoch)


class FrozenModelTrainer(CoreBackedTrainer):
    """A method with nothing to train (the zero-shot baseline): evaluation only."""

    def load_model(self, directory: str, epoch: int | None = None) -> None:
        print(f"{self.kind} has no trained parameters: load_model() is skipped")

    def train(self) -> None:
        """Nothing to train: evaluate, as the core runner does."""
        print(f"{self.kind} has no parameters to train: evaluating")
        self.test()


def register_methods() -> list[str]:
    """Register a Dassl trainer for every taidpt method not registered yet; returns their names."""
    added = []
    for name in method_names():
        if name in TRAINER_REGISTRY.registered_names():
            continue
        method = get_method(name)
        base = PromptTuningTrainer if method.trains() else FrozenModelTrainer
        trainer = type(name, (base,), {"kind": name, "__doc__": method.description, "__module__": __name__})
        TRAINER_REGISTRY.register(trainer)
        added.append(name)
    return added


register_methods()
