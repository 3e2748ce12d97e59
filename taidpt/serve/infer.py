"""Score image files with an exported TaI-DPT model (``python -m export.infer``): JSON or CSV out.

The model, its decision rule and the batched scoring are :class:`taidpt.serve.predictor.Predictor`'s (one code
path with the Python API); this module adds the command line, the output files and their safety: the output
location is checked before any image is scored, and a final write that still fails goes to a new file in the
system temp folder. Output formats and flags: docs/deployment.md, section 2.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import glob
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from taidpt.utils.atomic import OutputPathError, atomic_write_json, atomic_write_text, probe_writable, remove_stale_temps
from taidpt.utils.pathtext import escape_path, unescape_path
from taidpt.serve.decision import Decision, DecisionError, decide  # noqa: F401 - decide re-exported
from taidpt.serve.metadata import MetadataError
from taidpt.serve.open_vocab import CLASS_LIST_HELP, parse_class_names
from taidpt.serve.predictor import Predictions, Predictor
from taidpt.serve.result_log import ResultLogError, csv_header, csv_row, file_sha256, json_row
from taidpt.serve.runtime import ModelLoadError, Runner, add_runtime_arguments
from taidpt.utils.commands import prog_name

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LIST_EXTENSIONS = (".txt", ".lst", ".list")


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
    """Paths of a list file, one per line (blank lines and ``#`` comments skipped), relative to its folder.

    Lines are UTF-8; ``\\xNN`` escapes (as the outputs write them, :mod:`taidpt.utils.pathtext`) name file-name
    bytes that are not UTF-8.
    """
    for line in list_lines(list_file):
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(os.path.expanduser(unescape_path(line)))
            yield str(p if p.is_absolute() else list_file.parent / p)


def collect_images(spec: str) -> list[str]:
    """Image paths from a folder (recursive, image extensions only, sorted), a list file or a glob.

    A list file holds one path per line (blank lines and ``#`` comments skipped); relative paths are
    relative to the list's folder. Listed paths that do not exist are kept: they are reported as
    unreadable later, not silently dropped.
    """
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        found = [str(p) for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
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
        raise InputError(f"{spec}: not a folder, a list file (.txt) or a glob that matches any file")
    return matches


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


def write_csv(path: Path, rule: Decision, preds: Predictions, labels: list[list[str]], model_sha256: str) -> None:
    names = list(rule.classnames)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(csv_header(names))
    for i, p in enumerate(preds.paths):
        writer.writerow(csv_row(p, names, rule, preds.scores[i], labels[i], model_sha256=model_sha256))
    for p, reason in preds.skipped:
        writer.writerow(csv_row(p, names, error=reason, model_sha256=model_sha256))
    atomic_write_text(path, buf.getvalue())


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("python -m export.infer"),
                                description="Score images with an exported TaI-DPT model (ONNX or TensorRT engine).")
    p.add_argument("--model", required=True, help="MODEL.onnx, or MODEL.plan with its MODEL.plan.json")
    p.add_argument("--classes", default=None,
                   help='score these class names instead of the trained ones, e.g. "cat,dog,zebra" (a model exported '
                        'with --open-vocabulary)')
    p.add_argument("--class-list", default=None, help=CLASS_LIST_HELP)
    p.add_argument("--images", required=True, help="a folder (recursive), a .txt list of paths, or a glob")
    p.add_argument("--output", required=True, help="OUT.json or OUT.csv")
    p.add_argument("--batch-size", type=int, default=32, help="images per model call (default 32)")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=float, default=None,
                      help="labels = classes with merged logit >= T, for every class (default: the model's stored "
                           "per-class thresholds, top-3 for a class without one)")
    rule.add_argument("--top-k", type=int, default=None, help="labels = the K highest-scoring classes, for every image")
    add_runtime_arguments(p)
    p.add_argument("--all-outputs", action="store_true", help="also write global and local logits (JSON)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.output)
    fmt = out.suffix.lower()
    if fmt not in (".json", ".csv"):
        print(f"error: --output {escape_path(out)}: expected a .json or .csv file name", file=sys.stderr)
        return 2
    try:
        probe_writable(out)
        remove_stale_temps(out.parent, target=out.name)
        names = parse_class_names(args.classes, args.class_list)
        predictor = Predictor.from_onnx(args.model, classes=names, providers=args.providers, threads=args.threads,
                                        threshold=args.threshold, top_k=args.top_k, batch_size=args.batch_size,
                                        workers=args.workers)
    except (InputError, ModelLoadError, MetadataError, OutputPathError, ResultLogError, DecisionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model, rule, meta = predictor.runner, predictor.decision, predictor.metadata
    try:
        if fmt == ".csv":
            csv_header(meta.classnames)
        paths = collect_images(args.images)
        digest = file_sha256(model.path)
    except (InputError, ResultLogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        predictor.close()
        return 2
    print(f"{model.path.name}: {meta.trainer} {meta.backbone} ({meta.precision}), {meta.num_classes} classes, "
          f"{meta.image_size[0]}x{meta.image_size[1]} px, provider {model.provider}; {len(paths)} image(s); "
          f"labels: {rule.text()}", file=sys.stderr)

    def report(path: str, reason: str) -> None:
        print(f"skipped {escape_path(path)}: {escape_path(reason)}", file=sys.stderr)

    try:
        preds, rule = predictor.score(paths, progress=not args.no_progress, on_skip=report)
        labels = rule.labels(preds.scores)
        problem = save_results(out, lambda path: write_json(path, model, rule, preds, labels, len(paths),
                                                            args.all_outputs, digest)
                               if fmt == ".json" else write_csv(path, rule, preds, labels, digest))
    except (InputError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        predictor.close()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    rate = len(preds.paths) / preds.seconds if preds.seconds > 0 else float("nan")
    print(f"wrote {escape_path(out)}: {len(preds.paths)} image(s) scored ({rate:.1f} img/s), "
          f"{len(preds.skipped)} skipped", file=sys.stderr)
    if not preds.paths:
        print("error: no image could be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
