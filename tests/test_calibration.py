"""Per-class decision thresholds: the two calibrations (labelled F1-optimal, label-free caption rates),
storing them in the model's metadata, and serving by them (infer, batch_infer, the Triton client)."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from taidpt.demo.voc_writer import write_caption_file, write_voc_dataset
from taidpt.export.calibrate import main as calibrate_main
from taidpt.export.threshold_store import store_thresholds
from taidpt.export.thresholds import f1_optimal, rate_matching
from taidpt.serve.batch_infer import main as batch_main
from taidpt.serve.decision import resolve, sigmoid
from taidpt.serve.infer import main as infer_main
from taidpt.serve.predictor import score_images
from taidpt.serve.metadata import MetadataError, ModelMetadata, read_onnx_metadata
from taidpt.serve.runtime import open_model
from taidpt.serve.triton import write_repository
from taidpt.serve.triton_client import main as client_main
from export_support import export_tiny_taidpt
from test_triton import fake_tritonclient, parse_config

CLASSES = ["dog", "cat", "car", "boat", "person"]
SIZE = 64


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_path(tiny_rn, tmp_path_factory):
    """A TinyRN TaI-DPT scorer with random contexts, exported uncalibrated."""
    return export_tiny_taidpt(tiny_rn, CLASSES, tmp_path_factory.mktemp("model") / "tiny.onnx", seed=5, size=SIZE)[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """VOC layout with the model's classes: 40 trainval and 16 test images (random pixels, random labels),
    a class list and a caption corpus with known class frequencies."""
    root = tmp_path_factory.mktemp("voc")
    rng = np.random.default_rng(0)
    for split, n, first in (("trainval", 40, 1000), ("test", 16, 1)):
        images = rng.integers(0, 255, (n, 48, 56, 3), dtype=np.uint8)
        labels = (rng.random((n, len(CLASSES))) < 0.35).astype(np.int64)
        labels[0] = 1  # every class has a positive
        write_voc_dataset(root, images, labels, CLASSES, split=split, first_id=first)
    (root / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
    counts = {"dog": 10, "cat": 5, "car": 2, "boat": 1, "person": 0}  # of 20 captions
    captions = [f"a photo of a {c} in the park" for c, k in counts.items() for _ in range(k)]
    captions += ["an empty street at night with a tree"] * 2
    write_caption_file(root / "captions.txt", captions)
    return root, {c: k / 18 for c, k in counts.items()}  # the two captions without a class are dropped


def copy_model(src: Path, folder: Path, name: str = "m.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / name
    shutil.copyfile(src, dst)
    return dst


def labelled_args(model: Path, root: Path, split: str = "trainval", *flags: str) -> list[str]:
    """The command line (flags first: trailing KEY VALUE pairs end it)."""
    return ["--model", str(model), "--labelled-split", split, "--dataset-config-file",
            "configs/datasets/voc2007.yaml", "--root", str(root), "--no-progress", *flags,
            "DATASET.CLASS_LIST", str(root / "classes.txt")]


# ----------------------------------------------------------------------------- the algorithms
def brute_force_f1(scores: np.ndarray, y: np.ndarray) -> float:
    """The best F1 of one class over every threshold (each distinct score, and above all of them)."""
    best = 0.0
    for t in [*np.unique(scores), np.inf]:
        pred = scores >= t
        tp = int((pred & (y == 1)).sum())
        denom = int(pred.sum()) + int((y == 1).sum())
        best = max(best, 2 * tp / denom if denom else 0.0)
    return best


def test_f1_optimal_thresholds_match_brute_force():
    rng = np.random.default_rng(1)
    n, c = 60, 6
    targets = (rng.random((n, c)) < 0.3).astype(np.int8)
    scores = rng.normal(size=(n, c)) + 1.5 * targets
    scores[:, 2] = np.round(scores[:, 2])  # heavy ties: a cut may not split equal scores
    targets[rng.random((n, c)) < 0.1] = -1  # ignored entries stay out of every count
    targets[:, 4] = np.where(targets[:, 4] == 1, 0, targets[:, 4])  # a class without a positive
    cuts = f1_optimal(scores, targets)
    for j, cut in enumerate(cuts):
        keep = targets[:, j] >= 0
        s, y = scores[keep, j], targets[keep, j]
        if j == 4:
            assert np.isnan(cut.threshold) and cut.n_predicted == 0
            continue
        pred = s >= cut.threshold
        tp = int((pred & (y == 1)).sum())
        f1 = 2 * tp / (int(pred.sum()) + int((y == 1).sum()))
        assert f1 == pytest.approx(brute_force_f1(s, y), abs=1e-12) == pytest.approx(cut.f1, abs=1e-12)
        assert int(pred.sum()) == cut.n_predicted
        # halfway between scores: no calibration score sits on the threshold
        assert np.min(np.abs(s - cut.threshold)) > 1e-9
    assert cuts[0].f1 > 0.5  # the synthetic classes are separable enough for the check to matter


def test_rate_matching_hits_the_target_rates():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(400, 5)) * np.array([1, 3, 0.1, 1, 1])
    rates = np.array([0.5, 0.137, 0.9, 0.0, 1.0])
    cuts = rate_matching(scores, rates)
    for j, cut in enumerate(cuts):
        if rates[j] == 0:
            assert np.isnan(cut.threshold)
            continue
        achieved = float((scores[:, j] >= cut.threshold).mean())
        assert achieved == pytest.approx(rates[j], abs=0.5 / 400 + 1e-12)
        assert cut.target_rate == rates[j]
    with pytest.raises(ValueError):
        rate_matching(scores, np.array([1.5, 0, 0, 0, 0]))


# ----------------------------------------------------------------------------- metadata
def test_thresholds_metadata_round_trip_and_errors(model_path, tmp_path):
    meta = read_onnx_metadata(model_path)
    assert meta.thresholds == () and meta.threshold_map == {}
    calibrated = meta.replace(thresholds={"cat": -0.25, "dog": 1.5}, calibration="test")
    props = calibrated.to_props()
    assert json.loads(props["taidpt.thresholds"]) == {"dog": 1.5, "cat": -0.25}  # class order
    assert ModelMetadata.from_props(props) == calibrated and calibrated.threshold_map == {"dog": 1.5, "cat": -0.25}
    for bad, message in (('{"zebra": 1}', "lacks: zebra"), ('{"dog": "high"}', "finite number"),
                         ('{"dog": NaN}', "finite number"), ('[1, 2]', "JSON object")):
        with pytest.raises(MetadataError, match=message) as info:
            ModelMetadata.from_props({**props, "taidpt.thresholds": bad}, "where.onnx")
        assert "where.onnx" in str(info.value)


def test_store_rewrites_metadata_only_and_atomically(model_path, tmp_path):
    model = copy_model(model_path, tmp_path)
    before = onnx.load(str(model))
    written = store_thresholds(model, {"dog": 0.5, "car": -1.0}, "by hand")
    assert written == model
    after = onnx.load(str(model))
    assert after.graph.SerializeToString() == before.graph.SerializeToString()  # graph and weights untouched
    assert read_onnx_metadata(model).threshold_map == {"dog": 0.5, "car": -1.0}
    assert read_onnx_metadata(model).calibration == "by hand"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left behind
    other = store_thresholds(model, {"cat": 2.0}, "again", tmp_path / "out" / "c.onnx")
    assert read_onnx_metadata(other).threshold_map == {"cat": 2.0}
    assert read_onnx_metadata(model).threshold_map == {"dog": 0.5, "car": -1.0}  # the source is left alone


def test_store_into_an_engine_rewrites_its_sidecar(model_path, tmp_path):
    """A TensorRT engine holds no metadata: its .plan.json sidecar gets the thresholds, build facts kept."""
    from taidpt.serve.metadata import read_sidecar, write_sidecar

    engine = tmp_path / "m.plan"
    engine.write_bytes(b"not a real engine")
    write_sidecar(engine, read_onnx_metadata(model_path), {"profile": {"max": [8, 3, 64, 64]}})
    assert store_thresholds(engine, {"boat": 0.25}, "by hand") == engine
    meta, facts = read_sidecar(engine)
    assert meta.threshold_map == {"boat": 0.25} and facts == {"profile": {"max": [8, 3, 64, 64]}}
    assert engine.read_bytes() == b"not a real engine"
    with pytest.raises(MetadataError, match="leave --output out"):
        store_thresholds(engine, {"boat": 0.25}, "by hand", tmp_path / "other.plan")


# ----------------------------------------------------------------------------- the command
def test_labelled_calibration_is_f1_optimal_on_the_split(model_path, dataset, tmp_path, capsys):
    root, _ = dataset
    model = copy_model(model_path, tmp_path)
    out, report = tmp_path / "cal.onnx", tmp_path / "cal.json"
    assert calibrate_main(labelled_args(model, root, "trainval", "--output", str(out), "--report", str(report))) == 0
    stdout = capsys.readouterr().out
    assert "F1-optimal per class on voc2007_trainval (40 images)" in stdout
    meta = read_onnx_metadata(out)
    assert set(meta.threshold_map) == set(CLASSES) and "voc2007_trainval" in meta.calibration
    assert read_onnx_metadata(model).threshold_map == {}  # --output leaves the source uncalibrated
    # Independent check: score the trainval images and verify each stored threshold is F1-optimal there.
    from taidpt.images.readers.voc import read_voc2007

    split = read_voc2007(root, "trainval", classnames=CLASSES)
    runner = open_model(out)
    scores = score_images(runner, split.paths, progress=False).scores
    runner.close()
    for j, c in enumerate(CLASSES):
        y = split.targets[:, j]
        pred = scores[:, j] >= meta.threshold_map[c]
        f1 = 2 * int((pred & (y == 1)).sum()) / (int(pred.sum()) + int((y == 1).sum()))
        assert f1 == pytest.approx(brute_force_f1(scores[:, j].astype(np.float64), y), abs=1e-9)
    assert json.loads(report.read_text())["thresholds"] == pytest.approx(meta.threshold_map)


def test_labelled_calibration_runs_without_torch(model_path, dataset, tmp_path):
    import subprocess

    root, _ = dataset
    code = ("import sys; sys.modules['torch'] = None; from taidpt.export.calibrate import main; rc = main(sys.argv[1:]); "
            "print('TORCH', sys.modules.get('torch')); sys.exit(rc)")
    args = labelled_args(model_path, root, "trainval", "--output", str(tmp_path / "c.onnx"))
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TORCH None" in proc.stdout and len(read_onnx_metadata(tmp_path / "c.onnx").threshold_map) == len(CLASSES)


@pytest.mark.parametrize("case", ["test_split", "explicit_test_split", "same_images"])
def test_labelled_calibration_refuses_the_test_split(case, model_path, dataset, tmp_path, capsys):
    root, _ = dataset
    model = copy_model(model_path, tmp_path)
    args = labelled_args(model, root, "test")
    if case == "explicit_test_split":
        args = labelled_args(model, root, "trainval") + ["DATASET.TEST_SPLIT", "trainval"]
    elif case == "same_images":  # another split name listing the test images
        main_dir = root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
        for f in main_dir.glob("*test.txt"):
            shutil.copyfile(f, main_dir / f.name.replace("test.txt", "copy.txt"))
        args = labelled_args(model, root, "copy")
    before = model.read_bytes()
    assert calibrate_main(args) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(err) == 1 and ("test split" in err[0] or "reported on" in err[0]), err
    assert model.read_bytes() == before


def write_run(folder: Path, root: Path) -> Path:
    """A run folder whose config.yaml names the fixture's caption corpus and class list."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(
        "DATASET:\n  NAME: VOC2007\n  ROOT: %s\n  CLASS_LIST: %s\n  CAPTION_FILE: captions.txt\n"
        "  CAPTION_SOURCE: text\n  CACHE_DIR: %s\n  LEMMATIZER: lemminflect\nTRAINER:\n  NAME: TaIDPT\n"
        % (root, root / "classes.txt", folder / "cache"))
    return folder


def test_label_free_rates_match_caption_frequencies(model_path, dataset, tmp_path, capsys):
    root, expected = dataset
    model = copy_model(model_path, tmp_path)
    run = write_run(tmp_path / "run", root)
    images = root / "VOCdevkit" / "VOC2007" / "JPEGImages"
    assert calibrate_main(["--model", str(model), "--unlabelled-images", str(images), "--model-dir", str(run),
                           "--no-progress", "--report", str(tmp_path / "r.json")]) == 0
    assert "templates left out" in capsys.readouterr().out
    meta = read_onnx_metadata(model)
    assert set(meta.threshold_map) == {"dog", "cat", "car", "boat"}  # "person" is never named: top-k decides it
    report = json.loads((tmp_path / "r.json").read_text())["classes"]
    assert {c: report[c]["target_rate"] for c in CLASSES} == pytest.approx(expected)  # templates not counted
    # Served by the stored thresholds, the positive rates on these images are the caption frequencies.
    out = tmp_path / "pred.json"
    assert infer_main(["--model", str(model), "--images", str(images), "--output", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    n = len(res["images"])
    assert n == 56 and res["decision"]["top_k"] == {"k": 3, "classes": ["person"]}
    for c in ("dog", "cat", "car", "boat"):
        rate = sum(c in im["labels"] for im in res["images"]) / n
        assert rate == pytest.approx(expected[c], abs=0.5 / n + 1e-9), c


def test_generated_captions_give_no_rates_so_the_user_gives_them(model_path, dataset, tmp_path, capsys):
    """After a run on generated sentences the caption frequencies are the generator's: calibration refuses them
    (export too, before writing anything) and takes --class-rates instead."""
    from taidpt.export.onnx_cli import main as export_main

    root, _ = dataset
    model = copy_model(model_path, tmp_path)
    run = write_run(tmp_path / "run", root)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("CAPTION_SOURCE: text",
                                                                                 "CAPTION_SOURCE: generated"))
    images = str(root / "VOCdevkit" / "VOC2007" / "JPEGImages")
    before = model.read_bytes()
    assert calibrate_main(["--model", str(model), "--unlabelled-images", images, "--model-dir", str(run),
                           "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "generated" in err[0] and "--class-rates FILE" in err[0] and model.read_bytes() == before
    assert export_main(["--model-dir", str(run), "--output", str(tmp_path / "x.onnx"), "--calibration-images", images,
                        "--label-free-thresholds"]) == 2
    assert "--class-rates FILE" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()

    rates = {"dog": 0.5, "cat": 0.25, "car": 0.125, "boat": 0.0, "person": 0.75}
    (tmp_path / "rates.txt").write_text("# share of my images\n" + "".join(f"{c}, {r}\n" for c, r in rates.items()))
    assert calibrate_main(["--model", str(model), "--unlabelled-images", images, "--class-rates",
                           str(tmp_path / "rates.txt"), "--no-progress", "--report", str(tmp_path / "r.json")]) == 0
    assert "positive rate = the rates of rates.txt" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())["classes"]
    assert {c: report[c]["target_rate"] for c in CLASSES} == pytest.approx(rates)
    assert set(read_onnx_metadata(model).threshold_map) == {"dog", "cat", "car", "person"}
    (tmp_path / "bad.txt").write_text("dog, 0.5\ncat, 1.5\n")
    assert calibrate_main(["--model", str(model), "--unlabelled-images", images, "--class-rates",
                           str(tmp_path / "bad.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.txt:2: expected a rate between 0 and 1" in err[0]


@pytest.mark.parametrize("extra, message", [
    (["--unlabelled-images", "x"], "needs --model-dir"),
    (["--labelled-split", "trainval"], "needs --dataset-config-file"),
    (["--labelled-split", "trainval", "--dataset-config-file", "configs/datasets/voc2007.yaml", "--output", "m.txt"],
     "expected a .onnx"),
])
def test_command_errors_are_one_line(extra, message, model_path, capsys):
    assert calibrate_main(["--model", str(model_path), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


# ----------------------------------------------------------------------------- serving by the thresholds
@pytest.fixture(scope="module")
def served(model_path, tmp_path_factory):
    """A model whose stored 'dog' threshold is exactly one image's dog logit, with no threshold for
    'person'; and the images."""
    folder = tmp_path_factory.mktemp("served")
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    model = copy_model(model_path, folder)
    runner = open_model(model)
    logits = score_images(runner, sorted(str(p) for p in images.iterdir()), batch_size=1, progress=False).scores
    runner.close()
    thresholds = {c: float(np.median(logits[:, j])) for j, c in enumerate(CLASSES) if c != "person"}
    thresholds["dog"] = float(logits[2, 0])  # image im2 sits exactly on the dog threshold
    store_thresholds(model, thresholds, "test thresholds")
    return model, images, logits, thresholds


def check_row(name: str, row: dict, logits: np.ndarray, thresholds: dict, exact: bool = True) -> None:
    i = int(Path(name).stem[2:])
    for j, c in enumerate(CLASSES):
        assert row["scores"][c] == pytest.approx(float(logits[i, j]), abs=1e-5)
        if c in thresholds:
            assert row["confidence"][c] == pytest.approx(float(sigmoid(logits[i, j] - thresholds[c])), abs=1e-5)
            assert (c in row["labels"]) == (row["scores"][c] >= thresholds[c])
        else:
            assert row["confidence"][c] is None
    if i == 2:
        assert row["confidence"]["dog"] == (0.5 if exact else pytest.approx(0.5, abs=1e-5))
        if exact:
            assert "dog" in row["labels"]
    top3 = np.argsort(-logits[i], kind="stable")[:3]
    assert ("person" in row["labels"]) == (CLASSES.index("person") in top3)


def test_infer_labels_by_stored_thresholds(served, tmp_path, capsys):
    model, images, logits, thresholds = served
    out = tmp_path / "p.json"
    assert infer_main(["--model", str(model), "--images", str(images), "--output", str(out), "--no-progress",
                       "--batch-size", "1"]) == 0
    assert "stored per-class thresholds (test thresholds); top-3 for person" in capsys.readouterr().err
    res = json.loads(out.read_text())
    d = res["decision"]
    assert d["rule"] == "stored_thresholds" and d["thresholds"] == pytest.approx(thresholds)
    assert d["top_k"] == {"k": 3, "classes": ["person"]} and d["source"] == "test thresholds"
    assert "not a probability" in d["confidence"]
    for im in res["images"]:
        check_row(im["path"], im, logits, thresholds)
    n_labels = sum(len(im["labels"]) for im in res["images"])
    # --threshold and --top-k still override the stored thresholds
    assert infer_main(["--model", str(model), "--images", str(images), "--output", str(out), "--no-progress",
                       "--top-k", "1"]) == 0
    assert [len(im["labels"]) for im in json.loads(out.read_text())["images"]] == [1] * 6
    assert infer_main(["--model", str(model), "--images", str(images), "--output", str(out), "--no-progress",
                       "--threshold", "1e9"]) == 0
    assert sum(len(im["labels"]) for im in json.loads(out.read_text())["images"]) == 0 < n_labels


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_batch_infer_labels_by_stored_thresholds(served, tmp_path, suffix):
    model, images, logits, thresholds = served
    out = tmp_path / f"rows{suffix}"
    assert batch_main(["--model", str(model), "--images", str(images), "--output", str(out), "--no-progress",
                       "--batch-size", "1"]) == 0
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        for row in rows:
            assert row["decision"] == {"rule": "stored_thresholds", "top_k": {"k": 3, "classes": ["person"]}}
            check_row(row["path"], row, logits, thresholds)
    else:
        import csv

        rows = list(csv.DictReader(out.open()))
        for row in rows:
            assert row["decision"].startswith("stored per-class thresholds") and "top-3 for person" in row["decision"]
            parsed = {"scores": {c: float(row[c]) for c in CLASSES}, "labels": row["labels"].split(";"),
                      "confidence": {c: float(row[f"confidence:{c}"]) if row[f"confidence:{c}"] else None
                                     for c in CLASSES}}
            check_row(row["path"], parsed, logits, thresholds)
    assert len(rows) == 6


def test_triton_repository_carries_thresholds_and_client_uses_them(served, tmp_path, monkeypatch, capsys):
    model, images, logits, thresholds = served
    folder = write_repository(model, tmp_path / "repo")
    params = {p["key"][0]: p["value"][0]["string_value"][0] for p in parse_config(folder)["parameters"]}
    assert json.loads(params["taidpt.thresholds"]) == pytest.approx(thresholds)
    monkeypatch.setitem(sys.modules, "tritonclient", types.ModuleType("tritonclient"))
    monkeypatch.setitem(sys.modules, "tritonclient.http", fake_tritonclient(folder))
    assert client_main(["--model", "taidpt", "--images", str(images), "--batch-size", "1"]) == 0
    captured = capsys.readouterr()
    assert "top-3 for person" in captured.err
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert row["decision"]["top_k"]["classes"] == ["person"]
        check_row(row["path"], row, logits, thresholds, exact=False)


def test_decision_rule_edges():
    d = resolve(["a", "b"], {"a": 1.0, "zzz": 3.0})  # a stored name the columns lack is simply unused
    assert d.top_k_classes == ["b"] and d.k == 1  # the short-list fallback: top-1 of 2 classes, never both
    assert d.labels(np.array([[1.0, -5.0], [0.5, -6.0], [0.5, 6.0]])) == [["a"], [], ["b"]]
    assert resolve(["a", "b"]).rule == "top_k"
    with pytest.raises(ValueError, match="--top-k must be between 1 and 2"):
        resolve(["a", "b"], top_k=3)


def test_export_given_target_images_ships_label_free_thresholds(dataset, tmp_path, capsys):
    """export.onnx --label-free-thresholds: one command from a run to a model whose stored thresholds equal
    export.calibrate's on the same unlabelled images."""
    from taidpt.export.onnx_cli import main as export_main

    root, _ = dataset
    run = write_run(tmp_path / "run", root)
    images = str(root / "VOCdevkit" / "VOC2007" / "JPEGImages")
    common = ["--model-dir", str(run), "--trainer", "ZeroshotCLIPDense", "--batch-sizes", "1",
              "MODEL.BACKBONE.NAME", "TinyRN", "MODEL.BACKBONE.PRETRAINED", "", "SEED", "1",
              "INPUT.SIZE", "(64, 64)"]
    shipped, plain = tmp_path / "shipped.onnx", tmp_path / "plain.onnx"
    assert export_main(["--output", str(shipped), "--calibration-images", images, "--label-free-thresholds",
                        *common]) == 0
    assert "thresholds for 4 of 5 classes stored in" in capsys.readouterr().out
    assert export_main(["--output", str(plain), *common]) == 0
    assert read_onnx_metadata(plain).threshold_map == {}
    assert calibrate_main(["--model", str(plain), "--unlabelled-images", images, "--model-dir", str(run),
                           "--no-progress"]) == 0
    got, want = read_onnx_metadata(shipped), read_onnx_metadata(plain)
    assert got.calibration.startswith("label-free") and got.calibration == want.calibration
    assert set(got.threshold_map) == {"dog", "cat", "car", "boat"}
    assert got.threshold_map == pytest.approx(want.threshold_map, abs=1e-6)

    # Without target images (or without a run) the flag is refused before anything is written.
    capsys.readouterr()
    assert export_main(["--output", str(tmp_path / "x.onnx"), "--label-free-thresholds", *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--label-free-thresholds needs --calibration-images" in err[0]
    assert not (tmp_path / "x.onnx").exists()
