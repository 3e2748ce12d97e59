"""Readers of MS-COCO 2014 and of any COCO-format instances json (with its field validation).

The json is checked for the arrays, keys and types the reader uses before pycocotools indexes
it, so a bad file is one message naming ``array[index].key``. numpy only (no torch; pycocotools
is imported when a COCO file is read), so the ONNX evaluation can use it too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any, Callable

import numpy as np

from taidpt.images.readers.common import ImageSet, finish_image_set, read_text, require_dir, require_file

__all__ = ["read_coco2014", "read_coco_format"]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


# The keys of each COCO array this reader (and pycocotools' index) uses, with their type check.
_COCO_FIELDS: dict[str, tuple[tuple[str, Callable[[Any], bool], str], ...]] = {
    "images": (("id", _is_id, "an integer or string id"), ("file_name", _is_name, "a non-empty string")),
    "categories": (("id", _is_id, "an integer or string id"), ("name", _is_name, "a non-empty string")),
    "annotations": (("id", _is_id, "an integer or string id"), ("image_id", _is_id, "an integer or string id"),
                    ("category_id", _is_id, "an integer or string id")),
}


def _check_coco_fields(json_path: str, data: Any) -> None:
    """Check the parsed json has the arrays and per-entry keys and types we read, so a bad file
    is one message naming ``array[index].key`` rather than an error deep inside pycocotools."""
    if not isinstance(data, dict):
        raise ValueError(f"{json_path}: expected a JSON object with 'images' and 'categories'")
    data.setdefault("annotations", [])
    for key, fields in _COCO_FIELDS.items():
        if not isinstance(data.get(key), list):
            raise ValueError(f"{json_path}: expected a list under the key {key!r}")
        names = [f for f, _, _ in fields]
        for j, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                raise ValueError(f"{json_path}: {key}[{j}] must be an object with the keys {names}, "
                                 f"got {_short(entry)}")
            for f, ok, expected in fields:
                if f not in entry:
                    raise ValueError(f"{json_path}: {key}[{j}] must be an object with the keys {names}; "
                                     f"{f!r} is missing")
                if not ok(entry[f]):
                    raise ValueError(f"{json_path}: {key}[{j}].{f} must be {expected}, got {_short(entry[f])}")


def read_coco_format(
    json_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    name: str | None = None,
) -> ImageSet:
    """Multi-label targets from any COCO-format instances json, read through pycocotools.

    The class index is the order of the categories sorted by category id; images are ordered by
    image id; an image without annotation is an all-negative row; every annotation (crowd
    included) marks its category positive. Image files are ``image_dir/<file_name>``.
    """
    from pycocotools.coco import COCO  # imported lazily: only COCO users need it

    json_path = os.fspath(json_path)
    image_dir = os.fspath(image_dir)
    hint = "Pass a COCO-format instances json and the folder holding its images."
    require_file(json_path, "COCO annotation file", hint)
    require_dir(image_dir, "COCO image folder", hint)
    try:
        data = json.loads(read_text(json_path))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    _check_coco_fields(json_path, data)

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()

    cat_ids = sorted(coco.cats)
    if len(cat_ids) != len(data["categories"]):
        raise ValueError(f"{json_path}: duplicate category ids in 'categories'")
    col = {cid: c for c, cid in enumerate(cat_ids)}
    classnames = tuple(str(coco.cats[cid]["name"]) for cid in cat_ids)
    img_ids = sorted(coco.imgs)
    if len(img_ids) != len(data["images"]):
        raise ValueError(f"{json_path}: duplicate image ids in 'images'")
    row = {iid: i for i, iid in enumerate(img_ids)}

    targets = np.zeros((len(img_ids), len(cat_ids)), dtype=np.int8)
    for j, ann in enumerate(data["annotations"]):
        cid, iid = ann["category_id"], ann["image_id"]
        if cid not in col:
            raise ValueError(
                f"{json_path}: annotations[{j}] (id {ann.get('id')!r}) has category_id {cid!r}, "
                f"which is not among the categories {cat_ids}"
            )
        if iid not in row:
            raise ValueError(
                f"{json_path}: annotations[{j}] (id {ann.get('id')!r}) has image_id {iid!r}, "
                "which is not among the images"
            )
        targets[row[iid], col[cid]] = 1
    paths = [os.path.join(image_dir, coco.imgs[iid]["file_name"]) for iid in img_ids]
    if name is None:
        name = os.path.splitext(os.path.basename(json_path))[0]
    return finish_image_set(name, paths, targets, classnames)


def read_coco2014(root: str | os.PathLike, split: str = "val2014") -> ImageSet:
    """MS-COCO 2014: ``root/COCO/annotations/instances_<split>.json`` with images in
    ``root/COCO/<split>/``; see :func:`read_coco_format` for the conventions."""
    root = os.fspath(root)
    hint = "Set the dataset root to the folder that contains COCO/annotations and COCO/<split>."
    require_dir(root, "COCO data root", hint)
    coco_dir = os.path.join(root, "COCO")
    require_dir(coco_dir, "COCO folder", hint)
    json_path = os.path.join(coco_dir, "annotations", f"instances_{split}.json")
    require_file(json_path, "COCO annotation file", hint)
    require_dir(os.path.join(coco_dir, split), "COCO image folder", hint)
    return read_coco_format(json_path, os.path.join(coco_dir, split), name=f"coco2014_{split}")
