"""taidpt.evaluation.metrics: AP/mAP, CP/CR/CF1/OP/OR/OF1, the evaluation dict and its printed forms."""

from __future__ import annotations

import json
import logging
import math
import re

import numpy as np
import pytest

from taidpt.evaluation.metrics import (
    average_precision,
    evaluate_multilabel,
    excluded_classes,
    format_coop_lines,
    format_results_table,
    mean_ap,
    multilabel_prf,
    per_class_ap,
    precision_recall_curve,
)


def _rank_ap(scores: list[float], targets: list[int]) -> float:
    """The tie-free definition: precision at the rank of each positive, averaged over positives
    (ignored entries skipped). With ties it depends on the order of the entries."""
    items = [(s, i, t) for i, (s, t) in enumerate(zip(scores, targets)) if t != -1]
    items.sort(key=lambda x: (-x[0], x[1]))
    hits, precisions = 0, []
    for rank, (_, _, t) in enumerate(items, start=1):
        if t == 1:
            hits += 1
            precisions.append(hits / rank)
    return sum(precisions) / len(precisions) if precisions else math.nan


def _threshold_ap(scores: list[float], targets: list[int]) -> float:
    """Literal threshold definition: sum over distinct scores n of (R_n - R_{n-1}) * P_n, where
    P_n and R_n count the labelled entries with score >= n."""
    labelled = [(s, t) for s, t in zip(scores, targets) if t != -1]
    n_pos = sum(t for _, t in labelled)
    if n_pos == 0:
        return math.nan
    ap, prev_recall = 0.0, 0.0
    for thr in sorted({s for s, _ in labelled}, reverse=True):
        above = [t for s, t in labelled if s >= thr]
        recall = sum(above) / n_pos
        ap += (recall - prev_recall) * sum(above) / len(above)
        prev_recall = recall
    return ap


def test_average_precision_hand_worked() -> None:
    # ranks of the positives: 1 and 3 -> (1/1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    assert average_precision(np.array([0.1, 0.2]), np.array([1, 1])) == 1.0
    assert math.isnan(average_precision(np.array([0.1, 0.2]), np.array([0, -1])))


def test_average_precision_matches_threshold_definition_with_ties_and_ignored() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        scores = rng.integers(0, 5, n).astype(float)  # many ties
        targets = rng.choice([-1, 0, 1], n, p=[0.1, 0.6, 0.3])
        expected = _threshold_ap(scores.tolist(), targets.tolist())
        got = average_precision(scores, targets)
        if math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected, abs=1e-12)


def test_average_precision_matches_sklearn_without_ties() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = 200
        scores = rng.permutation(n).astype(float) + rng.random(n) * 0.5  # distinct
        targets = (rng.random(n) < 0.2).astype(np.int8)
        targets[0] = 1
        assert average_precision(scores, targets) == pytest.approx(sk.average_precision_score(targets, scores), abs=1e-12)


def test_tie_free_ap_equals_precision_at_each_positive_rank() -> None:
    rng = np.random.default_rng(5)
    for _ in range(30):
        n = int(rng.integers(2, 60))
        scores = rng.permutation(n) + rng.random(n) * 0.5  # distinct
        targets = rng.choice([-1, 0, 1], n, p=[0.1, 0.6, 0.3])
        targets[0], targets[1] = 1, 0
        expected = _rank_ap(scores.tolist(), targets.tolist())
        assert average_precision(scores, targets) == pytest.approx(expected, abs=1e-12)


def test_ties_are_one_threshold_step() -> None:
    # constant scores: one threshold, AP = the positive rate, wherever the positives are listed
    positives_first = np.array([1, 1, 0, 0, 0, 0, 0, 0])
    assert average_precision(np.ones(8), positives_first) == pytest.approx(0.25)
    assert average_precision(np.ones(8), positives_first[::-1]) == pytest.approx(0.25)
    # a tie between a positive and a negative at the top: precision 1/2 there, not 1
    assert average_precision(np.array([2.0, 2.0, 1.0]), np.array([1, 0, 0])) == pytest.approx(0.5)
    assert average_precision(np.array([2.0, 2.0, 1.0]), np.array([0, 1, 0])) == pytest.approx(0.5)


def test_ap_does_not_depend_on_row_order_with_integer_scores() -> None:
    rng = np.random.default_rng(6)
    scores = rng.integers(0, 4, (300, 6)).astype(float)
    targets = rng.choice([-1, 0, 1], (300, 6), p=[0.05, 0.7, 0.25])
    aps = per_class_ap(scores, targets)
    for _ in range(5):
        perm = rng.permutation(300)
        np.testing.assert_allclose(per_class_ap(scores[perm], targets[perm]), aps, rtol=0, atol=1e-12)
    assert mean_ap(scores[::-1], targets[::-1]) == pytest.approx(mean_ap(scores, targets), abs=1e-12)


def test_ap_matches_sklearn_on_heavily_tied_scores() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    for levels in (2, 3, 5, 10):
        scores = rng.integers(0, levels, (500, 8)).astype(float)
        targets = (rng.random((500, 8)) < 0.3).astype(np.int8)
        expected = [100.0 * sk.average_precision_score(targets[:, c], scores[:, c]) for c in range(8)]
        np.testing.assert_allclose(per_class_ap(scores, targets), expected, rtol=0, atol=1e-10)
        for c in range(8):
            assert average_precision(scores[:, c], targets[:, c]) == pytest.approx(expected[c] / 100.0, abs=1e-12)


def test_ignored_entries_are_dropped_not_negative() -> None:
    scores = np.array([0.9, 0.8, 0.7])
    as_negative = average_precision(scores, np.array([0, 1, 0]))
    ignored = average_precision(scores, np.array([-1, 1, 0]))
    assert as_negative == pytest.approx(0.5)
    assert ignored == 1.0
    # identical to deleting the ignored rows
    assert ignored == average_precision(scores[1:], np.array([1, 0]))


def test_per_class_and_mean_ap_exclude_classes_without_positive_or_negative(caplog) -> None:
    scores = np.array([[0.9, 0.1, 0.5, 0.1], [0.2, 0.8, 0.4, 0.2], [0.7, 0.3, 0.3, 0.3]])
    targets = np.array([[1, 0, 0, 1], [0, 0, -1, -1], [0, 1, 0, 1]])
    aps = per_class_ap(scores, targets)
    assert aps.shape == (4,)
    assert aps[0] == pytest.approx(100.0)
    assert aps[1] == pytest.approx(50.0)  # positive ranked 2nd of 3
    assert math.isnan(aps[2])  # no positive
    assert math.isnan(aps[3])  # only positives once the -1 is dropped: never scored 100
    reasons = excluded_classes(targets)
    assert list(reasons) == [2, 3]
    assert reasons[2] == "no positive label" and reasons[3].startswith("no negative label")
    with caplog.at_level(logging.WARNING, logger="taidpt.evaluation.metrics"):
        m = mean_ap(scores, targets)
    assert m == pytest.approx(75.0)  # not (100 + 50 + 0 + 100) / 4
    assert "class 2: no positive label" in caplog.text and "class 3: no negative label" in caplog.text
    assert math.isnan(mean_ap(scores, np.zeros((3, 4), dtype=np.int8)))
    assert math.isnan(mean_ap(scores, np.ones((3, 4), dtype=np.int8)))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="shape"):
        per_class_ap(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="-1"):
        per_class_ap(np.zeros((2, 2)), np.array([[2, 0], [0, 1]]))
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.array([np.nan, 1.0]), np.array([1, 0]))
    with pytest.raises(ValueError, match="exactly one"):
        multilabel_prf(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="exactly one"):
        multilabel_prf(np.zeros((2, 2)), np.zeros((2, 2)), top_k=1, threshold=0.5)


# A 3-image, 3-class example worked out by hand (see the comments).
SCORES = np.array([[0.9, 0.8, 0.1], [0.2, 0.7, 0.6], [0.3, 0.4, 0.5]])
TARGETS = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 1]])


def test_prf_threshold_hand_worked() -> None:
    # predictions (>= 0.5): img0 {0,1}, img1 {1,2}, img2 {2}
    # class 0: TP 1 / pred 1 / pos 2 -> P 1, R 1/2
    # class 1: TP 1 / pred 2 / pos 1 -> P 1/2, R 1
    # class 2: TP 2 / pred 2 / pos 3 -> P 1, R 2/3
    r = multilabel_prf(SCORES, TARGETS, threshold=0.5)
    assert r["CP"] == pytest.approx(100 * 5 / 6)
    assert r["CR"] == pytest.approx(100 * 13 / 18)
    assert r["CF1"] == pytest.approx(100 * 65 / 84)
    assert r["OP"] == pytest.approx(100 * 4 / 5)
    assert r["OR"] == pytest.approx(100 * 4 / 6)
    assert r["OF1"] == pytest.approx(100 * 8 / 11)


def test_prf_top_k_hand_worked() -> None:
    # top-2: img0 {0,1}, img1 {1,2}, img2 {2,1}
    # class 0: P 1, R 1/2; class 1: TP 1 / pred 3 -> P 1/3, R 1; class 2: P 1, R 2/3
    r = multilabel_prf(SCORES, TARGETS, top_k=2)
    assert r["CP"] == pytest.approx(100 * 7 / 9)
    assert r["CR"] == pytest.approx(100 * 13 / 18)
    cp, cr = 7 / 9, 13 / 18
    assert r["CF1"] == pytest.approx(100 * 2 * cp * cr / (cp + cr))
    assert r["OP"] == pytest.approx(100 * 4 / 6)
    assert r["OR"] == pytest.approx(100 * 4 / 6)
    # k larger than the number of classes predicts everything
    everything = multilabel_prf(SCORES, TARGETS, top_k=10)
    assert everything["OR"] == pytest.approx(100.0)
    assert everything["OP"] == pytest.approx(100 * 6 / 9)


def test_prf_ignored_and_no_prediction_conventions() -> None:
    t = TARGETS.copy()
    t[0, 1] = -1  # the false positive of class 1 at threshold 0.5 is now ignored
    r = multilabel_prf(SCORES, t, threshold=0.5)
    assert r["CP"] == pytest.approx(100.0)
    assert r["OP"] == pytest.approx(100.0)
    # no prediction at all for any class: precision 0 (ML-GCN convention), F1 0, not nan
    r = multilabel_prf(SCORES, TARGETS, threshold=5.0)
    assert r == {"CP": 0.0, "CR": 0.0, "CF1": 0.0, "OP": 0.0, "OR": 0.0, "OF1": 0.0}


def test_evaluate_multilabel_dict() -> None:
    rng = np.random.default_rng(3)
    n, c = 40, 5
    targets = (rng.random((n, c)) < 0.3).astype(np.int8)
    targets[:, 4] = 0  # a class without positive
    targets[0, 4] = -1
    g = rng.normal(size=(n, c))
    loc = rng.normal(size=(n, c)) + 2.0 * targets
    names = ["cat", "dog", "car", "bus", "yak"]
    res = evaluate_multilabel(g, loc, targets, names, merge_rate=0.25)
    json.dumps(res, allow_nan=False)  # strictly JSON-safe

    merged = 0.25 * g + 0.75 * loc
    assert res["mAP"]["global"] == pytest.approx(mean_ap(g, targets))
    assert res["mAP"]["local"] == pytest.approx(mean_ap(loc, targets))
    assert res["mAP"]["merged"] == pytest.approx(mean_ap(merged, targets))
    assert res["mAP"]["local"] > res["mAP"]["global"]
    top3 = multilabel_prf(merged, targets, top_k=3)
    for key in ("CP", "CR", "CF1", "OP", "OR", "OF1"):
        assert res[key] == pytest.approx(top3[key])
        assert res["top3"][key] == pytest.approx(top3[key])
    assert res["threshold"]["OP"] == pytest.approx(multilabel_prf(merged, targets, threshold=0.0)["OP"])
    assert "sigmoid" in res["threshold_rule"]
    assert res["top3_by_score"]["global"]["CF1"] == pytest.approx(multilabel_prf(g, targets, top_k=3)["CF1"])
    assert res["excluded_classes"] == {"yak": "no positive label"}
    assert res["per_class_AP"]["yak"] is None
    assert res["per_class_AP"]["cat"] == pytest.approx(per_class_ap(merged, targets)[0])
    assert res["per_class_AP_global"]["dog"] == pytest.approx(per_class_ap(g, targets)[1])
    assert res["n_images"] == n and res["n_classes"] == c

    thr = evaluate_multilabel(g, loc, targets, names, threshold=1.5)
    merged_half = 0.5 * g + 0.5 * loc
    assert thr["threshold"]["CR"] == pytest.approx(multilabel_prf(merged_half, targets, threshold=1.5)["CR"])
    assert thr["threshold_rule"] == "merged >= 1.5"


def test_evaluate_without_local_and_bad_shapes() -> None:
    g = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.5]])
    t = np.array([[1, 0], [0, 1], [0, 1]])
    res = evaluate_multilabel(g, None, t, ["a", "b"])
    assert res["mAP"]["global"] == res["mAP"]["local"] == res["mAP"]["merged"]
    assert any("local_logits is None" in note for note in res["notes"])
    with pytest.raises(ValueError, match="class names"):
        evaluate_multilabel(g, None, t, ["a"])
    with pytest.raises(ValueError, match="local_logits shape"):
        evaluate_multilabel(g, g[:2], t, ["a", "b"])
    with pytest.raises(ValueError, match="merge_rate"):
        evaluate_multilabel(g, g, t, ["a", "b"], merge_rate=1.5)


def test_printed_formats() -> None:
    g = np.array([[0.9, 0.1, 0.3, 0.2], [0.2, 0.8, 0.1, 0.4], [0.6, 0.5, 0.9, 0.0]])
    loc = g[:, ::-1].copy()
    t = np.array([[1, 0, 0, 0], [0, 1, 0, 1], [0, 1, 1, 0]])
    res = evaluate_multilabel(g, loc, t, ["a", "b", "c", "d"])
    lines = format_coop_lines(res).splitlines()
    assert lines[0] == "=> result"
    # the regexes CoOp's parse_test_res.py style uses
    parsed = {}
    for line in lines[1:]:
        m = re.fullmatch(r"\* (\w+): ([\.\deE+-]+)%", line)
        assert m, line
        parsed[m.group(1)] = float(m.group(2))
    assert list(parsed) == ["mAP", "mAP_global", "mAP_local", "CF1", "OF1"]
    assert parsed["mAP"] == pytest.approx(res["mAP"]["merged"], abs=0.005)
    assert parsed["mAP_global"] == pytest.approx(res["mAP"]["global"], abs=0.005)
    assert parsed["OF1"] == pytest.approx(res["OF1"], abs=0.005)

    table = format_results_table(res).splitlines()
    assert table[0].split() == ["score", "mAP", "CF1@3", "OF1@3"]
    rows = {line.split()[0]: line for line in table[2:5]}
    assert set(rows) == {"global", "local", "merged"}
    assert f"{res['mAP']['local']:.2f}" in rows["local"]
    assert len({len(line) for line in table[:5]}) == 1  # aligned columns


def test_evaluate_names_a_class_without_negative_and_leaves_it_out(caplog) -> None:
    g = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.5], [0.1, 0.7]])
    t = np.array([[1, 1], [0, 1], [0, -1], [1, 1]])  # "b" has no negative once -1 is dropped
    with caplog.at_level(logging.WARNING, logger="taidpt.evaluation.metrics"):
        res = evaluate_multilabel(g, None, t, ["a", "b"])
    assert res["per_class_AP"]["b"] is None
    assert res["mAP"]["merged"] == pytest.approx(res["per_class_AP"]["a"])
    assert res["excluded_classes"]["b"].startswith("no negative label")
    assert "b: no negative label" in caplog.text
    assert any("excluded_classes" in note for note in res["notes"])
    json.dumps(res, allow_nan=False)


def test_precision_recall_curve_is_the_ap_thresholds():
    """One point per distinct score (ties are one step), ignored labels dropped; its step area is the AP."""
    recall, precision, thr = precision_recall_curve([0.9, 0.5, 0.5, 0.5, 0.1, 0.7], [1, 1, 0, 0, 1, -1])
    assert thr.tolist() == [0.9, 0.5, 0.1]  # 0.7 is ignored; the three 0.5 are one threshold
    assert recall.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0]) and precision.tolist() == pytest.approx([1, 0.5, 0.6])
    rng = np.random.default_rng(3)
    for _ in range(50):
        scores, targets = rng.integers(0, 4, 25).astype(float), rng.integers(-1, 2, 25)
        targets[0] = 1
        r, p, _ = precision_recall_curve(scores, targets)
        assert float(np.sum(np.diff(np.r_[0.0, r]) * p)) == pytest.approx(average_precision(scores, targets), abs=1e-12)
    with pytest.raises(ValueError, match="no positive"):
        precision_recall_curve([0.3, 0.2], [0, -1])
