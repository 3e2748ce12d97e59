"""Exclusive folder locks: one writer per run folder (or cache folder) at a time.

Two processes writing one run folder would mix their files and lose one result without a word; with a
:class:`FolderLock` the second one stops at once with one line naming the holder. The lock is
``.taidpt.lock`` in the folder, held through ``filelock``, so the OS releases it when the holder dies and a
killed run leaves no stale lock; ``.taidpt.lock.owner`` (JSON: pid, host, since, command) only words the refusal.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

LOCK_NAME = ".taidpt.lock"
OWNER_NAME = ".taidpt.lock.owner"


class FolderBusyError(RuntimeError):
    """Another live process holds the folder's lock."""


def describe_holder(folder: str | os.PathLike) -> str:
    """``pid N on HOST since T (COMMAND)`` from the owner file, or a plain phrase when it is unreadable."""
    try:
        info = json.loads((Path(folder) / OWNER_NAME).read_text(encoding="utf-8"))
        text = f"pid {info['pid']} on {info['host']} since {info['since']}"
        return text + (f" ({info['command']})" if info.get("command") else "")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its owner file is not written yet)"


class FolderLock:
    """Hold ``folder``'s exclusive lock for the life of a ``with`` block (or :meth:`acquire`/:meth:`release`).

    ``what`` names the folder's role in the refusal (``"run folder"``, ``"caption-feature cache"``).
    ``timeout`` is how long to wait for a holder to finish: 0 (the default) refuses at once, which is
    right for run folders; a cache build may wait (``None`` waits for ever).
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run folder", timeout: float | None = 0.0) -> None:
        self.folder = Path(folder)
        self.what = what
        self.timeout = timeout
        self._lock = FileLock(str(self.folder / LOCK_NAME), thread_local=False)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> "FolderLock":
        """Take the lock or raise :class:`FolderBusyError` naming the holder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=-1 if self.timeout is None else self.timeout)
        except Timeout:
            raise FolderBusyError(f"{self.folder}: this {self.what} is in use by {describe_holder(self.folder)}; "
                                  f"wait for it to finish or choose another folder") from None
        if self._lock.lock_counter == 1:
            self._write_owner()
        return self

    def release(self) -> None:
        """Give the lock back (the owner file is removed first, while still held)."""
        if self._lock.is_locked and self._lock.lock_counter == 1:
            try:
                (self.folder / OWNER_NAME).unlink()
            except OSError:
                pass
        self._lock.release()

    def _write_owner(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200] if sys.argv else ""}
        tmp = self.folder / f"{OWNER_NAME}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / OWNER_NAME)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


__all__ = ["FolderBusyError", "FolderLock", "LOCK_NAME", "OWNER_NAME", "describe_holder"]
