"""The local engine's ``.parquet`` output: the pipeline's rows cut into the planned shards' part files.

The inputs are planned into stable shards (:func:`taidpt.serve.parquet_parts.plan_shards`); the shards
whose part is already in the folder are skipped, the others are scored in order and each is written
whole, under a temporary name then renamed, as soon as its last row is scored. A killed run loses at
most the shard in progress; the same command redoes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from taidpt.serve.parquet_parts import Shard, rows_table, write_part
from taidpt.serve.result_log import Row
from taidpt.utils.pathtext import escape_path


def part_table(description: Mapping[str, Any], rows: Sequence[Row]) -> Any:
    """One part's Arrow table from the pipeline's rows (paths escaped as every output writes them)."""
    n_classes = len(description["classnames"])
    scores = np.full((len(rows), n_classes), np.nan, dtype=np.float32)
    confidence = np.full((len(rows), n_classes), np.nan, dtype=np.float64)
    labels: list[Sequence[str]] = []
    for i, row in enumerate(rows):
        if row.scores is not None:
            scores[i] = row.scores
            confidence[i] = row.rule().confidence(np.asarray(row.scores)[None, :])[0]
        labels.append(list(row.labels))
    errors = [None if row.scores is not None else escape_path(row.error) for row in rows]
    return rows_table(description, [escape_path(r.path) for r in rows], scores, labels, confidence, errors)


class ShardWriter:
    """A pipeline sink: rows arrive in the order of ``shards``' paths; each shard's part is written
    when its last row arrives."""

    def __init__(self, folder: Path, shards: Sequence[Shard], description: Mapping[str, Any]) -> None:
        self.folder, self.description = folder, description
        self._shards = list(shards)
        self._rows: list[Row] = []
        self.parts_written = 0

    def write(self, rows: Sequence[Row]) -> None:
        self._rows.extend(rows)
        while self._shards and len(self._rows) >= len(self._shards[0].paths):
            shard = self._shards.pop(0)
            mine, self._rows = self._rows[:len(shard.paths)], self._rows[len(shard.paths):]
            if [r.path for r in mine] != list(shard.paths):
                raise RuntimeError(f"shard {shard.index}: rows out of order (a pipeline bug)")
            write_part(self.folder, shard, part_table(self.description, mine))
            self.parts_written += 1


def shard_paths(shards: Sequence[Shard]) -> list[str]:
    """The paths of ``shards``, in shard order: what the pipeline scores."""
    return [p for shard in shards for p in shard.paths]
