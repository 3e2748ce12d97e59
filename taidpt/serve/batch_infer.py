"""Label millions of images with an exported model (``python -m export.batch_infer``): streaming, resumable.

Paths are streamed, never listed in memory; decoding threads fill a bounded queue of at most
``--prefetch`` batches, so memory stays flat whatever the input size; rows are appended per batch to
a JSONL/CSV file that a rerun resumes (:mod:`taidpt.serve.result_log`). The model and its decision
rule are opened as :class:`taidpt.serve.predictor.Predictor` opens them. See docs/deployment.md, section 5.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os
import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from taidpt.utils.atomic import OutputPathError, probe_writable
from taidpt.utils.pathtext import escape_path
from taidpt.images.preprocess import PreprocessConfig

from taidpt.serve.decision import Decision, DecisionError
from taidpt.serve.infer import IMAGE_EXTENSIONS, LIST_EXTENSIONS, InputError, list_lines, read_list
from taidpt.serve.metadata import MetadataError
from taidpt.serve.open_vocab import CLASS_LIST_HELP, parse_class_names
from taidpt.serve.predictor import Predictor, load_image
from taidpt.serve.result_log import DoneSet, ResultLog, ResultLogError, Row, file_sha256
from taidpt.serve.runtime import ModelLoadError, Runner, add_runtime_arguments
from taidpt.utils.commands import prog_name

SHOWN_ERRORS = 10


# ----------------------------------------------------------------------------- input
def walk_images(folder: Path) -> Iterator[str]:
    """Image files under ``folder`` (recursive, image extensions), one directory entry at a time."""
    stack = [str(folder)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                        yield entry.path
                except OSError:
                    continue


def count_lines(path: Path) -> int:
    """Lines in a list file (an upper bound for the progress bar); reading them all first means a byte
    that is not UTF-8 stops the run before any image is scored (:class:`InputError`, naming line and byte)."""
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
        raise InputError(f"{spec}: not a folder, a list file (.txt) or a glob that matches any file")
    return (m for m in itertools.chain([first], matches) if os.path.isfile(m)), None


# ----------------------------------------------------------------------------- pipeline
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


def _decode(paths: list[str], cfg: PreprocessConfig) -> list[np.ndarray | str]:
    return [load_image(p, cfg) for p in paths]


class _Producer(threading.Thread):
    """Reads paths, submits one decode job per batch, and queues the futures (blocking when full)."""

    def __init__(self, paths: Iterable[str], batch_size: int, pool: ThreadPoolExecutor, cfg: PreprocessConfig,
                 pending: "queue.Queue[tuple[list[str], Future] | None]", stats: BatchStats) -> None:
        super().__init__(daemon=True, name="batch-infer-reader")
        self.paths, self.batch_size, self.pool, self.cfg = paths, batch_size, pool, cfg
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
                if not self._put((chunk, self.pool.submit(_decode, chunk, self.cfg))):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised by the consumer
            self.error = exc
        self._put(None)


def run_batches(model: Runner, paths: Iterable[str], log: ResultLog, *, batch_size: int = 32, workers: int = 4,
                prefetch: int = 8, decision: Decision, progress: bool = True, total: int | None = None,
                max_batches: int | None = None, on_error: Callable[[str, str], None] | None = None) -> BatchStats:
    """Decode, score and append every path of ``paths`` to ``log``; stops early after ``max_batches``.

    At most ``prefetch`` decoded batches wait in the queue; the reader blocks when it is full.
    """
    from tqdm import tqdm

    if batch_size < 1 or workers < 1 or prefetch < 1:
        raise ValueError("--batch-size, --workers and --prefetch must be >= 1")
    meta = model.metadata
    stats = BatchStats()
    pending: queue.Queue[tuple[list[str], Future] | None] = queue.Queue(maxsize=prefetch)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool, \
            tqdm(total=total, unit="img", desc="scoring", disable=not progress, file=sys.stderr) as bar:
        producer = _Producer(paths, batch_size, pool, meta.preprocess_config(), pending, stats)
        producer.start()
        try:
            while (item := pending.get()) is not None:
                chunk, future = item
                stats.max_in_flight = max(stats.max_in_flight, stats.pulled - stats.scored - stats.failed)
                decoded = future.result()
                rows = _score(model, chunk, decoded, decision)
                log.write(rows)
                for row in rows:
                    if row.error:
                        stats.failed += 1
                        if on_error is not None:
                            on_error(row.path, row.error)
                    else:
                        stats.scored += 1
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


def _score(model: Runner, chunk: Sequence[str], decoded: Sequence[np.ndarray | str], decision: Decision) -> list[Row]:
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


def pending_paths(paths: Iterable[str], done: DoneSet) -> Iterator[str]:
    """``paths`` without those already in the output (matched by the escaped text the output holds)."""
    return (p for p in paths if escape_path(p) not in done)


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("python -m export.batch_infer"),
                                description="Score a folder or a list of millions of images with an exported TaI-DPT "
                                            "model; rows are appended as batches finish, and a rerun resumes.")
    p.add_argument("--model", required=True, help="MODEL.onnx, or MODEL.plan with its MODEL.plan.json")
    p.add_argument("--images", required=True, help="a folder (walked recursively), a .txt list of paths, or a glob")
    p.add_argument("--output", required=True, help="OUT.jsonl or OUT.csv (appended to; existing rows are skipped)")
    p.add_argument("--classes", default=None,
                   help='score these class names instead of the trained ones, e.g. "cat,dog,zebra" (a model exported '
                        'with --open-vocabulary)')
    p.add_argument("--class-list", default=None, help=CLASS_LIST_HELP)
    p.add_argument("--batch-size", type=int, default=32, help="images per model call (default 32)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="decoding threads")
    p.add_argument("--prefetch", type=int, default=None,
                   help="decoded batches that may wait for the model (default 2 x workers): bounds memory")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=float, default=None,
                      help="labels = classes with merged logit >= T, for every class (default: the model's stored "
                           "per-class thresholds, top-3 for a class without one)")
    rule.add_argument("--top-k", type=int, default=None, help="labels = the K highest-scoring classes, for every image")
    add_runtime_arguments(p, workers=False)
    p.add_argument("--all-outputs", action="store_true", help="also write global and local logits (JSONL)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        log = ResultLog(Path(args.output), [], args.all_outputs)  # format checks before the model loads
        probe_writable(log.path, append=True)
        predictor = Predictor.from_onnx(args.model, classes=parse_class_names(args.classes, args.class_list),
                                        providers=args.providers, threads=args.threads, threshold=args.threshold,
                                        top_k=args.top_k, batch_size=args.batch_size)
        model, decision, meta = predictor.runner, predictor.decision, predictor.metadata
        log = ResultLog(Path(args.output), meta.classnames, args.all_outputs, model_sha256=file_sha256(model.path))
        source, total = image_source(args.images)
        done, dropped = log.read_done()
    except (InputError, ModelLoadError, MetadataError, ResultLogError, OutputPathError, DecisionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{model.path.name}: {meta.trainer} {meta.backbone} ({meta.precision}), {meta.num_classes} classes, provider "
          f"{model.provider}; {len(done)} row(s) already in {log.path.name}"
          + (f" (dropped a partial last row of {dropped} bytes)" if dropped else "") + f"; labels: {decision.text()}",
          file=sys.stderr)

    shown = 0

    def report(path: str, reason: str) -> None:
        nonlocal shown
        shown += 1
        if shown <= SHOWN_ERRORS:
            print(f"skipped {escape_path(path)}: {escape_path(reason)}", file=sys.stderr)
        elif shown == SHOWN_ERRORS + 1:
            print(f"(further unreadable images are recorded in {log.path.name} only)", file=sys.stderr)

    try:
        with log:
            stats = run_batches(model, pending_paths(source, done), log, batch_size=args.batch_size,
                                workers=args.workers, prefetch=args.prefetch or 2 * args.workers, decision=decision,
                                progress=not args.no_progress, total=total, on_error=report)
    except OSError as exc:
        print(f"error: {escape_path(str(exc))}; the rows written so far stay in {escape_path(log.path)} and the same "
              f"command resumes after them", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        predictor.close()
    resumed = len(done)
    print(f"{log.path}: {stats.scored} image(s) scored ({stats.rate:.1f} img/s), {stats.failed} unreadable, "
          f"{resumed} already done", file=sys.stderr)
    if stats.scored == 0 and stats.failed > 0 and resumed == 0:
        print("error: no image could be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
