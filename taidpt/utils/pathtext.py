"""File names as printable, reversible text: the one escaping every output file uses for paths.

POSIX file names are bytes; Python hands out the bytes that are not UTF-8 as surrogate escapes, which no
UTF-8 file can hold. :func:`escape_path` writes such a byte as ``\\xNN`` (``caf\\xe9.jpg``), any other lone
surrogate as ``\\uNNNN``, and a backslash as ``\\x5c`` only where it would otherwise read as one of those
escapes; everything else, valid UTF-8 names and Windows backslashes included, is unchanged.
:func:`unescape_path` gives the original path back.
"""

from __future__ import annotations

import os
import re

_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})")
_NEEDS_ESCAPE = re.compile(r"[\ud800-\udfff]|\\(?=x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})")
_BYTE_ESCAPES = range(0xDC80, 0xDD00)


def _escape_one(match: re.Match) -> str:
    code = ord(match.group())
    if code in _BYTE_ESCAPES:
        return f"\\x{code - 0xDC00:02x}"
    if code == ord("\\"):
        return "\\x5c"
    return f"\\u{code:04x}"


def _unescape_one(match: re.Match) -> str:
    byte, unit = match.groups()
    if unit is not None:
        return chr(int(unit, 16))
    value = int(byte, 16)
    return chr(0xDC00 + value) if value >= 0x80 else chr(value)


def escape_path(path: str | bytes | os.PathLike) -> str:
    """``path`` as text any UTF-8 output can hold (see the module docstring); :func:`unescape_path` inverts it."""
    return _NEEDS_ESCAPE.sub(_escape_one, os.fsdecode(path))


def unescape_path(text: str) -> str:
    """The path (surrogate escapes included, ready for ``open``) that :func:`escape_path` wrote as ``text``."""
    return _ESCAPE.sub(_unescape_one, text)


__all__ = ["escape_path", "unescape_path"]
