"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Each writer writes a temporary ``.<name>.XXXXXXXX.tmp`` in the target's folder, fsyncs it, renames it over
the target and fsyncs the folder; on an error the old target stays as it was, and the temporary file of a
writer killed outright is cleared later by :func:`remove_stale_temps`. The file gets the permissions a plain
``open()`` would give it (those of the file it replaces, or ``0o666`` less the umask), not ``mkstemp``'s
``0o600``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from taidpt.utils.pathtext import escape_path


def _read_umask() -> int:
    # os.umask can only be read by setting it: done once, at import, before any thread can create files.
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()
TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")  # what tempfile.mkstemp makes of our prefix
STALE_AFTER_S = 3600.0


class OutputPathError(ValueError):
    """An output file cannot be written where it was asked for; the message is one line."""


def _mode_for(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: the existing file's, else 0o666 less the umask."""
    try:
        st = path.stat()
    except OSError:
        return 0o666 & ~UMASK
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else 0o666 & ~UMASK


def _set_mode(fd: int, path: Path) -> None:
    """Give the temporary file ``path``'s future permissions; skipped where the filesystem refuses (or Windows)."""
    if hasattr(os, "fchmod"):
        with contextlib.suppress(OSError):
            os.fchmod(fd, _mode_for(path))


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Yield a temporary file next to ``path`` (``mode`` ``"wb"`` or ``"w"``, UTF-8); renamed over
    ``path`` when the block ends normally, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _set_mode(fd, path)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file (UTF-8) atomically."""
    with atomic_file(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write pretty, strict JSON (indent 2, no NaN, one final newline) atomically: the form of every
    report taidpt writes (results.json, ensemble.json, inference outputs)."""
    atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a binary file atomically."""
    with atomic_file(path) as fh:
        fh.write(data)


def atomic_savez(path: str | os.PathLike, **arrays: Any) -> None:
    """``numpy.savez`` to ``path`` atomically (plain arrays: readable with ``allow_pickle=False``)."""
    with atomic_file(path) as fh:
        np.savez(fh, **arrays)


def remove_stale_temps(folder: str | os.PathLike, *, locked: bool = False, max_age_s: float = STALE_AFTER_S,
                       target: str | None = None) -> list[Path]:
    """Remove the temporary files (``.<name>.XXXXXXXX.tmp``) that killed writers left in ``folder``.

    A temporary file may belong to a writer that is still running, so only these go: all of them
    when the caller holds the folder's lock (``locked=True``: no other writer can be at work in it),
    otherwise those not modified for ``max_age_s`` seconds. ``target`` limits the sweep to the
    temporary files of that one file name. Returns the files removed; files that vanish or cannot be
    removed meanwhile are left to the next sweep.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    now = time.time()
    removed: list[Path] = []
    for entry in entries:
        match = TEMP_NAME.match(entry.name)
        if match is None or (target is not None and match["target"] != target):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or (not locked and now - st.st_mtime < max_age_s):
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def check_writable(path: str | os.PathLike, *, append: bool = False) -> None:
    """Raise :class:`OutputPathError` unless a file can be written at ``path``: checked before long work.

    The nearest existing folder above ``path`` must be a writable folder (the missing ones are made
    when writing); ``path`` must not be a folder, and with ``append`` an existing file must be writable.
    """
    path = Path(path)
    shown = escape_path(path)
    if path.is_dir():
        raise OutputPathError(f"{shown}: is a folder; expected a file name")
    if append and path.is_file() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{shown}: the file is not writable")
    above = next((p for p in (path.parent, *path.parent.parents) if os.path.lexists(p)), Path("."))
    if not above.is_dir():
        raise OutputPathError(f"{shown}: cannot write here, {escape_path(above)} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise OutputPathError(f"{shown}: cannot write here, folder {escape_path(above)} is not writable")


def probe_writable(path: str | os.PathLike, *, append: bool = False) -> None:
    """:func:`check_writable`, then really try: create (and remove) a temporary file named as
    :func:`atomic_file` names it in the nearest existing folder above ``path`` (or, with ``append`` and
    an existing file, open that file for appending, writing nothing). Catches what permission bits do
    not show (a read-only mount, /proc or /sys, a quota) before long work; :class:`OutputPathError`."""
    check_writable(path, append=append)
    path = Path(path)
    folder = next((p for p in (path.parent, *path.parent.parents) if p.is_dir()), Path("."))
    appending = append and path.is_file()
    try:
        if appending:
            with open(path, "ab"):
                return
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        what = "cannot append to it" if appending else f"cannot create a file in {escape_path(folder)}"
        raise OutputPathError(f"{escape_path(path)}: {what} ({exc.strerror or exc})") from None


__all__ = ["OutputPathError", "STALE_AFTER_S", "UMASK", "atomic_file", "atomic_savez", "atomic_write_bytes",
           "atomic_write_text", "check_writable", "fsync_folder", "probe_writable", "remove_stale_temps"]
