"""What every test-set reader shares: the :class:`ImageSet` it returns and the file helpers.

:class:`ImageSet` holds image paths, int8 targets ``[N, C]`` (1 positive, 0 negative, -1
ignored), class names and the paths listed by the annotation but absent on disk (collected and
removed by :func:`finish_image_set` instead of raised, so a run with a few missing files still proceeds
and reports them). The helpers raise FileNotFoundError naming the expected path for a missing
data root or file, and read text files as UTF-8, reporting a byte that is not with its line and
byte offset.

numpy only (no torch), so the ONNX evaluation can use the readers too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["ImageSet"]

logger = logging.getLogger(__name__)

MAX_MISSING_SHOWN = 5


@dataclass
class ImageSet:
    """A multi-label image set.

    ``targets`` is int8 ``[N, C]`` (1 = positive, 0 = negative, -1 = ignored), row i belonging to
    ``paths[i]``. ``missing`` lists the paths the annotation names but that do not exist on disk;
    they are already removed from ``paths`` and ``targets``. ``csv_labels`` is the convention a
    CSV's values were read with (``voc``, ``binary`` or ``names``; see :func:`~taidpt.images.readers.csv.read_csv`).
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


def require_dir(path: str, what: str, hint: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: expected the directory {path}. {hint}")


def require_file(path: str, what: str, hint: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: expected the file {path}. {hint}")


def read_text(path: str) -> str:
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


def read_lines(path: str) -> list[tuple[int, str]]:
    """Non-empty stripped lines with their 1-based numbers; blank lines only allowed at the end
    (a blank line in the middle would shift a line-aligned label file)."""
    raw = read_text(path).splitlines()
    while raw and not raw[-1].strip():
        raw.pop()
    out = []
    for i, line in enumerate(raw, start=1):
        s = line.strip()
        if not s:
            raise ValueError(f"{path}:{i}: empty line; expected one entry per line")
        out.append((i, s))
    return out


def finish_image_set(
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
        shown = ", ".join(missing[:MAX_MISSING_SHOWN])
        more = f" (and {len(missing) - MAX_MISSING_SHOWN} more)" if len(missing) > MAX_MISSING_SHOWN else ""
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
