"""The Python API of an export (taidpt.serve.predictor.Predictor.from_onnx): paths, PIL images and arrays
in; labels, confidences and logits out, equal to the inference CLI's output.

``Predictor.from_run`` (PyTorch, straight from a run) is tested in tests/test_open_vocab.py beside the
trained run and open-vocabulary export it is compared with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_infer import BAD, CLASSES, GOOD, exported, image_dir, run_cli, torch_scores  # noqa: E402,F401 - fixtures

from taidpt.images.preprocess import ImageLoadError  # noqa: E402
from taidpt.serve.open_vocab import OpenVocabError  # noqa: E402
from taidpt.serve.predictor import Prediction, Predictor, image_from_array  # noqa: E402


@pytest.fixture(scope="module")
def predictor(exported):
    with Predictor.from_onnx(exported[1], providers=["CPUExecutionProvider"]) as p:
        yield p


def test_paths_pil_images_and_arrays_score_alike(predictor, exported, image_dir):
    path = image_dir / "a_rgb.jpg"
    with Image.open(path) as im:
        pil = im.copy()
    grey_path = image_dir / "c_gray.png"
    with Image.open(grey_path) as im:
        grey = np.asarray(im)
    results = predictor.predict([str(path), pil, np.asarray(pil), path, grey])
    assert [r.source for r in results] == [str(path), "<image 1>", "<image 2>", str(path), "<image 4>"]
    want = torch_scores(exported[0], [path, grey_path])
    for r, row in zip(results, [want[0]] * 4 + [want[1]]):
        assert list(r.scores) == CLASSES
        np.testing.assert_allclose([r.scores[c] for c in CLASSES], row, atol=1e-4)
    assert results[0].scores == results[1].scores == results[2].scores  # the same pixels, the same numbers


def test_one_image_gives_one_prediction_with_the_model_rule(predictor, image_dir):
    one = predictor.predict(image_dir / "b_wide.png")
    assert isinstance(one, Prediction) and not one.error
    logits = np.array([one.scores[c] for c in CLASSES])
    # no stored per-class thresholds: the top 3, highest first, with no confidence (none is defined)
    assert one.labels == [CLASSES[i] for i in np.argsort(-logits, kind="stable")[:3]]
    assert set(one.confidence.values()) == {None}
    assert predictor.decision.text().startswith("top-3")


def test_top_k_and_threshold_overrides(exported, image_dir):
    paths = [image_dir / g for g in GOOD]
    with Predictor.from_onnx(exported[1], top_k=2) as p:
        out = p.predict(paths)
    assert all(len(r.labels) == 2 and set(r.confidence.values()) == {None} for r in out)
    with Predictor.from_onnx(exported[1], threshold=0.05) as p:
        out = p.predict(paths)
    for r in out:  # one threshold for every class: confidence 0.5 at the decision point
        assert r.labels and set(r.labels) == {c for c in CLASSES if r.scores[c] >= 0.05}
        for c in CLASSES:
            assert r.confidence[c] == pytest.approx(1 / (1 + np.exp(-(r.scores[c] - 0.05))), abs=1e-9)


def test_unreadable_images_raise_or_come_back_with_their_reason(predictor, image_dir):
    bad = image_dir / BAD[1]
    with pytest.raises(ImageLoadError, match="h_empty.png.*empty"):
        predictor.predict([image_dir / GOOD[0], bad])
    out = predictor.predict([bad, image_dir / GOOD[0], image_dir / BAD[0], np.zeros((4, 4), np.float32)],
                            skip_unreadable=True)
    assert [bool(r.error) for r in out] == [True, False, True, True]
    assert "empty" in out[0].error and out[0].labels == [] and out[0].scores == {}
    assert out[1].scores and "uint8" in out[3].error


def test_same_numbers_as_the_cli(predictor, exported, image_dir, tmp_path):
    proc = run_cli(["--model", str(exported[1]), "--images", str(image_dir), "--output", str(tmp_path / "o.json"),
                    "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    cli = json.loads((tmp_path / "o.json").read_text())["images"]
    api = predictor.predict([row["path"] for row in cli])
    for a, c in zip(api, cli):
        assert a.labels == c["labels"] and a.scores == pytest.approx(c["scores"], abs=1e-6)
        assert a.confidence == pytest.approx(c["confidence"], abs=1e-6)


def test_other_classes_need_an_open_vocabulary_export(predictor):
    with pytest.raises(OpenVocabError, match="only its 6 trained classes.*--open-vocabulary"):
        predictor.predict(np.zeros((8, 8, 3), np.uint8), classes=["zebra"])
    with pytest.raises(TypeError, match="one string"):
        predictor.for_classes("zebra")
    same = predictor.predict(np.zeros((8, 8, 3), np.uint8), classes=list(CLASSES))
    assert list(same.scores) == CLASSES


@pytest.mark.parametrize("array", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8),
                                   np.zeros((0, 4, 3), np.uint8)])
def test_array_shapes_are_checked(array):
    with pytest.raises(ValueError, match="expected a uint8 array"):
        image_from_array(array)
