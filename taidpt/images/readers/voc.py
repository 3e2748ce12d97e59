"""Reader of PASCAL VOC2007 classification labels (and data written in the VOC layout).

numpy only (no torch), so the ONNX evaluation can use it too.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from taidpt.images.readers.common import MAX_MISSING_SHOWN, ImageSet, finish_image_set, read_lines, require_dir, require_file

__all__ = ["VOC_CLASSES", "read_voc2007"]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


def read_voc2007(
    root: str | os.PathLike,
    split: str = "test",
    difficult: str = "negative",
    classnames: Sequence[str] | None = None,
) -> ImageSet:
    """PASCAL VOC2007 classification labels.

    Layout: ``root/VOCdevkit/VOC2007/ImageSets/Main/<split>.txt`` (image ids),
    ``ImageSets/Main/<cls>_<split>.txt`` (lines ``<id> <1|-1|0>``, 0 = difficult) and
    ``JPEGImages/<id>.jpg``; classes in the standard VOC order, or ``classnames`` for data
    written in the VOC layout with another class list (the offline demo).
    ``difficult="negative"`` maps difficult to 0 (the reference's behaviour);
    ``difficult="ignore"`` maps it to -1 (the official VOC protocol).
    """
    if difficult not in ("negative", "ignore"):
        raise ValueError(f"difficult must be 'negative' or 'ignore', got {difficult!r}")
    root = os.fspath(root)
    hint = "Set the dataset root to the folder that contains VOCdevkit/VOC2007."
    require_dir(root, "VOC2007 data root", hint)
    voc = os.path.join(root, "VOCdevkit", "VOC2007")
    require_dir(voc, "VOC2007 folder", hint)
    main = os.path.join(voc, "ImageSets", "Main")
    split_file = os.path.join(main, f"{split}.txt")
    require_file(split_file, f"VOC2007 split list '{split}'", hint)

    ids: list[str] = []
    seen: set[str] = set()
    for lineno, line in read_lines(split_file):
        parts = line.split()
        if len(parts) != 1:
            raise ValueError(f"{split_file}:{lineno}: expected one image id per line, got {line!r}")
        if parts[0] in seen:
            raise ValueError(f"{split_file}:{lineno}: duplicate image id {parts[0]!r}")
        seen.add(parts[0])
        ids.append(parts[0])
    row = {img_id: i for i, img_id in enumerate(ids)}

    difficult_value = 0 if difficult == "negative" else -1
    value_map = {1: 1, -1: 0, 0: difficult_value}
    classes = tuple(classnames) if classnames else VOC_CLASSES
    targets = np.zeros((len(ids), len(classes)), dtype=np.int8)
    for c, cls in enumerate(classes):
        label_file = os.path.join(main, f"{cls}_{split}.txt")
        require_file(label_file, f"VOC2007 label file for class '{cls}'", hint)
        filled = np.zeros(len(ids), dtype=bool)
        lines = read_lines(label_file)
        for lineno, line in lines:
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise ValueError
                img_id, value = parts[0], int(parts[1])
                if value not in value_map:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"{label_file}:{lineno}: expected '<image id> <1|-1|0>', got {line!r}"
                ) from None
            if img_id not in row:
                raise ValueError(
                    f"{label_file}:{lineno}: image id {img_id!r} is not in {split_file}; "
                    "the label file and the split list disagree"
                )
            i = row[img_id]
            if filled[i]:
                raise ValueError(f"{label_file}:{lineno}: duplicate image id {img_id!r}")
            filled[i] = True
            targets[i, c] = value_map[value]
        if not filled.all():
            absent = [ids[i] for i in np.flatnonzero(~filled)[:MAX_MISSING_SHOWN]]
            raise ValueError(
                f"{label_file}: has {int(filled.sum())} labelled ids but {split_file} lists "
                f"{len(ids)}; missing ids include {absent}"
            )
    paths = [os.path.join(voc, "JPEGImages", f"{img_id}.jpg") for img_id in ids]
    return finish_image_set(f"voc2007_{split}", paths, targets, classes)
