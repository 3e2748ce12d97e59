"""Per-class decision thresholds on merged logits, two ways (numpy only; used by ``python -m export.calibrate``).

:func:`f1_optimal` (labelled) tries every distinct cut of the sorted scores, so it finds the exact F1
optimum per class (ties: the fewest predictions); :func:`rate_matching` (label-free) makes a target fraction
of the images positive. Both put the threshold halfway between two scores, so ``logit >= threshold``
reproduces the cut with a margin for the ~1e-5 a score moves between batch sizes or providers. A class whose
support is below :data:`MIN_SUPPORT` gets ``nan``: serving decides it by top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np

MIN_SUPPORT = 3  # positive images (labelled) or expected positives (label-free) a class needs for a threshold


@dataclass(frozen=True)
class ClassCut:
    """One class's threshold and what it does on the calibration images."""

    threshold: float  # nan: undecided
    n_predicted: int
    n_images: int
    f1: float = float("nan")  # labelled only: the class's F1 at the threshold (fraction)
    target_rate: float = float("nan")  # label-free only
    support: int = 0  # positives (labelled) or expected positives, rate x images rounded down (label-free)

    @property
    def reason(self) -> str:
        """Why the class has no threshold (empty when it has one)."""
        if math.isfinite(self.threshold):
            return ""
        if math.isfinite(self.target_rate) and self.target_rate <= 0:
            return "never named by a caption"
        if self.support == 0 and not math.isfinite(self.target_rate):
            return "no positive"
        kind = "expected positive" if math.isfinite(self.target_rate) else "positive"
        return f"{self.support} {kind}{'s' if self.support != 1 else ''}, fewer than {MIN_SUPPORT}"


def _valid_cuts(desc: np.ndarray) -> np.ndarray:
    """Numbers ``k`` (0..N) of top scores a threshold can label: never between two equal scores."""
    n = len(desc)
    k = np.arange(n + 1)
    ok = np.ones(n + 1, dtype=bool)
    ok[1:n] = desc[:-1] > desc[1:]
    return k[ok]


def cut_threshold(desc: np.ndarray, k: int) -> float:
    """The threshold that labels exactly the ``k`` highest of the descending scores ``desc``:
    halfway to the next lower score, or half an average gap beyond the extremes (k = 0 or N)."""
    n = len(desc)
    spread = float(desc[0] - desc[-1]) if n > 1 else 0.0
    half_gap = spread / (2 * (n - 1)) if spread > 0 else 0.5
    if k <= 0:
        return float(desc[0]) + half_gap
    if k >= n:
        return float(desc[-1]) - half_gap
    return 0.5 * (float(desc[k - 1]) + float(desc[k]))


def _descending(column: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.argsort(-column, kind="stable")
    return (column[order], *(o[order] for o in others))


def f1_optimal(scores: np.ndarray, targets: np.ndarray) -> list[ClassCut]:
    """Per class of ``[N, C]`` ``scores`` and ``targets`` (1 positive, 0 negative, -1 ignored), the
    threshold with the highest F1 on these images; ``nan`` for a class with fewer than :data:`MIN_SUPPORT` positives."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be [N, C]")
    cuts = []
    for c in range(scores.shape[1]):
        keep = targets[:, c] >= 0
        desc, y = _descending(scores[keep, c], (targets[keep, c] > 0).astype(np.int64))
        positives = int(y.sum())
        if positives < MIN_SUPPORT:
            cuts.append(ClassCut(float("nan"), 0, len(desc), support=positives))
            continue
        k = _valid_cuts(desc)
        tp = np.concatenate([[0], np.cumsum(y)])[k]
        f1 = 2.0 * tp / (k + positives)
        best = int(k[int(np.argmax(f1))])  # first maximum: the smallest k, the highest threshold
        cuts.append(ClassCut(cut_threshold(desc, best), best, len(desc), f1=float(f1.max()), support=positives))
    return cuts


def expected_positives(rate: float, n_images: int) -> int:
    """A label-free class's support: ``rate x n_images`` rounded down (a rounding error short of a whole
    number still counts as that number)."""
    return int(math.floor(rate * n_images + 1e-9))


def rate_matching(scores: np.ndarray, rates: np.ndarray) -> list[ClassCut]:
    """Per class of ``[N, C]`` ``scores``, the threshold labelling the fraction ``rates[c]`` of the images
    (the nearest fraction that ties allow); ``nan`` for a rate of 0 (the class is never described) or
    fewer than :data:`MIN_SUPPORT` expected positives."""
    scores = np.asarray(scores, dtype=np.float64)
    rates = np.asarray(rates, dtype=np.float64)
    if scores.ndim != 2 or rates.shape != (scores.shape[1],):
        raise ValueError(f"scores must be [N, C] and rates [C], got {scores.shape} and {rates.shape}")
    if not np.all((rates >= 0) & (rates <= 1)):
        raise ValueError("rates must lie in [0, 1]")
    n = scores.shape[0]
    cuts = []
    for c in range(scores.shape[1]):
        support = expected_positives(float(rates[c]), n)
        if rates[c] <= 0 or support < MIN_SUPPORT:
            cuts.append(ClassCut(float("nan"), 0, n, target_rate=float(rates[c]), support=support))
            continue
        (desc,) = _descending(scores[:, c])
        k = _valid_cuts(desc)
        best = int(k[int(np.argmin(np.abs(k - rates[c] * n)))])
        cuts.append(ClassCut(cut_threshold(desc, best), best, n, target_rate=float(rates[c]), support=support))
    return cuts
