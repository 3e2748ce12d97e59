"""run.sh on a VOC fixture with a COCO captions json, and the seed summary."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from taidpt.evaluation.summarize import summarize
from test_train_cli import write_voc_fixture

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    import sys

    return {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "PYTHON": sys.executable, **extra}


def test_run_sh_needs_data_and_names_missing_files(tmp_path):
    proc = subprocess.run(["bash", "run.sh", "coco"], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 2 and "set DATA" in proc.stderr
    proc = subprocess.run(["bash", "run.sh", "nuswide"], cwd=ROOT, env=_env(tmp_path, DATA=str(tmp_path)),
                          capture_output=True, text=True)
    assert proc.returncode == 2 and str(tmp_path / "NUSWIDE" / "Concepts81.txt") in proc.stderr
    proc = subprocess.run(["bash", "run.sh", "imagenet"], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


@pytest.mark.slow
def test_run_sh_voc2007_trains_seeds_and_summarizes(tmp_path, tiny_rn_openai_file):
    data = tmp_path / "data"
    write_voc_fixture(data)
    captions = {"annotations": [{"id": i, "image_id": 1000 + i, "caption": c} for i, c in enumerate(
        ["A dog sleeping on a couch.", "Two cats next to a puppy", "a car parked outside", "An empty street"] * 8)]}
    (data / "COCO" / "annotations").mkdir(parents=True)
    (data / "COCO" / "annotations" / "captions_train2017.json").write_text(json.dumps(captions))
    opts = (f"DATASET.CLASS_LIST {data / 'classes.txt'} MODEL.BACKBONE.PRETRAINED {tiny_rn_openai_file} "
            "INPUT.SIZE (64,64) OPTIM.MAX_EPOCH 1 DATALOADER.TRAIN_X.BATCH_SIZE 16 DATALOADER.NUM_WORKERS 0")
    env = _env(tmp_path, DATA=str(data), OPTS=opts, OUTPUT_ROOT=str(tmp_path / "output"))
    proc = subprocess.run(["bash", "run.sh", "voc2007", "rn50_voc2007", "1 2"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    out = tmp_path / "output" / "voc2007"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "ZeroshotCLIPDense" / "rn50" / "results.json").is_file()
    stats = summarize(out / "TaIDPT" / "rn50_voc2007")
    assert stats["mAP merged"][2] == 2
    assert "mAP merged" in proc.stdout and "(2 runs)" in proc.stdout
    again = subprocess.run(["bash", "run.sh", "voc2007", "rn50_voc2007", "1 2"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.stdout.count("skipping") == 3
