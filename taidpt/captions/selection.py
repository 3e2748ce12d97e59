"""Caption recipes: which captions of a COCO captions json a corpus is built from.

A :class:`CaptionSelection` says which captions are read: all of them (591,753 in train2017),
a fixed list of caption ids (the reference trains on a list of 118,287 ids, as many as
train2017 has images; :func:`~taidpt.captions.sources.read_caption_ids` reads it), or ``k``
captions per image drawn with a fixed seed. This module turns a selection into the rows of the
annotations (:class:`CocoCaptions`) that :func:`~taidpt.captions.sources.read_coco_captions`
reads; file reading itself lives in :mod:`taidpt.captions.sources`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taidpt.utils.seeding import caption_sample_rng

__all__ = ["CaptionSelection"]


@dataclass(frozen=True)
class CaptionSelection:
    """Which captions of a COCO captions file a corpus is built from (the caption recipe).

    - every caption (the default);
    - ``ids``: a fixed list of caption (annotation) ids, kept in the list's order, e.g. the
      reference's 118,287 ids read by :func:`~taidpt.captions.sources.read_caption_ids`; ``ids_file`` names it in
      messages and stats;
    - ``per_image``: that many captions of every image (all of them when it has fewer), drawn
      with ``seed``; ``per_image=1`` on train2017 gives 118,287 captions, the size of the
      reference's list. Blank captions are never drawn.
    """

    ids: tuple[int, ...] | None = None
    ids_file: str = ""
    per_image: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.per_image, bool) or not isinstance(self.per_image, (int, np.integer)) or self.per_image < 0:
            raise ValueError(f"captions per image must be 0 (every caption) or a positive integer, got {self.per_image!r}")
        if self.ids is not None and self.per_image:
            raise ValueError("give caption ids or a number of captions per image, not both")
        if self.ids is not None:
            object.__setattr__(self, "ids", tuple(int(i) for i in self.ids))

    @property
    def kind(self) -> str:
        """``"all"``, ``"caption_ids"`` or ``"per_image"``."""
        return "caption_ids" if self.ids is not None else "per_image" if self.per_image else "all"

    def settings(self) -> dict[str, Any]:
        """What the selected captions depend on (part of the corpus cache key); file names are not."""
        if self.ids is not None:
            return {"kind": self.kind, "ids": ids_key(self.ids)}
        if self.per_image:
            return {"kind": self.kind, "per_image": int(self.per_image), "seed": int(self.seed)}
        return {"kind": self.kind}

    def describe(self) -> str:
        """One phrase for logs and stats, e.g. ``"1 caption per image (seed 0)"``."""
        if self.ids is not None:
            return f"{len(self.ids)} caption ids from {self.ids_file or 'a list'}"
        if self.per_image:
            return f"{self.per_image} caption{'s' if self.per_image > 1 else ''} per image (seed {self.seed})"
        return "every caption"


def ids_key(ids: Iterable[int]) -> dict[str, Any]:
    """Count and sha256 of integer ids in the given order (cache keys of id lists and sets)."""
    ids = list(ids)
    digest = hashlib.sha256(",".join(map(str, ids)).encode("ascii")).hexdigest()
    return {"count": len(ids), "sha256": digest}


@dataclass
class CocoCaptions:
    """The annotations of a COCO captions json as parallel columns (captions stripped)."""

    ann_ids: np.ndarray  # int64, -1 where an annotation has no integer "id"
    image_ids: np.ndarray  # int64
    captions: list[str]


def _rows_of_ids(coco: CocoCaptions, ids: tuple[int, ...], ids_file: str, path: Path) -> np.ndarray:
    """Rows of caption ``ids`` in the list's order; an id missing from the file is an error."""
    row_of: dict[int, int] = {}
    for row, ann_id in enumerate(coco.ann_ids.tolist()):
        if row_of.setdefault(ann_id, row) != row:
            raise ValueError(f"{path}: caption id {ann_id} is used by more than one annotation")
    missing = [i for i in ids if i not in row_of]
    if missing:
        more = f" (and {len(missing) - 1} more of its {len(ids)} ids)" if len(missing) > 1 else ""
        raise ValueError(f"{ids_file or 'caption ids'}: caption id {missing[0]}{more} is not in {path}")
    return np.array([row_of[i] for i in ids], dtype=np.int64)


def _sample_per_image(image_ids: np.ndarray, ann_ids: np.ndarray, per_image: int, seed: int) -> np.ndarray:
    """Rows of ``per_image`` captions of every image (all of its captions when it has fewer), sorted.

    Every caption gets a random key from :func:`~taidpt.utils.seeding.caption_sample_rng` in the
    order (image id, caption id), and each image keeps its captions with the smallest keys: the draw
    depends on the seed and on the captions, not on their order in the file.
    """
    canon = np.lexsort((ann_ids, image_ids))
    keys = caption_sample_rng(seed).random(len(canon))
    ranked = canon[np.lexsort((keys, image_ids[canon]))]  # by image, then key
    images = image_ids[ranked]
    first = np.ones(len(images), dtype=bool)
    first[1:] = images[1:] != images[:-1]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(images)), 0))
    rank = np.arange(len(images)) - group_start
    return np.sort(ranked[rank < per_image])


def selected_rows(coco: CocoCaptions, selection: CaptionSelection, path: Path) -> np.ndarray:
    if selection.ids is not None:
        return _rows_of_ids(coco, selection.ids, selection.ids_file, path)
    if selection.per_image:
        rows = np.flatnonzero(np.array([bool(c) for c in coco.captions], dtype=bool))  # blank ones are never drawn
        return rows[_sample_per_image(coco.image_ids[rows], coco.ann_ids[rows], selection.per_image, selection.seed)]
    return np.arange(len(coco.captions))
