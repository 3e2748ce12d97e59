"""mAP of an exported model on a dataset (``python -m export.evaluate``), to confirm it matches the trained one.

The test set is read by the same readers as ``train.py``, for the model's own classes from its metadata
(:func:`model_test_set`), and scored with ``taidpt.evaluation.metrics``, so ``results.json`` is directly
comparable with ``train.py --eval-only``'s. See docs/deployment.md, section 4.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from taidpt.utils.atomic import atomic_write_json

from taidpt.serve.predictor import score_images
from taidpt.serve.metadata import MetadataError
from taidpt.images.preprocess import input_size
from taidpt.serve.runtime import ModelLoadError, add_runtime_arguments, open_model
from taidpt.utils.commands import DeprecatedFlag, prog_name


def load_eval_config(dataset_config: str, config_files: Sequence[str], root: str, opts: Sequence[str]) -> Any:
    """Dataset yaml -> method yaml(s) -> ``--root`` -> KEY VALUE pairs (train.py's order)."""
    from taidpt.engine.config import get_cfg_default, merge_files_and_opts

    cfg = get_cfg_default()
    merge_files_and_opts(cfg, [dataset_config, *config_files], None)
    if root:
        cfg.DATASET.ROOT = root
    merge_files_and_opts(cfg, [], list(opts) or None)
    return cfg


def _input_mismatch(cfg: Any, meta: Any) -> list[str]:
    """Differences between the config's INPUT.* and what the model was exported with."""
    out = []
    if input_size(cfg) != tuple(meta.image_size):
        out.append(f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} vs model {tuple(meta.image_size)}")
    if not np.allclose(cfg.INPUT.PIXEL_MEAN, meta.mean) or not np.allclose(cfg.INPUT.PIXEL_STD, meta.std):
        out.append("INPUT.PIXEL_MEAN/STD")
    if str(cfg.INPUT.INTERPOLATION).lower() != meta.interpolation.lower():
        out.append(f"INPUT.INTERPOLATION {cfg.INPUT.INTERPOLATION} vs model {meta.interpolation}")
    return out


def model_test_set(cfg: Any, classnames: Sequence[str]) -> Any:
    """The test set of ``cfg.DATASET`` with one label column per class of the model, in its order.

    Readers that label by class name (VOC layout, CSV) read the model's names directly; for the
    others (COCO, NUS-WIDE) the columns are matched by name, or, when the dataset's class list
    (``DATASET.CLASS_LIST`` or the built-in one) is exactly the model's, by position (that list names
    the columns, as in training). Anything else is a ValueError naming the classes that have no column.
    """
    from taidpt.captions.classes import ClassList
    from taidpt.images.readers.common import ImageSet
    from taidpt.images.registry import class_list_of, get_spec

    names = tuple(str(c) for c in classnames)
    spec = get_spec(cfg.DATASET.NAME)
    try:
        image_set = spec.read_test(cfg, ClassList.from_names("model", names))
    except (FileNotFoundError, ValueError) as exc:
        raise type(exc)(f"reading {spec.name} for the model's {len(names)} classes ({', '.join(names[:4])}"
                        f"{'...' if len(names) > 4 else ''}): {exc}") from None
    have = tuple(image_set.classnames)
    if have == names:
        return image_set
    column = {n: i for i, n in enumerate(have)}
    listed = cfg.DATASET.CLASS_LIST or spec.class_list
    if all(n in column for n in names):
        order = [column[n] for n in names]
    elif listed and len(have) == len(names) and tuple(class_list_of(cfg).names) == names:
        order = list(range(len(names)))
    else:
        missing = [n for n in names if n not in column]
        raise ValueError(f"the {spec.name} test set has no label column for {len(missing)} of the model's "
                         f"{len(names)} classes ({', '.join(missing[:4])}{'...' if len(missing) > 4 else ''}); it "
                         f"labels {len(have)}: {', '.join(have[:4])}{'...' if len(have) > 4 else ''}")
    return ImageSet(image_set.paths, image_set.targets[:, order], names, image_set.name, image_set.missing,
                    image_set.csv_labels)


def evaluate_model(model: Any, cfg: Any, *, batch_size: int = 32, workers: int = 4, progress: bool = True,
                   threshold: float | None = None) -> dict[str, Any]:
    """Score the test set of ``cfg.DATASET`` with ``model`` and return ``evaluate_multilabel``'s dict
    plus the skipped/missing images and a description of the model and protocol. The classes are the
    model's (:func:`model_test_set`)."""
    from taidpt.evaluation.metrics import evaluate_multilabel

    meta = model.metadata
    image_set = model_test_set(cfg, meta.classnames)

    def report(path: str, reason: str) -> None:
        logging.getLogger("taidpt").warning("skipping image %s: %s", path, reason)

    preds = score_images(model, image_set.paths, batch_size=batch_size, workers=workers, progress=progress,
                    on_skip=report)
    if not preds.paths:
        raise RuntimeError(f"no image of {image_set.name} could be read ({len(preds.skipped)} skipped)")
    targets = image_set.targets[np.asarray(preds.indices, dtype=np.int64)]
    results = evaluate_multilabel(preds.global_logits, preds.local_logits, targets, list(meta.classnames),
                                  merge_rate=meta.merge_rate, threshold=threshold)
    results["skipped_images"] = [p for p, _ in preds.skipped]
    results["n_skipped_images"] = len(preds.skipped)
    results.update(image_set.result_fields())
    info = {
        "model": str(model.path),
        "provider": model.provider,
        "precision": meta.precision,
        "trainer": meta.trainer,
        "dataset": cfg.DATASET.NAME,
        "test_set": image_set.name,
        "classes": list(meta.classnames),
        "backbone": meta.backbone,
        "weights": meta.weights,
        "checkpoint": meta.checkpoint,
        "image_size": list(meta.image_size),
        "protocol": {"voc_difficult": cfg.DATASET.VOC_DIFFICULT if cfg.DATASET.NAME == "VOC2007" else None,
                     "threshold": threshold},
        "taidpt_version": meta.taidpt_version,
        "seconds": round(preds.seconds, 2),
    }
    return {**info, **results}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("python -m export.evaluate"),
                                description="mAP of an exported TaI-DPT model on a dataset (same readers and metrics as train.py).",
                                epilog="Trailing KEY VALUE pairs override config keys, e.g. DATASET.VOC_DIFFICULT ignore.")
    p.add_argument("--model", required=True, help="MODEL.onnx or MODEL.plan")
    p.add_argument("--root", default="", help="dataset root (DATASET.ROOT)")
    p.add_argument("--dataset-config-file", required=True, help="e.g. configs/datasets/voc2007.yaml")
    p.add_argument("--config-file", action="append", default=[], help="method yaml (TEST.THRESHOLD, DATALOADER.TEST.BATCH_SIZE)")
    p.add_argument("--output-dir", default="", help="where results.json goes (default: <model>_eval/ beside the model)")
    p.add_argument("--batch-size", type=int, default=None, help="images per call (default DATALOADER.TEST.BATCH_SIZE)")
    p.add_argument("--metric-threshold", type=float, default=None,
                   help="merged-score cut of the CP/CR/CF1 metrics (default: the model's TEST.THRESHOLD)")
    p.add_argument("--threshold", dest="metric_threshold", type=float, action=DeprecatedFlag, use="--metric-threshold")
    add_runtime_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from taidpt.engine.config import get_cfg_default
    from taidpt.evaluation.metrics import format_coop_lines, format_results_table

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        cfg = load_eval_config(args.dataset_config_file, args.config_file, args.root, args.opts)
        batch = int(args.batch_size or cfg.DATALOADER.TEST.BATCH_SIZE)
        model = open_model(args.model, args.providers, threads=args.threads, max_batch=batch)
    except (KeyError, ValueError, FileNotFoundError, ModelLoadError, MetadataError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    meta = model.metadata
    if args.config_file:
        for diff in _input_mismatch(cfg, meta):
            print(f"note: the config's {diff}; the model's own preprocessing is used", file=sys.stderr)
    if args.metric_threshold is not None:
        threshold = float(args.metric_threshold)
    elif float(cfg.TEST.THRESHOLD) != float(get_cfg_default().TEST.THRESHOLD):
        threshold = float(cfg.TEST.THRESHOLD)
    else:
        threshold = meta.threshold
    try:
        payload = evaluate_model(model, cfg, batch_size=batch, workers=args.workers, progress=not args.no_progress,
                                 threshold=threshold)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    finally:
        model.close()
    out_dir = Path(args.output_dir) if args.output_dir else Path(args.model).with_name(Path(args.model).stem + "_eval")
    out = out_dir / "results.json"
    atomic_write_json(out, payload)
    print(f"{payload['test_set']}: {payload['n_images']} images, provider {payload['provider']}, "
          f"{meta.precision}, {payload['n_skipped_images']} skipped")
    print(format_results_table(payload))
    print(format_coop_lines(payload))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
