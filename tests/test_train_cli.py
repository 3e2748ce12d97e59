"""train.py end to end on a VOC-format fixture with an OpenAI-format small CLIP (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["dog", "cat", "car"]


def write_voc_fixture(root: Path, n: int = 12, seed: int = 0) -> None:
    """A VOC2007-layout test split with 3 classes, written by hand in the real file formats."""
    voc = root / "VOCdevkit" / "VOC2007"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}" for i in range(1, n + 1)]
    labels = rng.integers(0, 2, (n, len(CLASSES)))
    labels[: len(CLASSES)] = np.eye(len(CLASSES), dtype=int)
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{i}.jpg")
    (voc / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")
    for c, name in enumerate(CLASSES):
        lines = [f"{i} {' 1' if labels[k, c] else '-1'}" for k, i in enumerate(ids)]
        (voc / "ImageSets" / "Main" / f"{name}_test.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("dog, puppy\ncat, kitten\ncar, automobile\n")
    captions = ["a dog on a sofa", "two cats and a puppy", "a red car", "nothing to see", "a kitten near a car"]
    (root / "captions.txt").write_text("\n".join(captions * 12) + "\n")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    write_voc_fixture(root)
    return root


def run_train(args: list[str], tmp_path: Path, expect_ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def common(root: Path, weights: Path) -> list[str]:
    """The test configuration: tiny CLIP, 64 px, text captions, 3 classes, 19 batches per epoch."""
    return [
        "--root", str(root),
        "--dataset-config-file", "configs/datasets/voc2007.yaml",
        "--config-file", "configs/trainers/TaIDPT/rn50_voc2007.yaml",
        "--seed", "1", "--no-progress",
        "DATASET.CLASS_LIST", str(root / "classes.txt"),
        "DATASET.CAPTION_FILE", "captions.txt",
        "MODEL.BACKBONE.PRETRAINED", str(weights),
        "INPUT.SIZE", "(64, 64)",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "16",
        "DATALOADER.NUM_WORKERS", "0",
        "OPTIM.LR", "0.01",
    ]


@pytest.mark.slow
def test_train_eval_resume_end_to_end(voc_root, tiny_rn_openai_file, tmp_path):
    out = tmp_path / "run"
    args = common(voc_root, tiny_rn_openai_file)
    proc = run_train(["--trainer", "TaIDPT", "--output-dir", str(out), *args, "OPTIM.MAX_EPOCH", "2"], tmp_path)
    assert "core runner" in proc.stdout
    res = json.loads((out / "results.json").read_text())
    assert set(res["mAP"]) == {"global", "local", "merged"}
    assert all(0 <= res["mAP"][k] <= 100 for k in res["mAP"])
    assert {"CF1", "OF1", "per_class_AP"} <= set(res)
    assert set(res["per_class_AP"]) == set(CLASSES)
    assert res["weights"] == "openai-state-dict" and res["model_selection"] == "last_step"
    assert res["epochs_trained"] == 2 and res["n_skipped_images"] == 0
    assert (out / "prompt_learner" / "model.pth.tar-2").is_file()
    assert (out / "log.txt").read_text().count("epoch [2/2]") >= 1

    # resume: the same run extended to 3 epochs continues from epoch 2 ...
    proc = run_train(["--trainer", "TaIDPT", "--output-dir", str(out), *args, "OPTIM.MAX_EPOCH", "3"], tmp_path)
    assert "resumed from" in proc.stdout and "epoch [1/3]" not in proc.stdout and "epoch [3/3]" in proc.stdout
    resumed = json.loads((out / "results.json").read_text())
    # ... and ends where an uninterrupted 3-epoch run ends
    fresh = tmp_path / "fresh"
    run_train(["--trainer", "TaIDPT", "--output-dir", str(fresh), *args, "OPTIM.MAX_EPOCH", "3"], tmp_path)
    straight = json.loads((fresh / "results.json").read_text())
    assert resumed["mAP"] == pytest.approx(straight["mAP"], abs=1e-6)

    # eval-only reloads the checkpoint and reproduces the numbers
    ev = tmp_path / "eval"
    run_train(["--trainer", "TaIDPT", "--eval-only", "--model-dir", str(fresh), "--load-epoch", "3",
               "--output-dir", str(ev), *args], tmp_path)
    assert json.loads((ev / "results.json").read_text())["mAP"] == pytest.approx(straight["mAP"], abs=1e-9)


@pytest.mark.slow
def test_zero_shot_and_best_val_selection(voc_root, tiny_rn_openai_file, tmp_path):
    zs = tmp_path / "zs"
    run_train(["--trainer", "ZeroshotCLIPDense", "--output-dir", str(zs), *common(voc_root, tiny_rn_openai_file)],
              tmp_path)
    res = json.loads((zs / "results.json").read_text())
    assert res["trainer"] == "ZeroshotCLIPDense" and set(res["mAP"]) == {"global", "local", "merged"}

    best = tmp_path / "best"
    proc = run_train(["--trainer", "TaIDPT", "--output-dir", str(best), *common(voc_root, tiny_rn_openai_file),
                      "OPTIM.MAX_EPOCH", "2", "TEST.FINAL_MODEL", "best_val", "DATASET.VAL_CAPTIONS", "0.2"], tmp_path)
    assert "held-out caption mAP" in proc.stdout
    res = json.loads((best / "results.json").read_text())
    assert res["model_selection"].startswith("best_val") and res["captions"]["n_val_captions"] == 10
    assert (best / "prompt_learner" / "model-best.pth.tar").is_file()


@pytest.mark.slow
def test_corrupt_image_is_skipped_and_counted(tmp_path, tiny_rn_openai_file):
    root = tmp_path / "data"
    write_voc_fixture(root)
    bad = root / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000005.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    out = tmp_path / "zs"
    proc = run_train(["--trainer", "ZeroshotCLIPDense", "--output-dir", str(out), *common(root, tiny_rn_openai_file)],
                     tmp_path)
    res = json.loads((out / "results.json").read_text())
    assert res["n_skipped_images"] == 1 and res["skipped_images"][0].endswith("000005.jpg")
    assert res["n_images"] == 11
    assert "000005.jpg" in proc.stdout + proc.stderr


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "error" in ln.lower()]
    return lines[-1] if lines else ""


@pytest.mark.parametrize("case", ["missing_root", "empty_corpus", "unknown_backbone", "bad_key"])
def test_bad_input_gives_one_clear_line(case, voc_root, tiny_rn_openai_file, tmp_path):
    args = common(voc_root, tiny_rn_openai_file)
    trainer = ["--trainer", "TaIDPT", "--output-dir", str(tmp_path / "out")]
    if case == "missing_root":
        args[args.index("--root") + 1] = str(tmp_path / "nowhere")
        expect = str(tmp_path / "nowhere")
    elif case == "empty_corpus":
        empty = tmp_path / "empty.txt"
        empty.write_text("nothing here\nor here\n")
        args += ["DATASET.CAPTION_FILE", str(empty)]
        expect = "empty.txt"
    elif case == "unknown_backbone":
        args += ["MODEL.BACKBONE.PRETRAINED", "", "MODEL.BACKBONE.NAME", "RN5O"]
        expect = "unknown backbone 'RN5O'"
    else:
        args += ["TRAINER.TAIDPT.N_CTXX", "4"]
        expect = "N_CTXX"
    proc = run_train([*trainer, *args], tmp_path, expect_ok=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    assert expect in _error_line(proc), proc.stdout[-2000:] + proc.stderr[-2000:]
