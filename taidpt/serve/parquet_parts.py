"""Parquet output of an inference job: a folder of part files, one per shard of the sorted inputs.

Inputs are sorted and cut into shards of a fixed size; shard ``i`` is written as
``part-<i:06d>.parquet`` under a temporary name and renamed, so a part is there whole or not at all,
and a rerun skips the shards whose part exists. Every part carries the job's description (class
list, model hash, decision rule, thresholds) in its schema metadata; a rerun with another
description is refused. The local engine and the Ray engine both write through here. See
docs/deployment.md, "Inference at scale".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from taidpt.utils.pathtext import escape_path

PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
META_KEY = b"taidpt.job"  # schema metadata key: the job description, JSON
DEFAULT_SHARD_SIZE = 256


class ParquetOutputError(ValueError):
    """An output folder that cannot take this job's rows; the message is one line naming the folder."""


@dataclass(frozen=True)
class Shard:
    """A stable slice of the sorted inputs: shard ``index`` holds ``paths`` (sorted)."""

    index: int
    paths: tuple[str, ...]

    @property
    def part_name(self) -> str:
        return f"{PART_PREFIX}{self.index:06d}{PART_SUFFIX}"


def plan_shards(paths: Iterable[str], shard_size: int = DEFAULT_SHARD_SIZE) -> list[Shard]:
    """The inputs sorted (duplicates dropped) and cut into shards of ``shard_size``: the same inputs and
    size always give the same shards, whatever order the inputs were listed in."""
    if shard_size < 1:
        raise ParquetOutputError(f"the shard size must be >= 1, got {shard_size}")
    ordered = sorted(set(map(str, paths)))
    return [Shard(i // shard_size, tuple(ordered[i:i + shard_size])) for i in range(0, len(ordered), shard_size)]


def job_description(classnames: Sequence[str], model_sha256: str, decision: Mapping[str, Any],
                    shard_size: int) -> dict[str, Any]:
    """What a folder's rows depend on: the classes, the model, the decision rule (its thresholds
    included) and the sharding. Two runs may share a folder only when these are equal."""
    return {"classnames": list(classnames), "model_sha256": model_sha256, "decision": dict(decision),
            "shard_size": int(shard_size)}


def schema(description: Mapping[str, Any]) -> Any:
    """The Arrow schema of every part: one row per input, the job description in the metadata."""
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("scores", pa.list_(pa.float32())), ("labels", pa.list_(pa.string())),
                      ("confidence", pa.list_(pa.float32())), ("error", pa.string())],
                     metadata={META_KEY: json.dumps(dict(description), sort_keys=True).encode("utf-8")})


def rows_table(description: Mapping[str, Any], paths: Sequence[str], scores: np.ndarray | None,
               labels: Sequence[Sequence[str]] | None, confidence: np.ndarray | None,
               errors: Sequence[str | None]) -> Any:
    """A part's table. ``scores``/``confidence`` are ``[N, C]`` (NaN confidence = no threshold, stored as
    null); a row with an error has null scores, labels and confidence."""
    import pyarrow as pa

    def lists(matrix: np.ndarray | None, nan_is_null: bool) -> list[Any]:
        out: list[Any] = []
        for i, err in enumerate(errors):
            if err is not None or matrix is None:
                out.append(None)
                continue
            row = np.asarray(matrix[i], dtype=np.float32)
            out.append([None if nan_is_null and np.isnan(v) else float(v) for v in row])
        return out

    columns = {
        "path": list(paths),
        "scores": lists(scores, False),
        "labels": [None if err is not None or labels is None else list(labels[i]) for i, err in enumerate(errors)],
        "confidence": lists(confidence, True),
        "error": list(errors),
    }
    return pa.Table.from_pydict(columns, schema=schema(description))


def shard_table(description: Mapping[str, Any], decision: Any, paths: Sequence[str], scores: np.ndarray,
                errors: Sequence[str | None]) -> Any:
    """A part from merged scores ``[N, C]`` (any values on a row with an error) and errors, labelled and
    given confidences by ``decision`` (a :class:`taidpt.serve.decision.Decision`); paths and errors escaped
    as every output writes them. Both engines build their parts here."""
    scores = np.asarray(scores, dtype=np.float32)
    finite = np.nan_to_num(scores)
    return rows_table(description, [escape_path(p) for p in paths], scores, decision.labels(finite),
                      decision.confidence(finite), [None if e is None else escape_path(e) for e in errors])


def write_part(folder: Path, shard: Shard, table: Any) -> Path:
    """Write ``table`` as the shard's part: to a temporary name, fsynced, then renamed into place."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / shard.part_name
    tmp = folder / f".{shard.part_name}.{os.getpid()}.tmp"
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def finished_shards(folder: Path, description: Mapping[str, Any]) -> set[int]:
    """Indices of the shards whose part is in ``folder``; refuses a folder written for another job
    (other classes, model, rule or shard size), or holding files that are not parts, in one line."""
    import pyarrow.parquet as pq

    if not folder.exists():
        return set()
    if not folder.is_dir():
        raise ParquetOutputError(f"{folder}: exists and is not a folder; a .parquet output is a folder of parts")
    done: set[int] = set()
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name.startswith("."):
            continue  # temporary files of an interrupted write
        index = _part_index(name)
        if index is None:
            raise ParquetOutputError(f"{folder}: holds {name}, which is not a part of an inference job; "
                                     f"choose an empty or new folder")
        recorded = pq.read_schema(entry).metadata or {}
        theirs = json.loads(recorded.get(META_KEY, b"{}").decode("utf-8"))
        if theirs != json.loads(json.dumps(dict(description), sort_keys=True)):
            differs = sorted(k for k in set(theirs) | set(description) if theirs.get(k) != description.get(k))
            raise ParquetOutputError(f"{folder}: written by another job (its {', '.join(differs)} differ from "
                                     f"this run's); write to a new folder")
        done.add(index)
    return done


def sweep_temporary(folder: Path) -> int:
    """Remove the temporary part files an interrupted run left; returns how many."""
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if p.name.startswith(f".{PART_PREFIX}") and p.name.endswith(".tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def _part_index(name: str) -> int | None:
    if not (name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)):
        return None
    digits = name[len(PART_PREFIX):-len(PART_SUFFIX)]
    return int(digits) if digits.isdigit() else None


__all__ = ["DEFAULT_SHARD_SIZE", "META_KEY", "ParquetOutputError", "Shard", "finished_shards", "job_description",
           "plan_shards", "rows_table", "schema", "shard_table", "sweep_temporary", "write_part"]
