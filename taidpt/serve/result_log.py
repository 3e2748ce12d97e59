"""Append-only result files (JSONL or CSV) that a batch-inference run can resume.

Rows are appended and flushed one batch at a time, so a killed run leaves at most one partial last line.
:meth:`ResultLog.read_done` cuts that line off and returns the paths already written, as 16-byte digests in
a sorted array (16 bytes per row, not the paths). Every row names ``model_sha256``, so a resume with another
model of the same classes is refused instead of mixing two models' rows. Formats: docs/deployment.md, section 5.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

from taidpt.serve import export_unit
from taidpt.serve.decision import Decision
from taidpt.utils.pathtext import escape_path

FORMATS = (".jsonl", ".csv")
MODEL_HASH = "model_sha256"
CONFIDENCE_PREFIX = "confidence:"
_CHUNK = 1 << 16


class ResultLogError(ValueError):
    """The output file cannot be resumed (other classes, not a result file); the message is one line."""


@dataclass
class Row:
    """One image's outcome: scores, labels and the rule that chose them, or the reason it could not be read."""

    path: str
    scores: np.ndarray | None = None  # [C] merged
    labels: Sequence[str] = ()
    error: str = ""
    global_logits: np.ndarray | None = None
    local_logits: np.ndarray | None = None
    decision: Decision | None = None

    def rule(self) -> Decision:
        """The decision rule of a scored row (its confidences and decision column come from it)."""
        if self.decision is None:
            raise ValueError(f"row {self.path!r} has scores but no decision rule")
        return self.decision


def digest(path: str) -> bytes:
    """16-byte digest of a path string (collisions are negligible at billions of rows)."""
    return hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=16).digest()


class DoneSet:
    """Paths already written, as sorted 16-byte digests; ``path in done`` is a binary search."""

    def __init__(self, digests: Iterable[bytes] = ()) -> None:
        chunks, buf = [], []
        for d in digests:
            buf.append(d)
            if len(buf) >= 1 << 20:
                chunks.append(np.array(buf, dtype="S16"))
                buf = []
        chunks.append(np.array(buf, dtype="S16"))
        self._sorted = np.sort(np.concatenate(chunks))

    def __len__(self) -> int:
        return int(self._sorted.shape[0])

    def __contains__(self, path: str) -> bool:
        key = np.array([digest(path)], dtype="S16")
        i = int(np.searchsorted(self._sorted, key)[0])
        return i < len(self._sorted) and self._sorted[i] == key[0]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (the model that wrote a result file); :class:`ResultLogError` if unreadable."""
    try:
        return export_unit.file_sha256(path)
    except OSError as exc:
        raise ResultLogError(f"{escape_path(path)}: cannot read it to hash it ({exc.strerror or exc})") from None


def _check_model(where: Path, number: int, recorded: str | None, expected: str) -> None:
    """Refuse a row written by another model than ``expected`` (or one that names none)."""
    if recorded == expected:
        return
    if not recorded:
        raise ResultLogError(f"{escape_path(where)} line {number} does not name the model that wrote it (an older "
                             f"version wrote it), so it cannot be resumed safely; use a new --output")
    raise ResultLogError(f"{escape_path(where)} was written by another model (sha256 {recorded[:12]}..., this one "
                         f"{expected[:12]}...); resuming would mix two models' rows: use a new --output")


def drop_partial_tail(path: Path) -> int:
    """Cut a last line that has no newline (a write interrupted mid-row); returns the bytes removed."""
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        end = size
        while end > 0:
            start = max(0, end - _CHUNK)
            fh.seek(start)
            block = fh.read(end - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        fh.truncate(keep)
        return size - keep


def csv_header(classnames: Sequence[str]) -> list[str]:
    """``path, <classes>, confidence:<class> ..., labels, decision, error``; refuses class names that clash
    with those columns."""
    header = ["path", *classnames, *(CONFIDENCE_PREFIX + c for c in classnames), "labels", "decision", "error",
              MODEL_HASH]
    clash = sorted({h for h in header if header.count(h) > 1})
    if clash:
        raise ResultLogError(f"class name(s) {clash} clash with the CSV's own columns; write JSON instead")
    return header


def _cell(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def csv_row(path: str, classnames: Sequence[str], rule: Decision | None = None, logits: np.ndarray | None = None,
            labels: Sequence[str] = (), error: str = "", model_sha256: str = "") -> list[str]:
    """One CSV row under :func:`csv_header`: a scored image's logits, confidences, labels and decision
    (``rule``), or an unreadable image's ``error`` with the other cells empty; then the model's sha256."""
    if rule is None or logits is None:
        return [escape_path(path), *([""] * (2 * len(classnames))), "", "", escape_path(error), model_sha256]
    fields = rule.row_fields(logits, labels)
    return [escape_path(path), *(_cell(v) for v in fields["scores"].values()),
            *(_cell(v) for v in fields["confidence"].values()), ";".join(labels), rule.text(), "", model_sha256]


def json_row(path: str, rule: Decision, logits: np.ndarray, labels: Sequence[str]) -> dict:
    """One scored image as JSON: ``path``, ``scores`` (logits), ``confidence`` and ``labels``."""
    return {"path": escape_path(path), **rule.row_fields(logits, labels)}


def _jsonl_paths(fh: IO[str], where: Path, classnames: Sequence[str], model_sha256: str) -> Iterator[str]:
    for number, line in enumerate(fh, 1):
        try:
            row = json.loads(line)
            path = row["path"]
        except (ValueError, KeyError, TypeError):
            raise ResultLogError(f"{where} line {number} is not a result row; use a new --output") from None
        scores = row.get("scores")
        if scores is not None and list(scores) != list(classnames):
            raise ResultLogError(f"{where} was written for other classes ({', '.join(list(scores)[:4])}, ...); "
                                 f"use a new --output")
        _check_model(where, number, row.get(MODEL_HASH), model_sha256)
        yield path


def _csv_paths(fh: IO[str], where: Path, classnames: Sequence[str], model_sha256: str) -> Iterator[str]:
    reader = csv.reader(fh)
    header = next(reader, None)
    if header != csv_header(classnames):
        raise ResultLogError(f"{where} has another header ({', '.join((header or [])[:4])}, ...): it was written for "
                             f"other classes or is not a result file; use a new --output")
    for number, row in enumerate(reader, 2):
        if row:
            _check_model(where, number, row[-1], model_sha256)
            yield row[0]


class ResultLog:
    """An open, append-mode result file; :meth:`write` appends and flushes one batch of rows, each naming
    ``model_sha256`` (the model file's, :func:`file_sha256`), which a resume must match."""

    def __init__(self, path: Path, classnames: Sequence[str], all_outputs: bool = False, *,
                 model_sha256: str = "") -> None:
        self.path, self.classnames, self.all_outputs = path, list(classnames), all_outputs
        self.model_sha256 = model_sha256
        self.format = path.suffix.lower()
        if self.format not in FORMATS:
            raise ResultLogError(f"--output {escape_path(path)}: expected a .jsonl or .csv file name")
        if self.format == ".csv":
            csv_header(self.classnames)
            if all_outputs:
                raise ResultLogError("--all-outputs needs a .jsonl output (the CSV holds the merged scores)")
        self._fh: IO[str] | None = None

    def read_done(self) -> tuple[DoneSet, int]:
        """Repair a partial last row, then the set of paths already written and the bytes dropped."""
        if not self.path.is_file():
            return DoneSet(), 0
        dropped = drop_partial_tail(self.path)
        reader = _csv_paths if self.format == ".csv" else _jsonl_paths
        with open(self.path, encoding="utf-8", newline="") as fh:
            if self.format == ".csv" and self.path.stat().st_size == 0:
                return DoneSet(), dropped
            try:
                return DoneSet(digest(p) for p in reader(fh, self.path, self.classnames, self.model_sha256)), dropped
            except UnicodeDecodeError:
                raise ResultLogError(f"{escape_path(self.path)} is not UTF-8 text, so not a result file; "
                                     f"use a new --output") from None

    def open(self) -> "ResultLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self._fh = open(self.path, "a", encoding="utf-8", newline="")
        if new and self.format == ".csv":
            self._write_text(self._csv_lines([csv_header(self.classnames)]))
        return self

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ResultLog":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, rows: Sequence[Row]) -> None:
        """Append ``rows`` as one write and flush it to the operating system."""
        if self.format == ".csv":
            text = self._csv_lines(self._csv_row(r) for r in rows)
        else:
            text = "".join(json.dumps(self._json_row(r), allow_nan=False) + "\n" for r in rows)
        self._write_text(text)

    def _write_text(self, text: str) -> None:
        if self._fh is None:
            raise RuntimeError("the result log is not open")
        self._fh.write(text)
        self._fh.flush()

    @staticmethod
    def _csv_lines(rows: Iterable[Sequence[str]]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue()

    def _csv_row(self, row: Row) -> list[str]:
        if row.scores is None:
            return csv_row(row.path, self.classnames, error=row.error, model_sha256=self.model_sha256)
        return csv_row(row.path, self.classnames, row.rule(), row.scores, row.labels, model_sha256=self.model_sha256)

    def _json_row(self, row: Row) -> dict:
        if row.scores is None:
            return {"path": escape_path(row.path), "error": escape_path(row.error), MODEL_HASH: self.model_sha256}
        rule = row.rule()
        out = {**json_row(row.path, rule, row.scores, row.labels), "decision": rule.tag()}
        if self.all_outputs:
            out["global_logits"] = self._named(row.global_logits)
            out["local_logits"] = self._named(row.local_logits)
        return {**out, MODEL_HASH: self.model_sha256}

    def _named(self, values: np.ndarray | None) -> dict[str, float]:
        return {c: float(v) for c, v in zip(self.classnames, values if values is not None else [])}
