"""Which images an inference job scores: a folder (walked recursively), a list file or a glob.

:func:`collect_images` lists them (sorted) for a small job; :func:`image_source` streams them, one
directory entry or list line at a time, for a job of any size. List files are UTF-8, one path per line,
relative to the list's folder; ``\\xNN`` escapes name file-name bytes that are not UTF-8.
"""

from __future__ import annotations

import codecs
import glob
import itertools
import os
from pathlib import Path
from typing import Iterator

from taidpt.utils.pathtext import escape_path, unescape_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LIST_EXTENSIONS = (".txt", ".lst", ".list")
NO_MATCH = "not a folder, a list file (.txt) or a glob that matches any file"


class InputError(ValueError):
    """The --images argument names nothing usable; the message is one line."""


def list_lines(list_file: Path) -> Iterator[str]:
    """The lines of a UTF-8 list file (a leading byte-order mark dropped); a byte that is not UTF-8
    raises :class:`InputError` naming the file, line and byte."""
    with open(list_file, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{escape_path(list_file)} line {number}, byte {exc.start + 1} "
                                 f"(0x{raw[exc.start]:02x}): not UTF-8; save the list as UTF-8 "
                                 f"(a file-name byte that is not UTF-8 may be written \\xNN)") from None


def read_list(list_file: Path) -> Iterator[str]:
    """Paths of a list file, one per line (blank lines and ``#`` comments skipped), relative to its folder."""
    for line in list_lines(list_file):
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(os.path.expanduser(unescape_path(line)))
            yield str(p if p.is_absolute() else list_file.parent / p)


def _is_image(entry: os.DirEntry) -> bool:
    return entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS


def walk_images(folder: Path) -> Iterator[str]:
    """Image files under ``folder`` (recursive, image extensions) in sorted path order, one folder's
    entries in memory per level."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from walk_images(Path(entry.path))
            elif _is_image(entry):
                yield entry.path
        except OSError:
            continue


def count_lines(path: Path) -> int:
    """Lines in a list file (an upper bound for the progress bar); reading them all first means a byte
    that is not UTF-8 stops the run before any image is scored (:class:`InputError`)."""
    return sum(1 for _ in list_lines(path))


def image_source(spec: str) -> tuple[Iterator[str], int | None]:
    """A lazy iterator over the images named by ``spec`` and, for a list file, its line count."""
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        return walk_images(path), None
    if path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
        return read_list(path), count_lines(path)
    if path.is_file():
        return iter([str(path)]), 1
    matches = glob.iglob(os.path.expanduser(spec), recursive=True)
    first = next(matches, None)
    if first is None:
        raise InputError(f"{spec}: {NO_MATCH}")
    return (m for m in itertools.chain([first], matches) if os.path.isfile(m)), None


def collect_images(spec: str) -> list[str]:
    """Image paths from a folder (recursive, sorted), a list file or a glob (sorted), as a list.

    Listed paths that do not exist are kept: they are reported as unreadable later, not dropped.
    """
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        found = list(walk_images(path))
        if not found:
            raise InputError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        return found
    if path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
        out = list(read_list(path))
        if not out:
            raise InputError(f"{path}: the list names no image")
        return out
    if path.is_file():
        return [str(path)]
    matches = sorted(m for m in glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(m))
    if not matches:
        raise InputError(f"{spec}: {NO_MATCH}")
    return matches
