"""Inputs of a Ray inference job: listing them on the driver and reading one image in a Ray task.

A spec is a folder, a list file, a glob, or a Parquet/CSV table with a ``path`` column (or a single column),
on the local disk or on any filesystem pyarrow opens (``s3://``, ``gs://``, ``hdfs://``, ...). Local specs are
listed by :mod:`taidpt.serve.inputs`, as for the local engine; remote ones through ``pyarrow.fs``. Reading
goes through :func:`taidpt.serve.predictor.load_image`, so an image gives the local engine's array or error.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from taidpt.images.preprocess import PreprocessConfig
from taidpt.serve.inputs import IMAGE_EXTENSIONS, LIST_EXTENSIONS, InputError, collect_images
from taidpt.serve.predictor import load_image

TABLE_EXTENSIONS = (".parquet", ".csv")
PATH_COLUMN = "path"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB = re.compile(r"[*?\[]")


def is_uri(spec: str) -> bool:
    """Whether ``spec`` names a remote file (``scheme://...``) rather than a local path."""
    return bool(_URI.match(spec)) and not spec.startswith("file://")


def _local(spec: str) -> str:
    return spec[len("file://"):] if spec.startswith("file://") else spec


def _filesystem(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - an unknown scheme, missing credentials: one line
        raise InputError(f"{uri}: pyarrow cannot open this filesystem ({type(exc).__name__}: {exc})") from None


def _table_paths(spec: str) -> list[str]:
    """The ``path`` column (or the only column) of a Parquet or CSV file, as strings."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    fs, where = _filesystem(spec) if is_uri(spec) else (None, _local(spec))
    if spec.lower().endswith(".parquet"):
        table = pq.read_table(where, filesystem=fs)
    else:
        with (fs.open_input_stream(where) if fs else open(where, "rb")) as fh:
            table = pcsv.read_csv(fh)
    names = table.column_names
    column = PATH_COLUMN if PATH_COLUMN in names else (names[0] if len(names) == 1 else None)
    if column is None:
        raise InputError(f"{spec}: no '{PATH_COLUMN}' column among {names}; name the column of paths '{PATH_COLUMN}'")
    return [str(p) for p in table.column(column).to_pylist() if p]


def _remote_files(spec: str) -> list[str]:
    """Files named by a remote folder, list file, glob or single file, as ``scheme://`` URIs."""
    import pyarrow.fs as pafs

    scheme = spec.split("://", 1)[0] + "://"
    match = _GLOB.search(spec)
    base = spec[:match.start()].rsplit("/", 1)[0] if match else spec
    fs, root = _filesystem(base)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File and not match:
        if spec.lower().endswith(LIST_EXTENSIONS):
            with fs.open_input_stream(root) as fh:
                lines = fh.read().decode("utf-8-sig").splitlines()
            return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        return [spec]
    if info.type != pafs.FileType.Directory:
        raise InputError(f"{spec}: not a folder, a list file, a table of paths or a glob that matches any file")
    found = [f.path for f in fs.get_file_info(pafs.FileSelector(root, recursive=True)) if f.type == pafs.FileType.File]
    pattern = spec.split("://", 1)[1] if match else None
    return [scheme + p for p in found if (fnmatch.fnmatch(p, pattern) if pattern
                                          else p.lower().endswith(IMAGE_EXTENSIONS))]


def list_inputs(spec: str) -> list[str]:
    """Every image path ``spec`` names (unsorted duplicates allowed: the shard plan sorts them).

    Listed paths that do not exist are kept: they become rows with an error, as in the local engine."""
    if spec.lower().endswith(TABLE_EXTENSIONS):
        found = _table_paths(spec)
    elif is_uri(spec):
        found = _remote_files(spec)
    else:
        found = collect_images(_local(spec))
    if not found:
        raise InputError(f"{spec}: names no image")
    return found


def read_image(path: str, cfg: PreprocessConfig, fast_decode: bool = False) -> np.ndarray | str:
    """``load_image`` of a local path or URI: the preprocessed array, or the local engine's error message."""
    if not is_uri(path):
        return load_image(_local(path), cfg, fast_decode)
    try:
        fs, where = _filesystem(path)
        with fs.open_input_stream(where) as fh:
            data = fh.read()
    except InputError as exc:
        return str(exc).split(": ", 1)[-1]
    except OSError as exc:
        return f"cannot read it ({exc})"
    with tempfile.TemporaryDirectory(prefix="taidpt-read-") as tmp:
        local = Path(tmp) / ("image" + os.path.splitext(where)[1])
        local.write_bytes(data)
        out = load_image(str(local), cfg, fast_decode)
    return out.replace(str(local), path) if isinstance(out, str) else out


__all__ = ["PATH_COLUMN", "TABLE_EXTENSIONS", "is_uri", "list_inputs", "read_image"]
