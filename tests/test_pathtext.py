"""taidpt.utils.pathtext: file names as printable text that maps back to the same file."""

from __future__ import annotations

import os
import random

import pytest

from taidpt.utils.pathtext import escape_path, unescape_path


@pytest.mark.parametrize("raw, text", [
    ("photos/dog.jpg", "photos/dog.jpg"),
    ("café/ü.png", "café/ü.png"),  # valid UTF-8 is written as it is
    (os.fsdecode(b"caf\xe9.jpg"), "caf\\xe9.jpg"),  # a latin-1 byte
    (b"caf\xe9.jpg", "caf\\xe9.jpg"),
    ("C:\\data\\img.jpg", "C:\\data\\img.jpg"),  # Windows folders keep their backslashes
    ("C:\\xab\\u1234", "C:\\x5cxab\\x5cu1234"),  # only a backslash that reads as an escape is escaped
    ("\ud800.jpg", "\\ud800.jpg"),  # a lone surrogate from a Windows name
])
def test_escape_examples(raw, text):
    assert escape_path(raw) == text
    assert unescape_path(text) == os.fsdecode(raw)


def test_round_trip_of_tricky_names():
    rng = random.Random(0)
    pieces = ["\\", "x", "u", "e", "9", "A", "g", "é", "/", os.fsdecode(b"\xe9"), os.fsdecode(b"\x80"), "\udbff"]
    for _ in range(20000):
        name = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        text = escape_path(name)
        text.encode("utf-8")  # writable to any UTF-8 file
        assert unescape_path(text) == name, (name, text)
