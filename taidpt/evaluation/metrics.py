"""Multi-label evaluation metrics (numpy only): AP/mAP, CP/CR/CF1 and OP/OR/OF1.

Targets are an int array ``[N, C]``: 1 positive, 0 negative, -1 ignored (e.g. VOC "difficult" under the
official protocol), which counts neither way; the reference treats every non-positive as negative. AP is
non-interpolated over the distinct score thresholds, so tied scores form one step (sklearn's definition);
classes without a positive or without a negative are left out of mAP and named (:func:`excluded_classes`).
See docs/datasets.md, "How mAP is computed".
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from taidpt.networks.merge import merge_scores

__all__ = [
    "PRF_KEYS",
    "average_precision",
    "evaluate_multilabel",
    "excluded_classes",
    "format_coop_lines",
    "format_results_table",
    "mean_ap",
    "multilabel_prf",
    "per_class_ap",
    "precision_recall_curve",
]

logger = logging.getLogger(__name__)

PRF_KEYS: tuple[str, ...] = ("CP", "CR", "CF1", "OP", "OR", "OF1")


def _check_scores_targets(scores: np.ndarray, targets: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    if scores.ndim != ndim or targets.ndim != ndim:
        raise ValueError(
            f"expected {ndim}-d scores and targets, got shapes {scores.shape} and {targets.shape}"
        )
    if scores.shape != targets.shape:
        raise ValueError(f"scores shape {scores.shape} != targets shape {targets.shape}")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    scores = scores.astype(np.float64, copy=False)
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    bad = ~np.isin(targets, (-1, 0, 1))
    if np.any(bad):
        raise ValueError(
            f"targets must be 1 (positive), 0 (negative) or -1 (ignored); found {targets[bad].flat[0]!r}"
        )
    return scores, targets.astype(np.int8, copy=False)


def _ap_columns(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP (fraction) of every column of ``[N, C]`` scores; ``nan`` for a column without a positive.

    Each positive is credited with the precision at the end of its tie block (the threshold
    equal to its score), which is sum_n (R_n - R_{n-1}) P_n over the distinct thresholds.
    """
    n, c = scores.shape
    if n == 0:
        return np.full(c, math.nan)
    order = np.argsort(-scores, axis=0, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=0)
    labels = np.take_along_axis(targets, order, axis=0)
    is_pos = labels == 1
    tp = np.cumsum(is_pos, axis=0)
    fp = np.cumsum(labels == 0, axis=0)
    block_last = np.ones((n, c), dtype=bool)
    block_last[:-1] = ranked[1:] != ranked[:-1]
    last_row = np.where(block_last, np.arange(n)[:, None], n)
    block_end = np.minimum.accumulate(last_row[::-1], axis=0)[::-1]
    tp_end = np.take_along_axis(tp, block_end, axis=0)
    fp_end = np.take_along_axis(fp, block_end, axis=0)
    precision = tp_end / np.maximum(tp_end + fp_end, 1)
    n_pos = tp[-1]
    credited = np.where(is_pos, precision, 0.0).sum(axis=0)
    return np.divide(credited, n_pos, out=np.full(c, math.nan), where=n_pos > 0)


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Non-interpolated AP of one class, as a fraction in [0, 1].

    ``scores`` and ``targets`` are ``[N]``; entries with target -1 are dropped. Tied scores are
    one threshold step (the result does not depend on the order of the entries). Returns ``nan``
    when the class has no positive, and 1.0 when it has no negative (which is why
    :func:`per_class_ap` leaves such a class out).
    """
    scores, targets = _check_scores_targets(scores, targets, 1)
    return float(_ap_columns(scores[:, None], targets[:, None])[0])


NO_POSITIVE = "no positive label"
NO_NEGATIVE = "no negative label (every labelled image is positive, so any ranking scores 100)"


def precision_recall_curve(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(recall, precision, thresholds)`` of one class at every distinct score, highest first: the
    points :func:`average_precision` sums over, so ``sum_n (R_n - R_{n-1}) P_n`` (``R_0 = 0``) is its AP.

    ``scores`` and ``targets`` are ``[N]``; entries with target -1 are dropped and tied scores are one
    threshold (one point). Drawn as a step plot (each P_n held over ``(R_{n-1}, R_n]``), the area under
    the curve is the AP. Raises ValueError for a class without a positive (no recall is defined).
    """
    scores, targets = _check_scores_targets(scores, targets, 1)
    keep = targets != -1
    order = np.argsort(-scores[keep], kind="stable")
    ranked, is_pos = scores[keep][order], targets[keep][order] == 1
    if not is_pos.any():
        raise ValueError(f"{NO_POSITIVE}: the precision-recall curve is not defined")
    last_of_tie = np.append(ranked[1:] != ranked[:-1], True)
    tp = np.cumsum(is_pos)[last_of_tie]
    counted = (np.flatnonzero(last_of_tie) + 1).astype(np.float64)
    return tp / tp[-1], tp / counted, ranked[last_of_tie]


def excluded_classes(targets: np.ndarray) -> dict[int, str]:
    """The classes (columns of ``[N, C]`` targets) left out of mAP, with the reason.

    A class without a positive has no defined AP; a class without a negative (after dropping
    ignored entries) has AP 100 for any scores, which would inflate mAP. Both are excluded.
    """
    targets = np.asarray(targets)
    if targets.ndim != 2:
        raise ValueError(f"expected [N, C] targets, got shape {targets.shape}")
    no_pos = ~np.any(targets == 1, axis=0)
    no_neg = ~np.any(targets == 0, axis=0)
    return {int(c): NO_POSITIVE if no_pos[c] else NO_NEGATIVE for c in np.flatnonzero(no_pos | no_neg)}


def per_class_ap(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP of every class, in percent, as a float64 array ``[C]``; ``nan`` for the classes
    :func:`excluded_classes` names (no positive, or no negative)."""
    scores, targets = _check_scores_targets(scores, targets, 2)
    aps = _ap_columns(scores, targets) * 100.0
    aps[list(excluded_classes(targets))] = math.nan
    return aps


def _warn_excluded(excluded: dict[str, str]) -> None:
    if excluded:
        logger.warning(
            "mAP leaves out %d class(es): %s",
            len(excluded),
            "; ".join(f"{name}: {reason}" for name, reason in excluded.items()),
        )


def mean_ap(scores: np.ndarray, targets: np.ndarray) -> float:
    """mAP in percent over the classes with at least one positive and one negative.

    The excluded classes (:func:`excluded_classes`) are logged as a warning, by column index;
    returns ``nan`` if no class can be scored.
    """
    aps = per_class_ap(scores, targets)
    _warn_excluded({f"class {c}": reason for c, reason in excluded_classes(np.asarray(targets)).items()})
    return _map(aps)


def _map(aps: np.ndarray) -> float:
    return math.nan if np.all(np.isnan(aps)) else float(np.nanmean(aps))


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)


def multilabel_prf(
    scores: np.ndarray,
    targets: np.ndarray,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
) -> dict[str, float]:
    """Per-class and overall precision/recall/F1 in percent: CP, CR, CF1, OP, OR, OF1.

    Predictions are the ``top_k`` highest scores of each image (ties broken by class index) or
    the scores ``>= threshold``; give exactly one. Ignored targets (-1) are excluded from every
    count. Conventions (ML-GCN): a class with no prediction has precision 0; CP and CR average
    over the classes with at least one positive; CF1 = 2 CP CR / (CP + CR) and
    OF1 = 2 OP OR / (OP + OR), 0 when both terms are 0; OP is 0 when nothing is predicted. All
    values are ``nan`` if no class has a positive.
    """
    scores, targets = _check_scores_targets(scores, targets, 2)
    if (top_k is None) == (threshold is None):
        raise ValueError("give exactly one of top_k and threshold")
    n, c = scores.shape
    if top_k is not None:
        if int(top_k) < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        k = min(int(top_k), c)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        pred = np.zeros((n, c), dtype=bool)
        np.put_along_axis(pred, order, True, axis=1)
    else:
        pred = scores >= float(threshold)

    valid = targets != -1
    pos = targets == 1
    tp = np.sum(pred & pos, axis=0).astype(np.float64)
    n_pred = np.sum(pred & valid, axis=0).astype(np.float64)
    n_pos = np.sum(pos, axis=0).astype(np.float64)

    has_pos = n_pos > 0
    if not np.any(has_pos):
        return {key: math.nan for key in PRF_KEYS}
    class_p = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    class_r = np.divide(tp, n_pos, out=np.zeros_like(tp), where=has_pos)
    cp = float(class_p[has_pos].mean()) * 100.0
    cr = float(class_r[has_pos].mean()) * 100.0
    total_pred = n_pred.sum()
    op = float(tp.sum() / total_pred) * 100.0 if total_pred > 0 else 0.0
    orec = float(tp.sum() / n_pos.sum()) * 100.0
    return {"CP": cp, "CR": cr, "CF1": _f1(cp, cr), "OP": op, "OR": orec, "OF1": _f1(op, orec)}


def _json_float(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _json_prf(d: dict[str, float]) -> dict[str, float | None]:
    return {k: _json_float(d[k]) for k in PRF_KEYS}


def evaluate_multilabel(
    global_logits: np.ndarray,
    local_logits: np.ndarray | None,
    targets: np.ndarray,
    classnames: Sequence[str],
    merge_rate: float = 0.5,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Evaluate global, local and merged scores of a multi-label model; returns a JSON-safe dict.

    ``merged = merge_rate * global + (1 - merge_rate) * local``. Keys:

    * ``mAP``: ``{"global", "local", "merged"}`` in percent;
    * ``CP``, ``CR``, ``CF1``, ``OP``, ``OR``, ``OF1``: merged scores, top-3 predictions per image
      (also under ``top3``);
    * ``threshold``: the same six with predictions ``merged >= threshold`` when ``threshold`` is
      given, otherwise ``sigmoid(merged) >= 0.5`` (i.e. ``merged >= 0``); the rule used is in
      ``threshold_rule``;
    * ``top3_by_score``: the top-3 metrics of each of ``global``, ``local``, ``merged``;
    * ``per_class_AP`` (merged), ``per_class_AP_global``, ``per_class_AP_local``:
      ``{classname: AP in percent}``, ``None`` for an excluded class;
    * ``n_images``, ``n_classes``, ``merge_rate``, ``notes`` (list of strings);
    * ``excluded_classes``: ``{classname: reason}`` for the classes left out of mAP (no positive,
      or no negative; see :func:`excluded_classes`); a class without a positive is also left out
      of CP and CR.

    When ``local_logits`` is None, local and merged scores equal the global ones (noted in
    ``notes``). NaN values (nothing to average) are written as ``None``.
    """
    g = np.asarray(global_logits, dtype=np.float64)
    tg = np.asarray(targets)
    if g.ndim != 2:
        raise ValueError(f"global_logits must be [N, C], got shape {g.shape}")
    if tg.shape != g.shape:
        raise ValueError(f"targets shape {tg.shape} != global_logits shape {g.shape}")
    names = [str(n) for n in classnames]
    if len(names) != g.shape[1]:
        raise ValueError(f"{len(names)} class names for {g.shape[1]} score columns")
    if not 0.0 <= float(merge_rate) <= 1.0:
        raise ValueError(f"merge_rate must be in [0, 1], got {merge_rate}")
    notes: list[str] = []
    if local_logits is None:
        loc = g
        merged = g
        notes.append("local_logits is None: local and merged scores equal the global scores")
    else:
        loc = np.asarray(local_logits, dtype=np.float64)
        if loc.shape != g.shape:
            raise ValueError(f"local_logits shape {loc.shape} != global_logits shape {g.shape}")
        merged = merge_scores(g, loc, float(merge_rate))

    excluded = {names[c]: reason for c, reason in excluded_classes(tg).items()}
    if excluded:
        notes.append(f"{len(excluded)} class(es) left out of mAP (see excluded_classes)")
        _warn_excluded(excluded)

    ap_g = per_class_ap(g, tg)
    ap_l = ap_g if local_logits is None else per_class_ap(loc, tg)
    ap_m = ap_g if local_logits is None else per_class_ap(merged, tg)

    top3 = {
        "global": multilabel_prf(g, tg, top_k=3),
        "local": multilabel_prf(loc, tg, top_k=3),
        "merged": multilabel_prf(merged, tg, top_k=3),
    }
    if threshold is None:
        thr_prf = multilabel_prf(merged, tg, threshold=0.0)
        rule = "sigmoid(merged) >= 0.5 (merged >= 0)"
    else:
        thr_prf = multilabel_prf(merged, tg, threshold=float(threshold))
        rule = f"merged >= {float(threshold)!r}"

    results: dict[str, Any] = {
        "mAP": {"global": _json_float(_map(ap_g)), "local": _json_float(_map(ap_l)),
                "merged": _json_float(_map(ap_m))},
        **_json_prf(top3["merged"]),
        "top3": _json_prf(top3["merged"]),
        "threshold": _json_prf(thr_prf),
        "threshold_rule": rule,
        "top3_by_score": {k: _json_prf(v) for k, v in top3.items()},
        "per_class_AP": {n: _json_float(a) for n, a in zip(names, ap_m)},
        "per_class_AP_global": {n: _json_float(a) for n, a in zip(names, ap_g)},
        "per_class_AP_local": {n: _json_float(a) for n, a in zip(names, ap_l)},
        "n_images": int(g.shape[0]),
        "n_classes": int(g.shape[1]),
        "merge_rate": float(merge_rate),
        "excluded_classes": excluded,
        "notes": notes,
    }
    return results


def _fmt(x: float | None, width: int = 7) -> str:
    return f"{'n/a':>{width}}" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:>{width}.2f}"


def format_results_table(results: dict[str, Any]) -> str:
    """A small aligned text table of mAP, CF1 and OF1 (top-3) for global, local and merged
    scores, from the dict returned by :func:`evaluate_multilabel`."""
    by_score = results.get("top3_by_score", {})
    header = f"{'score':<8}{'mAP':>8}{'CF1@3':>8}{'OF1@3':>8}"
    lines = [header, "-" * len(header)]
    for key in ("global", "local", "merged"):
        prf = by_score.get(key, results if key == "merged" else {})
        lines.append(
            f"{key:<8} {_fmt(results['mAP'].get(key))} {_fmt(prf.get('CF1'))} {_fmt(prf.get('OF1'))}"
        )
    lines.append(f"{results.get('n_images', '?')} images, {results.get('n_classes', '?')} classes")
    return "\n".join(lines)


def format_coop_lines(results: dict[str, Any]) -> str:
    """The result block in CoOp's ``parse_test_res.py`` format::

        => result
        * mAP: 88.10%
        * mAP_global: ...%
        * mAP_local: ...%
        * CF1: ...%
        * OF1: ...%

    ``mAP`` is the merged score; CF1/OF1 are merged, top-3.
    """

    def pct(x: float | None) -> str:
        return "nan%" if x is None else f"{x:.2f}%"

    m = results["mAP"]
    return "\n".join(
        [
            "=> result",
            f"* mAP: {pct(m.get('merged'))}",
            f"* mAP_global: {pct(m.get('global'))}",
            f"* mAP_local: {pct(m.get('local'))}",
            f"* CF1: {pct(results.get('CF1'))}",
            f"* OF1: {pct(results.get('OF1'))}",
        ]
    )
