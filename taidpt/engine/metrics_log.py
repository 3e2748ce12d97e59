"""``RUN/metrics.jsonl``: one strict-JSON line per finished training epoch (loss, lr, held-out mAP, steps,
step time), appended by the main process, fsynced, after validation and before the epoch's checkpoints.
On resume the file is cut back to the resumed checkpoint's epoch, so every epoch is listed once and
agrees with the checkpoints; timings live here, never in ``results.json``. See docs/training.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from taidpt.utils.atomic import atomic_write_text
from taidpt.engine.tensorboard_log import EventWriter, open_event_writer

log = logging.getLogger("taidpt")

METRICS_FILE = "metrics.jsonl"


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


@dataclass
class EpochStats:
    """What the training loop measured in one epoch: the loss of every step, the LR, the seconds its steps took."""

    losses: list[float]
    lr: float
    step_seconds: float

    def record(self, epoch: int, val_map: float | None) -> dict[str, Any]:
        """The ``metrics.jsonl`` line of this epoch (``epoch`` 1-based) with its held-out mAP (or None)."""
        steps = len(self.losses)
        return {"epoch": int(epoch), "loss": _finite(math.fsum(self.losses) / steps) if steps else None,
                "lr": float(self.lr), "val_mAP": _finite(val_map), "steps": steps,
                "step_seconds": self.step_seconds / steps if steps else None}


def _records(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            records.append(record)
    return records


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a ``metrics.jsonl`` in file order; lines that are not one (a write cut off
    by a kill) are skipped. A missing file has none."""
    try:
        return _records(Path(path).read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return []


def keep_epochs_upto(path: str | Path, last_epoch: int) -> int:
    """Rewrite ``path`` (atomically) with one record per epoch ``<= last_epoch`` (the latest line of an
    epoch wins), dropping the rest and any cut-off line; returns the number of lines dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    kept = {r["epoch"]: r for r in _records(text) if r["epoch"] <= last_epoch}
    whole_lines = text == "" or text.endswith("\n")  # else the next append would join a cut-off line
    if whole_lines and len(kept) == len(lines) and list(kept) == sorted(kept):
        return 0
    atomic_write_text(path, "".join(json.dumps(kept[e], allow_nan=False) + "\n" for e in sorted(kept)))
    return len(lines) - len(kept)


def append_line(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line and push it to disk (flush + fsync): a finished epoch survives a crash."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(dict(record), allow_nan=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


class TrainingLog:
    """Per-epoch metrics of one training run: ``metrics.jsonl``, and TensorBoard events when available.

    A log without a folder (:meth:`disabled`) writes nothing: the non-main processes of a
    distributed run, and runs that do not train, hold one.
    """

    def __init__(self, run_dir: str | Path | None, events: EventWriter | None = None) -> None:
        self.path = Path(run_dir) / METRICS_FILE if run_dir is not None else None
        self.events = events

    @classmethod
    def disabled(cls) -> "TrainingLog":
        """A log that writes nothing."""
        return cls(None)

    @classmethod
    def open(cls, run_dir: str | Path, resumed_epoch: int) -> "TrainingLog":
        """The log of a run in ``run_dir`` that (re)starts after epoch ``resumed_epoch`` (0: from scratch);
        lines of later epochs, left by an attempt killed before its checkpoint, are dropped first."""
        run_dir = Path(run_dir)
        dropped = keep_epochs_upto(run_dir / METRICS_FILE, resumed_epoch)
        if dropped:
            log.info("%s: dropped %d line(s) after epoch %d (written after the last checkpoint)", METRICS_FILE,
                     dropped, resumed_epoch)
        events = open_event_writer(run_dir, resumed_epoch)
        if events is None:
            log.info("tensorboard is not installed: TensorBoard events skipped (%s has the per-epoch numbers)",
                     METRICS_FILE)
        return cls(run_dir, events)

    def epoch_done(self, record: Mapping[str, Any]) -> None:
        """Append a finished epoch's record (:meth:`EpochStats.record`) and its TensorBoard scalars."""
        if self.path is None:
            return
        append_line(self.path, record)
        if self.events is not None:
            self.events.write({"train/loss": record["loss"], "train/lr": record["lr"], "val/mAP": record["val_mAP"]},
                              record["epoch"])

    def test_done(self, mean_aps: Mapping[str, float | None], epoch: int) -> None:
        """TensorBoard scalars of the test mAPs (``{"global", "local", "merged"}``), under Dassl's tags."""
        if self.events is not None:
            self.events.write({"test/mAP": mean_aps.get("merged"), "test/mAP_global": mean_aps.get("global"),
                               "test/mAP_local": mean_aps.get("local")}, epoch)

    def close(self) -> None:
        """Close the event file (idempotent); ``metrics.jsonl`` is never held open."""
        if self.events is not None:
            self.events.close()
            self.events = None


__all__ = ["METRICS_FILE", "EpochStats", "TrainingLog", "append_line", "keep_epochs_upto", "read_metrics"]
