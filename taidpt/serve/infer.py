"""Score image files with an exported TaI-DPT model (``python -m export.infer``), any size of job.

One streaming pipeline (:mod:`taidpt.serve.pipeline`) for every output; the ``--output`` extension picks
the format: ``.json`` (one document, for small jobs), ``.jsonl`` / ``.csv`` (rows appended per batch;
a rerun resumes after them) or ``.parquet`` (a folder of part files; a rerun redoes the missing
ones). The output location is checked before any image is scored. ``--engine ray`` hands a
``.parquet`` job to :mod:`taidpt.serve.ray_engine`. Formats and flags: docs/deployment.md, "Inference".
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from taidpt.utils.atomic import OutputPathError, atomic_write_json, probe_writable, remove_stale_temps
from taidpt.utils.pathtext import escape_path
from taidpt.serve.decision import Decision, DecisionError, decide  # noqa: F401 - decide re-exported
from taidpt.serve.inference_flags import add_inference_arguments, default_actors
from taidpt.serve.inputs import (IMAGE_EXTENSIONS, LIST_EXTENSIONS, InputError, collect_images,  # noqa: F401
                                 image_source, list_lines, read_list)
from taidpt.serve.metadata import MetadataError
from taidpt.serve.open_vocab import parse_class_names
from taidpt.serve.parquet_job import ShardWriter, shard_paths
from taidpt.serve.parquet_parts import (ParquetOutputError, finished_shards, job_description, plan_shards,
                                        sweep_temporary)
from taidpt.serve.pipeline import BatchStats, RowList, Sink, pending_paths, run_batches
from taidpt.serve.predictor import Predictions, Predictor
from taidpt.serve.result_log import ResultLog, ResultLogError, Row, file_sha256, json_row
from taidpt.serve.runtime import ModelLoadError, Runner
from taidpt.utils.commands import prog_name

FORMATS = (".json", ".jsonl", ".csv", ".parquet")
SHOWN_ERRORS = 10
REFUSED = (InputError, ModelLoadError, MetadataError, OutputPathError, ResultLogError, DecisionError,
           ParquetOutputError)


def _header(model: Runner, decision: dict, preds: Predictions, n_inputs: int, model_sha256: str) -> dict:
    m = model.metadata
    return {
        "model": escape_path(model.path),
        "model_sha256": model_sha256,
        "provider": model.provider,
        "trainer": m.trainer,
        "backbone": m.backbone,
        "precision": m.precision,
        "image_size": list(m.image_size),
        "score": f"merged = {m.merge_rate:g} * global + {1 - m.merge_rate:g} * local",
        "decision": decision,
        "classes": list(m.classnames),
        "n_inputs": n_inputs,
        "n_images": len(preds.paths),
        "n_skipped": len(preds.skipped),
        "skipped": [{"path": escape_path(p), "reason": escape_path(r)} for p, r in preds.skipped],
        "seconds": round(preds.seconds, 3),
    }


def write_json(path: Path, model: Runner, rule: Decision, preds: Predictions, labels: list[list[str]],
               n_inputs: int, all_outputs: bool, model_sha256: str) -> None:
    """The ``.json`` document: the header (model, rule, skipped inputs) and one entry per scored image."""
    names = list(rule.classnames)
    images = []
    for i, p in enumerate(preds.paths):
        entry = json_row(p, rule, preds.scores[i], labels[i])
        if all_outputs:
            entry["global_logits"] = {c: float(v) for c, v in zip(names, preds.global_logits[i])}
            entry["local_logits"] = {c: float(v) for c, v in zip(names, preds.local_logits[i])}
        images.append(entry)
    payload = {**_header(model, rule.describe(), preds, n_inputs, model_sha256), "images": images}
    atomic_write_json(path, payload)


def predictions(rows: Sequence[Row], n_classes: int, seconds: float) -> tuple[Predictions, list[list[str]]]:
    """The pipeline's rows as :class:`Predictions` (scored rows in input order, the rest skipped) and labels."""
    good = [(i, r) for i, r in enumerate(rows) if r.scores is not None]

    def stack(values: list[np.ndarray | None]) -> np.ndarray:
        return np.stack(values).astype(np.float32) if values else np.zeros((0, n_classes), np.float32)

    preds = Predictions([r.path for _, r in good], stack([r.scores for _, r in good]),
                        stack([r.global_logits for _, r in good]), stack([r.local_logits for _, r in good]),
                        [(r.path, r.error) for r in rows if r.scores is None], seconds, [i for i, _ in good])
    return preds, [list(r.labels) for _, r in good]


def save_results(out: Path, write: Callable[[Path], None]) -> str:
    """``write(out)``; when that fails (disk full, folder gone), ``write`` to a new file in the system temp
    folder instead. Returns "" on success, else the one-line error saying where the results are (or that
    they are lost)."""
    try:
        write(out)
        return ""
    except OSError as exc:
        failed = f"cannot write {escape_path(out)} ({exc.strerror or exc})"
    spare = None
    try:
        fd, name = tempfile.mkstemp(prefix=f"taidpt-{out.stem}-", suffix=out.suffix)
        os.close(fd)
        spare = Path(name)
        write(spare)
    except OSError as exc:
        if spare is not None:
            spare.unlink(missing_ok=True)
        return (f"{failed}; saving them in {escape_path(tempfile.gettempdir())} failed too "
                f"({exc.strerror or exc}): the scored results are lost")
    return f"{failed}; the scored results are saved in {escape_path(spare)} instead"


def build_parser(prog: str = "python -m export.infer") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name(prog),
                                description="Score images with an exported TaI-DPT model (ONNX or TensorRT engine); "
                                            "streamed outputs resume where an interrupted run stopped.")
    add_inference_arguments(p)
    return p


def flag_problem(args: argparse.Namespace, fmt: str) -> str:
    """Why these flags cannot run together ("" when they can), one line."""
    out = escape_path(args.output)
    if fmt not in FORMATS:
        return f"--output {out}: expected OUT.json, OUT.jsonl, OUT.csv or a folder OUT.parquet"
    if args.engine == "ray" and fmt != ".parquet":
        return f"--output {out}: --engine ray writes a .parquet folder of parts; name the output OUT.parquet"
    if args.all_outputs and fmt == ".parquet":
        return "--all-outputs needs a .json or .jsonl output (a .parquet part holds the merged scores)"
    for flag, value in (("--shard-size", args.shard_size), ("--actors", args.actors), ("--prefetch", args.prefetch)):
        if value is not None and value < 1:
            return f"{flag} must be >= 1, got {value}"
    return ""


def open_predictor(args: argparse.Namespace) -> Predictor:
    """The model, for the class list and decision rule of the flags."""
    return Predictor.from_onnx(args.model, classes=parse_class_names(args.classes, args.class_list),
                               providers=args.providers, threads=args.threads, threshold=args.threshold,
                               top_k=args.top_k, batch_size=args.batch_size, workers=args.workers,
                               fast_decode=args.fast_decode)


def announce(predictor: Predictor, what: str) -> None:
    """The one summary line on stderr: the model, its provider, the job and the labelling rule."""
    model, meta = predictor.runner, predictor.metadata
    print(f"{model.path.name}: {meta.trainer} {meta.backbone} ({meta.precision}), {meta.num_classes} classes, "
          f"{meta.image_size[0]}x{meta.image_size[1]} px, provider {model.provider}; {what}; "
          f"labels: {predictor.decision.text()}", file=sys.stderr)


def error_reporter(where: Path) -> Callable[[str, str], None]:
    """Names the first :data:`SHOWN_ERRORS` unreadable images on stderr, then says where the rest are."""
    shown = 0

    def report(path: str, reason: str) -> None:
        nonlocal shown
        shown += 1
        if shown <= SHOWN_ERRORS:
            print(f"skipped {escape_path(path)}: {escape_path(reason)}", file=sys.stderr)
        elif shown == SHOWN_ERRORS + 1:
            print(f"(further unreadable images are recorded in {escape_path(where.name)} only)", file=sys.stderr)
    return report


def score(args: argparse.Namespace, predictor: Predictor, paths: Iterable[str], sink: Sink, out: Path,
          total: int | None) -> BatchStats:
    """Run the pipeline over ``paths`` into ``sink`` with the flags' batching and decoding."""
    return run_batches(predictor.runner, paths, sink, batch_size=args.batch_size, workers=args.workers,
                       prefetch=args.prefetch or 2 * args.workers, decision=predictor.decision,
                       progress=not args.no_progress, total=total, on_error=error_reporter(out),
                       fast_decode=args.fast_decode)


def run_json(args: argparse.Namespace, out: Path) -> int:
    """``.json``: every row in memory, then one document written atomically."""
    probe_writable(out)
    remove_stale_temps(out.parent, target=out.name)
    with open_predictor(args) as predictor:
        paths = collect_images(args.images)
        digest = file_sha256(predictor.runner.path)
        announce(predictor, f"{len(paths)} image(s)")
        rows = RowList()
        stats = score(args, predictor, paths, rows, out, len(paths))
        preds, labels = predictions(rows.rows, len(predictor.decision.classnames), stats.seconds)
        problem = save_results(out, lambda path: write_json(path, predictor.runner, predictor.decision, preds,
                                                            labels, len(paths), args.all_outputs, digest))
    if problem:
        raise OSError(problem)
    return finish(out, stats, 0)


def run_stream(args: argparse.Namespace, out: Path) -> int:
    """``.jsonl`` / ``.csv``: rows appended per batch; the inputs already written are skipped."""
    ResultLog(out, [], args.all_outputs)  # format checks before the model loads
    probe_writable(out, append=True)
    with open_predictor(args) as predictor:
        log = ResultLog(out, predictor.decision.classnames, args.all_outputs,
                        model_sha256=file_sha256(predictor.runner.path))
        source, total = image_source(args.images)
        done, dropped = log.read_done()
        announce(predictor, f"{len(done)} row(s) already in {escape_path(out.name)}"
                 + (f" (dropped a partial last row of {dropped} bytes)" if dropped else ""))
        with log:
            stats = score(args, predictor, pending_paths(source, done), log, out, total)
    return finish(out, stats, len(done))


def run_parquet(args: argparse.Namespace, out: Path) -> int:
    """``.parquet``: a folder of part files, one per shard of the sorted inputs; finished parts are kept."""
    if out.exists() and not out.is_dir():
        raise ParquetOutputError(f"{escape_path(out)}: exists and is not a folder; a .parquet output is a folder "
                                 f"of parts")
    probe_writable(out / "part-000000.parquet")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ParquetOutputError("a .parquet output needs pyarrow: pip install 'taidpt[parquet]'") from None
    with open_predictor(args) as predictor:
        description = job_description(predictor.decision.classnames, file_sha256(predictor.runner.path),
                                      predictor.decision.describe(), args.shard_size)
        done = finished_shards(out, description)
        shards = plan_shards(image_source(args.images)[0], args.shard_size)
        todo = [s for s in shards if s.index not in done]
        sweep_temporary(out)
        announce(predictor, f"{len(shards)} shard(s) of {args.shard_size}, {len(shards) - len(todo)} already "
                            f"in {escape_path(out.name)}")
        writer = ShardWriter(out, todo, description, predictor.decision)
        stats = score(args, predictor, shard_paths(todo), writer, out, sum(len(s.paths) for s in todo))
    return finish(out, stats, sum(len(s.paths) for s in shards) - sum(len(s.paths) for s in todo))


def finish(out: Path, stats: BatchStats, resumed: int) -> int:
    """The closing line on stderr; 1 when no image at all could be read."""
    print(f"wrote {escape_path(out)}: {stats.scored} image(s) scored ({stats.rate:.1f} img/s), {stats.failed} "
          f"unreadable, {resumed} already done", file=sys.stderr)
    if stats.scored == 0 and stats.failed > 0 and resumed == 0:
        print("error: no image could be read", file=sys.stderr)
        return 1
    return 0


def run_ray(args: argparse.Namespace, out: Path) -> int:
    """``--engine ray``: the same job as a Ray Data pipeline (:func:`taidpt.serve.ray_engine.run_ray_job`)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ModelLoadError("--engine ray needs Ray: pip install 'taidpt[ray]'") from None
    from taidpt.serve.ray_engine import run_ray_job

    written = run_ray_job(args.images, args.model, out, classes=parse_class_names(args.classes, args.class_list),
                          threshold=args.threshold, top_k=args.top_k, shard_size=args.shard_size,
                          batch_size=args.batch_size, actors=args.actors or default_actors(args.ray_address),
                          address=args.ray_address, providers=args.providers, fast_decode=args.fast_decode,
                          progress=not args.no_progress)
    print(f"wrote {escape_path(out)}: {written} row(s) this run (Ray engine)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m export.infer") -> int:
    args = build_parser(prog).parse_args(argv)
    out = Path(args.output)
    fmt = out.suffix.lower()
    problem = flag_problem(args, fmt)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    run = run_ray if args.engine == "ray" else {".json": run_json, ".parquet": run_parquet}.get(fmt, run_stream)
    try:
        return run(args, out)
    except REFUSED as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {escape_path(str(exc))}; the rows written so far stay in {escape_path(out)} and the same "
              f"command resumes after them" if fmt != ".json" else f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
