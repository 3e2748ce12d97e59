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

from taidpt.serve.decision import Decision
from taidpt.serve.parquet_parts import Shard, shard_table, write_part
from taidpt.serve.result_log import Row


class ShardWriter:
    """A pipeline sink: rows arrive in the order of ``shards``' paths; each shard's part is written
    when its last row arrives."""

    def __init__(self, folder: Path, shards: Sequence[Shard], description: Mapping[str, Any],
                 decision: Decision) -> None:
        self.folder, self.description, self.decision = folder, description, decision
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
            scores = np.stack([np.full(len(self.decision.classnames), np.nan, np.float32) if r.scores is None
                               else np.asarray(r.scores, np.float32) for r in mine])
            errors = [None if r.scores is not None else r.error for r in mine]
            write_part(self.folder, shard, shard_table(self.description, self.decision, shard.paths, scores, errors))
            self.parts_written += 1


def shard_paths(shards: Sequence[Shard]) -> list[str]:
    """The paths of ``shards``, in shard order: what the pipeline scores."""
    return [p for shard in shards for p in shard.paths]
