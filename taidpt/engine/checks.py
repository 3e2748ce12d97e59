"""Checks that run before anything is built or written: the configuration, the image size, and
whether a run folder may be continued; and the settings a checkpoint records so that it can be.

A refused run must leave its folder as it was, so every check here reads and never writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from yacs.config import CfgNode

from taidpt import __version__
from taidpt.captions.classes import ClassList
from taidpt.clip.loader import ClipInfo
from taidpt.engine.checkpoint import latest_checkpoint, load_checkpoint
from taidpt.engine.config import lookup
from taidpt.images.preprocess import PreprocessConfig, input_size
from taidpt.methods import Method

log = logging.getLogger("taidpt")

FINAL_MODELS = ("last_step", "best_val")
TRAIN_SAMPLERS = ("RandomSampler",)


def validate_config(cfg: CfgNode, method: type[Method]) -> None:
    """Refuse settings neither engine can honour, before anything is built (Dassl's ``check_cfg``).

    Train-time image settings (``INPUT.TRANSFORMS`` augmentations, ``DATALOADER.TRAIN_X.SAMPLER``)
    have no effect on a model trained on captions, and ``PREC`` other than fp32 is not implemented;
    they are named in the log, not refused, so CoOp yaml files still load.
    """
    for key in ("OPTIM.MAX_EPOCH", "TRAIN.PRINT_FREQ"):
        if int(lookup(cfg, key)) < 1:
            raise ValueError(f"{key} must be a positive number of {'epochs' if 'EPOCH' in key else 'batches'}, "
                             f"got {lookup(cfg, key)}")
    if cfg.TEST.FINAL_MODEL not in FINAL_MODELS:
        raise ValueError(f"TEST.FINAL_MODEL must be last_step or best_val, got {cfg.TEST.FINAL_MODEL!r}")
    method.check_config(cfg)
    note_precision(cfg, method)
    if method.trains_on_images():
        return
    ignored = [t for t in cfg.INPUT.TRANSFORMS if t != "normalize"]
    if ignored:
        log.info("INPUT.TRANSFORMS %s ignored: %s tests with resize + centre crop + normalise and trains on no "
                 "image", ignored, method.name)
    if cfg.DATALOADER.TRAIN_X.SAMPLER not in TRAIN_SAMPLERS:
        log.info("DATALOADER.TRAIN_X.SAMPLER %s ignored: captions are shuffled per (seed, epoch)",
                 cfg.DATALOADER.TRAIN_X.SAMPLER)


def note_precision(cfg: CfgNode, method: type[Method]) -> None:
    """Log that a ``PREC`` other than fp32 (CoOp's fp16 / amp) is accepted but not honoured."""
    prec = str(method.settings(cfg).get("PREC", "fp32"))
    if prec != "fp32":
        log.info("TRAINER.%s.PREC %s ignored: taidpt computes in fp32 (mixed precision is not implemented)",
                 method.node, prec)


def preprocess_config(cfg: CfgNode) -> PreprocessConfig:
    """Test-time preprocessing from ``INPUT.*`` (Dassl's resize + centre crop + normalise)."""
    size = input_size(cfg)
    return PreprocessConfig(size=size if size[0] != size[1] else size[0], mean=tuple(cfg.INPUT.PIXEL_MEAN),
                            std=tuple(cfg.INPUT.PIXEL_STD), interpolation=cfg.INPUT.INTERPOLATION,
                            exif_transpose=bool(cfg.INPUT.EXIF_TRANSPOSE))


def check_image_size(cfg: CfgNode, info: ClipInfo) -> None:
    """Refuse input sizes the backbone cannot take (not a multiple of its stride / patch)."""
    stride = 32 if info.is_resnet else None
    if stride is None:
        return
    for side in cfg.INPUT.SIZE:
        if int(side) % stride or int(side) < stride:
            raise ValueError(f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} does not fit {info.name}: ResNet CLIP needs "
                             f"multiples of {stride} px (e.g. {info.image_size})")


def training_settings(cfg: CfgNode, keys: tuple[str, ...]) -> dict[str, Any]:
    """The values of ``keys`` (a method's training keys; JSON-like primitives), stored in every checkpoint."""
    out = {}
    for key in keys:
        node: Any = cfg
        for part in key.split("."):
            node = node[part]
        out[key] = list(node) if isinstance(node, (tuple, list)) else node
    return out


def model_meta(cfg: CfgNode, method: type[Method], classes: ClassList, info: ClipInfo) -> dict[str, Any]:
    """What a checkpoint must agree on with the run that loads it (primitives only)."""
    return {
        "classnames": list(classes.names),
        **method.checkpoint_meta(cfg, classes.names),
        "backbone": info.name,
        "taidpt_version": __version__,
        "training": training_settings(cfg, method.training_keys()),
    }


def check_resume_settings(meta: dict[str, Any] | None, cfg: CfgNode, path: Path | str,
                          keys: tuple[str, ...]) -> None:
    """Refuse to continue a run whose checkpoint was trained with other settings (of ``keys``)."""
    saved = (meta or {}).get("training")
    if not saved:
        return
    now = training_settings(cfg, keys)
    diff = [f"{k} {saved[k]!r} -> {now[k]!r}" for k in now if k in saved and saved[k] != now[k]]
    if diff:
        raise ValueError(f"{path} was trained with other settings ({'; '.join(diff[:4])}): resuming would mix two "
                         f"experiments. Use a new --output-dir, or delete the old run")


def check_resumable(cfg: CfgNode, keys: tuple[str, ...]) -> None:
    """Refuse, before anything is written, to continue a run under other training settings or
    past ``OPTIM.MAX_EPOCH`` (its results would be labelled with the wrong epoch and checkpoint)."""
    directory = cfg.RESUME or cfg.OUTPUT_DIR
    path = latest_checkpoint(directory)
    if path is None:
        return
    ckpt = load_checkpoint(path, map_location="cpu")
    check_resume_settings(ckpt.get("meta"), cfg, path, keys)
    done, max_epoch = int(ckpt.get("epoch", 0)), int(cfg.OPTIM.MAX_EPOCH)
    if done > max_epoch:
        raise ValueError(f"OPTIM.MAX_EPOCH {max_epoch}: {directory} already holds epoch {done} ({path.name}); "
                         f"training cannot go back. Evaluate an earlier epoch with --eval-only --model-dir "
                         f"{directory} --load-epoch N, or use a new --output-dir")


__all__ = ["check_image_size", "check_resumable", "check_resume_settings", "model_meta", "note_precision",
           "preprocess_config", "training_settings", "validate_config"]
