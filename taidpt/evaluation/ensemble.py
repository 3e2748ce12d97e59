"""Ensemble a TaI-DPT run with an image-prompting run (the paper's "TaI-DPT + DualCoOp / CoOp").

Each run's ``predictions.npz`` headline ``scores`` are min-max normalised over the whole matrix and combined
as ``(1 - rate) * first + rate * second``: ``rate`` weighs the *second* run, as in the reference's
``ensemble_score.py``. Rows are matched by image path, so both runs must have scored the same test images.
Command and output files: docs/image-prompting.md, "Predictions and ensembling".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from taidpt.utils.atomic import atomic_savez, atomic_write_json
from taidpt.evaluation.metrics import mean_ap, per_class_ap
from taidpt.engine.run import Run
from taidpt.evaluation.predictions import Predictions, load_predictions
from taidpt.networks.merge import merge_scores
from taidpt.utils.commands import prog_name



def min_max(scores: np.ndarray) -> np.ndarray:
    """``(s - min) / (max - min)`` over the whole matrix (float64); a constant matrix maps to zeros."""
    s = np.asarray(scores, dtype=np.float64)
    span = float(s.max() - s.min())
    return (s - s.min()) / span if span > 0 else np.zeros_like(s)


def combine(scores_a: np.ndarray, scores_b: np.ndarray, rate: float) -> np.ndarray:
    """``(1 - rate) * minmax(a) + rate * minmax(b)``."""
    if not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"--rate must be in [0, 1], got {rate}")
    return merge_scores(min_max(scores_b), min_max(scores_a), float(rate))


def align(a: Predictions, b: Predictions) -> np.ndarray:
    """Row indices of ``b`` in the order of ``a``'s images; refuses other classes, images or labels."""
    if a.classnames != b.classnames:
        raise ValueError(f"the runs score different classes ({a.classnames[:3]}... vs {b.classnames[:3]}...)")
    row = {p: i for i, p in enumerate(b.paths)}
    missing = [p for p in a.paths if p not in row]
    if missing or len(a.paths) != len(b.paths):
        raise ValueError(f"the runs scored different images ({len(a.paths)} vs {len(b.paths)}, e.g. "
                         f"{(missing or [p for p in b.paths if p not in set(a.paths)] or ['?'])[0]}): "
                         f"evaluate both on the same test set and DATA root")
    order = np.array([row[p] for p in a.paths], dtype=np.int64)
    if not np.array_equal(a.targets, b.targets[order]):
        raise ValueError("the runs have different labels for the same images (another VOC_DIFFICULT or split?)")
    return order


def _ap_table(scores: np.ndarray, targets: np.ndarray, classnames: Sequence[str]) -> dict[str, float | None]:
    return {c: (None if np.isnan(v) else float(v)) for c, v in zip(classnames, per_class_ap(scores, targets))}


def run_predictions(source: str | Path) -> Predictions:
    """The scores of a run folder (read through :class:`taidpt.engine.run.Run`) or of a predictions file."""
    path = Path(source)
    return load_predictions(Run(path).predictions_path if path.is_dir() else path)


def ensemble_runs(run_a: str | Path, run_b: str | Path, rate: float, output: str | Path) -> dict:
    """Ensemble two runs (folders or ``predictions.npz`` files), write the outputs, return the summary."""
    a, b = run_predictions(run_a), run_predictions(run_b)
    order = align(a, b)
    scores_b = b.scores[order]
    ens = combine(a.scores, scores_b, rate)
    targets = a.targets
    summary = {
        "rate": float(rate),
        "formula": "(1 - rate) * minmax(scores of run a) + rate * minmax(scores of run b); minmax over the matrix",
        "runs": {"a": {"source": str(run_a), "trainer": a.trainer}, "b": {"source": str(run_b), "trainer": b.trainer}},
        "n_images": int(targets.shape[0]),
        "mAP": {"a": mean_ap(a.scores, targets), "b": mean_ap(scores_b, targets), "ensemble": mean_ap(ens, targets)},
        "per_class_AP": _ap_table(ens, targets, a.classnames),
    }
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    atomic_savez(out / "ensemble_predictions.npz", scores_a=a.scores, scores_b=scores_b,
                 normalized_a=min_max(a.scores).astype(np.float32), normalized_b=min_max(scores_b).astype(np.float32),
                 ensemble=ens.astype(np.float32), targets=targets, paths=np.asarray(a.paths, dtype=str),
                 classnames=np.asarray(a.classnames, dtype=str), rate=np.float64(rate))
    atomic_write_json(out / "ensemble.json", summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("python -m taidpt.evaluation.ensemble"), description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs=2, required=True, metavar=("RUN_TAIDPT", "RUN_IMAGES"),
                   help="two run folders (or predictions.npz files): the TaI-DPT run, then the image-prompting run")
    p.add_argument("--rate", type=float, default=0.5,
                   help="weight of the second run after min-max normalisation (reference: 0.9 for partial labels)")
    p.add_argument("--output", required=True, help="folder for ensemble.json and ensemble_predictions.npz")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        s = ensemble_runs(args.runs[0], args.runs[1], args.rate, args.output)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = s["mAP"]
    print(f"mAP {s['runs']['a']['trainer']} (a): {m['a']:.2f}  {s['runs']['b']['trainer']} (b): {m['b']:.2f}  "
          f"ensemble (rate {s['rate']:g} on b): {m['ensemble']:.2f}  [{s['n_images']} images]")
    print(f"written to {Path(args.output) / 'ensemble.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
