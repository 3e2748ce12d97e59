"""Partial labels: hide a fraction of a training set's labels, deterministically, and keep the mask.

Convention: ``1`` positive, ``-1`` negative, ``0`` unknown (the readers' ``-1`` ignored becomes
unknown). Exactly ``round(proportion * K)`` of the ``K`` known entries stay known, drawn from
``(seed, proportion)``; the mask is stored in an ``.npz`` and reused, and a file made for other
images, classes, proportion or seed is refused. See docs/image-prompting.md and docs/method.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from taidpt.utils.atomic import atomic_savez
from taidpt.images.readers.common import ImageSet
from taidpt.utils.seeding import partial_mask_rng

log = logging.getLogger(__name__)

PARTIAL_FILE = "partial_labels.npz"


def to_partial(targets: np.ndarray) -> np.ndarray:
    """Core targets (1 / 0 / -1 ignored) -> partial labels (1 / -1 / 0 unknown), int8."""
    t = np.asarray(targets)
    return np.where(t == 1, 1, np.where(t == 0, -1, 0)).astype(np.int8)


def mask_labels(labels: np.ndarray, proportion: float, seed: int) -> np.ndarray:
    """Keep ``round(proportion * K)`` of the ``K`` known entries of partial ``labels``; the rest -> 0."""
    if not 0.0 < float(proportion) <= 1.0:
        raise ValueError(f"DATASET.PARTIAL_PROPORTION must be in (0, 1], got {proportion}")
    labels = np.asarray(labels, dtype=np.int8)
    known = np.flatnonzero(labels.reshape(-1) != 0)
    n_keep = int(round(float(proportion) * len(known)))
    keep = partial_mask_rng(seed, proportion).permutation(known)[:n_keep]
    out = np.zeros(labels.size, dtype=np.int8)
    out[keep] = labels.reshape(-1)[keep]
    return out.reshape(labels.shape)


def save(path: Path, labels: np.ndarray, paths: Sequence[str], classnames: Sequence[str], proportion: float,
         seed: int) -> None:
    """Write the mask file atomically (``np.savez``; strings as unicode arrays, no pickle)."""
    atomic_savez(path, labels=np.asarray(labels, dtype=np.int8), paths=np.asarray(list(paths), dtype=str),
                 classnames=np.asarray(list(classnames), dtype=str), proportion=np.float64(proportion),
                 seed=np.int64(seed))


def load(path: Path, paths: Sequence[str], classnames: Sequence[str], proportion: float, seed: int) -> np.ndarray:
    """Read a mask file and check that it was made for these images, classes, proportion and seed."""
    with np.load(path, allow_pickle=False) as data:
        stored = {k: data[k] for k in ("labels", "paths", "classnames", "proportion", "seed")}
    problems = []
    if list(stored["classnames"]) != list(classnames):
        problems.append(f"classes {list(stored['classnames'])[:3]}... != {list(classnames)[:3]}...")
    if list(stored["paths"]) != list(paths):
        problems.append(f"{len(stored['paths'])} images listed, the training set has {len(paths)} (or another order)")
    if not np.isclose(float(stored["proportion"]), float(proportion)):
        problems.append(f"proportion {float(stored['proportion'])} != {proportion}")
    if int(stored["seed"]) != int(seed):
        problems.append(f"seed {int(stored['seed'])} != {seed}")
    if problems:
        raise ValueError(f"{path} holds partial labels for another setting ({'; '.join(problems)}): delete it or "
                         f"set DATASET.PARTIAL_LABEL_FILE to another file")
    return stored["labels"].astype(np.int8)


def load_or_create(path: Path, image_set: ImageSet, proportion: float, seed: int) -> np.ndarray:
    """Partial labels of ``image_set``: reused from ``path`` when it exists, else masked and saved there."""
    if path.is_file():
        labels = load(path, image_set.paths, image_set.classnames, proportion, seed)
        log.info("partial labels reused from %s (proportion %.2f, seed %d)", path, proportion, seed)
        return labels
    labels = mask_labels(to_partial(image_set.targets), proportion, seed)
    save(path, labels, image_set.paths, image_set.classnames, proportion, seed)
    n_known = int((labels != 0).sum())
    log.info("partial labels: %d of %d entries known (proportion %.2f, seed %d), saved to %s",
             n_known, labels.size, proportion, seed, path)
    return labels
