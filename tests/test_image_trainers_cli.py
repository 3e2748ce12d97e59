"""DualCoOp (partial labels), few-shot CoOp and the ensemble with TaI-DPT, end to end through train.py.

A VOC-layout fixture with a ``test`` split (scored) and a ``trainval`` split (trained on, one
image corrupt), a small OpenAI-format CLIP at 64 px, a few steps per run. The Dassl parity test
needs the real Dassl (skipped elsewhere, with the reason).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from taidpt.evaluation.metrics import mean_ap

from dassl_support import require_dassl
from test_train_cli import ROOT, run_train, write_voc_fixture

N_TRAIN = 24
CORRUPT = "000105.jpg"


def write_trainval(root: Path, classes: list[str], seed: int = 1) -> None:
    """A ``trainval`` split next to the fixture's test split (same layout), one image corrupt."""
    main = root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}" for i in range(100, 100 + N_TRAIN)]
    labels = rng.integers(0, 2, (N_TRAIN, len(classes)))
    labels[: len(classes)] = np.eye(len(classes), dtype=int)
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(main.parents[1] / "JPEGImages" / f"{i}.jpg")
    (main.parents[1] / "JPEGImages" / CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (main / "trainval.txt").write_text("\n".join(ids) + "\n")
    for c, name in enumerate(classes):
        (main / f"{name}_trainval.txt").write_text(
            "\n".join(f"{i} {' 1' if labels[k, c] else '-1'}" for k, i in enumerate(ids)) + "\n")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_train")
    write_voc_fixture(root)
    write_trainval(root, ["dog", "cat", "car"])
    return root


def args_for(trainer: str, root: Path, weights: Path, out: Path, *opts: str) -> list[str]:
    config = {"DualCoOp": "DualCoOp/rn101_voc2007.yaml", "CoOpMultiLabel": "CoOpMultiLabel/rn50.yaml",
              "TaIDPT": "TaIDPT/rn50_voc2007.yaml"}[trainer]
    return ["--trainer", trainer, "--output-dir", str(out), "--root", str(root),
            "--dataset-config-file", "configs/datasets/voc2007.yaml", "--config-file", f"configs/trainers/{config}",
            "--seed", "1", "--no-progress", "DATASET.CLASS_LIST", str(root / "classes.txt"),
            "MODEL.BACKBONE.NAME", "RN50", "MODEL.BACKBONE.PRETRAINED", str(weights), "INPUT.SIZE", "(64, 64)",
            "INPUT.CUTOUT_LEN", "24", "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "DATALOADER.NUM_WORKERS", "0", *opts]


def dual_args(root: Path, weights: Path, out: Path, *opts: str) -> list[str]:
    return args_for("DualCoOp", root, weights, out, "OPTIM.MAX_EPOCH", "2", "DATASET.PARTIAL_PROPORTION", "0.5", *opts)


@pytest.fixture(scope="module")
def dual_run(voc_root, tiny_rn_openai_file, tmp_path_factory):
    """A 2-epoch DualCoOp run on half of the trainval labels (core engine)."""
    base = tmp_path_factory.mktemp("dual")
    proc = run_train(["--engine", "core", *dual_args(voc_root, tiny_rn_openai_file, base / "run")], base)
    return base / "run", proc


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def test_dualcoop_trains_on_partial_labels_and_writes_its_predictions(dual_run):
    run, proc = dual_run
    res = results(run)
    assert res["trainer"] == "DualCoOp" and res["epochs_trained"] == 2 and res["model_selection"] == "last_step"
    data = res["training_data"]
    assert data["train_set"] == "voc2007_trainval" and data["partial_proportion"] == 0.5 and data["label_seed"] == 1
    labels = data["labels"]
    assert labels["n_images"] == N_TRAIN and labels["n_positive"] + labels["n_negative"] == N_TRAIN * 3 // 2
    assert [Path(p).name for p in data["skipped_train_images"]] == [CORRUPT]  # reported, not fatal
    assert CORRUPT in proc.stdout + proc.stderr
    with np.load(run / "partial_labels.npz", allow_pickle=False) as mask:
        assert int((mask["labels"] != 0).sum()) == N_TRAIN * 3 // 2 and float(mask["proportion"]) == 0.5
    assert res["learned_scales"]["logit_scale"] != 50.0  # the scales train
    with np.load(run / "predictions.npz", allow_pickle=False) as pred:
        assert str(pred["trainer"]) == "DualCoOp" and float(pred["merge_rate"]) == 0.0
        assert np.array_equal(pred["scores"], pred["local"]) and pred["scores"].shape == (12, 3)
    ckpt = run / "prompt_learner" / "model.pth.tar-2"
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert {"ctx", "ctx_double", "temperature", "spatial_T"} == set(state) and state["ctx"].shape[:2] == (3, 16)


def test_dualcoop_run_exports_to_onnx_with_its_learned_scales(dual_run, tmp_path):
    """The exported graph scores the test images as the run's own test step did (predictions.npz)."""
    from taidpt.serve.predictor import score_images
    from taidpt.serve.metadata import read_onnx_metadata
    from taidpt.serve.runtime import open_model

    run, _ = dual_run
    model = tmp_path / "dual.onnx"
    proc = subprocess.run([sys.executable, "-m", "export.onnx", "--model-dir", str(run), "--output", str(model)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = read_onnx_metadata(model)
    scales = results(run)["learned_scales"]
    assert meta.trainer == "DualCoOp" and meta.merge_rate == 0.0
    assert meta.logit_scale == pytest.approx(scales["logit_scale"], abs=1e-5)
    assert meta.spatial_scale == pytest.approx(scales["spatial_scale"], abs=1e-5)
    with np.load(run / "predictions.npz", allow_pickle=False) as pred:
        paths, expected = [str(p) for p in pred["paths"]], {k: pred[k] for k in ("scores", "global", "local")}
    got = score_images(open_model(model, ["CPUExecutionProvider"]), paths, batch_size=5, workers=1, progress=False)
    assert got.paths == paths and not got.skipped
    for key, out in (("scores", got.scores), ("global", got.global_logits), ("local", got.local_logits)):
        assert np.max(np.abs(out - expected[key])) < 1e-4, key


def test_dualcoop_eval_only_resume_and_mask_reuse(dual_run, voc_root, tiny_rn_openai_file, tmp_path):
    run, _ = dual_run
    trained = results(run)
    ev = tmp_path / "eval"
    run_train(["--trainer", "DualCoOp", "--eval-only", "--model-dir", str(run),
               *dual_args(voc_root, tiny_rn_openai_file, ev)], tmp_path)
    assert results(ev)["mAP"] == trained["mAP"] and results(ev)["model_selection"] == "loaded model.pth.tar-2"

    # the same command again resumes after epoch 2 (nothing left to train) and reuses the stored mask
    again = tmp_path / "again"
    shutil.copytree(run, again)
    proc = run_train(dual_args(voc_root, tiny_rn_openai_file, again), tmp_path)
    assert "partial labels reused" in proc.stdout and "resumed from" in proc.stdout and "epoch [" not in proc.stdout
    assert results(again)["mAP"] == trained["mAP"]

    # another proportion in the same folder is refused in one line on stderr, before anything is written
    before = {p: p.read_bytes() for p in again.rglob("*") if p.is_file()}
    proc = run_train(dual_args(voc_root, tiny_rn_openai_file, again, "DATASET.PARTIAL_PROPORTION", "0.3"), tmp_path,
                     expect_ok=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert "DATASET.PARTIAL_PROPORTION 0.5 -> 0.3" in proc.stderr.strip().splitlines()[-1]
    assert {p: p.read_bytes() for p in again.rglob("*") if p.is_file()} == before


def test_few_shot_coop_and_ensemble_with_taidpt(dual_run, voc_root, tiny_rn_openai_file, tmp_path):
    coop = tmp_path / "coop"
    run_train(args_for("CoOpMultiLabel", voc_root, tiny_rn_openai_file, coop, "OPTIM.MAX_EPOCH", "1",
                       "DATASET.NUM_SHOTS", "2"), tmp_path)
    res = results(coop)
    assert res["trainer"] == "CoOpMultiLabel" and res["training_data"]["num_shots"] == 2
    labels = res["training_data"]["labels"]
    assert labels["n_unknown"] == 0 and labels["n_images"] <= 2 * 3 and min(labels["positives_per_class"]) >= 2
    assert res["mAP"]["merged"] == res["mAP"]["global"]  # CoOp's headline is the global score

    taidpt = tmp_path / "taidpt"
    run_train(args_for("TaIDPT", voc_root, tiny_rn_openai_file, taidpt, "OPTIM.MAX_EPOCH", "1",
                       "DATASET.CAPTION_FILE", "captions.txt"), tmp_path)
    with np.load(taidpt / "predictions.npz", allow_pickle=False) as p:
        a = {k: p[k] for k in p.files}
    assert np.allclose(a["scores"], 0.5 * a["global"] + 0.5 * a["local"], atol=1e-6)
    assert mean_ap(a["scores"], a["targets"]) == pytest.approx(results(taidpt)["mAP"]["merged"], abs=1e-4)

    dual, _ = dual_run
    out = tmp_path / "ens"
    proc = subprocess.run([sys.executable, "-m", "taidpt.evaluation.ensemble", "--runs", str(taidpt), str(dual), "--rate", "0.9",
                           "--output", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with np.load(dual / "predictions.npz", allow_pickle=False) as p:
        b = {k: p[k] for k in p.files}
    assert list(a["paths"]) == list(b["paths"])

    def norm(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return (x - x.min()) / (x.max() - x.min())

    expected = 0.1 * norm(a["scores"]) + 0.9 * norm(b["scores"])
    summary = json.loads((out / "ensemble.json").read_text())
    assert summary["mAP"]["ensemble"] == pytest.approx(mean_ap(expected, a["targets"]), abs=1e-9)
    assert summary["mAP"]["b"] == pytest.approx(results(dual)["mAP"]["merged"], abs=1e-4)


@pytest.mark.dassl
@pytest.mark.slow
def test_dualcoop_dassl_and_core_engines_agree(dual_run, voc_root, tiny_rn_openai_file, tmp_path):
    require_dassl()
    from test_dassl_plugin import assert_same_checkpoints, comparable

    core, _ = dual_run
    d_run = tmp_path / "dassl"
    proc = run_train(["--engine", "dassl", *dual_args(voc_root, tiny_rn_openai_file, d_run)], tmp_path)
    assert "running the Dassl plugin" in proc.stdout
    assert comparable(results(d_run)) == comparable(results(core))
    assert_same_checkpoints(d_run, core, ["model.pth.tar-1", "model.pth.tar-2"])
    for name in ("predictions.npz", "partial_labels.npz"):
        with np.load(d_run / name, allow_pickle=False) as x, np.load(core / name, allow_pickle=False) as y:
            assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files), name

    # the Dassl path reloads the core's checkpoint for evaluation, and few-shot CoOp agrees too
    ev = tmp_path / "eval"
    run_train(["--engine", "dassl", "--eval-only", "--model-dir", str(core), *dual_args(voc_root, tiny_rn_openai_file, ev)],
              tmp_path)
    assert results(ev)["mAP"] == results(core)["mAP"]
    coop = {}
    for engine in ("dassl", "core"):
        coop[engine] = tmp_path / f"coop_{engine}"
        run_train(["--engine", engine, *args_for("CoOpMultiLabel", voc_root, tiny_rn_openai_file, coop[engine],
                                                 "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2")], tmp_path)
    assert comparable(results(coop["dassl"])) == comparable(results(coop["core"]))
    assert_same_checkpoints(coop["dassl"], coop["core"], ["model.pth.tar-1"])
