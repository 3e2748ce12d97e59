"""The core runner of the image-prompting trainers: ``DualCoOp`` (partial labels) and ``CoOpMultiLabel`` (few-shot).

:class:`ImagePromptRunner` is a :class:`taidpt.engine.runner.CoreRunner` whose training data are
labelled images instead of captions; everything else (test set, evaluation, results.json,
predictions.npz, checkpoints in Dassl's layout, resume, the per-epoch LR schedule, the log) is the
TaI-DPT runner's, and the Dassl trainers (``trainers/image_prompting.py``) call the same steps.

Training data: the dataset's training split (:func:`taidpt.images.train_data.load_train_set`),
optionally reduced to ``DATASET.NUM_SHOTS`` images per class (:mod:`taidpt.images.fewshot`), with
``DATASET.PARTIAL_PROPORTION`` of its labels kept (:mod:`taidpt.images.partial_labels`; the mask is
stored in ``OUTPUT_DIR/partial_labels.npz`` or ``DATASET.PARTIAL_LABEL_FILE`` and reused), both
drawn with ``DATASET.LABEL_SEED`` (default: ``SEED``). Images are augmented per
``(seed, epoch, index)`` (:mod:`taidpt.images.augment`). Model selection is the last epoch: there is no
held-out image split, and selecting on the test images is not allowed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from yacs.config import CfgNode

from taidpt import __version__
from taidpt.captions.classes import ClassList
from taidpt.images.fewshot import sample_few_shot
from taidpt.images.loaders import split_ok
from taidpt.networks.image_prompt_models import CoOpModel, DualCoOpModel
from taidpt.images.train_data import (
    TrainImageDataset,
    augment_config,
    describe_labels,
    load_train_set,
    make_train_loader,
    subset,
)
from taidpt.engine.optim import build_lr_scheduler, build_optimizer
from taidpt.images.partial_labels import PARTIAL_FILE, load_or_create, to_partial
from taidpt.networks.partial_losses import BRANCHES, PARTIAL_LOSSES, image_prompt_loss
from taidpt.engine.runner import TRAINER_NODES, TRAINING_KEYS, CoreRunner, note_precision, training_settings

log = logging.getLogger("taidpt")

# The image-prompting trainers and the branches their loss may be put on.
TRAINER_BRANCHES = {"DualCoOp": BRANCHES, "CoOpMultiLabel": ("global", "both")}
# Trainer name -> its TRAINER.<node> of settings.
IMAGE_TRAINERS = {trainer: TRAINER_NODES[trainer] for trainer in TRAINER_BRANCHES}

_SHARED_KEYS = tuple(k for k in TRAINING_KEYS if k.split(".")[0] in ("SEED", "MODEL", "DATALOADER", "OPTIM"))
_DATA_KEYS = ("INPUT.SIZE", "INPUT.TRANSFORMS", "INPUT.RRCROP_SCALE", "INPUT.CUTOUT_N", "INPUT.CUTOUT_LEN",
              "DATASET.CLASS_LIST", "DATASET.TRAIN_SPLIT", "DATASET.TRAIN_ANNOTATION", "DATASET.PARTIAL_PROPORTION",
              "DATASET.LABEL_SEED", "DATASET.NUM_SHOTS")
_PROMPT_KEYS = ("N_CTX", "CSC", "CTX_INIT", "CLASS_TOKEN_POSITION", "LOSS", "LOSS_ON")
_NODE_KEYS = {"DUALCOOP": (*_PROMPT_KEYS, "LOGIT_SCALE_INIT", "SPATIAL_SCALE_INIT", "ASL_GAMMA_NEG", "ASL_GAMMA_POS",
                           "ASL_CLIP"),
              "COOP": (*_PROMPT_KEYS, "LOGIT_SCALE")}


def image_training_keys(trainer: str) -> tuple[str, ...]:
    """The keys that define what a ``trainer`` run computes (resuming under other values is refused)."""
    node = IMAGE_TRAINERS[trainer]
    return (*_SHARED_KEYS, *_DATA_KEYS, *(f"TRAINER.{node}.{k}" for k in _NODE_KEYS[node]))


def label_seed(cfg: CfgNode) -> int:
    """Seed of the partial-label mask and the few-shot sample (``DATASET.LABEL_SEED``, else ``SEED``)."""
    return int(cfg.DATASET.LABEL_SEED) if int(cfg.DATASET.LABEL_SEED) >= 0 else max(int(cfg.SEED), 0)


def build_image_model(cfg: CfgNode, trainer: str, clip_model: nn.Module, classes: ClassList) -> DualCoOpModel | CoOpModel:
    """The DualCoOp or CoOp model of ``trainer`` from its ``TRAINER.<node>`` settings."""
    t = cfg.TRAINER[IMAGE_TRAINERS[trainer]]
    common = dict(n_ctx=int(t.N_CTX), csc=bool(t.CSC), ctx_init=t.CTX_INIT, class_token_position=t.CLASS_TOKEN_POSITION,
                  merge_rate=float(t.MERGE_RATE), use_pos_embed=bool(t.USE_POS_EMBED), trim_tokens=True,
                  shared_prefix=True)
    if trainer == "DualCoOp":
        return DualCoOpModel(clip_model, classes.names, logit_scale_init=float(t.LOGIT_SCALE_INIT),
                             spatial_scale_init=float(t.SPATIAL_SCALE_INIT), **common)
    return CoOpModel(clip_model, classes.names, train_local=t.LOSS_ON == "both", logit_scale=float(t.LOGIT_SCALE),
                     tau_image=float(t.SPATIAL_SCALE_IMAGE), **common)


class ImagePromptRunner(CoreRunner):
    """Train prompts on labelled (possibly partial, possibly few-shot) images; test as TaI-DPT does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.training_keys = self.resume_keys(self.trainer)
        self.node = self.cfg.TRAINER[IMAGE_TRAINERS[self.trainer]]
        self.train_info: dict[str, Any] = {}
        self.skipped_train: set[str] = set()

    resume_keys = staticmethod(image_training_keys)

    # ------------------------------------------------------------------ build
    @staticmethod
    def check_config(cfg: CfgNode, trainer: str) -> None:
        """Refuse settings an image-prompting run cannot honour (both engines call this first)."""
        node = cfg.TRAINER[IMAGE_TRAINERS[trainer]]
        if cfg.TEST.FINAL_MODEL != "last_step":
            raise ValueError(f"TEST.FINAL_MODEL must be last_step for {trainer}, got {cfg.TEST.FINAL_MODEL!r}: there "
                             f"is no held-out image split, and selecting on test images is not allowed")
        if node.LOSS not in PARTIAL_LOSSES:
            raise ValueError(f"TRAINER.{IMAGE_TRAINERS[trainer]}.LOSS must be one of {', '.join(PARTIAL_LOSSES)}, "
                             f"got {node.LOSS!r}")
        if node.LOSS_ON not in TRAINER_BRANCHES[trainer]:
            raise ValueError(f"TRAINER.{IMAGE_TRAINERS[trainer]}.LOSS_ON must be one of "
                             f"{', '.join(TRAINER_BRANCHES[trainer])}, got {node.LOSS_ON!r}")
        if not 0.0 < float(cfg.DATASET.PARTIAL_PROPORTION) <= 1.0:
            raise ValueError(f"DATASET.PARTIAL_PROPORTION must be in (0, 1], got {cfg.DATASET.PARTIAL_PROPORTION}")
        if int(cfg.DATASET.NUM_SHOTS) == 0 or int(cfg.DATASET.NUM_SHOTS) < -1:
            raise ValueError(f"DATASET.NUM_SHOTS must be -1 (all images) or >= 1, got {cfg.DATASET.NUM_SHOTS}")
        augment_config(cfg)  # refuses unknown INPUT.TRANSFORMS and bad crop scales
        note_precision(cfg, trainer)

    def build_model(self) -> None:
        """CLIP, the DualCoOp / CoOp model, and the optimiser over its trainable prompt parameters."""
        cfg = self.cfg
        clip_model = self.load_backbone()
        self.model = build_image_model(cfg, self.trainer, clip_model, self.classes).to(self.device)
        self.optimizer = build_optimizer(self.model.trainable_parameters(), cfg.OPTIM)
        self.scheduler = build_lr_scheduler(self.optimizer, cfg.OPTIM)

    def build_training(self) -> None:
        """Training images, their (few-shot, partial) labels, and the augmented image loader."""
        cfg = self.cfg
        seed = label_seed(cfg)
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
        dataset = TrainImageDataset(image_set, labels, augment_config(cfg), max(int(cfg.SEED), 0),
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

    # ------------------------------------------------------------------ checkpoints and results
    def _state(self, val_result: float | None) -> dict[str, Any]:
        state = super()._state(val_result)
        t = self.node
        state["meta"] = {"classnames": list(self.classes.names), "trainer": self.trainer,
                         "n_ctx": int(t.N_CTX) if not t.CTX_INIT else None, "csc": bool(t.CSC),
                         "class_token_position": t.CLASS_TOKEN_POSITION, "backbone": self.clip_info.name,
                         "taidpt_version": __version__, "training": training_settings(self.cfg, self.training_keys)}
        return state

    def _describe(self, results: dict[str, Any]) -> dict[str, Any]:
        out = super()._describe(results)
        info: dict[str, Any] = {"epochs_trained": self.epoch, "model_selection": self.selection,
                                "checkpoint": self._relative(self.checkpoint_path),
                                "loss": {"name": self.node.LOSS, "on": self.node.LOSS_ON}}
        if self.train_info:
            info["training_data"] = {**self.train_info, "skipped_train_images": sorted(self.skipped_train)}
        if self.trainer == "DualCoOp":
            scale, tau = (v.item() for v in self.model.prompt_learner.scales())
            info["learned_scales"] = {"logit_scale": round(scale, 6), "spatial_scale": round(tau, 6)}
        return {**out, **info}


def is_image_trainer(name: str) -> bool:
    """Whether ``name`` is run by :class:`ImagePromptRunner`."""
    return name in IMAGE_TRAINERS


__all__ = ["IMAGE_TRAINERS", "ImagePromptRunner", "build_image_model", "image_training_keys", "is_image_trainer",
           "label_seed"]
