"""Readers for the multi-label test sets: VOC2007, MS-COCO 2014 (any COCO-format json),
NUS-WIDE and user CSV files.

Every reader returns an :class:`ImageSet`: image paths, int8 targets ``[N, C]`` (1 positive,
0 negative, -1 ignored), class names and the paths listed by the annotation but absent on disk
(collected and removed instead of raised, so a run with a few missing files still proceeds and
reports them). A missing data root raises FileNotFoundError naming the expected path; a
malformed annotation file raises ValueError naming ``path:line`` and what was expected. Text
files are read as UTF-8; a byte that is not is reported with its line and byte offset.

numpy only (no torch), so the ONNX evaluation can use these readers too.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "CSV_LABEL_CONVENTIONS",
    "ImageSet",
    "TESTSET_READERS",
    "VOC_CLASSES",
    "read_coco2014",
    "read_coco_format",
    "read_csv",
    "read_nuswide",
    "read_testset",
    "read_voc2007",
]

logger = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

_MAX_MISSING_SHOWN = 5


@dataclass
class ImageSet:
    """A multi-label image set.

    ``targets`` is int8 ``[N, C]`` (1 = positive, 0 = negative, -1 = ignored), row i belonging to
    ``paths[i]``. ``missing`` lists the paths the annotation names but that do not exist on disk;
    they are already removed from ``paths`` and ``targets``. ``csv_labels`` is the convention a
    CSV's values were read with (``voc``, ``binary`` or ``names``; see :func:`read_csv`).
    """

    paths: list[str]
    targets: np.ndarray
    classnames: tuple[str, ...]
    name: str
    missing: list[str] = field(default_factory=list)
    csv_labels: str | None = None  # how a CSV's label values were read (see read_csv); None otherwise

    def __post_init__(self) -> None:
        self.targets = np.asarray(self.targets, dtype=np.int8)
        if self.targets.ndim != 2 or self.targets.shape != (len(self.paths), len(self.classnames)):
            raise ValueError(
                f"ImageSet {self.name!r}: targets shape {self.targets.shape} does not match "
                f"{len(self.paths)} paths x {len(self.classnames)} classes"
            )

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def result_fields(self) -> dict[str, Any]:
        """What a results file records about this set: the images listed but not on disk and,
        for a CSV, the label convention its values were read with."""
        fields: dict[str, Any] = {"missing_images": list(self.missing), "n_missing_images": len(self.missing)}
        if self.csv_labels is not None:
            fields["csv_labels"] = self.csv_labels
        return fields


# ---------------------------------------------------------------------------------------------
# helpers


def _require_dir(path: str, what: str, hint: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: expected the directory {path}. {hint}")


def _require_file(path: str, what: str, hint: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: expected the file {path}. {hint}")


def _read_text(path: str) -> str:
    """The file decoded as UTF-8 (a leading byte-order mark dropped); bytes that are not UTF-8
    are a ValueError naming the line and byte offset, so the user can find them."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    return text.removeprefix("\ufeff")


def _read_lines(path: str) -> list[tuple[int, str]]:
    """Non-empty stripped lines with their 1-based numbers; blank lines only allowed at the end
    (a blank line in the middle would shift a line-aligned label file)."""
    raw = _read_text(path).splitlines()
    while raw and not raw[-1].strip():
        raw.pop()
    out = []
    for i, line in enumerate(raw, start=1):
        s = line.strip()
        if not s:
            raise ValueError(f"{path}:{i}: empty line; expected one entry per line")
        out.append((i, s))
    return out


def _finish(
    name: str,
    paths: list[str],
    targets: np.ndarray,
    classnames: Sequence[str],
    csv_labels: str | None = None,
) -> ImageSet:
    """Move paths that do not exist on disk to ``missing`` and build the ImageSet."""
    exists = np.array([os.path.isfile(p) for p in paths], dtype=bool)
    missing = [p for p, e in zip(paths, exists) if not e]
    if missing:
        shown = ", ".join(missing[:_MAX_MISSING_SHOWN])
        more = f" (and {len(missing) - _MAX_MISSING_SHOWN} more)" if len(missing) > _MAX_MISSING_SHOWN else ""
        logger.warning(
            "%s: %d of %d images listed by the annotation are missing and skipped: %s%s",
            name, len(missing), len(paths), shown, more,
        )  # fmt: skip
    targets = np.asarray(targets, dtype=np.int8).reshape(len(paths), len(classnames))
    return ImageSet(
        paths=[p for p, e in zip(paths, exists) if e],
        targets=targets[exists],
        classnames=tuple(classnames),
        name=name,
        missing=missing,
        csv_labels=csv_labels,
    )


# ---------------------------------------------------------------------------------------------
# VOC2007


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
    _require_dir(root, "VOC2007 data root", hint)
    voc = os.path.join(root, "VOCdevkit", "VOC2007")
    _require_dir(voc, "VOC2007 folder", hint)
    main = os.path.join(voc, "ImageSets", "Main")
    split_file = os.path.join(main, f"{split}.txt")
    _require_file(split_file, f"VOC2007 split list '{split}'", hint)

    ids: list[str] = []
    seen: set[str] = set()
    for lineno, line in _read_lines(split_file):
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
        _require_file(label_file, f"VOC2007 label file for class '{cls}'", hint)
        filled = np.zeros(len(ids), dtype=bool)
        lines = _read_lines(label_file)
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
            absent = [ids[i] for i in np.flatnonzero(~filled)[:_MAX_MISSING_SHOWN]]
            raise ValueError(
                f"{label_file}: has {int(filled.sum())} labelled ids but {split_file} lists "
                f"{len(ids)}; missing ids include {absent}"
            )
    paths = [os.path.join(voc, "JPEGImages", f"{img_id}.jpg") for img_id in ids]
    return _finish(f"voc2007_{split}", paths, targets, classes)


# ---------------------------------------------------------------------------------------------
# COCO


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
    _require_file(json_path, "COCO annotation file", hint)
    _require_dir(image_dir, "COCO image folder", hint)
    try:
        data = json.loads(_read_text(json_path))
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
    return _finish(name, paths, targets, classnames)


def read_coco2014(root: str | os.PathLike, split: str = "val2014") -> ImageSet:
    """MS-COCO 2014: ``root/COCO/annotations/instances_<split>.json`` with images in
    ``root/COCO/<split>/``; see :func:`read_coco_format` for the conventions."""
    root = os.fspath(root)
    hint = "Set the dataset root to the folder that contains COCO/annotations and COCO/<split>."
    _require_dir(root, "COCO data root", hint)
    coco_dir = os.path.join(root, "COCO")
    _require_dir(coco_dir, "COCO folder", hint)
    json_path = os.path.join(coco_dir, "annotations", f"instances_{split}.json")
    _require_file(json_path, "COCO annotation file", hint)
    _require_dir(os.path.join(coco_dir, split), "COCO image folder", hint)
    return read_coco_format(json_path, os.path.join(coco_dir, split), name=f"coco2014_{split}")


# ---------------------------------------------------------------------------------------------
# NUS-WIDE


def read_nuswide(root: str | os.PathLike, split: str = "Test") -> ImageSet:
    """NUS-WIDE (81 concepts).

    Layout under ``root/NUSWIDE``: ``ImageList/<split>Imagelist.txt`` (Windows paths such as
    ``actor\\0001_2124494179.jpg``, mapped to ``Flickr/actor/0001_2124494179.jpg``),
    ``TrainTestLabels/Labels_<concept>_<split>.txt`` (one 0/1 per line, aligned with the image
    list) and ``Concepts81.txt`` (one concept per line, giving the class order).
    """
    root = os.fspath(root)
    hint = "Set the dataset root to the folder that contains NUSWIDE/ (ImageList, TrainTestLabels, Flickr, Concepts81.txt)."
    _require_dir(root, "NUS-WIDE data root", hint)
    base = os.path.join(root, "NUSWIDE")
    _require_dir(base, "NUS-WIDE folder", hint)
    concepts_file = os.path.join(base, "Concepts81.txt")
    _require_file(concepts_file, "NUS-WIDE concept list", hint)
    list_file = os.path.join(base, "ImageList", f"{split}Imagelist.txt")
    _require_file(list_file, f"NUS-WIDE image list '{split}'", hint)

    concepts: list[str] = []
    for lineno, line in _read_lines(concepts_file):
        if len(line.split()) != 1:
            raise ValueError(f"{concepts_file}:{lineno}: expected one concept name per line, got {line!r}")
        if line in concepts:
            raise ValueError(f"{concepts_file}:{lineno}: duplicate concept {line!r}")
        concepts.append(line)
    if not concepts:
        raise ValueError(f"{concepts_file}: no concept listed")

    flickr = os.path.join(base, "Flickr")
    paths = []
    for _, line in _read_lines(list_file):
        parts = [p for p in re.split(r"[\\/]+", line) if p]
        paths.append(os.path.join(flickr, *parts))

    targets = np.zeros((len(paths), len(concepts)), dtype=np.int8)
    for c, concept in enumerate(concepts):
        label_file = os.path.join(base, "TrainTestLabels", f"Labels_{concept}_{split}.txt")
        _require_file(label_file, f"NUS-WIDE label file for concept '{concept}'", hint)
        lines = _read_lines(label_file)
        if len(lines) != len(paths):
            raise ValueError(
                f"{label_file}: has {len(lines)} labels but {list_file} lists {len(paths)} images; "
                "expected one 0/1 label per image"
            )
        for i, (lineno, line) in enumerate(lines):
            if line not in ("0", "1"):
                raise ValueError(f"{label_file}:{lineno}: expected 0 or 1, got {line!r}")
            targets[i, c] = 1 if line == "1" else 0
    return _finish(f"nuswide_{split}", paths, targets, concepts)


# ---------------------------------------------------------------------------------------------
# CSV

CSV_LABEL_CONVENTIONS: tuple[str, ...] = ("auto", "voc", "binary")

_CsvRows = list[tuple[int, list[str]]]  # (line number, cells) of the non-blank rows

_CSV_CONVENTION_TEXT = {"voc": "voc (1 positive, -1 negative, 0 ignored)", "binary": "binary (1 positive, 0 negative)"}

# Per-class CSV value (-1, 0, 1), shifted by one, to the internal target (1 / 0 / -1 ignored);
# "binary" never meets a -1 (rejected before the mapping).
_CSV_TO_TARGETS: dict[str, np.ndarray] = {
    "voc": np.array([0, -1, 1], dtype=np.int8),
    "binary": np.array([-1, 0, 1], dtype=np.int8),
}


def read_csv(
    path: str | os.PathLike,
    classnames: Sequence[str] | None = None,
    image_root: str | os.PathLike | None = None,
    labels: str = "auto",
) -> ImageSet:
    """A user dataset as CSV, in one of two styles.

    * header ``path,labels``: ``labels`` holds class names separated by ``;`` or ``|`` (empty =
      no positive). Classes are ``classnames`` if given (an unknown name is an error), otherwise
      the sorted set of names found.
    * header ``path,<class1>,<class2>,...``: one column per class holding 1, 0 or -1. With
      ``classnames`` given, the columns must be exactly those classes; they are reordered to the
      given order. ``1`` is positive; what ``0`` and ``-1`` mean is ``labels``:

      - ``"voc"``: ``-1`` negative, ``0`` ignored (VOC's difficult; the partial-label ``unknown``);
      - ``"binary"``: ``0`` negative; a ``-1`` is an error;
      - ``"auto"`` (default): ``"voc"`` when the file has a ``-1`` anywhere, else ``"binary"``.

    Relative image paths resolve against ``image_root``, or the CSV's folder when it is None.
    The ImageSet's ``csv_labels`` records the convention used (``"names"`` for the first style).
    """
    if labels not in CSV_LABEL_CONVENTIONS:
        raise ValueError(f"CSV label convention (DATASET.CSV_LABELS) must be one of "
                         f"{', '.join(CSV_LABEL_CONVENTIONS)}; got {labels!r}")
    path = os.fspath(path)
    _require_file(path, "CSV annotation file", "Pass the path of a CSV with a 'path,...' header.")
    base = os.fspath(image_root) if image_root is not None else os.path.dirname(os.path.abspath(path))
    if image_root is not None:
        _require_dir(base, "CSV image root", "Pass the folder the relative image paths start from.")
    given = None if classnames is None else [str(c).strip() for c in classnames]
    if given is not None and len(set(given)) != len(given):
        raise ValueError(f"classnames contain duplicates: {given}")

    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    rows = [(reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
    if not rows:
        raise ValueError(f"{path}: empty file; expected a header 'path,labels' or 'path,<class1>,...'")
    header_line, header = rows[0]
    header = [h.strip() for h in header]
    if len(header) < 2 or header[0].lower() != "path":
        raise ValueError(
            f"{path}:{header_line}: expected a header 'path,labels' or 'path,<class1>,<class2>,...', got {header}"
        )
    body = rows[1:]

    if len(header) == 2 and header[1].lower() == "labels":
        raw_paths, targets, classes = _csv_names_style(path, body, given)
        convention = "names"
    else:
        raw_paths, values, classes = _csv_matrix_style(path, header_line, header, body, given)
        convention = _csv_convention(path, labels, values, [lineno for lineno, _ in body])
        logger.info("%s: per-class values read as %s", path, _CSV_CONVENTION_TEXT[convention])
        targets = _CSV_TO_TARGETS[convention][values + 1]
    paths = [p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p)) for p in raw_paths]
    name = os.path.splitext(os.path.basename(path))[0]
    return _finish(name, paths, targets, classes, csv_labels=convention)


def _csv_names_style(path: str, body: _CsvRows, given: list[str] | None) -> tuple[list[str], np.ndarray, list[str]]:
    """Image paths, 1/0 targets and classes of a ``path,labels`` CSV body."""
    paths: list[str] = []
    parsed: list[tuple[int, list[str]]] = []
    for lineno, r in body:
        if len(r) != 2 or not r[0].strip():
            raise ValueError(f"{path}:{lineno}: expected 2 columns 'path,labels', got {r}")
        paths.append(r[0].strip())
        parsed.append((lineno, [n.strip() for n in re.split(r"[;|]", r[1]) if n.strip()]))
    classes = given if given is not None else sorted({n for _, ns in parsed for n in ns})
    col = {c: j for j, c in enumerate(classes)}
    targets = np.zeros((len(paths), len(classes)), dtype=np.int8)
    for i, (lineno, names) in enumerate(parsed):
        for n in names:
            if n not in col:
                raise ValueError(f"{path}:{lineno}: unknown class name {n!r}; expected one of {classes}")
            targets[i, col[n]] = 1
    return paths, targets, classes


def _csv_matrix_style(path: str, header_line: int, header: list[str], body: _CsvRows,
                      given: list[str] | None) -> tuple[list[str], np.ndarray, list[str]]:
    """Image paths, the raw -1/0/1 values (columns in class order) and classes of a
    ``path,<class1>,...`` CSV body; what the values mean is decided by :func:`_csv_convention`."""
    columns = header[1:]
    if len(set(columns)) != len(columns):
        raise ValueError(f"{path}:{header_line}: duplicate class columns in the header {columns}")
    classes = columns
    if given is not None:
        unknown = [c for c in columns if c not in given]
        absent = [c for c in given if c not in columns]
        if unknown or absent:
            raise ValueError(f"{path}:{header_line}: header classes do not match classnames "
                             f"(unknown: {unknown}, absent: {absent})")
        classes = given
    order = [columns.index(c) for c in classes]
    paths: list[str] = []
    values = np.zeros((len(body), len(classes)), dtype=np.int8)
    for i, (lineno, r) in enumerate(body):
        if len(r) != len(header) or not r[0].strip():
            raise ValueError(f"{path}:{lineno}: expected {len(header)} columns (path + one per class), got {len(r)}")
        cells = [cell.strip() for cell in r[1:]]
        bad = [cell for cell in cells if cell not in ("1", "0", "-1")]
        if bad:
            raise ValueError(f"{path}:{lineno}: expected 1, 0 or -1 in every class column, got {bad[0]!r}")
        values[i] = [int(cells[j]) for j in order]
        paths.append(r[0].strip())
    return paths, values, classes


def _csv_convention(path: str, labels: str, values: np.ndarray, linenos: list[int]) -> str:
    """``voc`` or ``binary`` for the per-class values of a CSV (see :func:`read_csv`)."""
    has_minus = np.any(values == -1, axis=1)
    if labels == "binary" and has_minus.any():
        lineno = linenos[int(np.argmax(has_minus))]
        raise ValueError(f"{path}:{lineno}: -1 in a CSV read as binary labels (1 positive, 0 negative); "
                         "set DATASET.CSV_LABELS to voc (-1 negative, 0 ignored) or auto")
    if labels == "auto":
        return "voc" if has_minus.any() else "binary"
    return labels


# ---------------------------------------------------------------------------------------------
# registry

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
