"""The tagging app without a browser: what a click does (:class:`Tagger`), what the page shows (render),
the command's refusals and bind warning, and the telemetry opt-outs every command inherits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app_support import CLASSES, export_open_tiny, write_bomb, write_images

from taidpt.app.render import logits_table, model_card, results_html
from taidpt.app.tagging import MODEL_RULE, TOP_K_RULE, PageInputError, RuleChoice, Tagger, split_class_box
from taidpt.serve.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = {"dog": 0.1, "cat": -0.2, "car": 0.0}


@pytest.fixture(scope="module")
def models(tiny_rn, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app_models")
    return {"open": export_open_tiny(tiny_rn, tmp / "open" / "m.onnx", thresholds=THRESHOLDS),
            "closed": export_open_tiny(tiny_rn, tmp / "closed" / "m.onnx", open_vocabulary=False)}


@pytest.fixture(scope="module")
def tagger(models):
    with Predictor.from_onnx(models["open"]) as predictor:
        yield Tagger(predictor, max_classes=20, max_images=8, max_megapixels=1.0)


def test_class_box_reading():
    assert split_class_box(" dog, cat\nhair drier ,, \n") == ["dog", "cat", "hair drier"]
    assert split_class_box(None) == []


def test_tagging_matches_the_predictor_for_any_class_list(tagger, models, tmp_path):
    images = write_images(tmp_path, n=3, seed=5)
    with Predictor.from_onnx(models["open"]) as reference:
        for box, classes in [(tagger.class_box_text(), CLASSES), ("zebra, dog,\nhair drier", ["zebra", "dog", "hair drier"])]:
            tagged = tagger.tag(images, box, RuleChoice())
            expected = reference.predict(images, classes)
            assert [r.path for r in tagged.rows] == [p.name for p in images]
            assert [list(r.labels) for r in tagged.rows] == [p.labels for p in expected]
            for row, pred in zip(tagged.rows, expected):
                np.testing.assert_array_equal(row.scores, np.array([pred.scores[c] for c in classes], np.float32))


def test_rule_choices(tagger, tmp_path):
    images = write_images(tmp_path, n=2, seed=6)
    top1 = tagger.tag(images, "dog, cat, car, person", RuleChoice(TOP_K_RULE, k=1))
    assert all(len(r.labels) == 1 for r in top1.rows) and top1.decision.text() == "top-1 for every class"
    own = tagger.tag(images, "dog, cat, car, person", RuleChoice(MODEL_RULE))
    assert own.decision.thresholds[:3] == (0.1, -0.2, 0.0) and own.decision.thresholds[3] is None
    up = tagger.tag(images, "dog, cat, car, person", RuleChoice(MODEL_RULE, shift=50.0))
    assert up.decision.thresholds[:3] == pytest.approx((50.1, 49.8, 50.0)) and "shifted by +50" in up.decision.source
    assert all(not {"dog", "cat", "car"} & set(r.labels) for r in up.rows)
    down = tagger.tag(images, "dog, cat, car, person", RuleChoice(MODEL_RULE, shift=-50.0))
    assert all({"dog", "cat", "car"} <= set(r.labels) for r in down.rows)
    with pytest.raises(PageInputError, match="--top-k must be between 1 and 4"):
        tagger.tag(images, "dog, cat, car, person", RuleChoice(TOP_K_RULE, k=9))


@pytest.mark.parametrize("box, message", [
    ("", "the class box is empty"),
    (" , \n ", "the class box is empty"),
    (", ".join(f"c{i}" for i in range(500)), "500 class names: this page scores at most 20"),
    ("dog, c\x07at", "class box, name 2: .* holds a control character"),
    ("dog, ca\u200bt", "holds an invisible format character"),
    ("dog, DOG", "one class to the model"),
])
def test_bad_class_boxes_are_one_line_refusals(tagger, tmp_path, box, message):
    images = write_images(tmp_path, n=1)
    with pytest.raises(PageInputError, match=message) as info:
        tagger.tag(images, box, RuleChoice())
    assert "\n" not in str(info.value)


def test_bad_uploads_are_rows_with_a_reason_and_the_rest_is_tagged(tagger, tmp_path):
    good = write_images(tmp_path, n=1)[0]
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    bomb = write_bomb(tmp_path / "bomb.png", side=3000)  # 9 MP > this tagger's 1 MP
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    tagged = tagger.tag([text, empty, bomb, truncated, good], "dog, cat", RuleChoice())
    errors = [r.error for r in tagged.rows]
    assert errors[0].startswith("UnidentifiedImageError")
    assert errors[1] == "file is empty (0 bytes)"
    assert "3000 x 3000 pixels" in errors[2] and "limit of 1 megapixels" in errors[2]
    assert errors[3] and errors[4] == "" and tagged.rows[4].scores is not None
    assert str(tmp_path) not in "".join(errors)  # reasons name the upload, not where the server keeps it
    html = results_html(tagged)
    assert html.count("not scored:") == 4 and "notes.txt" in html
    with pytest.raises(PageInputError, match="no image"):
        tagger.tag([], "dog", RuleChoice())
    with pytest.raises(PageInputError, match="9 files: this page scores at most 8"):
        tagger.tag([good] * 9, "dog", RuleChoice())


def test_a_closed_vocabulary_model_refuses_typed_names(models, tmp_path):
    images = write_images(tmp_path, n=1)
    with Predictor.from_onnx(models["closed"]) as predictor:
        tagger = Tagger(predictor)
        assert not predictor.open_vocabulary
        assert tagger.tag(images, tagger.class_box_text(), RuleChoice()).classnames == tuple(CLASSES)
        with pytest.raises(PageInputError, match="only its 5 trained classes.*--open-vocabulary"):
            tagger.tag(images, "zebra, dog", RuleChoice())
        card = model_card(predictor.metadata, sha256=tagger.model_sha256, provider=predictor.provider,
                          open_vocabulary=False)
        assert "no: only the trained classes" in card and "none: labels by top-k" in card


def test_downloads_are_export_infer_documents(tagger, models, tmp_path):
    from taidpt.serve.infer import main as infer

    images = write_images(tmp_path / "in", n=2, seed=8)
    (tmp_path / "in" / "bad.jpg").write_bytes(b"not a jpeg")
    files = [*images, tmp_path / "in" / "bad.jpg"]
    tagged = tagger.tag(files, "zebra, dog", RuleChoice())
    json_path, csv_path = tagger.downloads(tagged, tmp_path)
    listing = tmp_path / "inputs.txt"
    listing.write_text("".join(f"{p}\n" for p in files))
    for ours, ext in ((csv_path, ".csv"), (json_path, ".json")):
        out = tmp_path / f"infer{ext}"
        assert infer(["--model", str(models["open"]), "--images", str(listing), "--classes", "zebra,dog",
                      "--output", str(out)]) == 0
        theirs = out.read_text()
        for p in files:
            theirs = theirs.replace(str(p), p.name)
        if ext == ".csv":
            assert ours.read_text() == theirs
        else:
            a, b = json.loads(ours.read_text()), json.loads(theirs)
            drop = ("seconds", "n_inputs", "model")
            assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def test_rendering_escapes_names_and_shows_the_card(tagger, tmp_path):
    img = write_images(tmp_path, n=1)[0].rename(tmp_path / "<img src=x>.jpg")
    tagged = tagger.tag([img], "<script>alert(1)</script>, dog", RuleChoice())
    html = results_html(tagged)
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;img src=x&gt;.jpg" in html
    headers, rows = logits_table(tagged)
    assert headers == ["image", "<script>alert(1)</script>", "dog"] and rows[0][0] == "<img src=x>.jpg"
    card = model_card(tagger.predictor.metadata, sha256=tagger.model_sha256, provider="CPUExecutionProvider",
                      open_vocabulary=True)
    for fact in ("TaIDPT", "TinyRN", "5: dog, cat, car, traffic light, person", "3 of 5 classes have thresholds",
                 "label-free: test rates, 40 images", "fp32", "2026-12-07T12:00:00+00:00", tagger.model_sha256[:16]):
        assert fact in card, fact


def _app(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taidpt.app", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_command_refuses_bad_input_in_one_line(models, tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not a model")
    cases = [(["--model", str(tmp_path / "missing.onnx")], "missing.onnx"),
             (["--model", str(tmp_path / "m.onnx")], "m.onnx"),
             (["--model", str(models["open"]), "--examples", str(tmp_path / "nothing*.jpg")], "nothing"),
             (["--model", str(models["open"]), "--max-classes", "0"], "--max-classes must be > 0"),
             (["--model", str(models["open"]), "--port", "70000"], "--port must be between 1 and 65535")]
    for args, fragment in cases:
        proc = _app(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (args, proc.stderr)


def test_the_server_says_where_it_listens(models):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "taidpt.app", "--model", str(models["open"]), "--host", "0.0.0.0",
                             "--port", str(port)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert line.startswith(f"taidpt app: serving on 0.0.0.0:{port}, NOT only this machine") and "--host 127.0.0.1" in line

    from taidpt.app.cli import bind_note

    assert bind_note("127.0.0.1", 7860) == "taidpt app: http://127.0.0.1:7860/ (this machine only; Ctrl-C stops it)"


def test_importing_taidpt_opts_out_of_telemetry_unless_the_user_chose():
    code = ("import os, taidpt; print(os.environ['ORT_DISABLE_TELEMETRY'], os.environ['RAY_USAGE_STATS_ENABLED'],"
            " os.environ['GRADIO_ANALYTICS_ENABLED'])")
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "RAY_USAGE_STATS_ENABLED")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True).stdout
    assert out.split() == ["1", "0", "False"]
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "ORT_DISABLE_TELEMETRY": "0"},
                         capture_output=True, text=True).stdout
    assert out.split()[0] == "0"


def test_old_download_folders_are_swept(tmp_path):
    from taidpt.app.page import sweep

    old, new = tmp_path / "run-old", tmp_path / "run-new"
    for folder in (old, new):
        folder.mkdir()
        (folder / "results.csv").write_text("x")
    os.utime(old, (1, 1))
    (tmp_path / "other").mkdir()
    os.utime(tmp_path / "other", (1, 1))
    sweep(tmp_path)
    assert not old.exists() and new.exists() and (tmp_path / "other").exists()
