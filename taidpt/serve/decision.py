"""How serving turns merged logits into labels: the one decision rule of infer, batch_infer and the Triton client.

By default a class is a label when its logit ``>=`` its stored threshold (``taidpt.thresholds``, from
``python -m export.calibrate``), with ``confidence = sigmoid(logit - threshold)``: a squashed margin, not a
probability. A class without a stored threshold is decided by top-k (:func:`fallback_k`); ``--threshold T``
and ``--top-k K`` override. Labels are listed highest logit first. See docs/deployment.md, sections 2 and 7.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_TOP_K = 3  # the paper's top-3 protocol; used only for classes without a threshold
ONE_CLASS = "one class: top-k cannot decide it, so no label without a threshold (--threshold T, or calibrate)"
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
    short_list: bool = False  # k was cut below the default so that a short list is never all labels

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

    def shifted(self, delta: float) -> "Decision":
        """The same rule with every threshold moved by ``delta`` (logit units; top-k columns unchanged):
        a positive shift labels fewer classes. ``source`` records the shift."""
        if not math.isfinite(delta):
            raise DecisionError(f"a threshold shift must be a finite number, got {delta}")
        if delta == 0 or all(t is None for t in self.thresholds):
            return self
        moved = tuple(None if t is None else t + float(delta) for t in self.thresholds)
        note = f"shifted by {delta:+g}"
        return dataclasses.replace(self, thresholds=moved, source=f"{self.source}; {note}" if self.source else note)

    def short_list_note(self) -> str:
        """Why the fallback's k is below the default ("" when it is not): :func:`fallback_k`."""
        if not self.short_list:
            return ""
        if self.k == 0:
            return ONE_CLASS
        return f"short-list fallback: {len(self.classnames)} classes, so top-{self.k} (never all of them)"

    def tag(self) -> dict[str, Any]:
        """Short description for each row of a streamed output: the rule, and which classes top-k decides."""
        note = {"short_list": self.short_list_note()} if self.short_list else {}
        if self.rule == TOP_K:
            return {"rule": TOP_K, "k": self.k, **note}
        out: dict[str, Any] = {"rule": self.rule}
        if self.rule == SINGLE:
            out["threshold"] = self.thresholds[0]
        fallback = self.top_k_classes
        if fallback:
            out["top_k"] = {"k": self.k, "classes": fallback, **note}
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
        note = f" [{self.short_list_note()}]" if self.short_list else ""
        if self.rule == TOP_K:
            head = f"top-{self.k} for every class" if self.k else "no top-k label"
            return head + (f" ({self.source})" if self.source else "") + note
        head = (f"threshold {self.thresholds[0]:g} for every class" if self.rule == SINGLE else
                f"stored per-class thresholds ({self.source or 'taidpt.thresholds'})")
        if not fallback:
            return head
        shown = ", ".join(fallback[:5]) + (f" and {len(fallback) - 5} more" if len(fallback) > 5 else "")
        return f"{head}; top-{self.k} for {shown} (no stored threshold){note}"


def fallback_k(n_classes: int, default_k: int = DEFAULT_TOP_K) -> int:
    """The top-k fallback's k for ``n_classes``: ``default_k``, but never every class of a short list
    (``n_classes - 1``), and 0 for a single class (always labelling it would say nothing)."""
    return max(0, min(default_k, n_classes - 1))


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
    if top_k is not None:
        return Decision(names, (None,) * len(names), int(top_k), TOP_K)
    k = fallback_k(len(names), default_k)
    short = k < min(default_k, len(names))
    if threshold is not None:
        return Decision(names, (float(threshold),) * len(names), k, SINGLE)
    stored = dict(stored or {})
    thresholds = tuple(float(stored[c]) if c in stored else None for c in names)
    if all(t is None for t in thresholds):
        return Decision(names, thresholds, k, TOP_K, "no stored thresholds: calibrate with python -m export.calibrate",
                        short)
    return Decision(names, thresholds, k, STORED, source, short)


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
