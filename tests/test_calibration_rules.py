"""Rules of calibration and configuration input (issue 21): the calibration minimum (support per class,
stored in the model), unreadable calibration images skipped and counted, ``--max-map-drop`` checked when
the command line is read, and yaml config files with a key given twice refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taidpt.demo.voc_writer import write_voc_dataset
from taidpt.export.calibrate import main as calibrate_main, store_label_free
from taidpt.export.calibration_data import CalibrationDataError, readable_batch
from taidpt.export.reduced import image_batch
from taidpt.export.thresholds import MIN_SUPPORT
from taidpt.serve.metadata import read_onnx_metadata
from test_calibration import CLASSES, copy_model, dataset, labelled_args, model_path, write_run  # noqa: F401

DUPLICATE = "OPTIM:\n  LR: 0.1\n  LR: 0.2\n"


def write_pngs(folder: Path, n: int, truncated: int = 0, seed: int = 0) -> list[Path]:
    """``n`` random PNGs, then ``truncated`` PNGs cut to a third (unreadable)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n + truncated):
        path = folder / f"im{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(path)
        if i >= n:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
        paths.append(path)
    return paths


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error")]


@pytest.fixture(scope="module")
def run_dir(dataset, tmp_path_factory):
    """A run folder over the caption corpus of test_calibration (rates dog 10/18, cat 5/18, car 2/18,
    boat 1/18, person 0)."""
    return write_run(tmp_path_factory.mktemp("rules") / "run", dataset[0])


@pytest.fixture(scope="module")
def small_voc(tmp_path_factory):
    """VOC layout with few positives: trainval (dog 4, cat 3, car 5, boat 2, person 0 of 8 images), val
    (no class with 3 positives) and a 2-image test split."""
    root = tmp_path_factory.mktemp("small_voc")
    rng = np.random.default_rng(4)
    trainval = np.zeros((8, 5), np.int64)
    for c, k in enumerate((4, 3, 5, 2, 0)):
        trainval[:k, c] = 1
    val = np.zeros((8, 5), np.int64)
    for c, k in enumerate((2, 1, 2, 0, 1)):
        val[8 - k:, c] = 1
    for split, labels, first in (("trainval", trainval, 100), ("val", val, 200), ("test", np.eye(2, 5), 1)):
        write_voc_dataset(root, rng.integers(0, 255, (len(labels), 40, 48, 3), dtype=np.uint8),
                          labels.astype(np.int64), CLASSES, split=split, first_id=first)
    (root / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
    return root


# ----------------------------------------------------------------------------- the calibration minimum
def test_label_free_one_image_is_refused_and_the_model_left_unchanged(model_path, run_dir, tmp_path, capsys):
    model = copy_model(model_path, tmp_path)
    image = write_pngs(tmp_path / "one", 1)[0]
    before = model.read_bytes()
    assert calibrate_main(["--model", str(model), "--unlabelled-images", str(image), "--model-dir", str(run_dir),
                           "--no-progress"]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and f"no class reaches {MIN_SUPPORT} expected positives" in err[0], err
    assert "at least 6 unlabelled images" in err[0] and str(model) in err[0]  # 3 / (10/18) -> 6
    assert model.read_bytes() == before
    # The same rule inside export.onnx --label-free-thresholds (store_label_free): nothing is stored.
    with pytest.raises(CalibrationDataError, match="no class reaches"):
        store_label_free(model, str(run_dir), [str(image)])
    assert model.read_bytes() == before


def test_label_free_minimum_per_class_support_stored_and_unreadable_counted(model_path, run_dir, tmp_path,
                                                                           capsys, caplog):
    """8 readable images (one truncated skipped): dog expects 4 positives (threshold), cat 2 (top-k)."""
    model = copy_model(model_path, tmp_path)
    paths = write_pngs(tmp_path / "imgs", 8, truncated=1)
    report = tmp_path / "r.json"
    assert calibrate_main(["--model", str(model), "--unlabelled-images", str(tmp_path / "imgs"), "--model-dir",
                           str(run_dir), "--no-progress", "--report", str(report)]) == 0
    captured = capsys.readouterr()
    assert f"1 unreadable image skipped, first: {paths[-1]}" in caplog.text  # stderr outside pytest
    assert "cat (2 expected positives, fewer than 3)" in captured.err
    assert "person (never named by a caption)" in captured.err
    meta = read_onnx_metadata(model)
    assert set(meta.threshold_map) == {"dog"} and meta.calibration_images == 8
    assert dict(meta.calibration_support) == {"dog": 4, "cat": 2, "car": 0, "boat": 0, "person": 0}
    classes = json.loads(report.read_text())["classes"]
    assert classes["cat"]["support"] == 2 and classes["cat"]["reason"] == "2 expected positives, fewer than 3"
    assert "2 expected positives, fewer than 3" in captured.out  # the table says why


def test_labelled_minimum_is_three_positive_images(model_path, small_voc, tmp_path, capsys):
    model = copy_model(model_path, tmp_path)
    assert calibrate_main(labelled_args(model, small_voc, "trainval")) == 0
    captured = capsys.readouterr()
    assert "boat (2 positives, fewer than 3), person (no positive)" in captured.err
    meta = read_onnx_metadata(model)
    assert set(meta.threshold_map) == {"dog", "cat", "car"} and meta.calibration_images == 8
    assert dict(meta.calibration_support) == {"dog": 4, "cat": 3, "car": 5, "boat": 2, "person": 0}
    # A split where no class has 3 positives is refused; the calibrated model stays as it was.
    before = model.read_bytes()
    assert calibrate_main(labelled_args(model, small_voc, "val")) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "no class reaches 3 positive images among the 8" in err[0], err
    assert model.read_bytes() == before


# ----------------------------------------------------------------------------- unreadable calibration images
def test_int8_calibration_batch_skips_unreadable_images_and_refuses_a_mostly_broken_list(model_path, tmp_path,
                                                                                          caplog):
    meta = read_onnx_metadata(model_path)
    paths = [str(p) for p in write_pngs(tmp_path / "a", 3, truncated=1)]
    batch = image_batch(meta, paths, 256)
    assert batch.shape == (3, 3, 64, 64) and batch.dtype == np.float32
    assert f"1 unreadable image skipped, first: {paths[-1]}" in caplog.text
    broken = [str(p) for p in write_pngs(tmp_path / "b", 1, truncated=2)]
    with pytest.raises(CalibrationDataError, match="only 1 of 3 calibration images could be read"):
        readable_batch(meta, broken)


def test_int8_export_with_a_truncated_image_ships_with_label_free_thresholds(dataset, run_dir, tmp_path, capsys,
                                                                              caplog):
    """export.onnx --precision int8 --label-free-thresholds: the truncated image is skipped for both
    (it used to abort the export), and the stored thresholds obey the minimum."""
    from taidpt.export.onnx_cli import main as export_main

    paths = write_pngs(tmp_path / "imgs", 8, truncated=1)
    out = tmp_path / "m.onnx"
    assert export_main(["--model-dir", str(run_dir), "--trainer", "ZeroshotCLIPDense", "--batch-sizes", "1",
                        "--output", str(out), "--precision", "int8", "--calibration-images", str(tmp_path / "imgs"),
                        "--label-free-thresholds", "--max-relative-diff", "1", "--min-top-k-agreement", "0",
                        "MODEL.BACKBONE.NAME", "TinyRN", "MODEL.BACKBONE.PRETRAINED", "", "SEED", "1",
                        "INPUT.SIZE", "(64, 64)"]) == 0
    captured = capsys.readouterr()
    assert f"1 unreadable image skipped, first: {paths[-1]}" in caplog.text
    assert "thresholds for 1 of 5 classes stored in" in captured.out and "cat (2 expected positives" in captured.err
    meta = read_onnx_metadata(out)
    assert meta.precision == "int8" and set(meta.threshold_map) == {"dog"} and meta.calibration_images == 8


# ----------------------------------------------------------------------------- --max-map-drop
@pytest.mark.parametrize("value", ["-1", "nan", "inf", "x"])
def test_max_map_drop_is_checked_when_the_command_line_is_read(value, tmp_path, capsys):
    from taidpt.export.onnx_cli import main as export_main

    out = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as info:
        export_main(["--model-dir", str(tmp_path / "no_run"), "--output", str(out), "--precision", "fp16",
                     "--max-map-drop", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --max-map-drop: expected a" in err and repr(value) in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- yaml keys given twice
@pytest.mark.parametrize("text, line, key", [(DUPLICATE, 3, "LR"),
                                              ("OPTIM:\n  LR: 0.1\nSEED: 1\nOPTIM:\n  NAME: sgd\n", 4, "OPTIM")])
def test_train_refuses_a_config_key_given_twice(text, line, key, tmp_path, capsys):
    from taidpt.engine.launch import main as train_main

    config = tmp_path / "dup.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    assert train_main(["--engine", "core", "--trainer", "TaIDPT", "--config-file", str(config),
                       "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {config}:{line}: key {key} is given twice"), err
    assert not out.exists()


def test_every_config_reader_refuses_a_duplicate_key(model_path, tmp_path, capsys):
    """export.calibrate reads --dataset-config-file through the same loader."""
    config = tmp_path / "dup.yaml"
    config.write_text("DATASET:\n  NAME: VOC2007\n" + DUPLICATE)
    assert calibrate_main(["--model", str(model_path), "--labelled-split", "trainval",
                           "--dataset-config-file", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{config}:5: key LR is given twice in one mapping (first on line 4)" in err[0], err
