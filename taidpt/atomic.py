"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Every writer goes to a temporary file in the target's folder, which is flushed, fsynced and then
renamed over the target (``os.replace`` is atomic on one filesystem); on an error the temporary
file is removed and the old target, if any, is left as it was. Torch-free, so the deployment
tools (``export/``) use it too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Yield a temporary file next to ``path`` (``mode`` ``"wb"`` or ``"w"``, UTF-8); renamed over
    ``path`` when the block ends normally, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file (UTF-8) atomically."""
    with atomic_file(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a binary file atomically."""
    with atomic_file(path) as fh:
        fh.write(data)


def atomic_savez(path: str | os.PathLike, **arrays: Any) -> None:
    """``numpy.savez`` to ``path`` atomically (plain arrays: readable with ``allow_pickle=False``)."""
    with atomic_file(path) as fh:
        np.savez(fh, **arrays)
