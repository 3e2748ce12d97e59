"""Precision-recall curves and per-class AP bars of a run, drawn from its ``predictions.npz``.

``python -m taidpt.evaluation.plots RUN`` writes ``pr_curves.png`` and ``per_class_ap.png``. The curves use
:func:`taidpt.evaluation.metrics.precision_recall_curve`, the thresholds AP is defined over, drawn as steps,
so the area under each curve is the class's AP. Options and figures: docs/training.md, "Watching a run".
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from taidpt.utils.atomic import atomic_file, check_writable
from taidpt.evaluation.metrics import excluded_classes, per_class_ap, precision_recall_curve
from taidpt.utils.pathtext import escape_path
from taidpt.evaluation.predictions import PREDICTIONS_FILE, Predictions, load_predictions
from taidpt.networks.merge import merge_scores
from taidpt.utils.commands import prog_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SCORES = ("merged", "global", "local")
PR_FILE, AP_FILE = "pr_curves.png", "per_class_ap.png"
GRID_MAX = 16  # up to this many classes, one small plot each
EXTREMES = 5  # beyond it, the best and the worst few in one plot


@dataclass
class ClassCurves:
    """What the two figures show: the chosen classes' PR curves and AP, the run's mAP, what was skipped."""

    title: str
    curves: dict[str, tuple[np.ndarray, np.ndarray]]  # class -> (recall, precision) points as drawn
    ap: dict[str, float]  # class -> AP in percent, for the drawn classes
    mean_ap: float  # over every scorable class of the run, as results.json reports it
    skipped: dict[str, str]  # chosen class -> why it has no AP


def score_matrix(pred: Predictions, score: str) -> np.ndarray:
    """The ``[N, C]`` scores ``score`` names (float64; ``merged`` recomputed from global and local)."""
    g, loc = pred.global_.astype(np.float64), pred.local.astype(np.float64)
    if score == "global":
        return g
    if score == "local":
        return loc
    return merge_scores(g, loc, pred.merge_rate)


def step_points(recall: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points drawn with ``drawstyle="steps-pre"``: ``(0, P_1)`` then every ``(R_n, P_n)``, so the
    area under the drawn steps, ``sum (x_i - x_{i-1}) y_i``, is ``sum_n (R_n - R_{n-1}) P_n`` = AP."""
    return np.concatenate([[0.0], recall]), np.concatenate([precision[:1], precision])


def class_curves(pred: Predictions, score: str = "merged", classes: Sequence[str] | None = None) -> ClassCurves:
    """PR points and AP of ``classes`` (default: all) under ``score``; ValueError for unknown names."""
    if score not in SCORES:
        raise ValueError(f"--score must be one of {', '.join(SCORES)}, got {score!r}")
    chosen = list(classes) if classes else list(pred.classnames)
    unknown = [c for c in chosen if c not in pred.classnames]
    if unknown:
        raise ValueError(f"unknown class(es) {', '.join(map(repr, unknown))}: the run has "
                         f"{', '.join(pred.classnames[:12])}{', ...' if len(pred.classnames) > 12 else ''}")
    scores = score_matrix(pred, score)
    aps = per_class_ap(scores, pred.targets)
    reasons = excluded_classes(pred.targets)
    column = {c: i for i, c in enumerate(pred.classnames)}
    skipped = {c: reasons[column[c]] for c in chosen if column[c] in reasons}
    curves = {c: step_points(*precision_recall_curve(scores[:, column[c]], pred.targets[:, column[c]])[:2])
              for c in chosen if c not in skipped}
    mean = math.nan if np.all(np.isnan(aps)) else float(np.nanmean(aps))
    title = f"{pred.trainer}, {score} score, {len(pred.targets)} images: mAP {mean:.2f}"
    return ClassCurves(title, curves, {c: float(aps[column[c]]) for c in curves}, mean, skipped)


def _figure(width: float, height: float) -> "Figure":
    # The Agg canvas directly, not pyplot: no global backend switch, no figure registry (as taidpt.demo draws).
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - drawing only
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _note_skipped(fig: "Figure", cc: ClassCurves) -> None:
    if cc.skipped:
        text = "not scored (left out of mAP): " + "; ".join(f"{c}: {r.split(' (')[0]}" for c, r in cc.skipped.items())
        fig.text(0.01, 0.005, text[:300], fontsize=7, va="bottom", wrap=True)


def _pr_axes(ax, title: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def draw_pr_curves(cc: ClassCurves) -> "Figure":
    """A grid of small step plots, one per class (each line's ``gid`` is its class), or, beyond
    :data:`GRID_MAX` classes, one plot of the :data:`EXTREMES` best and worst."""
    names = list(cc.curves)
    if not names:
        raise ValueError("no chosen class has both a positive and a negative label: nothing to draw")
    if len(names) <= GRID_MAX:
        cols = math.ceil(math.sqrt(len(names)))
        rows = math.ceil(len(names) / cols)
        fig = _figure(2.7 * cols, 2.5 * rows + 0.8)
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for ax, name in zip(axes, names):
            ax.plot(*cc.curves[name], drawstyle="steps-pre", gid=name, color="#2a7ab9")
            _pr_axes(ax, f"{name}: AP {cc.ap[name]:.1f}")
        for ax in axes[len(names):]:
            ax.set_visible(False)
        for ax in axes[(rows - 1) * cols:]:
            ax.set_xlabel("recall")
        for ax in axes[::cols]:
            ax.set_ylabel("precision")
    else:
        ranked = sorted(names, key=lambda c: -cc.ap[c])
        shown = ranked[:EXTREMES] + ranked[-EXTREMES:]
        fig = _figure(8, 6.5)
        ax = fig.subplots()
        for i, name in enumerate(shown):
            style = "-" if i < EXTREMES else "--"
            ax.plot(*cc.curves[name], style, drawstyle="steps-pre", gid=name, label=f"{name} ({cc.ap[name]:.1f})")
        _pr_axes(ax, f"best and worst {EXTREMES} of {len(names)} classes by AP")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Precision-recall: {cc.title}", fontsize=10)
    _note_skipped(fig, cc)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def draw_per_class_ap(cc: ClassCurves) -> "Figure":
    """Horizontal AP bars, highest first, with the run's mAP as a dashed line."""
    ranked = sorted(cc.ap, key=lambda c: -cc.ap[c])
    fig = _figure(8, max(3.0, 0.24 * len(ranked) + 1.6))
    ax = fig.subplots()
    y = np.arange(len(ranked))
    ax.barh(y, [cc.ap[c] for c in ranked], color="#2a7ab9")
    ax.set_yticks(y, ranked, fontsize=8 if len(ranked) <= 40 else 6)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("AP (%)")
    if not math.isnan(cc.mean_ap):
        ax.axvline(cc.mean_ap, color="#c0392b", linestyle="--", label=f"mAP {cc.mean_ap:.2f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"Per-class AP: {cc.title}", fontsize=10)
    _note_skipped(fig, cc)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def save_png(fig: "Figure", path: Path) -> Path:
    """Write ``fig`` as a PNG, atomically (a reader never sees half an image)."""
    with atomic_file(path) as fh:
        fig.savefig(fh, format="png")
    return path


def plot_run(run: str | Path, out: str | Path | None = None, score: str = "merged",
             classes: Sequence[str] | None = None) -> tuple[list[Path], ClassCurves]:
    """Draw ``pr_curves.png`` and ``per_class_ap.png`` of ``run`` into ``out``; returns the files and curves.

    Errors are one line naming the file: no such run, no or unreadable ``predictions.npz``, bad labels.
    """
    run = Path(run)
    if not run.exists():
        raise FileNotFoundError(f"{escape_path(run)}: no such run folder or {PREDICTIONS_FILE}")
    npz = run / PREDICTIONS_FILE if run.is_dir() else run
    pred = load_predictions(npz)
    folder = Path(out) if out is not None else npz.parent
    for name in (PR_FILE, AP_FILE):
        check_writable(folder / name)
    try:
        cc = class_curves(pred, score, classes)
        figures = {PR_FILE: draw_pr_curves(cc), AP_FILE: draw_per_class_ap(cc)}
    except ValueError as exc:
        raise ValueError(f"{escape_path(npz)}: {exc}") from None
    try:
        return [save_png(fig, folder / name) for name, fig in figures.items()], cc
    except OSError as exc:
        raise ValueError(f"{escape_path(folder)}: cannot write the plots there ({exc.strerror or exc})") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m taidpt.evaluation.plots`` arguments."""
    p = argparse.ArgumentParser(prog=prog_name("python -m taidpt.evaluation.plots"), description=__doc__.split("\n\n")[0])
    p.add_argument("run", help=f"a run folder (holding {PREDICTIONS_FILE}) or a {PREDICTIONS_FILE} file")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: the folder of the predictions)")
    p.add_argument("--score", choices=SCORES, default="merged", help="which scores to rank by (default: merged)")
    p.add_argument("--classes", default="", help="comma-separated class names to draw (default: all)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Draw the plots; print the files written and the skipped classes, or one error line (exit 2)."""
    args = build_parser().parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    try:
        files, cc = plot_run(args.run, args.out, args.score, classes or None)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{cc.title} ({len(cc.curves)} classes drawn)")
    for name, reason in cc.skipped.items():
        print(f"skipped {name}: {reason}")
    for path in files:
        print(f"written {escape_path(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
