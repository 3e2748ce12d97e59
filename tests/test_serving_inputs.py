"""Serving inputs (issue 21): an output that cannot be created, class lists the API and the CLIs refuse
alike, the top-k fallback on short class lists, and a resumed output written by another model.

Two small 3-class exports (same classes, other weights) and three tiny images serve every test.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export_support import export_tiny_taidpt
from taidpt.serve.class_names import ClassNameError, validate_class_names
from taidpt.serve.decision import resolve
from taidpt.serve.open_vocab import OpenVocabError, parse_class_names
from taidpt.serve.predictor import Predictor

SHORT = ["dog", "cat", "car"]
UNCREATABLE = "/proc/taidpt-test"  # creating a file in /proc fails even for root, whatever os.access says


@pytest.fixture(scope="module")
def models(tiny_rn, tmp_path_factory):
    """Two uncalibrated exports of the same 3 classes with other context weights (seeds 1 and 2)."""
    folder = tmp_path_factory.mktemp("short")
    return [export_tiny_taidpt(tiny_rn, SHORT, folder / f"m{seed}.onnx", seed=seed, size=32)[1] for seed in (1, 2)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("few")
    rng = np.random.default_rng(5)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(root / f"im{i}.png")
    return root


def without_deprecation(err: str) -> str:
    """stderr of the export.batch_infer alias without its deprecation line (the alias now runs export.infer)."""
    from taidpt.serve.batch_infer import DEPRECATION

    assert err.startswith(DEPRECATION + "\n"), err
    return err[len(DEPRECATION) + 1:]


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ----------------------------------------------------------------------------- item 3: the last write
def test_infer_refuses_an_uncreatable_output_before_scoring(models, images, capsys):
    from taidpt.serve.infer import main

    out = f"{UNCREATABLE}/out.json"
    assert main(["--model", str(models[0]), "--images", str(images), "--output", out, "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)  # no model summary: refused before the model was opened
    assert out in line and "cannot create a file in /proc" in line


def test_batch_infer_refuses_an_uncreatable_output_before_scoring(models, images, capsys):
    from taidpt.serve.batch_infer import main

    out = f"{UNCREATABLE}/out.jsonl"
    assert main(["--model", str(models[0]), "--images", str(images), "--output", out, "--no-progress"]) == 2
    line = one_error_line(without_deprecation(capsys.readouterr().err))
    assert out in line and "cannot create a file in /proc" in line


@pytest.fixture(scope="module")
def scored(models, images):
    """What infer holds at its last step: the scored rows and the writer of the final file."""
    from taidpt.serve.infer import write_json
    from taidpt.serve.result_log import file_sha256

    with Predictor.from_onnx(models[0]) as predictor:
        paths = sorted(str(p) for p in images.iterdir())
        preds, rule = predictor.score(paths)
        labels, digest = rule.labels(preds.scores), file_sha256(models[0])
        yield preds, lambda path: write_json(path, predictor.runner, rule, preds, labels, len(paths), False, digest)


def test_a_failed_final_write_saves_the_rows_in_the_temp_folder(scored, tmp_path, monkeypatch):
    from taidpt.serve.infer import save_results

    preds, write = scored
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the system temp folder, as tempfile finds it
    problem = save_results(Path(UNCREATABLE) / "out.json", write)
    assert "\n" not in problem and problem.startswith(f"cannot write {UNCREATABLE}/out.json (")
    spare = Path(problem.rsplit(" saved in ", 1)[1].removesuffix(" instead"))
    assert spare.parent == tmp_path and spare.name.startswith("taidpt-out-") and spare.suffix == ".json"
    saved = json.loads(spare.read_text())
    assert [im["path"] for im in saved["images"]] == preds.paths and len(preds.paths) == 3


def test_a_final_write_with_nowhere_to_go_says_the_rows_are_lost(scored, tmp_path, monkeypatch):
    from taidpt.serve.infer import save_results

    monkeypatch.setattr(tempfile, "tempdir", UNCREATABLE)
    problem = save_results(Path(UNCREATABLE) / "out.json", scored[1])
    assert "\n" not in problem and problem.endswith("the scored results are lost")
    assert save_results(tmp_path / "ok.json", scored[1]) == "" and (tmp_path / "ok.json").is_file()


# ----------------------------------------------------------------------------- item 6: one class-name check
@pytest.mark.parametrize("names, expected", [
    (["cat", ""], r"classes\[1\]: expected a class name, found an empty or blank one"),
    (["cat", "   "], r"classes\[1\]: expected a class name, found an empty or blank one"),
    (["Cat", "cat "], r"'Cat' and 'cat ' are one class to the model \(both read 'cat'\)"),
    (["hot_dog", "hot dog"], r"one class to the model"),
    (["cat", "cat"], r"class 'cat' is listed twice"),
    (["cat", "do\u200bg"], r"classes\[1\]: .*invisible format character \(U\+200B ZERO WIDTH SPACE\)"),
    (["c\ufeffat"], r"U\+FEFF"),
    (["cat\u202e"], r"U\+202E"),
    (["ca\x07t"], r"control character \(U\+0007"),
    (["&nbsp;"], r"reads as nothing"),
    ([], r"the class list is empty"),
])
def test_class_lists_are_refused_with_where(names, expected):
    with pytest.raises(ClassNameError, match=expected):
        validate_class_names(names)


@pytest.mark.parametrize("names, expected", [
    (["cat", None], r"classes\[1\]: expected a class name \(str\), got NoneType None"),
    ([5], r"classes\[0\]: expected a class name \(str\), got int 5"),
    ([b"cat"], r"got bytes"),
    (5, r"expected a list of class names, got int"),
])
def test_class_names_that_are_not_strings_are_a_type_error(names, expected):
    with pytest.raises(TypeError, match=expected):
        validate_class_names(names)


def test_the_api_refuses_what_the_cli_refuses(models):
    image = np.zeros((20, 20, 3), np.uint8)
    with Predictor.from_onnx(models[0]) as predictor:
        with pytest.raises(ClassNameError, match=r"classes\[1\]"):
            predictor.predict(image, classes=["cat", ""])
        with pytest.raises(TypeError, match=r"classes\[1\].*NoneType"):
            predictor.predict(image, classes=["cat", None])
        with pytest.raises(ClassNameError, match="one class to the model"):
            predictor.score([image], classes=["Cat", "cat  "])
        for bad in (None, 5, b"x.jpg"):
            with pytest.raises(TypeError, match=r"images: expected an image \(a file path, a PIL image or a uint8"):
                predictor.predict(bad)
        assert predictor.predict(image, classes=list(SHORT)).scores.keys() == set(SHORT)  # its own list is fine
    with pytest.raises(ClassNameError, match=r"classes\[0\]"):
        Predictor.from_onnx(models[0], classes=[" "])


def test_the_cli_class_flags_use_the_same_check(tmp_path):
    with pytest.raises(OpenVocabError, match=r"--classes: 'cat' and 'Cat' are one class"):
        parse_class_names("cat, Cat")
    with pytest.raises(OpenVocabError, match=r"--classes name 2: .*U\+200B"):
        parse_class_names("cat,\u200bdog")
    listing = tmp_path / "classes.txt"
    listing.write_text("# my classes\n\ncat\n# dogs too\ndog\nze\x1bbra\n", encoding="utf-8")
    with pytest.raises(OpenVocabError, match=rf"--class-list {listing} line 6: .*control character \(U\+001B"):
        parse_class_names(class_list=listing)
    listing.write_text("\ufeff# comment\ncat\n\n  dog  \n", encoding="utf-8")
    assert parse_class_names(class_list=listing) == ["cat", "dog"]


def test_a_bad_class_list_file_is_one_line_from_the_cli(models, images, tmp_path, capsys):
    from taidpt.serve.infer import main

    listing = tmp_path / "c.txt"
    listing.write_text("cat\ndog\u200b\n", encoding="utf-8")
    out = tmp_path / "o.json"
    assert main(["--model", str(models[0]), "--images", str(images), "--output", str(out),
                 "--class-list", str(listing)]) == 2
    assert f"{listing} line 2" in one_error_line(capsys.readouterr().err) and not out.exists()


@pytest.mark.parametrize("module", ["taidpt.serve.infer", "taidpt.serve.batch_infer", "taidpt.serve.triton_client"])
def test_class_list_help_documents_comments(module):
    import importlib

    text = " ".join(importlib.import_module(module).build_parser().format_help().split())
    assert "lines starting with # (comments) are skipped" in text


# ----------------------------------------------------------------------------- item 7: the short-list fallback
@pytest.mark.parametrize("n, k", [(1, 0), (2, 1), (3, 2), (4, 3), (10, 3)])
def test_the_fallback_never_labels_every_class_of_a_short_list(n, k):
    names = [f"c{i}" for i in range(n)]
    rule = resolve(names)
    logits = np.random.default_rng(n).normal(size=(50, n))
    assert rule.k == k and all(len(labels) == k for labels in rule.labels(logits))
    assert ("short_list" in rule.tag()) == (n <= 3) and ("short_list" in rule.describe()) == (n <= 3)
    if n == 1:
        assert rule.text().startswith("no top-k label") and "no label without a threshold" in rule.text()
    elif n <= 3:
        assert f"short-list fallback: {n} classes, so top-{k}" in rule.text()
    assert resolve(names, top_k=n).labels(logits)[0] and resolve(names, threshold=-99.0).k == k  # explicit rules


def test_infer_header_states_the_short_list_fallback_and_the_model_hash(models, images, tmp_path, capsys):
    from taidpt.serve.infer import main

    out = tmp_path / "p.json"
    assert main(["--model", str(models[0]), "--images", str(images), "--output", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["decision"]["rule"] == "top_k" and res["decision"]["k"] == 2
    assert res["decision"]["short_list"].startswith("short-list fallback: 3 classes, so top-2")
    assert [len(im["labels"]) for im in res["images"]] == [2, 2, 2]
    assert res["model_sha256"] == hashlib.sha256(models[0].read_bytes()).hexdigest()
    assert "short-list fallback" in capsys.readouterr().err


# ----------------------------------------------------------------------------- item 8d: resume with another model
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_resume_with_another_model_is_refused(models, images, tmp_path, capsys, suffix):
    from taidpt.serve.batch_infer import main

    out = tmp_path / f"rows{suffix}"
    args = ["--images", str(images), "--output", str(out), "--no-progress"]
    assert main(["--model", str(models[0]), *args]) == 0
    before = out.read_bytes()
    assert hashlib.sha256(models[0].read_bytes()).hexdigest() in before.decode()
    capsys.readouterr()
    assert main(["--model", str(models[1]), *args]) == 2
    line = one_error_line(without_deprecation(capsys.readouterr().err))
    assert f"{out} was written by another model" in line and "use a new --output" in line
    assert out.read_bytes() == before
    assert main(["--model", str(models[0]), *args]) == 0 and out.read_bytes() == before  # the same model resumes
