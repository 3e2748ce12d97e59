"""Reader of user datasets as CSV: class names per image, or one column per class.

Per-class columns hold 1, 0 or -1; what 0 and -1 mean is the label convention (``voc``,
``binary``, or ``auto``: ``voc`` when the file has a -1 anywhere), recorded in the ImageSet's
``csv_labels``. numpy only (no torch), so the ONNX evaluation can use it too.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from typing import Sequence

import numpy as np

from taidpt.images.readers.common import ImageSet, finish_image_set, read_text, require_dir, require_file

__all__ = ["CSV_LABEL_CONVENTIONS", "read_csv"]

logger = logging.getLogger(__name__)


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
    require_file(path, "CSV annotation file", "Pass the path of a CSV with a 'path,...' header.")
    base = os.fspath(image_root) if image_root is not None else os.path.dirname(os.path.abspath(path))
    if image_root is not None:
        require_dir(base, "CSV image root", "Pass the folder the relative image paths start from.")
    given = None if classnames is None else [str(c).strip() for c in classnames]
    if given is not None and len(set(given)) != len(given):
        raise ValueError(f"classnames contain duplicates: {given}")

    reader = csv.reader(io.StringIO(read_text(path), newline=""))
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
    return finish_image_set(name, paths, targets, classes, csv_labels=convention)


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
