"""Write generated images in the real PASCAL VOC2007 layout, and caption corpora as text files.

The demo's test images go through the same reader as the real VOC2007 test set, so the files follow the
devkit exactly (``JPEGImages``, ``ImageSets/Main/<split>.txt`` and ``<cls>_<split>.txt``). The class names
are the caller's: a reader must be given the same class list, since VOC readers default to the 20 VOC
categories.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from taidpt.captions.sources import write_text_file

__all__ = ["write_voc_dataset", "write_caption_file", "write_image_list"]

_JPEG_QUALITY = 95


def _check_classnames(classnames: Sequence[str]) -> list[str]:
    names = [str(c) for c in classnames]
    if not names:
        raise ValueError("classnames is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"classnames contain duplicates: {names}")
    for name in names:
        if not name or any(ch.isspace() for ch in name) or "/" in name or os.sep in name:
            raise ValueError(f"class name {name!r} cannot be part of a VOC file name "
                             "(<cls>_<split>.txt): no whitespace or path separators")
    return names


def write_voc_dataset(root: str | os.PathLike, images: Sequence[Image.Image] | np.ndarray,
                      labels: np.ndarray, classnames: Sequence[str], split: str = "test",
                      first_id: int = 1) -> Path:
    """Write ``images`` with multi-hot ``labels`` [N, C] as a VOC2007-style dataset under ``root``.

    ``images`` is a sequence of PIL images or a uint8 array [N, H, W, 3]. Image ids are
    six-digit numbers starting at ``first_id``. Labels are 1 (positive) or -1 (negative); a label
    of -1 in ``labels`` is kept as 0 ("difficult", ignored by the official protocol). Returns the
    ``VOCdevkit/VOC2007`` directory; the dataset root to give a reader is ``root``.
    """
    names = _check_classnames(classnames)
    if not split or any(ch.isspace() for ch in split) or "/" in split:
        raise ValueError(f"invalid split name {split!r}")
    labels = np.asarray(labels)
    n = len(images)
    if labels.ndim != 2 or labels.shape != (n, len(names)):
        raise ValueError(f"labels must have shape ({n}, {len(names)}) for {n} images and "
                         f"{len(names)} classes, got {labels.shape}")
    if not np.isin(labels, (-1, 0, 1)).all():
        raise ValueError("labels must hold 1 (positive), 0 (negative) or -1 (difficult)")

    voc = Path(root) / "VOCdevkit" / "VOC2007"
    jpeg_dir = voc / "JPEGImages"
    main_dir = voc / "ImageSets" / "Main"
    jpeg_dir.mkdir(parents=True, exist_ok=True)
    main_dir.mkdir(parents=True, exist_ok=True)

    ids = [f"{first_id + i:06d}" for i in range(n)]
    for img_id, image in zip(ids, images):
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        image.convert("RGB").save(jpeg_dir / f"{img_id}.jpg", quality=_JPEG_QUALITY)

    (main_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    # Our multi-hot 0 is VOC's -1 (negative); our -1 marks "difficult", VOC's 0.
    voc_values = np.where(labels == 1, 1, np.where(labels == 0, -1, 0))
    for c, name in enumerate(names):
        lines = "".join(f"{img_id} {int(v):>2d}\n" for img_id, v in zip(ids, voc_values[:, c]))
        (main_dir / f"{name}_{split}.txt").write_text(lines, encoding="utf-8")
    return voc


def write_caption_file(path: str | os.PathLike, captions: Iterable[str]) -> Path:
    """Write ``captions`` one per line (UTF-8), the plain-text caption corpus format
    (:func:`taidpt.captions.sources.write_text_file`; a caption holding a line break is an error)."""
    return write_text_file(path, captions)


def write_image_list(root: str | os.PathLike, split: str, out: str | os.PathLike, limit: int | None = None) -> Path:
    """A list file (one absolute path per line) of the JPEG images of ``split`` under the VOC layout at
    ``root``, in the split's order, the first ``limit`` of them (all when None); their labels are not read."""
    voc = Path(root).resolve() / "VOCdevkit" / "VOC2007"
    ids = (voc / "ImageSets" / "Main" / f"{split}.txt").read_text(encoding="utf-8").split()[:limit]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{voc / 'JPEGImages' / i}.jpg\n" for i in ids), encoding="utf-8")
    return out
