"""Writing an export as one unit: every file staged in one folder, checked there, then moved into place.

:func:`publish_set` replaces the files one by one, ``M.onnx`` (which names the others) last; they share one
export id, so a set replaced only in part holds two ids and serving refuses it. A set that fails its checks
is kept as ``*.failed-parity`` (:func:`keep_failed`). An export holds its staging folder's lock while it
works, so :func:`sweep_staging` removes only the folders of killed exports. See docs/robustness.md,
"An export is one unit".
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from taidpt.utils.atomic import STALE_AFTER_S
from taidpt.utils.runlock import LOCK_NAME, FolderBusyError, FolderLock

STAGING_PREFIX = ".export-"
# The staging folders of this and earlier versions (.open-/.int8- were made beside the output before).
STAGING_NAME = re.compile(r"^\.(export|open|int8)-[a-z0-9_]{8}$")
FAILED_SUFFIX = ".failed-parity"

# Test hook: called with the destination after each os.replace of publish_set (a test kills the process there).
_after_replace: Callable[[Path], None] | None = None


@contextlib.contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A new staging folder beside ``out``, locked for the ``with`` block and removed after it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out.parent))
    lock = FolderLock(folder, what="export staging folder").acquire()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock.release()


def _is_stale(folder: Path, now: float) -> bool:
    """Whether no live export works in ``folder`` (see the module docstring)."""
    if not (folder / LOCK_NAME).is_file():
        return now - folder.stat().st_mtime >= STALE_AFTER_S
    lock = FolderLock(folder, what="export staging folder")
    try:
        lock.acquire()
    except FolderBusyError:
        return False
    lock.release()
    return True


def sweep_staging(folder: Path) -> list[Path]:
    """Remove the staging folders that killed exports left in ``folder``; returns those removed."""
    removed, now = [], time.time()
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        try:
            if STAGING_NAME.match(entry.name) and entry.is_dir() and not entry.is_symlink() and _is_stale(entry, now):
                shutil.rmtree(entry)
                removed.append(entry)
        except OSError:
            continue  # gone meanwhile, or not ours to remove: left to the next sweep
    return removed


def staged_parts(staged_out: Path, companions: dict[str, str]) -> list[Path]:
    """The files of the staged export in replacement order: the companions, then ``M.onnx``'s external
    weights (when it has them), ``M.onnx`` last."""
    names = [*companions.values(), staged_out.name + ".data", staged_out.name]
    return [staged_out.parent / n for n in names if (staged_out.parent / n).is_file()]


def _move_parts(staged_out: Path, out: Path, companions: dict[str, str], suffix: str) -> list[Path]:
    """os.replace every staged file to ``out``'s folder as ``<name><suffix>``, in :func:`staged_parts` order."""
    moved = []
    for part in staged_parts(staged_out, companions):
        target = out.parent / (part.name + suffix)
        os.replace(part, target)
        moved.append(target)
        if _after_replace is not None and not suffix:
            _after_replace(target)
    return moved


def publish_set(staged_out: Path, out: Path, companions: dict[str, str]) -> list[Path]:
    """Move every staged file to its place beside ``out`` (os.replace, one by one); returns the paths written."""
    return _move_parts(staged_out, out, companions, "")


def keep_failed(staged_out: Path, out: Path, companions: dict[str, str]) -> list[Path]:
    """Move the staged files beside ``out`` as ``*.failed-parity`` (never deployed by mistake); returns them."""
    return _move_parts(staged_out, out, companions, FAILED_SUFFIX)


__all__ = ["FAILED_SUFFIX", "STAGING_NAME", "STAGING_PREFIX", "keep_failed", "publish_set", "staged_parts",
           "staging_folder", "sweep_staging"]
