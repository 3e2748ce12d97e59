"""Labelled training images for the image-prompting trainers: dataset, loader, training-set reader.

* :func:`load_train_set` reads a dataset's *training* split with the same core reader as the
  test set (its spec's ``train_split``: VOC2007 ``trainval``, COCO ``train2014``, NUS-WIDE ``Train``;
  or a CSV / COCO-format annotation in ``DATASET.TRAIN_ANNOTATION``), so listed-but-missing images
  are reported and left out exactly as at test time.
* :class:`TrainImageDataset` yields augmented images (:mod:`taidpt.images.augment`, seeded by
  ``(seed, epoch, index)``) with their partial labels (1 / -1 / 0); an unreadable image yields
  ``ok=False`` and is dropped from its batch (see :func:`taidpt.images.loaders.split_ok`), never fatal.
* :func:`make_train_loader` orders the images by ``(seed, epoch)`` only (the caption loader's
  sampler), so a resumed run sees the batches an uninterrupted one sees, on either engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from taidpt.images.augment import AugmentConfig, augment
from taidpt.captions.classes import ClassList
from taidpt.images.registry import get_spec, load_split
from taidpt.images.loaders import ImageSetDataset, capped_workers
from taidpt.images.preprocess import PreprocessConfig, input_size
from taidpt.images.readers.common import ImageSet
from taidpt.engine.caption_training import EpochPermutationSampler
from taidpt.utils.seeding import augmentation_rng


def load_train_set(cfg: CfgNode, classes: ClassList) -> ImageSet:
    """The training images and full labels of ``cfg.DATASET`` (core convention: 1 / 0 / -1 ignored).

    The split is ``DATASET.TRAIN_SPLIT`` or the dataset's ``train_split``; annotation datasets
    (``COCOFormat``, ``CSV``) read ``DATASET.TRAIN_ANNOTATION`` (:meth:`DatasetSpec.split`).
    The class list must be the test set's.
    """
    image_set, train_classes = load_split(cfg, get_spec(cfg.DATASET.NAME).split(cfg, train=True))
    if list(train_classes.names) != list(classes.names):
        raise ValueError(f"the training annotation has classes {list(train_classes.names)[:4]}... but the test set "
                         f"{list(classes.names)[:4]}...: both must use the same class list")
    return image_set


def augment_config(cfg: CfgNode) -> AugmentConfig:
    """The training augmentation from ``INPUT.*`` (see :mod:`taidpt.images.augment`)."""
    return AugmentConfig(
        size=input_size(cfg), transforms=tuple(cfg.INPUT.TRANSFORMS),
        crop_scale=tuple(float(s) for s in cfg.INPUT.RRCROP_SCALE), cutout_n=int(cfg.INPUT.CUTOUT_N),
        cutout_len=int(cfg.INPUT.CUTOUT_LEN), mean=tuple(cfg.INPUT.PIXEL_MEAN), std=tuple(cfg.INPUT.PIXEL_STD),
        interpolation=cfg.INPUT.INTERPOLATION)


class TrainImageDataset(ImageSetDataset):
    """Augmented training images with partial labels; call :meth:`set_epoch` before each epoch.

    Item ``i``: ``{"img": [3, H, W], "label": [C] (1 / -1 / 0), "index": i, "ok": bool}``.
    """

    def __init__(self, image_set: ImageSet, labels: np.ndarray, aug: AugmentConfig, seed: int,
                 exif_transpose: bool = False) -> None:
        super().__init__(image_set, PreprocessConfig(size=aug.size, mean=aug.mean, std=aug.std,
                                                     interpolation=aug.interpolation, exif_transpose=exif_transpose))
        labels = np.asarray(labels)
        if labels.shape != image_set.targets.shape:
            raise ValueError(f"labels {labels.shape} do not match the training set {image_set.targets.shape}")
        self._labels = torch.from_numpy(labels.astype(np.float32))
        self.aug, self.seed, self.epoch = aug, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def transform(self, img: Image.Image, index: int) -> np.ndarray:
        return augment(img, self.aug, augmentation_rng(self.seed, self.epoch, index))


def make_train_loader(dataset: TrainImageDataset, batch_size: int, num_workers: int, seed: int) -> DataLoader:
    """Shuffled by ``(seed, epoch)``; the last partial batch is dropped when a full one exists (Dassl)."""
    if len(dataset) == 0:
        raise ValueError("no training images: the training set is empty")
    return DataLoader(dataset, batch_size=int(batch_size), sampler=EpochPermutationSampler(len(dataset), seed),
                      num_workers=capped_workers(int(num_workers)), drop_last=len(dataset) >= int(batch_size),
                      pin_memory=torch.cuda.is_available())


def subset(image_set: ImageSet, rows: np.ndarray, name: str) -> ImageSet:
    """The images ``rows`` of ``image_set`` (targets kept; nothing is reported missing again)."""
    return ImageSet(paths=[image_set.paths[i] for i in rows], targets=image_set.targets[rows],
                    classnames=image_set.classnames, name=name)


def describe_labels(labels: np.ndarray) -> dict[str, Any]:
    """Counts of a partial label matrix for results.json."""
    labels = np.asarray(labels)
    return {"n_images": int(labels.shape[0]), "n_positive": int((labels == 1).sum()),
            "n_negative": int((labels == -1).sum()), "n_unknown": int((labels == 0).sum()),
            "positives_per_class": [int(v) for v in (labels == 1).sum(axis=0)]}
