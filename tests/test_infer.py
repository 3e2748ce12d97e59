"""The torch-free inference CLI (taidpt.serve.infer) on generated image files, and its no-torch guarantee."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

import taidpt.serve.infer
import taidpt.serve.predictor
from cli_support import worker_threads
from export_support import export_tiny_taidpt
from taidpt.serve.infer import collect_images, decide, main
from taidpt.utils.pathtext import unescape_path
from taidpt.images.preprocess import load_rgb, preprocess

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["dog", "cat", "car", "traffic light", "potted_plant", "person"]
SIZE = 64


@pytest.fixture(scope="module")
def exported(tiny_rn, tmp_path_factory):
    """A TinyRN TaI-DPT scorer with random contexts, exported to ONNX with a non-default threshold."""
    return export_tiny_taidpt(tiny_rn, CLASSES, tmp_path_factory.mktemp("model") / "tiny.onnx", seed=3, size=SIZE,
                              threshold=0.05)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Real files in several formats and modes, one nested, plus a truncated JPEG and an empty file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)).save(root / "a_rgb.jpg", quality=90)
    Image.fromarray(rng.integers(0, 255, (50, 200, 3), dtype=np.uint8)).save(root / "b_wide.png")
    Image.fromarray(rng.integers(0, 255, (80, 64), dtype=np.uint8), "L").save(root / "c_gray.png")
    Image.fromarray(rng.integers(0, 255, (70, 70, 4), dtype=np.uint8), "RGBA").save(root / "d_rgba.png")
    Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8), "L").save(root / "e_gray.jpg")
    Image.fromarray(rng.integers(0, 255, (66, 99, 3), dtype=np.uint8)).save(root / "sub" / "f_nested.jpg")
    good = (root / "a_rgb.jpg").read_bytes()
    (root / "g_truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "h_empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image, not listed")
    return root


def write_bytes_name(folder: Path, name: bytes, data: bytes) -> None:
    """Create ``folder/name`` under a byte file name that need not be UTF-8."""
    fd = os.open(os.fsencode(folder) + b"/" + name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def jpeg_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def latin1_dir(tmp_path_factory):
    """File names in latin-1, not UTF-8 (b'caf\\xe9.jpg'): one image, one empty file; plus a plain name."""
    root = tmp_path_factory.mktemp("latin1")
    (root / "plain.jpg").write_bytes(jpeg_bytes(5))
    write_bytes_name(root, b"caf\xe9.jpg", jpeg_bytes(6))
    write_bytes_name(root, b"vid\xe9.png", b"")
    return root


GOOD = ["a_rgb.jpg", "b_wide.png", "c_gray.png", "d_rgba.png", "e_gray.jpg", "sub/f_nested.jpg"]
BAD = ["g_truncated.jpg", "h_empty.png"]


def torch_scores(scorer, paths) -> np.ndarray:
    """Merged scores of the PyTorch scorer on the evaluation preprocessing of each file."""
    x = np.stack([preprocess(load_rgb(p), SIZE) for p in paths])
    with torch.no_grad():
        return scorer(torch.from_numpy(x))[0].numpy()


def run_cli(args: list[str], block_torch: bool = False) -> subprocess.CompletedProcess:
    prelude = "import sys; sys.modules['torch'] = None; " if block_torch else "import sys; "
    code = (prelude + "from taidpt.serve.infer import main; rc = main(sys.argv[1:]); "
            "bad = [m for m in ('torch', 'torchvision', 'open_clip', 'taidpt.networks.model', 'taidpt.engine.runner', 'taidpt.export.tracing') "
            "if sys.modules.get(m) is not None]; print('HEAVY-MODULES', bad, file=sys.stderr); sys.exit(rc)")
    env = {**os.environ, "OMP_NUM_THREADS": str(worker_threads())}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_cli_json_end_to_end_without_torch(exported, image_dir, tmp_path):
    scorer, model = exported
    out = tmp_path / "pred.json"
    proc = run_cli(["--model", str(model), "--images", str(image_dir), "--output", str(out), "--batch-size", "4"],
                   block_torch=True)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY-MODULES []" in proc.stderr
    res = json.loads(out.read_text())
    assert res["provider"] == "CPUExecutionProvider" and res["classes"] == CLASSES
    # Not calibrated (no taidpt.thresholds): every class by top-3, and the header says so and why; the
    # evaluation threshold (0.05 here) is not a serving default.
    decision = res["decision"]
    assert decision["rule"] == "top_k" and decision["k"] == 3 and "calibrate" in decision["source"]
    assert res["n_inputs"] == 8 and res["n_images"] == 6 and res["n_skipped"] == 2
    assert [Path(im["path"]).relative_to(image_dir).as_posix() for im in res["images"]] == GOOD
    skipped = {Path(s["path"]).name: s["reason"] for s in res["skipped"]}
    assert set(skipped) == set(BAD) and "empty" in skipped["h_empty.png"] and skipped["g_truncated.jpg"]
    for name in BAD:  # each unreadable file is named on stderr with its reason
        assert f"skipped {image_dir / name}: " in proc.stderr
    # Scores are the PyTorch model's on the evaluation preprocessing (grayscale and RGBA included).
    got = np.array([[im["scores"][c] for c in CLASSES] for im in res["images"]])
    ref = torch_scores(scorer, [image_dir / g for g in GOOD])
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert np.ptp(got, axis=0).min() > 1e-3  # the images really are told apart
    for im in res["images"]:
        expected = sorted(CLASSES, key=lambda c: -im["scores"][c])[:3]
        assert im["labels"] == expected
        assert im["confidence"] == {c: None for c in CLASSES}  # no threshold, no confidence
    assert "labels: top-3 for every class" in proc.stderr


def test_threshold_and_top_k(exported, image_dir, tmp_path):
    _, model = exported
    base = tmp_path / "all.json"
    assert main(["--model", str(model), "--images", str(image_dir), "--output", str(base), "--no-progress",
                 "--all-outputs"]) == 0
    res = json.loads(base.read_text())
    scores = np.array([[im["scores"][c] for c in CLASSES] for im in res["images"]])
    for im in res["images"]:
        g, l_ = im["global_logits"], im["local_logits"]
        assert all(abs(im["scores"][c] - 0.5 * (g[c] + l_[c])) < 1e-6 for c in CLASSES)
    t = float(np.median(scores))
    out = tmp_path / "thr.json"
    assert main(["--model", str(model), "--images", str(image_dir), "--output", str(out), "--no-progress",
                 "--threshold", repr(t)]) == 0
    thr = json.loads(out.read_text())
    assert {k: thr["decision"][k] for k in ("rule", "threshold")} == {"rule": "threshold", "threshold": t}
    assert "top_k" not in thr["decision"]
    n_labels = [len(im["labels"]) for im in thr["images"]]
    assert sum(n_labels) == int((scores >= t).sum()) and 0 < sum(n_labels) < scores.size
    for im, row in zip(thr["images"], scores):
        assert set(im["labels"]) == {c for c, v in zip(CLASSES, row) if v >= t}
        for c, v in zip(CLASSES, row):  # confidence = sigmoid(logit - T), above 0.5 exactly for the labels
            assert im["confidence"][c] == pytest.approx(1 / (1 + np.exp(-(v - t))), abs=1e-6)
            assert (im["confidence"][c] >= 0.5) == (c in im["labels"])

    out = tmp_path / "top2.json"
    assert main(["--model", str(model), "--images", str(image_dir), "--output", str(out), "--no-progress",
                 "--top-k", "2"]) == 0
    top = json.loads(out.read_text())
    assert {k: top["decision"][k] for k in ("rule", "k")} == {"rule": "top_k", "k": 2}
    for im, row in zip(top["images"], scores):
        assert im["labels"] == [CLASSES[i] for i in np.argsort(-row, kind="stable")[:2]]


def test_csv_output(exported, image_dir, tmp_path):
    _, model = exported
    out_json, out_csv = tmp_path / "p.json", tmp_path / "p.csv"
    args = ["--model", str(model), "--images", str(image_dir), "--no-progress", "--top-k", "3"]
    assert main([*args, "--output", str(out_json)]) == 0
    assert main([*args, "--output", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    with out_csv.open() as fh:
        header = next(csv.reader(fh))
    assert header == ["path", *CLASSES, *(f"confidence:{c}" for c in CLASSES), "labels", "decision", "error",
                      "model_sha256"]
    assert len(rows) == 8
    by_path = {r["path"]: r for r in rows}
    for im in json.loads(out_json.read_text())["images"]:
        r = by_path[im["path"]]
        assert r["error"] == "" and r["labels"].split(";") == im["labels"]
        assert r["decision"] == "top-3 for every class"
        assert all(float(r[c]) == pytest.approx(im["scores"][c], abs=1e-7) for c in CLASSES)
        assert all(r[f"confidence:{c}"] == "" for c in CLASSES)  # top-k decided: no confidence
    bad = [r for r in rows if r["error"]]
    assert sorted(Path(r["path"]).name for r in bad) == BAD
    assert all(r[c] == "" and r["labels"] == "" and r["decision"] == "" for r in bad for c in CLASSES)


def test_list_file_glob_and_batch_size_invariance(exported, image_dir, tmp_path):
    _, model = exported
    listing = image_dir / "list.txt"
    listing.write_text("# test list\na_rgb.jpg\n\nsub/f_nested.jpg\nmissing.jpg\n" + str(image_dir / "c_gray.png") + "\n")
    try:
        assert collect_images(str(listing)) == [str(image_dir / "a_rgb.jpg"), str(image_dir / "sub/f_nested.jpg"),
                                                str(image_dir / "missing.jpg"), str(image_dir / "c_gray.png")]
        out = tmp_path / "list.json"
        assert main(["--model", str(model), "--images", str(listing), "--output", str(out), "--no-progress"]) == 0
        res = json.loads(out.read_text())
        assert res["n_images"] == 3 and [s["reason"] for s in res["skipped"]] == ["no such file"]
    finally:
        listing.unlink()
    assert collect_images(str(image_dir / "*.png")) == [str(image_dir / n) for n in ("b_wide.png", "c_gray.png",
                                                                                     "d_rgba.png", "h_empty.png")]
    assert len(collect_images(str(image_dir / "**" / "*.jpg"))) == 4
    outs = []
    for bs in ("1", "5"):
        out = tmp_path / f"bs{bs}.json"
        assert main(["--model", str(model), "--images", str(image_dir), "--output", str(out), "--no-progress",
                     "--batch-size", bs]) == 0
        outs.append(np.array([[im["scores"][c] for c in CLASSES] for im in json.loads(out.read_text())["images"]]))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)


def test_decide_rules():
    s = np.array([[0.2, 0.5, 0.5, -1.0]], dtype=np.float32)
    names = ["a", "b", "c", "d"]
    assert decide(s, names, threshold=0.5) == [["b", "c"]]  # inclusive, ties in class order
    assert decide(s, names, threshold=0.0) == [["b", "c", "a"]]
    assert decide(s, names, top_k=1) == [["b"]]
    assert decide(s, names, top_k=4) == [["b", "c", "a", "d"]]
    with pytest.raises(ValueError):
        decide(s, names, threshold=0.1, top_k=1)


@pytest.mark.parametrize("case", ["bad_suffix", "no_images", "unknown_provider", "top_k_range", "foreign_onnx",
                                  "not_onnx"])
def test_cli_errors_are_one_line(case, exported, image_dir, tmp_path, capsys):
    _, model = exported
    args = ["--model", str(model), "--images", str(image_dir), "--output", str(tmp_path / "o.json")]
    if case == "bad_suffix":
        args[-1], expect = str(tmp_path / "o.txt"), "expected OUT.json, OUT.jsonl, OUT.csv or a folder OUT.parquet"
    elif case == "no_images":
        args[3], expect = str(tmp_path / "nothing*.jpg"), "not a folder, a list file"
    elif case == "unknown_provider":
        args += ["--providers", "NoSuchExecutionProvider"]
        expect = "NoSuchExecutionProvider is not available in this onnxruntime build"
    elif case == "top_k_range":
        args += ["--top-k", str(len(CLASSES) + 1)]
        expect = f"--top-k must be between 1 and {len(CLASSES)}"
    elif case == "foreign_onnx":
        node = onnx.helper.make_node("Identity", ["images"], ["scores"])
        vi = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 3]) for n in ("images", "scores")]
        foreign = tmp_path / "foreign.onnx"
        onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", [vi[0]], [vi[1]])), str(foreign))
        args[1], expect = str(foreign), "not a taidpt export"
    else:
        bogus = tmp_path / "model.bin"
        bogus.write_bytes(b"xx")
        args[1], expect = str(bogus), "expected a .onnx model or a TensorRT engine"
    assert main(args) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("error")]
    assert len(err) == 1 and expect in err[0], err
    assert not (tmp_path / "o.json").exists()


def test_inference_stack_imports_no_torch():
    """The deployment modules and the core modules they use import with torch made unimportable."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import export, export.infer, export.evaluate, export.tensorrt, taidpt.export\n"
        "import taidpt.serve.infer, taidpt.serve.metadata, taidpt.serve.runtime, taidpt.export.evaluate\n"
        "import taidpt.images.preprocess, taidpt.evaluation.metrics, taidpt.images.readers, taidpt.images.registry, taidpt.engine.config\n"
        "heavy = [m for m in ('torch', 'torchvision', 'open_clip', 'taidpt.networks.model', 'taidpt.engine.runner')"
        " if sys.modules.get(m) is not None]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.gpu
def test_cuda_provider_inference(exported, image_dir, tmp_path):
    if "CUDAExecutionProvider" not in ort.get_available_providers() or not torch.cuda.is_available():
        pytest.skip("needs onnxruntime-gpu (CUDAExecutionProvider) and a CUDA device")
    scorer, model = exported
    out = tmp_path / "cuda.json"
    assert main(["--model", str(model), "--images", str(image_dir), "--output", str(out), "--no-progress",
                 "--providers", "CUDAExecutionProvider"]) == 0
    res = json.loads(out.read_text())
    assert res["provider"] == "CUDAExecutionProvider"
    got = np.array([[im["scores"][c] for c in CLASSES] for im in res["images"]])
    np.testing.assert_allclose(got, torch_scores(scorer, [image_dir / g for g in GOOD]), atol=1e-3, rtol=0)


def test_undecodable_file_names_are_written_escaped_in_json_and_csv(exported, latin1_dir, tmp_path):
    """Names whose bytes are not UTF-8 used to be scored and then lost at the CSV write; now every format holds
    the same escaped text, which maps back to the file."""
    _, model = exported
    args = ["--model", str(model), "--images", str(latin1_dir), "--no-progress"]
    assert main([*args, "--output", str(tmp_path / "p.csv")]) == 0
    assert main([*args, "--output", str(tmp_path / "p.json")]) == 0
    res = json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))
    cafe, video = f"{latin1_dir}/caf\\xe9.jpg", f"{latin1_dir}/vid\\xe9.png"
    assert [im["path"] for im in res["images"]] == [cafe, f"{latin1_dir}/plain.jpg"]
    assert [s["path"] for s in res["skipped"]] == [video]
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == [cafe, f"{latin1_dir}/plain.jpg", video]
    assert rows[2]["error"] and not rows[0]["error"]
    assert os.path.isfile(unescape_path(cafe)) and os.fsencode(unescape_path(cafe)).endswith(b"caf\xe9.jpg")
    # The escaped name, written in a (UTF-8) list file, names the file again.
    listing = tmp_path / "again.txt"
    listing.write_text(cafe + "\n", encoding="utf-8")
    assert main([*args[:2], "--images", str(listing), "--output", str(tmp_path / "again.json"), "--no-progress"]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert [im["path"] for im in again["images"]] == [cafe] and again["images"][0]["scores"] == res["images"][0]["scores"]


def test_list_file_that_is_not_utf8_names_file_line_and_byte(exported, tmp_path, capsys):
    _, model = exported
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"# photos\ncaf\xe9.jpg\n")
    assert main(["--model", str(model), "--images", str(listing), "--output", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{listing} line 2, byte 4 (0xe9): not UTF-8" in err[0], err
    assert not (tmp_path / "o.json").exists()


def _no_model(*args, **kwargs):
    raise AssertionError("the model was opened although the output cannot be written")


@pytest.mark.parametrize("case", ["under_a_file", "a_folder", "read_only_folder"])
def test_unwritable_output_fails_before_scoring(case, exported, image_dir, tmp_path, monkeypatch, capsys):
    _, model = exported
    if case == "under_a_file":
        (tmp_path / "somefile.txt").write_text("x")
        out, expect = tmp_path / "somefile.txt" / "out.json", "somefile.txt is a file, not a folder"
    elif case == "a_folder":
        out, expect = tmp_path / "made.json", "is a folder"
        out.mkdir()
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        (tmp_path / "ro").mkdir(mode=0o555)
        out, expect = tmp_path / "ro" / "sub" / "out.csv", "is not writable"
    monkeypatch.setattr(taidpt.serve.predictor, "open_model", _no_model)
    monkeypatch.setattr(taidpt.serve.predictor, "score_images", _no_model)
    assert main(["--model", str(model), "--images", str(image_dir), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0], err


def test_csv_class_clash_fails_before_scoring(exported, image_dir, tmp_path, monkeypatch, capsys):
    _, model = exported
    real_open = taidpt.serve.predictor.open_model

    def open_with_a_labels_class(*args, **kwargs):
        runner = real_open(*args, **kwargs)
        runner.metadata = dataclasses.replace(runner.metadata, classnames=("labels", *CLASSES[1:]))
        return runner

    monkeypatch.setattr(taidpt.serve.predictor, "open_model", open_with_a_labels_class)
    monkeypatch.setattr(taidpt.serve.predictor, "score_images", _no_model)
    assert main(["--model", str(model), "--images", str(image_dir), "--output", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clash with the CSV's own columns" in err[0], err


def test_temp_files_of_a_killed_earlier_run_are_removed(exported, image_dir, tmp_path):
    _, model = exported
    stale, live = tmp_path / ".out.json.k1ll3d_x.tmp", tmp_path / ".out.json.wr1t1ng_.tmp"
    stale.write_text("half a file")
    live.write_text("a writer at work")
    os.utime(stale, (1, 1))
    assert main(["--model", str(model), "--images", str(image_dir), "--output", str(tmp_path / "out.json"),
                 "--no-progress"]) == 0
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("installed", [("onnxruntime",), ("onnxruntime-gpu",), ("onnxruntime", "onnxruntime-gpu")])
def test_both_onnxruntime_packages_warn_once_when_the_runtime_starts(installed, exported, monkeypatch):
    """A CPU onnxruntime beside onnxruntime-gpu hides the CUDA provider: the first model opened says so, once."""
    from importlib.metadata import PackageNotFoundError

    from taidpt.serve import ort_packages
    from taidpt.serve.runtime import OnnxModel

    def distribution(name):
        if name not in installed:
            raise PackageNotFoundError(name)
        return object()

    monkeypatch.setattr(ort_packages, "distribution", distribution)
    monkeypatch.setattr(ort_packages, "_warned", False)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    ort_packages.log.addHandler(handler)
    try:
        for _ in range(2):
            OnnxModel(exported[1], ["CPUExecutionProvider"]).close()
    finally:
        ort_packages.log.removeHandler(handler)
    messages = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    if len(installed) == 2:
        assert len(messages) == 1, messages
        assert "both onnxruntime and onnxruntime-gpu are installed" in messages[0]
        assert "pip uninstall" in messages[0]
    else:
        assert messages == []
