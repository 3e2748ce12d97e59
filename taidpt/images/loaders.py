"""PyTorch dataset and loader over an :class:`~taidpt.images.readers.common.ImageSet` for evaluation.

A corrupt or unreadable image never stops an evaluation: the dataset yields a zero image with
``ok=False`` (and logs the path), and :func:`split_ok` lets the evaluation loop drop those rows
and count them, so the report can name every skipped file.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from taidpt.images.preprocess import ImageLoadError, PreprocessConfig, load_rgb
from taidpt.images.readers.common import ImageSet
from taidpt.utils.seeding import loader_generator

__all__ = ["ImageSetDataset", "make_test_loader", "split_ok"]

logger = logging.getLogger(__name__)


class ImageSetDataset(Dataset):
    """Images of an ImageSet, preprocessed exactly as at test time (see ``taidpt.images.preprocess``).

    Item ``i`` is ``{"img": FloatTensor [3, H, W], "label": FloatTensor [C] (targets, -1 kept),
    "index": i, "ok": bool}``; an image that fails to load gives a zero image and ``ok=False``.
    """

    def __init__(self, image_set: ImageSet, config: PreprocessConfig | None = None) -> None:
        self.image_set = image_set
        self.config = config if config is not None else PreprocessConfig()
        self._labels = torch.from_numpy(np.asarray(image_set.targets, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.image_set.paths)

    def path(self, index: int) -> str:
        """The file path of item ``index``."""
        return self.image_set.paths[index]

    def transform(self, img: Image.Image, index: int) -> np.ndarray:
        """The float32 [3, H, W] array of item ``index`` (the test transform; training overrides it)."""
        return self.config(img)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        path = self.image_set.paths[index]
        cfg = self.config
        ok = True
        try:
            arr = self.transform(load_rgb(path, exif_transpose=cfg.exif_transpose), index)
            img = torch.from_numpy(arr)
        except ImageLoadError as exc:
            logger.warning("skipping image %d: %s", index, exc)
            h, w = cfg.out_hw
            img = torch.zeros(3, h, w, dtype=torch.float32)
            ok = False
        return {"img": img, "label": self._labels[index].clone(), "index": index, "ok": ok}


_capped_noted: set[tuple[int, int]] = set()


def capped_workers(requested: int) -> int:
    """``DATALOADER.NUM_WORKERS`` limited to the CPUs this process may use (said once in the log).

    More loader processes than CPUs only compete with the model for the same cores, and torch warns
    on every loader it builds; the shipped configs ask for 8, which suits a GPU server, not a laptop.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if requested <= cpus:
        return requested
    if (requested, cpus) not in _capped_noted:
        _capped_noted.add((requested, cpus))
        logging.getLogger("taidpt").info("DATALOADER.NUM_WORKERS %d capped at %d, the CPUs available here",
                                         requested, cpus)
    return cpus


def make_test_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, seed: int = 0) -> DataLoader:
    """A sequential (unshuffled, nothing dropped) DataLoader for evaluation.

    It carries an explicitly seeded ``torch.Generator`` (:func:`taidpt.utils.seeding.loader_generator`)
    so that it draws the same random numbers on every code path (the Dassl plugin and the core
    runner), and pins memory only when CUDA is available.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if int(num_workers) < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    return DataLoader(
        dataset,
        batch_size=int(batch_size),
        shuffle=False,
        drop_last=False,
        num_workers=capped_workers(int(num_workers)),
        pin_memory=torch.cuda.is_available(),
        generator=loader_generator(seed),
    )


def split_ok(batch: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """Drop the rows of a collated batch whose image failed to load.

    Returns the batch restricted to ``ok`` rows (tensor values indexed, other values kept as
    they are) and the dataset indices of the failed images, for counting and reporting.
    """
    ok = torch.as_tensor(batch["ok"], dtype=torch.bool)
    index = torch.as_tensor(batch["index"])
    bad = index[~ok].tolist()
    if not bad:
        return batch, []
    kept: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == ok.shape[0]:
            kept[key] = value[ok]
        elif isinstance(value, list) and len(value) == ok.shape[0]:
            kept[key] = [v for v, keep in zip(value, ok.tolist()) if keep]
        else:
            kept[key] = value
    return kept, bad
