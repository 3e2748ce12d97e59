"""Export a trained run (or the dense zero-shot baseline) to one ONNX graph: ``python -m export.onnx``.

The command line and its order of work: trace and check the fp32 graph (:mod:`taidpt.export.tracing`,
:mod:`taidpt.export.parity`), make and gate a reduced precision (:mod:`taidpt.export.reduced`) and add the
open-vocabulary files (:mod:`taidpt.export.open_vocab`), all in one staging folder moved into place only when
every check passed (:mod:`taidpt.export.staging`); then, with ``--label-free-thresholds``, calibrate the
written file. See docs/deployment.md, section 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from taidpt.export.parity import FP32_TOL, check_onnx, measure_parity, parity_inputs, torch_reference
from taidpt.export.errors import ExportError
from taidpt.export.open_vocab import companion_names, export_open_vocabulary, open_vocabulary_metadata
from taidpt.export.gate import DEFAULT_MAX_MAP_DROP, DEFAULT_LIMITS, max_map_drop
from taidpt.export.reduced import (CALIBRATION_COUNT, GATE_IMAGES, GateSetup, GateVerdict, agreement_limits,
                                   image_batch, refusal, resolve_precision, run_gate, write_reduced)
from taidpt.export.staging import keep_failed, publish_set, staging_folder, sweep_staging
from taidpt.engine.run import Run
from taidpt.export.scorer_loading import load_scorer
from taidpt.methods import DEFAULT_METHOD, get_method
from taidpt.export.tracing import DEFAULT_OPSET, export_scorer
from taidpt.serve.export_unit import export_time, new_export_id
from taidpt.serve.open_vocab import OpenVocabError, parse_class_names
from taidpt.serve.metadata import INPUT_NAME, OUTPUT_NAMES, PRECISIONS, ModelMetadata, read_onnx_metadata
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
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fp32 (default), fp16 (float16 encoder) or int8 (static int8 encoder; needs --calibration-images)")
    p.add_argument("--fp16", action="store_true", help="the same as --precision fp16")
    p.add_argument("--calibration-images", default="",
                   help="int8: image folder/list/glob like the deployment's, for the activation ranges")
    p.add_argument("--label-free-thresholds", action="store_true",
                   help="also store per-class decision thresholds chosen without labels: each class predicted on as "
                        "many --calibration-images as the run's captions name it (needs --model-dir; any precision)")
    p.add_argument("--class-rates", default="", metavar="FILE",
                   help="with --label-free-thresholds: 'class name, rate' per line (the fraction of your images showing "
                        "each class) instead of the run's caption frequencies; needed after generated captions")
    p.add_argument("--calibration-count", type=int, default=CALIBRATION_COUNT,
                   help=f"int8: use at most this many calibration images, evenly spaced ({CALIBRATION_COUNT})")
    p.add_argument("--gate-root", default="", help="fp16/int8 gate: root of a labelled set (DATASET.ROOT)")
    p.add_argument("--gate-dataset-config-file", default="",
                   help="fp16/int8 gate: dataset yaml of the labelled set (scored as export.evaluate scores its test split)")
    p.add_argument("--gate-split", default="",
                   help="fp16/int8 gate: the split to score instead of the test split (DATASET.TEST_SPLIT), e.g. val")
    p.add_argument("--max-map-drop", type=max_map_drop, default=DEFAULT_MAX_MAP_DROP,
                   help=f"fp16/int8 with a labelled set: refuse to write when merged mAP drops by more points "
                        f"({DEFAULT_MAX_MAP_DROP:g})")
    p.add_argument("--max-relative-diff", type=float, default=None,
                   help="fp16/int8 without a labelled set: max |reduced - fp32| / range of the fp32 logits "
                        f"({', '.join(f'{k} {v.max_relative_diff:g}' for k, v in DEFAULT_LIMITS.items())})")
    p.add_argument("--min-top-k-agreement", type=float, default=None,
                   help="fp16/int8 without a labelled set: min share of top-k classes agreeing with fp32 "
                        f"({', '.join(f'{k} {v.min_top_k_agreement:g}' for k, v in DEFAULT_LIMITS.items())})")
    p.add_argument("--image-size", type=int, default=None, help="square input size (default: the run's INPUT.SIZE)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 3], help="batch sizes of the parity check (1,3)")
    p.add_argument("--parity-images", default="", help="image folder/list/glob for the parity check (default: synthetic)")
    p.add_argument("--load-epoch", type=int, default=None, help="prompt_learner/model.pth.tar-<E> instead of best/last")
    p.add_argument("--trainer", default="", help="TaIDPT, DualCoOp, CoOpMultiLabel or ZeroshotCLIPDense (default: the run's TRAINER.NAME)")
    p.add_argument("--config-file", action="append", default=[], help="extra yaml merged over the run's config")
    p.add_argument("--dataset-config-file", default="", help="dataset yaml (class names for the zero-shot model)")
    p.add_argument("--class-list", default="", help="the zero-shot model's classes: a built-in class list name "
                                                    "(voc2007, coco2014, nuswide) or a class-list file")
    p.add_argument("--classes", default="", help='the zero-shot model\'s classes, comma-separated: "cat,dog,zebra" '
                                                 '(a trained run keeps its own)')
    p.add_argument("--open-vocabulary", action="store_true",
                   help="also write M.text.onnx (class names -> embeddings), M.open.onnx (images + embeddings -> scores) "
                        "and M.bpe.txt.gz, so that any class list can be scored (runs with generic contexts)")
    p.add_argument("--tolerance", type=float, default=None,
                   help=f"fp32 parity: max abs difference from PyTorch allowed ({FP32_TOL:g})")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def _print(msg: str = "") -> None:
    print(msg, flush=True)


@dataclass(frozen=True)
class PrecisionInputs:
    """What the precision ladder needs from the command line, checked before torch is loaded."""

    precision: str
    parity_paths: list[str]
    calibration_paths: list[str]
    gate_cfg: Any  # the labelled set's config, or None


def precision_inputs(args: argparse.Namespace) -> PrecisionInputs:
    """Resolve --precision/--fp16, list the parity and calibration images, read the gate set's config.

    Raises ValueError (InputError), OSError or KeyError with a message fit for one line.
    """
    from taidpt.serve.infer import collect_images

    precision = resolve_precision(args.precision, args.fp16)
    if precision == "int8" and not args.calibration_images:
        raise ValueError("--precision int8 needs --calibration-images DIR|LIST (a few hundred images like the "
                         "deployment's, to set the activation ranges)")
    if args.calibration_count < 1:
        raise ValueError(f"--calibration-count must be at least 1, got {args.calibration_count}")
    if (args.gate_root or args.gate_split) and not args.gate_dataset_config_file:
        raise ValueError("--gate-root/--gate-split need --gate-dataset-config-file (the labelled set's dataset yaml)")
    if args.label_free_thresholds and not (args.calibration_images and args.model_dir):
        raise ValueError("--label-free-thresholds needs --calibration-images DIR|LIST (unlabelled target images) and "
                         "--model-dir RUN (whose captions give each class's rate)")
    if args.class_rates and not args.label_free_thresholds:
        raise ValueError("--class-rates goes with --label-free-thresholds (the rates the thresholds are chosen for)")
    if args.label_free_thresholds and not args.class_rates:
        from taidpt.engine.run import Run
        from taidpt.export.calibration_data import check_caption_rates

        check_caption_rates(Run(args.model_dir).config(opts=list(args.opts)))
    if precision == "int8" and args.open_vocabulary:
        raise ValueError("--open-vocabulary makes fp32 or fp16 companion graphs only; export int8 without it")
    parity = collect_images(args.parity_images) if args.parity_images else []
    calibration = collect_images(args.calibration_images) if args.calibration_images else []
    gate_cfg = None
    if args.gate_dataset_config_file and precision != "fp32":
        from taidpt.export.evaluate import load_eval_config

        if not Path(args.gate_dataset_config_file).is_file():
            raise FileNotFoundError(f"--gate-dataset-config-file {args.gate_dataset_config_file}: no such file")
        split = ["DATASET.TEST_SPLIT", args.gate_split] if args.gate_split else []
        gate_cfg = load_eval_config(args.gate_dataset_config_file, [], args.gate_root, split)
    return PrecisionInputs(precision, parity, calibration, gate_cfg)


def reduce_and_gate(args: argparse.Namespace, inputs: PrecisionInputs, meta: ModelMetadata, fp32_path: Path,
                    staged: Path, images: np.ndarray, reference: dict) -> GateVerdict:
    """Make the fp16/int8 file ``staged`` from the checked fp32 one and print its parity table and gate
    line; the caller publishes it only when the gate passes."""
    precision = inputs.precision
    calibration = None
    if precision == "int8":
        calibration = image_batch(meta, inputs.calibration_paths, args.calibration_count)
    _print(write_reduced(fp32_path, staged, precision, calibration))
    _print(measure_parity(staged, images, reference, None, precision).table())
    gate_images = image_batch(meta, inputs.parity_paths or inputs.calibration_paths, GATE_IMAGES)
    batch = min(64, int(inputs.gate_cfg.DATALOADER.TEST.BATCH_SIZE)) if inputs.gate_cfg is not None else 32
    setup = GateSetup(gate_images, inputs.gate_cfg, args.max_map_drop,
                      agreement_limits(precision, args.max_relative_diff, args.min_top_k_agreement), batch)
    verdict = run_gate(fp32_path, staged, precision, setup)
    _print(verdict.line())
    return verdict


def stage_and_check(args: argparse.Namespace, inputs: PrecisionInputs, loaded: Any, meta: ModelMetadata,
                    staged: Path, images: np.ndarray, reference: dict) -> Any:
    """Write and check every file of the export in its staging folder (``staged``: ``M.onnx`` there); the
    last check's report, or None when the reduced file's gate refused it (its line is printed)."""
    fp32_path = staged if inputs.precision == "fp32" else staged.parent / "fp32" / staged.name
    export_scorer(loaded.scorer, fp32_path, meta, opset=args.opset)
    check_onnx(fp32_path)
    report = measure_parity(fp32_path, images, reference, FP32_TOL if args.tolerance is None else args.tolerance,
                            "fp32")
    _print(report.table())
    if inputs.precision != "fp32" and report.ok:
        verdict = reduce_and_gate(args, inputs, meta, fp32_path, staged, images, reference)
        if not verdict.ok:
            print(f"error: {refusal(verdict, Path(args.output))}", file=sys.stderr)
            return None
    if args.open_vocabulary and report.ok:
        report = export_open_vocabulary(loaded, staged, images, opset=args.opset, batch_sizes=args.batch_sizes)
        _print(report.table())
    return report


def zero_shot_classes(args: argparse.Namespace) -> str | list[str]:
    """``--class-list NAME|FILE`` as given, or the names of ``--classes "a,b"``. The old ``--classes NAME|FILE``
    (a built-in list or an existing file, no comma) still works, with a deprecation note."""
    from taidpt.captions.classes import load_class_list

    if args.classes and args.class_list:
        raise ValueError("give --classes or --class-list, not both")
    if args.class_list or not args.classes:
        return args.class_list
    if "," not in args.classes:
        try:
            load_class_list(args.classes)
        except (ValueError, OSError):
            pass
        else:
            print(f"note: --classes {args.classes} (a class list) is deprecated in export.onnx; use --class-list "
                  f"(--classes is a comma-separated list of names in every command)", file=sys.stderr)
            return args.classes
    return parse_class_names(classes=args.classes) or []


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
        inputs = precision_inputs(args)
    except (ValueError, OSError, KeyError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 2
    if inputs.precision == "fp32" and (args.gate_dataset_config_file or
                                       (args.calibration_images and not args.label_free_thresholds)):
        _print("note: --gate-*/--calibration-* are for --precision fp16/int8 (and --label-free-thresholds); "
               "ignored here")
    try:
        classes = zero_shot_classes(args)
        if args.model_dir:
            Run(args.model_dir)
        elif get_method(args.trainer or DEFAULT_METHOD).trains():
            early = (f"exporting {args.trainer or DEFAULT_METHOD} needs --model-dir RUN (a train.py output directory with "
                     f"prompts)")
    except (FileNotFoundError, ValueError, OpenVocabError) as exc:
        early = str(exc)
    if early:
        print(f"error: {early}", file=sys.stderr)
        return 2
    try:
        loaded = load_scorer(args.model_dir or None, trainer=args.trainer, config_files=configs, opts=args.opts,
                             load_epoch=args.load_epoch, image_size=args.image_size, classes=classes)
    except Exception as exc:  # noqa: BLE001 - every failure here is a user input problem; one line
        msg = str(exc.args[0]) if getattr(exc, "args", None) else str(exc)
        print(f"error: {msg.splitlines()[0] if msg else type(exc).__name__}", file=sys.stderr)
        if os.environ.get("TAIDPT_DEBUG"):
            raise
        return 2
    meta = loaded.metadata.replace(export_id=new_export_id())
    if args.open_vocabulary:
        try:
            meta = open_vocabulary_metadata(loaded, out, inputs.precision)
        except ExportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    meta = meta.replace(exported=export_time())
    h, w = meta.image_size
    _print(f"{meta.trainer} {meta.backbone} ({meta.weights} weights), {meta.num_classes} classes, "
           f"{h}x{w} px{', ' + meta.checkpoint if meta.checkpoint else ''}")
    for note in loaded.notes:
        _print(f"note: {note}")

    images = parity_inputs(meta, max(args.batch_sizes), inputs.parity_paths)
    reference = torch_reference(loaded.scorer, images, args.batch_sizes)  # also fills the positional cache

    for stale in sweep_staging(out.parent):
        _print(f"note: removed {stale}, the staging folder of an export that was killed")
    companions = companion_names(out) if args.open_vocabulary else {}
    try:
        with staging_folder(out) as staging:
            final = stage_and_check(args, inputs, loaded, meta, staging / out.name, images, reference)
            if final is None:
                return 1
            kept = (publish_set if final.ok else keep_failed)(staging / out.name, out, companions)
    except Exception as exc:  # noqa: BLE001 - report one line, keep the traceback behind TAIDPT_DEBUG
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: export to {out} failed: {type(exc).__name__}: {msg}", file=sys.stderr)
        if os.environ.get("TAIDPT_DEBUG"):
            raise
        return 1
    if not final.ok:
        where = (f"the new files were moved to {', '.join(str(k) for k in kept)} so that they are not deployed by "
                 f"mistake" if kept else "no file was written")
        print(f"error: onnxruntime and PyTorch differ by more than {final.tolerance:g} ({final.precision}); {where}",
              file=sys.stderr)
        return 1
    written = read_onnx_metadata(out)
    size_mb = sum(f.stat().st_size for f in out.parent.glob(out.name + "*") if f.is_file()) / 1e6
    _print(f"wrote {out} ({size_mb:.1f} MB, opset {written.opset}, {written.precision}): "
           f"{INPUT_NAME} float32 [N,3,{h},{w}] -> {', '.join(OUTPUT_NAMES)} float32 [N,{meta.num_classes}]")
    if args.open_vocabulary:
        _print(f"wrote {', '.join(companion_names(out).values())} beside it: any class list, e.g. "
               f"python -m export.infer --model {out} --images DIR --output predictions.json --classes \"cat,dog\"")
    if args.label_free_thresholds:
        from taidpt.export.calibrate import store_label_free

        try:
            result = store_label_free(out, args.model_dir, inputs.calibration_paths, args.opts,
                                      rates_file=args.class_rates)
        except Exception as exc:  # noqa: BLE001 - the model stays written; one line says what is missing
            msg = str(exc.args[0] if exc.args else exc).splitlines()[0]
            print(f"error: label-free thresholds failed ({msg}); {out} was written without them: calibrate it with "
                  f"python -m export.calibrate", file=sys.stderr)
            return 1
        _print(f"{result.description}\n{result.table()}\nthresholds for {len(result.thresholds())} of "
               f"{len(result.classnames)} classes stored in {out}")
        if result.note():
            print(result.note(), file=sys.stderr)
    _print(f"next: python -m export.infer --model {out} --images DIR --output predictions.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
