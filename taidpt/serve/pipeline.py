"""The one decode-and-score pipeline of ``python -m export.infer``, for every output and size of job.

A reader thread pulls paths in batches and submits each batch to a pool of decoding threads
(:func:`taidpt.serve.predictor.load_image`, the model's preprocessing); at most ``prefetch`` decoded
batches wait for the model, so memory stays flat whatever the input size. Each scored batch goes, in
input order, to a sink's ``write(rows)``: a result log, a Parquet shard writer or a list.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

from taidpt.images.preprocess import PreprocessConfig
from taidpt.serve.decision import Decision
from taidpt.serve.predictor import load_image
from taidpt.serve.result_log import DoneSet, Row
from taidpt.serve.runtime import Runner
from taidpt.utils.pathtext import escape_path


class Sink(Protocol):
    """Where scored rows go, one batch at a time, in input order."""

    def write(self, rows: Sequence[Row]) -> None: ...


@dataclass
class RowList:
    """A sink that keeps every row (the one-document ``.json`` output)."""

    rows: list[Row] = field(default_factory=list)

    def write(self, rows: Sequence[Row]) -> None:
        self.rows.extend(rows)


@dataclass
class BatchStats:
    """What one run did; ``max_in_flight`` is the most paths read from the input but not yet written."""

    scored: int = 0
    failed: int = 0
    batches: int = 0
    pulled: int = 0
    max_in_flight: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else float("nan")


def decode_batch(paths: list[str], cfg: PreprocessConfig, fast_decode: bool = False) -> list[np.ndarray | str]:
    """Each path preprocessed (float32 ``[3, H, W]``) or the reason it cannot be read."""
    return [load_image(p, cfg, fast_decode=fast_decode) for p in paths]


class Producer(threading.Thread):
    """Reads paths, submits one decode job per batch, and queues the futures (blocking when full)."""

    def __init__(self, paths: Iterable[str], batch_size: int, submit: Callable[[list[str]], Future],
                 pending: "queue.Queue[tuple[list[str], Future] | None]", stats: BatchStats) -> None:
        super().__init__(daemon=True, name="infer-reader")
        self.paths, self.batch_size, self.submit = paths, batch_size, submit
        self.pending, self.stats = pending, stats
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def _put(self, item: tuple[list[str], Future] | None) -> bool:
        while not self.stop.is_set():
            try:
                self.pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            it = iter(self.paths)
            while not self.stop.is_set():
                chunk = list(itertools.islice(it, self.batch_size))
                if not chunk:
                    break
                self.stats.pulled += len(chunk)
                if not self._put((chunk, self.submit(chunk))):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised by the consumer
            self.error = exc
        self._put(None)


def score_batch(model: Runner, chunk: Sequence[str], decoded: Sequence[np.ndarray | str],
                decision: Decision) -> list[Row]:
    """Rows of one batch in input order: scores and labels, or the read error."""
    good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
    rows = [Row(path=p, error=d if isinstance(d, str) else "") for p, d in zip(chunk, decoded)]
    if good:
        out = model.run(np.stack([decoded[i] for i in good]))
        labels = decision.labels(out["scores"])
        for j, i in enumerate(good):
            rows[i] = Row(chunk[i], out["scores"][j], labels[j], "", out["global_logits"][j], out["local_logits"][j],
                          decision)
    return rows


def _count(rows: Sequence[Row], stats: BatchStats, on_error: Callable[[str, str], None] | None) -> None:
    for row in rows:
        if row.error:
            stats.failed += 1
            if on_error is not None:
                on_error(row.path, row.error)
        else:
            stats.scored += 1


def run_batches(model: Runner, paths: Iterable[str], log: Sink, *, batch_size: int = 32, workers: int = 4,
                prefetch: int = 8, decision: Decision, progress: bool = True, total: int | None = None,
                max_batches: int | None = None, on_error: Callable[[str, str], None] | None = None,
                fast_decode: bool = False) -> BatchStats:
    """Decode, score and write every path of ``paths`` to ``log``; stops early after ``max_batches``.

    At most ``prefetch`` decoded batches wait in the queue; the reader blocks when it is full.
    """
    from tqdm import tqdm

    if batch_size < 1 or workers < 1 or prefetch < 1:
        raise ValueError("--batch-size, --workers and --prefetch must be >= 1")
    cfg = model.metadata.preprocess_config()
    stats = BatchStats()
    pending: queue.Queue[tuple[list[str], Future] | None] = queue.Queue(maxsize=prefetch)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool, \
            tqdm(total=total, unit="img", desc="scoring", disable=not progress, file=sys.stderr) as bar:
        producer = Producer(paths, batch_size, lambda chunk: pool.submit(decode_batch, chunk, cfg, fast_decode),
                            pending, stats)
        producer.start()
        try:
            while (item := pending.get()) is not None:
                chunk, future = item
                stats.max_in_flight = max(stats.max_in_flight, stats.pulled - stats.scored - stats.failed)
                rows = score_batch(model, chunk, future.result(), decision)
                log.write(rows)
                _count(rows, stats, on_error)
                stats.batches += 1
                bar.update(len(chunk))
                if max_batches is not None and stats.batches >= max_batches:
                    break
        finally:
            producer.stop.set()
            while not pending.empty():
                pending.get_nowait()
            producer.join()
            pool.shutdown(wait=True, cancel_futures=True)
    if producer.error is not None:
        raise producer.error
    stats.seconds = time.perf_counter() - t0
    return stats


def pending_paths(paths: Iterable[str], done: DoneSet) -> Iterator[str]:
    """``paths`` without those already in the output (matched by the escaped text the output holds)."""
    return (p for p in paths if escape_path(p) not in done)
