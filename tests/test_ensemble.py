"""predictions.npz and the ensemble command, against hand computations on files written in the documented format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from taidpt.evaluation.ensemble import combine, main, min_max
from taidpt.evaluation.scoring import ScoredSet
from taidpt.evaluation.metrics import mean_ap
from taidpt.evaluation.predictions import load_predictions, save_predictions
from taidpt.images.readers.common import ImageSet

CLASSES = ["a", "b"]
PATHS = ["/d/1.jpg", "/d/2.jpg", "/d/3.jpg"]
TARGETS = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.int8)


def write_predictions(path: Path, scores: np.ndarray, order: list[int], trainer: str) -> None:
    """A predictions.npz as documented in taidpt/evaluation/predictions.py, rows in ``order``."""
    np.savez(path, scores=scores[order].astype(np.float32), **{"global": scores[order].astype(np.float32)},
             local=scores[order].astype(np.float32), targets=TARGETS[order], paths=np.asarray(PATHS)[order],
             classnames=np.asarray(CLASSES), merge_rate=np.float64(0.5), trainer=np.asarray(trainer))


def test_min_max_and_combine_by_hand():
    a = np.array([[0.0, 2.0], [4.0, 2.0]])
    b = np.array([[1.0, 3.0], [5.0, 1.0]])
    assert np.array_equal(min_max(a), [[0, 0.5], [1, 0.5]])
    assert np.array_equal(min_max(np.full((2, 2), 7.0)), np.zeros((2, 2)))
    # (1 - 0.9) * [[0, .5], [1, .5]] + 0.9 * [[0, .5], [1, 0]]
    assert np.allclose(combine(a, b, 0.9), [[0.0, 0.5], [1.0, 0.05]])
    assert np.array_equal(combine(a, b, 0.0), min_max(a)) and np.array_equal(combine(a, b, 1.0), min_max(b))
    with pytest.raises(ValueError, match="rate"):
        combine(a, b, 1.5)


def test_ensemble_command_aligns_rows_and_matches_a_hand_computation(tmp_path, capsys):
    a = np.array([[3.0, -1.0], [0.0, 2.0], [1.0, 1.0]])  # TaI-DPT scores, rows in PATHS order
    b = np.array([[0.2, 0.1], [0.9, 0.4], [0.5, 0.8]])  # image-prompting scores, same rows
    write_predictions(tmp_path / "a.npz", a, [0, 1, 2], "TaIDPT")
    run_b = tmp_path / "run_b"
    run_b.mkdir()
    write_predictions(run_b / "predictions.npz", b, [2, 0, 1], "DualCoOp")  # another row order: aligned by path
    out = tmp_path / "ens"
    assert main(["--runs", str(tmp_path / "a.npz"), str(run_b), "--rate", "0.9", "--output", str(out)]) == 0

    na = (a - a.min()) / (a.max() - a.min())
    nb = (b - b.min()) / (b.max() - b.min())
    expected = 0.1 * na + 0.9 * nb
    summary = json.loads((out / "ensemble.json").read_text())
    assert summary["mAP"]["ensemble"] == pytest.approx(mean_ap(expected, TARGETS))
    assert summary["mAP"]["a"] == pytest.approx(mean_ap(a, TARGETS)) and summary["mAP"]["b"] == pytest.approx(mean_ap(b, TARGETS))
    assert summary["runs"]["b"]["trainer"] == "DualCoOp" and summary["n_images"] == 3
    with np.load(out / "ensemble_predictions.npz", allow_pickle=False) as saved:
        assert np.allclose(saved["ensemble"], expected, atol=1e-7)
        assert np.allclose(saved["scores_b"], b) and list(saved["paths"]) == PATHS
    assert "ensemble (rate 0.9 on b)" in capsys.readouterr().out


def test_ensemble_refuses_runs_on_other_images(tmp_path, capsys):
    write_predictions(tmp_path / "a.npz", np.ones((3, 2)), [0, 1, 2], "TaIDPT")
    write_predictions(tmp_path / "b.npz", np.ones((3, 2)), [0, 1], "DualCoOp")
    assert main(["--runs", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--output", str(tmp_path / "o")]) == 2
    assert "different images" in capsys.readouterr().err
    assert main(["--runs", str(tmp_path / "a.npz"), str(tmp_path / "none"), "--output", str(tmp_path / "o")]) == 2
    assert "no predictions" in capsys.readouterr().err


def test_predictions_file_names_rows_and_merges_scores(tmp_path):
    image_set = ImageSet(paths=PATHS, targets=TARGETS, classnames=tuple(CLASSES), name="fixture")
    g = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    loc = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    # image 2 could not be read: the rows are images 1 and 3 (no row indices kept, as on the Dassl path)
    scored = ScoredSet(g, loc, TARGETS[[0, 2]], None, skipped=[PATHS[1]])
    save_predictions(tmp_path / "p.npz", scored, image_set, CLASSES, 0.25, "TaIDPT")
    pred = load_predictions(tmp_path / "p.npz")
    assert pred.paths == [PATHS[0], PATHS[2]] and pred.classnames == CLASSES and pred.trainer == "TaIDPT"
    assert np.allclose(pred.scores, 0.25 * g + 0.75 * loc) and np.array_equal(pred.targets, TARGETS[[0, 2]])
    with_indices = ScoredSet(g, None, TARGETS[[2, 0]], np.array([2, 0]))
    save_predictions(tmp_path / "q.npz", with_indices, image_set, CLASSES, 0.5, "CoOpMultiLabel")
    pred = load_predictions(tmp_path / "q.npz")
    assert pred.paths == [PATHS[2], PATHS[0]] and np.array_equal(pred.local, g) and np.array_equal(pred.scores, g)
