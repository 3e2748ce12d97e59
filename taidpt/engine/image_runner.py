"""The image runner of the image-prompting methods: ``DualCoOp`` (partial labels), ``CoOpMultiLabel`` (few-shot).

A sibling of the caption runner over :class:`taidpt.engine.runner.Runner`: it trains on the dataset's
training images (:func:`taidpt.images.train_data.load_train_set`), optionally ``DATASET.NUM_SHOTS`` per
class (:mod:`taidpt.images.fewshot`) with ``DATASET.PARTIAL_PROPORTION`` of their labels kept
(:mod:`taidpt.images.partial_labels`; the mask is stored in the run folder or ``DATASET.PARTIAL_LABEL_FILE``
and reused), both drawn with ``DATASET.LABEL_SEED`` (default ``SEED``), augmented per ``(seed, epoch,
index)`` (:mod:`taidpt.images.augment`). Model selection is the last epoch: there is no held-out image
split, and the test images are never used for it. It runs in one process (a torchrun group is refused).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from taidpt.engine.runner import Runner
from taidpt.images.fewshot import sample_few_shot
from taidpt.images.loaders import split_ok
from taidpt.images.partial_labels import PARTIAL_FILE, load_or_create, to_partial
from taidpt.images.train_data import (
    TrainImageDataset,
    augment_config,
    describe_labels,
    load_train_set,
    make_train_loader,
    subset,
)
from taidpt.networks.partial_losses import image_prompt_loss
from taidpt.utils.seeding import label_seed, seed_or_zero

log = logging.getLogger("taidpt")


class ImagePromptRunner(Runner):
    """Train prompts on labelled (possibly partial, possibly few-shot) images; test as TaI-DPT does."""

    runs_distributed = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.node = self.method.settings(self.cfg)
        self.train_info: dict[str, Any] = {}
        self.skipped_train: set[str] = set()

    # ------------------------------------------------------------------ build
    def build_training(self) -> None:
        """Training images, their (few-shot, partial) labels, and the augmented image loader."""
        cfg = self.cfg
        seed = label_seed(cfg.DATASET.LABEL_SEED, cfg.SEED)
        full = load_train_set(cfg, self.classes)
        image_set, shots = full, int(cfg.DATASET.NUM_SHOTS)
        if shots > 0:
            rows = sample_few_shot(full.targets, shots, seed)
            image_set = subset(full, rows, f"{full.name}_{shots}shot")
            log.info("few-shot: %d images hold >= %d positives of every class (of %d training images)", len(rows),
                     shots, len(full))
        labels = to_partial(image_set.targets)
        proportion = float(cfg.DATASET.PARTIAL_PROPORTION)
        mask_file = None
        if proportion < 1.0:
            mask_file = Path(cfg.DATASET.PARTIAL_LABEL_FILE or self.output_dir / PARTIAL_FILE).expanduser()
            labels = load_or_create(mask_file, image_set, proportion, seed)
        dataset = TrainImageDataset(image_set, labels, augment_config(cfg), seed_or_zero(cfg.SEED),
                                    exif_transpose=bool(cfg.INPUT.EXIF_TRANSPOSE))
        self.loader = make_train_loader(dataset, int(cfg.DATALOADER.TRAIN_X.BATCH_SIZE),
                                        int(cfg.DATALOADER.NUM_WORKERS), int(cfg.SEED))
        self.train_info = {
            "train_set": full.name, "n_train_images_listed": len(full) + len(full.missing),
            "missing_train_images": list(full.missing), "num_shots": shots if shots > 0 else None,
            "partial_proportion": proportion, "label_seed": seed,
            "partial_label_file": self._relative(str(mask_file)) if mask_file else None,
            "labels": describe_labels(labels), "augmentation": list(cfg.INPUT.TRANSFORMS),
        }
        log.info("training on %d images (%s), %d batches per epoch", len(dataset), image_set.name, len(self.loader))

    # ------------------------------------------------------------------ train
    def begin_epoch(self, epoch: int) -> None:
        super().begin_epoch(epoch)
        self.loader.dataset.set_epoch(epoch)

    def batch_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The partial-label loss of one image batch (unreadable images dropped and counted)."""
        batch, bad = split_ok(batch)
        self.skipped_train.update(self.loader.dataset.path(i) for i in bad)
        if batch["img"].shape[0] == 0:  # nothing readable: a zero loss that still has a graph
            return sum(p.sum() for p in self.model.trainable_parameters()) * 0.0
        z_g, z_l = self.model(batch["img"].to(self.device))
        t = self.node
        asl = {"gamma_neg": float(t.ASL_GAMMA_NEG), "gamma_pos": float(t.ASL_GAMMA_POS),
               "clip": float(t.ASL_CLIP)} if "ASL_CLIP" in t else {}
        loss = image_prompt_loss(t.LOSS, t.LOSS_ON, z_g, z_l, batch["label"].to(self.device), **asl)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()}: lower OPTIM.LR")
        return loss

    def validate(self) -> float:
        raise ValueError(f"{self.trainer} has no validation split (no held-out images; test images are never "
                         f"used for selection)")

    # ------------------------------------------------------------------ results
    def describe(self, results: dict[str, Any]) -> dict[str, Any]:
        """The run's settings and ``results``, then the training (prompt selection, loss, images) and the model."""
        return {**super().describe(results), **self.training_fields(), **self.method.describe_model(self.model)}

    def training_fields(self) -> dict[str, Any]:
        info = {**self.selection_fields(), "loss": {"name": self.node.LOSS, "on": self.node.LOSS_ON}}
        if self.train_info:
            info["training_data"] = {**self.train_info, "skipped_train_images": sorted(self.skipped_train)}
        return info


__all__ = ["ImagePromptRunner"]
