"""How serving turns merged logits into labels: the one decision rule of infer, batch_infer and the Triton client.

A model's merged scores are logits (about -5 to +5 on a trained run), not probabilities, and
threshold 0 on them labels far too many classes. ``python -m export.calibrate`` stores one
threshold per class in the model (``taidpt.thresholds``); a :class:`Decision` applies them:

* **stored** (the default): a class is a label when its logit ``>=`` its stored threshold. Its
  ``confidence`` is ``sigmoid(logit - threshold)``: 0.5 exactly at the decision point, above 0.5
  for a label. It is a margin squashed to (0, 1), *not* a calibrated probability.
* a class with no stored threshold (an uncalibrated model, or a class name the model's thresholds
  do not cover) is decided by **top-k**: it is a label when it is among the image's ``k`` highest
  logits (all classes ranked together); its confidence is ``None``. The output names those classes.
* ``--threshold T`` (one threshold for every class; confidence ``sigmoid(logit - T)``) and
  ``--top-k K`` (every class by top-k) override the stored thresholds.

Labels are listed highest logit first (ties in class order). This module must not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_TOP_K = 3  # the paper's top-3 protocol; used only for classes without a threshold
STORED, SINGLE, TOP_K = "stored_thresholds", "threshold", "top_k"


class DecisionError(ValueError):
    """A decision rule that cannot apply to the model (e.g. ``--top-k`` out of range); one line."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow for large ``|x|``."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # NaN (no threshold) stays NaN
        return np.exp(-np.logaddexp(0.0, -x))


@dataclass(frozen=True)
class Decision:
    """The labelling rule for the output columns ``classnames``.

    ``thresholds[i]`` is column ``i``'s threshold on the merged logit, ``None`` where that column is
    decided by top-``k``. ``rule`` is :data:`STORED`, :data:`SINGLE` or :data:`TOP_K`; ``source``
    says where stored thresholds came from (the model's ``taidpt.calibration``).
    """

    classnames: tuple[str, ...]
    thresholds: tuple[float | None, ...]
    k: int
    rule: str
    source: str = ""

    @property
    def top_k_classes(self) -> list[str]:
        """Columns decided by top-k (no threshold)."""
        return [c for c, t in zip(self.classnames, self.thresholds) if t is None]

    def _threshold_row(self) -> np.ndarray:
        return np.array([np.nan if t is None else t for t in self.thresholds], dtype=np.float64)

    def confidence(self, logits: np.ndarray) -> np.ndarray:
        """``sigmoid(logit - threshold)`` per cell (``[N, C]``), NaN where a column has no threshold."""
        return sigmoid(np.asarray(logits, dtype=np.float64) - self._threshold_row())

    def selected(self, logits: np.ndarray) -> np.ndarray:
        """Boolean ``[N, C]``: which cells are labels."""
        logits = np.asarray(logits, dtype=np.float64)
        t = self._threshold_row()
        chosen = np.zeros(logits.shape, dtype=bool)
        has = ~np.isnan(t)
        chosen[:, has] = logits[:, has] >= t[has]
        if not has.all() and logits.shape[0]:
            order = np.argsort(-logits, axis=1, kind="stable")[:, :self.k]
            in_top = np.zeros(logits.shape, dtype=bool)
            np.put_along_axis(in_top, order, True, axis=1)
            chosen[:, ~has] = in_top[:, ~has]
        return chosen

    def labels(self, logits: np.ndarray) -> list[list[str]]:
        """Label names per row, highest logit first (ties in class order)."""
        logits = np.asarray(logits, dtype=np.float64)
        chosen = self.selected(logits)
        out = []
        for row, keep in zip(logits, chosen):
            order = np.argsort(-row, kind="stable")
            out.append([self.classnames[i] for i in order if keep[i]])
        return out

    def row_fields(self, logits_row: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
        """One image's ``scores`` (raw merged logits), ``confidence`` (``None`` where top-k decides)
        and ``labels``: the fields every serving output writes per image."""
        conf = self.confidence(np.asarray(logits_row)[None, :])[0]
        return {"scores": {c: float(v) for c, v in zip(self.classnames, logits_row)},
                "confidence": {c: (None if math.isnan(v) else float(v)) for c, v in zip(self.classnames, conf)},
                "labels": list(labels)}

    def tag(self) -> dict[str, Any]:
        """Short description for each row of a streamed output: the rule, and which classes top-k decides."""
        if self.rule == TOP_K:
            return {"rule": TOP_K, "k": self.k}
        out: dict[str, Any] = {"rule": self.rule}
        if self.rule == SINGLE:
            out["threshold"] = self.thresholds[0]
        fallback = self.top_k_classes
        if fallback:
            out["top_k"] = {"k": self.k, "classes": fallback}
        return out

    def describe(self) -> dict[str, Any]:
        """Full description for an output header: :meth:`tag` plus every threshold and its source."""
        out = self.tag()
        if self.rule == STORED:
            out["thresholds"] = {c: t for c, t in zip(self.classnames, self.thresholds) if t is not None}
        if self.source:
            out["source"] = self.source
        out["confidence"] = "sigmoid(logit - threshold): 0.5 at the decision point; not a probability"
        return out

    def text(self) -> str:
        """One line for stderr and the CSV ``decision`` column."""
        fallback = self.top_k_classes
        if self.rule == TOP_K:
            return f"top-{self.k} for every class" + (f" ({self.source})" if self.source else "")
        head = (f"threshold {self.thresholds[0]:g} for every class" if self.rule == SINGLE else
                f"stored per-class thresholds ({self.source or 'taidpt.thresholds'})")
        if not fallback:
            return head
        shown = ", ".join(fallback[:5]) + (f" and {len(fallback) - 5} more" if len(fallback) > 5 else "")
        return f"{head}; top-{self.k} for {shown} (no stored threshold)"


def resolve(classnames: Sequence[str], stored: Mapping[str, float] | None = None, *, threshold: float | None = None,
            top_k: int | None = None, source: str = "", default_k: int = DEFAULT_TOP_K) -> Decision:
    """The rule for output columns ``classnames``: ``top_k`` or ``threshold`` when given (they override),
    else the ``stored`` thresholds by class name, with top-``default_k`` for the classes they lack."""
    names = tuple(classnames)
    if threshold is not None and top_k is not None:
        raise DecisionError("give at most one of --threshold and --top-k")
    if top_k is not None and not 1 <= top_k <= len(names):
        raise DecisionError(f"--top-k must be between 1 and {len(names)} (the model's classes)")
    if threshold is not None and not math.isfinite(threshold):
        raise DecisionError(f"--threshold must be a finite number, got {threshold}")
    k = int(top_k) if top_k is not None else min(default_k, len(names))
    if top_k is not None:
        return Decision(names, (None,) * len(names), k, TOP_K)
    if threshold is not None:
        return Decision(names, (float(threshold),) * len(names), k, SINGLE)
    stored = dict(stored or {})
    thresholds = tuple(float(stored[c]) if c in stored else None for c in names)
    if all(t is None for t in thresholds):
        return Decision(names, thresholds, k, TOP_K, "no stored thresholds: calibrate with python -m export.calibrate")
    return Decision(names, thresholds, k, STORED, source)


def for_model(meta: Any, classnames: Sequence[str] | None = None, **overrides: Any) -> Decision:
    """:func:`resolve` for a model's metadata (its stored thresholds and their source); ``classnames``
    replaces the model's own column names (e.g. classes chosen at run time)."""
    return resolve(meta.classnames if classnames is None else classnames, meta.threshold_map,
                   source=meta.calibration, **overrides)


def decide(scores: np.ndarray, classnames: Sequence[str], *, threshold: float | None = None,
           top_k: int | None = None) -> list[list[str]]:
    """Labels per row by one plain rule: logits ``>= threshold``, or the ``top_k`` highest."""
    if (threshold is None) == (top_k is None):
        raise ValueError("give exactly one of threshold and top_k")
    return resolve(classnames, threshold=threshold, top_k=top_k).labels(scores)
