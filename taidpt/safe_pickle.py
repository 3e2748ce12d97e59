"""Reading pickles without running code from them.

``pickle.load`` calls whatever callables a file names, so a weights or id file can run code on the
reader's machine. Every pickle this project reads goes through this module:

- :func:`load_plain` reads pickles of plain data (ints, floats, strings, bytes, lists, tuples,
  dicts, sets, None, bools) and refuses any class or function reference.

Torch-free.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any


class UnsafePickleError(ValueError):
    """The pickle names a class or function that this reader does not allow."""


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, fh: io.BufferedIOBase, where: str) -> None:
        super().__init__(fh)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(f"{self.where}: refers to {module}.{name}; only plain data (numbers, strings, "
                                f"lists, dicts) is read from pickles here, never classes or functions")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.where}: uses persistent ids; expected a pickle of plain data")


def load_plain(source: bytes | str | os.PathLike, where: str | None = None) -> Any:
    """Unpickle plain data from ``source`` (the bytes, or a file path); ``where`` names it in errors.

    Raises :class:`UnsafePickleError` for any class or function reference and ``ValueError`` (with
    the file name) for a truncated or malformed pickle.
    """
    if isinstance(source, (bytes, bytearray)):
        data, where = bytes(source), where or "pickle data"
    else:
        where = where or str(source)
        data = Path(source).read_bytes()
    try:
        return _PlainUnpickler(io.BytesIO(data), where).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: not a readable pickle ({type(exc).__name__}: {exc})") from None


__all__ = ["UnsafePickleError", "load_plain"]
