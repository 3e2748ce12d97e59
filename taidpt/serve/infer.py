"""Score image files with an exported TaI-DPT model: no torch, no training code.

    python -m export.infer --model MODEL.onnx|MODEL.plan --images DIR|LIST.txt|GLOB \\
        --output OUT.json|OUT.csv [--batch-size 32] [--threshold T | --top-k K] [--providers P ...]
        [--classes "cat,dog,zebra" | --class-list FILE]   (any class list: an --open-vocabulary export)

The model, its decision rule and the batched scoring are :class:`taidpt.serve.predictor.Predictor`'s
(the Python API; one code path). Images are decoded and preprocessed with numpy + PIL exactly as in evaluation (resize the shorter
side, centre crop, normalise; sizes and statistics read from the model's metadata), batched, and
run with onnxruntime (best execution provider first: TensorRT, CUDA, CPU) or with a serialized
TensorRT engine. An image that cannot be read is reported with its path and reason, skipped, and
listed in the output. The output holds the merged score (a logit, not a probability) of every class,
its ``confidence`` and the predicted labels, decided by :mod:`taidpt.serve.decision`: the per-class
thresholds stored by ``python -m export.calibrate`` (top-k for a class without one; the output says
which), or ``--threshold T`` / ``--top-k K`` for every class.

Paths are written as :mod:`taidpt.utils.pathtext` escapes them: a file-name byte that is not UTF-8 appears
as ``\\xNN`` (e.g. ``caf\\xe9.jpg``), the same in JSON and CSV; a list file may name files the same way.
The output location is checked before any image is scored.

JSON: ``{"model", "provider", "decision": {"rule", "thresholds", "top_k", ...}, "classes",
"skipped": [{"path", "reason"}], "images": [{"path", "scores": {class: logit},
"confidence": {class: sigmoid(logit - threshold) or null}, "labels": [...]}]}``.
CSV: one row per image: ``path``, one logit column per class, one ``confidence:<class>`` column per
class, ``labels`` (``;``-separated), ``decision``, ``error`` (the reason for a skipped image, whose
other cells are empty).

This module must not import torch.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import glob
import io
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from taidpt.utils.atomic import OutputPathError, atomic_write_json, atomic_write_text, check_writable, remove_stale_temps
from taidpt.utils.pathtext import escape_path, unescape_path
from taidpt.serve.decision import Decision, DecisionError, decide  # noqa: F401 - decide re-exported
from taidpt.serve.metadata import MetadataError
from taidpt.serve.open_vocab import parse_class_names
from taidpt.serve.predictor import Predictions, Predictor
from taidpt.serve.result_log import ResultLogError, csv_header, csv_row, json_row
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


def _header(model: Runner, decision: dict, preds: Predictions, n_inputs: int) -> dict:
    m = model.metadata
    return {
        "model": escape_path(model.path),
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
               n_inputs: int, all_outputs: bool) -> None:
    names = list(rule.classnames)
    images = []
    for i, p in enumerate(preds.paths):
        entry = json_row(p, rule, preds.scores[i], labels[i])
        if all_outputs:
            entry["global_logits"] = {c: float(v) for c, v in zip(names, preds.global_logits[i])}
            entry["local_logits"] = {c: float(v) for c, v in zip(names, preds.local_logits[i])}
        images.append(entry)
    payload = {**_header(model, rule.describe(), preds, n_inputs), "images": images}
    atomic_write_json(path, payload)


def write_csv(path: Path, model: Runner, rule: Decision, preds: Predictions, labels: list[list[str]]) -> None:
    names = list(rule.classnames)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(csv_header(names))
    for i, p in enumerate(preds.paths):
        writer.writerow(csv_row(p, names, rule, preds.scores[i], labels[i]))
    for p, reason in preds.skipped:
        writer.writerow(csv_row(p, names, error=reason))
    atomic_write_text(path, buf.getvalue())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("python -m export.infer"),
                                description="Score images with an exported TaI-DPT model (ONNX or TensorRT engine).")
    p.add_argument("--model", required=True, help="MODEL.onnx, or MODEL.plan with its MODEL.plan.json")
    p.add_argument("--classes", default=None,
                   help='score these class names instead of the trained ones, e.g. "cat,dog,zebra" (a model exported '
                        'with --open-vocabulary)')
    p.add_argument("--class-list", default=None, help="like --classes, from a UTF-8 file with one class name per line")
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
        check_writable(out)
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
        if fmt == ".json":
            write_json(out, model, rule, preds, labels, len(paths), args.all_outputs)
        else:
            write_csv(out, model, rule, preds, labels)
    except (InputError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        predictor.close()
    rate = len(preds.paths) / preds.seconds if preds.seconds > 0 else float("nan")
    print(f"wrote {escape_path(out)}: {len(preds.paths)} image(s) scored ({rate:.1f} img/s), "
          f"{len(preds.skipped)} skipped", file=sys.stderr)
    if not preds.paths:
        print("error: no image could be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
