"""Export a trained TaI-DPT run (or the dense zero-shot baseline) to one ONNX graph.

    python -m export.onnx --model-dir RUN --output MODEL.onnx [--fp16] [--image-size N] [--opset 17]
                          [--batch-sizes 1,3] [--load-epoch E] [KEY VALUE ...]
    python -m export.onnx --trainer ZeroshotCLIPDense --config-file configs/trainers/ZeroshotCLIPDense/rn50.yaml \\
                          --dataset-config-file configs/datasets/voc2007.yaml --output zs.onnx

The graph is the :class:`taidpt.networks.model.ImageScorer` the evaluation runs: input ``images`` float32
``[N, 3, H, W]`` (preprocessed), outputs ``scores`` (merged), ``global_logits`` and
``local_logits``, each ``[N, C]``, with a dynamic batch axis (:mod:`taidpt.export.tracing`).
Preprocessing, class names and provenance go into ``metadata_props`` (:mod:`taidpt.serve.metadata`).

Before reporting success the command checks the file with ``onnx.checker`` and runs it in
onnxruntime (CPU) against PyTorch on preprocessed images at several batch sizes, printing the max
abs difference of each output; it exits 1 when that exceeds the tolerance (1e-4 fp32, 1e-2 fp16)
(:mod:`taidpt.export.parity`). Installed, the same command is ``taidpt-export``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from taidpt.export.parity import FP16_TOL, FP32_TOL, check_onnx, measure_parity, parity_inputs, torch_reference
from taidpt.export.precision import convert_to_fp16
from taidpt.engine.run import Run
from taidpt.export.scorer_loading import load_scorer
from taidpt.methods import get_method
from taidpt.export.tracing import DEFAULT_OPSET, export_scorer
from taidpt.serve.metadata import INPUT_NAME, OUTPUT_NAMES, read_onnx_metadata
from taidpt.utils.commands import prog_name


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch-sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"--batch-sizes must be positive integers, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog_name("python -m export.onnx"),
        description="Export a TaI-DPT run (or the zero-shot baseline) to one ONNX graph: images in, class scores out.",
        epilog="Trailing KEY VALUE pairs override config keys (e.g. MODEL.BACKBONE.PRETRAINED /path/RN50.pt).",
    )
    p.add_argument("--model-dir", default="", help="train.py output directory (config.yaml + prompt_learner/)")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--fp16", action="store_true", help="write a float16 variant (float32 input/outputs)")
    p.add_argument("--image-size", type=int, default=None, help="square input size (default: the run's INPUT.SIZE)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 3], help="batch sizes of the parity check (1,3)")
    p.add_argument("--parity-images", default="", help="image folder/list/glob for the parity check (default: synthetic)")
    p.add_argument("--load-epoch", type=int, default=None, help="prompt_learner/model.pth.tar-<E> instead of best/last")
    p.add_argument("--trainer", default="", help="TaIDPT, DualCoOp, CoOpMultiLabel or ZeroshotCLIPDense (default: the run's TRAINER.NAME)")
    p.add_argument("--config-file", action="append", default=[], help="extra yaml merged over the run's config")
    p.add_argument("--dataset-config-file", default="", help="dataset yaml (class names for the zero-shot model)")
    p.add_argument("--classes", default="", help="class list name or file (zero-shot; must match a trained run)")
    p.add_argument("--tolerance", type=float, default=None, help=f"max abs difference allowed ({FP32_TOL:g} fp32, {FP16_TOL:g} fp16)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def _print(msg: str = "") -> None:
    print(msg, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        print(f"error: --output {out}: expected a .onnx file name", file=sys.stderr)
        return 2
    configs = [c for c in [args.dataset_config_file, *args.config_file] if c]
    # Cheap checks first: loading torch and CLIP takes seconds.
    early = None
    try:
        if args.model_dir:
            Run(args.model_dir)
        elif get_method(args.trainer or "TaIDPT").trains_on:
            early = (f"exporting {args.trainer or 'TaIDPT'} needs --model-dir RUN (a train.py output directory with "
                     f"prompts)")
    except (FileNotFoundError, ValueError) as exc:
        early = str(exc)
    if early:
        print(f"error: {early}", file=sys.stderr)
        return 2
    try:
        loaded = load_scorer(args.model_dir or None, trainer=args.trainer, config_files=configs, opts=args.opts,
                             load_epoch=args.load_epoch, image_size=args.image_size, classes=args.classes)
    except Exception as exc:  # noqa: BLE001 - every failure here is a user input problem; one line
        msg = str(exc.args[0]) if getattr(exc, "args", None) else str(exc)
        print(f"error: {msg.splitlines()[0] if msg else type(exc).__name__}", file=sys.stderr)
        if os.environ.get("TAIDPT_DEBUG"):
            raise
        return 2
    meta = loaded.metadata
    h, w = meta.image_size
    _print(f"{meta.trainer} {meta.backbone} ({meta.weights} weights), {meta.num_classes} classes, "
           f"{h}x{w} px{', ' + meta.checkpoint if meta.checkpoint else ''}")
    for note in loaded.notes:
        _print(f"note: {note}")

    paths: list[str] = []
    if args.parity_images:
        from taidpt.serve.infer import collect_images

        paths = collect_images(args.parity_images)
    images = parity_inputs(meta, max(args.batch_sizes), paths)
    reference = torch_reference(loaded.scorer, images, args.batch_sizes)  # also fills the positional cache

    fp32_tol = FP32_TOL if args.tolerance is None or args.fp16 else args.tolerance
    fp16_tol = FP16_TOL if args.tolerance is None else args.tolerance
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".export-", dir=out.parent) if args.fp16 else None
    fp32_path = Path(tmp_dir) / "fp32.onnx" if tmp_dir else out
    try:
        export_scorer(loaded.scorer, fp32_path, meta, opset=args.opset)
        check_onnx(fp32_path)
        report = measure_parity(fp32_path, images, reference, fp32_tol, "fp32")
        _print(report.table())
        final = report
        if args.fp16 and report.ok:
            convert_to_fp16(fp32_path, out)
            check_onnx(out)
            final = measure_parity(out, images, reference, fp16_tol, "fp16")
            _print(final.table())
    except Exception as exc:  # noqa: BLE001 - report one line, keep the traceback behind TAIDPT_DEBUG
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: export to {out} failed: {type(exc).__name__}: {msg}", file=sys.stderr)
        if os.environ.get("TAIDPT_DEBUG"):
            raise
        return 1
    finally:
        if tmp_dir:
            for f in Path(tmp_dir).iterdir():
                f.unlink()
            os.rmdir(tmp_dir)
    if not final.ok:
        where = "no file was written"
        if out.is_file():
            bad = out.with_name(out.name + ".failed-parity")
            os.replace(out, bad)
            where = f"the file was moved to {bad} so that it is not deployed by mistake"
        print(f"error: onnxruntime and PyTorch differ by more than {final.tolerance:g} ({final.precision}); {where}",
              file=sys.stderr)
        return 1
    written = read_onnx_metadata(out)
    size_mb = sum(f.stat().st_size for f in out.parent.glob(out.name + "*") if f.is_file()) / 1e6
    _print(f"wrote {out} ({size_mb:.1f} MB, opset {written.opset}, {written.precision}): "
           f"{INPUT_NAME} float32 [N,3,{h},{w}] -> {', '.join(OUTPUT_NAMES)} float32 [N,{meta.num_classes}]")
    _print(f"next: python -m export.infer --model {out} --images DIR --output predictions.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
