"""Readers for the multi-label test sets, one module per format, and the name -> reader table.

VOC2007 (:mod:`~taidpt.images.readers.voc`), MS-COCO 2014 and any COCO-format json
(:mod:`~taidpt.images.readers.coco`), NUS-WIDE (:mod:`~taidpt.images.readers.nuswide`) and user
CSV files (:mod:`~taidpt.images.readers.csv`). Every reader returns an
:class:`~taidpt.images.readers.common.ImageSet`. A missing data root raises FileNotFoundError
naming the expected path; a malformed annotation file raises ValueError naming ``path:line`` and
what was expected.

numpy only (no torch), so the ONNX evaluation can use these readers too.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from taidpt.images.readers.coco import read_coco2014, read_coco_format
from taidpt.images.readers.common import ImageSet
from taidpt.images.readers.csv import read_csv
from taidpt.images.readers.nuswide import read_nuswide
from taidpt.images.readers.voc import read_voc2007

__all__ = ["TESTSET_READERS", "read_testset"]

TESTSET_READERS: dict[str, Callable[..., ImageSet]] = {
    "voc2007": read_voc2007,
    "coco2014": read_coco2014,
    "nuswide": read_nuswide,
    "coco_format": read_coco_format,
    "csv": read_csv,
}


def read_testset(name: str, root: str | os.PathLike, **kwargs: Any) -> ImageSet:
    """Read a test set by reader name; ``root`` is the reader's first argument (the data root,
    or the json/CSV path for ``coco_format``/``csv``), ``kwargs`` its other arguments."""
    try:
        reader = TESTSET_READERS[name]
    except KeyError:
        raise ValueError(f"unknown test set {name!r}; expected one of {sorted(TESTSET_READERS)}") from None
    return reader(root, **kwargs)
