"""Choose per-class decision thresholds for an exported model and store them in it (``export.calibrate``).

Labelled (F1-optimal on a split that is not the test split) or label-free (each class predicted as often as
the run's captions name it); the images are scored by the model itself, so the thresholds fit the numbers
serving sees. A class below :data:`~taidpt.export.thresholds.MIN_SUPPORT` gets none and is decided by top-k.
The labelled way runs without torch. See docs/deployment.md, section 7.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from taidpt.export.calibration_data import (CalibrationDataError, caption_frequencies, check_readable, given_rates,
                                            labelled_split)
from taidpt.export.threshold_store import store_thresholds
from taidpt.export.thresholds import MIN_SUPPORT, ClassCut, f1_optimal, rate_matching
from taidpt.serve.infer import InputError, collect_images
from taidpt.serve.predictor import score_images
from taidpt.serve.metadata import MetadataError
from taidpt.serve.runtime import ModelLoadError, Runner, add_runtime_arguments, open_model
from taidpt.utils.atomic import OutputPathError, atomic_write_json, check_writable
from taidpt.utils.commands import prog_name


@dataclass
class Calibration:
    """Thresholds chosen for a model's classes, and how."""

    classnames: list[str]
    cuts: list[ClassCut]
    description: str
    n_images: int
    n_skipped: int

    def thresholds(self) -> dict[str, float]:
        """Class -> threshold, for the classes the data could decide."""
        return {c: k.threshold for c, k in zip(self.classnames, self.cuts) if math.isfinite(k.threshold)}

    def support(self) -> dict[str, int]:
        """Class -> support (positive images, or expected positives label-free), every class."""
        return {c: k.support for c, k in zip(self.classnames, self.cuts)}

    def note(self) -> str:
        """The line naming the classes left to top-k, each with why; empty when every class has a threshold."""
        why = [f"{c} ({k.reason})" for c, k in zip(self.classnames, self.cuts) if not math.isfinite(k.threshold)]
        return f"note: no threshold for {', '.join(why)}: decided by top-k when serving" if why else ""

    def table(self) -> str:
        """Per-class lines: threshold, images labelled, support, F1 (labelled) or target rate (label-free),
        or why the class has no threshold."""
        lines = [f"{'class':<24} {'threshold':>10} {'labelled':>9} {'support':>7}  {'F1 / target rate':>16}"]
        for c, k in zip(self.classnames, self.cuts):
            t = f"{k.threshold:10.4f}" if math.isfinite(k.threshold) else f"{'top-k':>10}"
            if not math.isfinite(k.threshold):
                extra = k.reason
            elif math.isfinite(k.f1):
                extra = f"F1 {100 * k.f1:5.1f}"
            else:
                extra = f"{k.n_predicted / max(k.n_images, 1):.3f} vs {k.target_rate:.3f}"
            lines.append(f"{c[:24]:<24} {t} {k.n_predicted:>5}/{k.n_images:<4} {k.support:>6}  {extra:>16}")
        return "\n".join(lines)

    def check_support(self) -> None:
        """Raise :class:`CalibrationDataError` when no class reaches the calibration minimum."""
        if self.thresholds():
            return
        rates = [k.target_rate for k in self.cuts if math.isfinite(k.target_rate) and k.target_rate > 0]
        if rates:
            need = math.ceil(MIN_SUPPORT / max(rates) - 1e-9)
            raise CalibrationDataError(f"no class reaches {MIN_SUPPORT} expected positives (caption rate x images) "
                                       f"on {self.n_images} readable image(s): give at least {need} unlabelled images")
        raise CalibrationDataError(f"no class reaches {MIN_SUPPORT} positive images among the {self.n_images} "
                                   f"readable calibration image(s): calibrate on a larger labelled split")


def _score(model: Runner, paths: Sequence[str], batch_size: int, workers: int, progress: bool) -> Any:
    """Score the images; unreadable ones are skipped under :func:`check_readable`'s rule."""
    preds = score_images(model, paths, batch_size=batch_size, workers=workers, progress=progress)
    check_readable(len(preds.paths), preds.skipped)
    return preds


def calibrate_labelled(model: Runner, cfg: Any, split: str, *, batch_size: int = 32, workers: int = 4,
                       progress: bool = False) -> Calibration:
    """F1-optimal thresholds on the labelled ``split`` of ``cfg.DATASET`` (never its test split)."""
    names = list(model.metadata.classnames)
    image_set = labelled_split(cfg, split, names)
    preds = _score(model, image_set.paths, batch_size, workers, progress)
    cuts = f1_optimal(preds.scores, image_set.targets[np.asarray(preds.indices, dtype=np.int64)])
    result = Calibration(names, cuts, f"labelled: F1-optimal per class on {image_set.name} ({len(preds.paths)} images)",
                         len(preds.paths), len(preds.skipped))
    result.check_support()
    return result


def calibrate_label_free(model: Runner, cfg: Any, paths: Sequence[str], *, batch_size: int = 32, workers: int = 4,
                         progress: bool = False, rates_file: str = "") -> Calibration:
    """Thresholds at which each class's positive rate on the unlabelled ``paths`` equals its caption frequency,
    or the rate ``rates_file`` gives it (then ``cfg`` is not read)."""
    names = list(model.metadata.classnames)
    if rates_file:
        rates = given_rates(rates_file, names)
        source = f"the rates of {Path(rates_file).name}"
    else:
        freqs = caption_frequencies(cfg, names, progress=progress)
        rates = freqs.rates
        source = (f"caption frequency ({freqs.n_captions} captions of {Path(freqs.source).name}, "
                  f"templates left out)")
    preds = _score(model, paths, batch_size, workers, progress)
    cuts = rate_matching(preds.scores, rates)
    text = f"label-free: positive rate = {source} on {len(preds.paths)} unlabelled images"
    result = Calibration(names, cuts, text, len(preds.paths), len(preds.skipped))
    result.check_support()
    return result


def store(model_path: str | Path, result: Calibration, output: str | Path | None = None) -> Path:
    """Write the result's thresholds, description, image count and per-class support into the model."""
    return store_thresholds(model_path, result.thresholds(), result.description, output, images=result.n_images,
                            support=result.support())


def store_label_free(model_path: str | Path, run_dir: str, paths: Sequence[str], opts: Sequence[str] = (), *,
                     batch_size: int = 32, workers: int = 4, progress: bool = False,
                     rates_file: str = "") -> Calibration:
    """Label-free thresholds for an exported model from unlabelled ``paths`` and the run's captions (or
    ``rates_file``), stored in the model file (what ``python -m export.onnx --label-free-thresholds`` does
    after writing it)."""
    from taidpt.engine.run import Run

    cfg = Run(run_dir).config(opts=list(opts))
    model = open_model(model_path, max_batch=batch_size)
    try:
        result = calibrate_label_free(model, cfg, paths, batch_size=batch_size, workers=workers, progress=progress,
                                      rates_file=rates_file)
    finally:
        model.close()
    store(model_path, result)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("python -m export.calibrate"),
                                description="Store per-class decision thresholds in an exported TaI-DPT model.",
                                epilog="Trailing KEY VALUE pairs override config keys (the dataset config's, or the "
                                       "run's with --model-dir).")
    p.add_argument("--model", required=True, help="MODEL.onnx (or MODEL.plan: its .plan.json sidecar is rewritten)")
    way = p.add_mutually_exclusive_group(required=True)
    way.add_argument("--labelled-split", metavar="SPLIT",
                     help="labelled: F1-optimal thresholds on this split (e.g. trainval; never the test split)")
    way.add_argument("--unlabelled-images", metavar="IMAGES",
                     help="label-free: a folder, .txt list or glob of unlabelled target images (needs --model-dir)")
    p.add_argument("--dataset-config-file", default="", help="with --labelled-split: e.g. configs/datasets/voc2007.yaml")
    p.add_argument("--config-file", action="append", default=[], help="with --labelled-split: method yaml(s)")
    p.add_argument("--model-dir", default="", help="with --unlabelled-images: the run folder (its caption corpus)")
    p.add_argument("--class-rates", default="", metavar="FILE",
                   help="with --unlabelled-images: 'class name, rate' per line, the fraction of your images showing "
                        "each class, instead of the run's caption frequencies (needed after generated captions)")
    p.add_argument("--root", default="", help="dataset root (DATASET.ROOT; default: the config's or the run's)")
    p.add_argument("--output", default="", help="write the calibrated model here (default: rewrite --model)")
    p.add_argument("--report", default="", help="also write the per-class table as JSON")
    p.add_argument("--batch-size", type=int, default=32, help="images per model call")
    add_runtime_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def _config(args: argparse.Namespace) -> Any:
    """The dataset config (labelled) or the run's config (label-free), with --root and KEY VALUE applied."""
    if args.labelled_split is not None:
        if args.class_rates:
            raise CalibrationDataError("--class-rates goes with --unlabelled-images (label-free thresholds)")
        if not args.dataset_config_file:
            raise CalibrationDataError("--labelled-split needs --dataset-config-file (the dataset the split belongs to)")
        from taidpt.export.evaluate import load_eval_config

        return load_eval_config(args.dataset_config_file, args.config_file, args.root, args.opts)
    if args.class_rates:
        return None  # the rates come from the file: no run is read
    if not args.model_dir:
        raise CalibrationDataError("--unlabelled-images needs --model-dir RUN (the run whose captions give the rates) "
                                   "or --class-rates FILE")
    from taidpt.engine.run import Run

    return Run(args.model_dir).config(opts=[*(["DATASET.ROOT", args.root] if args.root else []), *args.opts])


def _check_output(args: argparse.Namespace) -> None:
    for flag, value, suffixes in (("--output", args.output, (".onnx",)), ("--report", args.report, (".json",))):
        if value and Path(value).suffix.lower() not in suffixes:
            raise OutputPathError(f"{flag} {value}: expected a {' or '.join(suffixes)} file name")
        if value:
            check_writable(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        _check_output(args)
        cfg = _config(args)
        paths = collect_images(args.unlabelled_images) if args.unlabelled_images is not None else []
        model = open_model(args.model, args.providers, threads=args.threads, max_batch=args.batch_size)
        if args.class_rates:
            try:
                given_rates(args.class_rates, model.metadata.classnames)  # a bad line stops here, before scoring
            except ValueError:
                model.close()
                raise
    except (CalibrationDataError, InputError, OutputPathError, ModelLoadError, MetadataError, KeyError, ValueError,
            FileNotFoundError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    options = dict(batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress)
    try:
        if args.labelled_split is not None:
            result = calibrate_labelled(model, cfg, args.labelled_split, **options)
        else:
            result = calibrate_label_free(model, cfg, paths, rates_file=args.class_rates, **options)
    except CalibrationDataError as exc:
        print(f"error: {exc}; {args.model} was left unchanged", file=sys.stderr)
        return 2
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    finally:
        model.close()
    if result.note():
        print(result.note(), file=sys.stderr)
    try:
        written = store(args.model, result, args.output or None)
        if args.report:
            atomic_write_json(args.report, {"model": str(written), "calibration": result.description,
                                            "n_images": result.n_images, "n_skipped": result.n_skipped,
                                            "min_support": MIN_SUPPORT, "thresholds": result.thresholds(),
                                            "classes": {c: {**{k: (v if math.isfinite(v) else None) for k, v in
                                                               asdict(cut).items()}, "reason": cut.reason}
                                                        for c, cut in zip(result.classnames, result.cuts)}})
    except (MetadataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{result.description}; {result.n_skipped} image(s) skipped")
    print(result.table())
    print(f"thresholds for {len(result.thresholds())} of {len(result.classnames)} classes stored in {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
