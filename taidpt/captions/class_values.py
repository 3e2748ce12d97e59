"""Small per-class files a user writes: one number per class, or pairs of classes seen together.

``name, value`` per line (:func:`read_class_values`) gives the corpus generator its class frequencies and
label-free calibration its target rates; ``name, name[, weight]`` per line (:func:`read_class_pairs`) is
the generator's co-occurrence prior. Blank lines and lines starting with ``#`` are skipped; names are the
class names of the class list. A bad line raises ``ValueError`` naming ``file:line`` and what was expected.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from taidpt.captions.classes import ClassList

__all__ = ["read_class_pairs", "read_class_values"]


def _lines(path: str | Path) -> list[tuple[int, str]]:
    """``(line number, stripped text)`` of the lines that are neither blank nor comments."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8").lstrip("\ufeff")
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    out = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)]
    return [(n, line) for n, line in out if line and not line.startswith("#")]


def _class_index(name: str, classes: ClassList, where: str) -> int:
    try:
        return classes.names.index(name)
    except ValueError:
        shown = ", ".join(classes.names[:6]) + (", ..." if len(classes) > 6 else "")
        raise ValueError(f"{where}: unknown class {name!r}; expected a name of the class list ({shown})") from None


def _number(text: str, where: str, expected: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{where}: expected {expected}, got {text!r}")
    return value


def read_class_values(path: str | Path, classes: ClassList, *, what: str = "a number >= 0", low: float = 0.0,
                      high: float = math.inf, require_all: bool = True) -> np.ndarray:
    """Per-class values ``[C]`` (float64) from ``name, value`` lines; ``value`` in ``[low, high]``.

    A class may be listed once. Unlisted classes are an error with ``require_all``, else NaN.
    """
    values = np.full(len(classes), np.nan)
    seen: dict[int, int] = {}
    for lineno, line in _lines(path):
        where = f"{path}:{lineno}"
        name, sep, number = line.rpartition(",")
        if not sep or not name.strip():
            raise ValueError(f"{where}: expected 'class name, {what}', got {line!r}")
        idx = _class_index(name.strip(), classes, where)
        if idx in seen:
            raise ValueError(f"{where}: class {classes.names[idx]!r} already given on line {seen[idx]}")
        seen[idx] = lineno
        values[idx] = _number(number.strip(), where, what, low, high)
    if not seen:
        raise ValueError(f"{path}: no 'class name, {what}' line found")
    missing = [classes.names[i] for i in range(len(classes)) if i not in seen]
    if require_all and missing:
        raise ValueError(f"{path}: no value for class {', '.join(map(repr, missing[:4]))}"
                         f"{' and more' if len(missing) > 4 else ''}; every class needs a line 'class name, {what}'")
    return values


def read_class_pairs(path: str | Path, classes: ClassList) -> list[tuple[int, int, float]]:
    """``(i, j, weight)`` with ``i < j`` from ``name, name[, weight]`` lines (weight > 0, default 1)."""
    pairs: dict[tuple[int, int], float] = {}
    expected = "'class name, class name[, weight > 0]'"
    for lineno, line in _lines(path):
        where = f"{path}:{lineno}"
        parts = [p.strip() for p in line.split(",")]
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"{where}: expected {expected}, got {line!r}")
        i, j = (_class_index(p, classes, where) for p in parts[:2])
        if i == j:
            raise ValueError(f"{where}: a pair needs two different classes, got {parts[0]!r} twice")
        weight = _number(parts[2], where, "a weight > 0", 0.0, math.inf) if len(parts) == 3 else 1.0
        if weight <= 0:
            raise ValueError(f"{where}: expected a weight > 0, got {parts[2]!r}")
        key = (min(i, j), max(i, j))
        pairs[key] = pairs.get(key, 0.0) + weight
    if not pairs:
        raise ValueError(f"{path}: no pair found; expected {expected} per line")
    return [(i, j, w) for (i, j), w in pairs.items()]
