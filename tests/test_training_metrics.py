"""RUN/metrics.jsonl (and RUN/tensorboard/ when tensorboard is installed) from real core training runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from taidpt.engine.metrics_log import METRICS_FILE, read_metrics
from taidpt.engine.tensorboard_log import TENSORBOARD_DIR, tensorboard_available
from test_train_cli import common, run_train, write_voc_fixture


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_rn_openai_file):
    """One 2-epoch TaIDPT run with held-out captions, shared by the tests below (copy it to change it)."""
    work = tmp_path_factory.mktemp("metrics_run")
    root = work / "data"
    write_voc_fixture(root)
    args = ["--trainer", "TaIDPT", "--engine", "core", *common(root, tiny_rn_openai_file), "OPTIM.MAX_EPOCH", "2",
            "DATASET.VAL_CAPTIONS", "0.2"]
    out = work / "run"
    proc = run_train(["--output-dir", str(out), *args], work)
    return out, args, proc, work


@pytest.mark.slow
def test_one_line_per_epoch_matches_the_log(trained):
    out, _, proc, _ = trained
    records = read_metrics(out / METRICS_FILE)
    assert len((out / METRICS_FILE).read_text().splitlines()) == 2
    assert [r["epoch"] for r in records] == [1, 2]
    log = (out / "log.txt").read_text()
    for r in records:
        assert set(r) == {"epoch", "loss", "lr", "val_mAP", "steps", "step_seconds"}
        held_out = re.search(rf"epoch {r['epoch']} held-out caption mAP ([\d.]+)", log)
        assert held_out and f"{r['val_mAP']:.2f}" == held_out.group(1)
        last = re.findall(rf"epoch \[{r['epoch']}/2\] batch \[(\d+)/(\d+)\] .* loss [\d.]+ \(([\d.]+)\) lr ([\d.e+-]+)",
                          log)[-1]
        assert r["steps"] == int(last[0]) == int(last[1])  # every batch of the epoch, once
        assert f"{r['loss']:.4f}" == last[2] and f"{r['lr']:.4e}" == last[3]
        assert 0 < r["step_seconds"] < 60
    results = (out / "results.json").read_text()
    assert "step_seconds" not in results and "metrics.jsonl" not in results  # results.json stays timing-free
    if tensorboard_available():  # run this file with .venv-dassl/bin/python to check this branch
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(out / TENSORBOARD_DIR))
        acc.Reload()
        events = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
        assert events["train/loss"] == [(r["epoch"], pytest.approx(r["loss"], rel=1e-6)) for r in records]
        assert events["val/mAP"] == [(r["epoch"], pytest.approx(r["val_mAP"], rel=1e-6)) for r in records]
        test_map = json.loads(results)["mAP"]
        for tag, key in (("test/mAP", "merged"), ("test/mAP_global", "global"), ("test/mAP_local", "local")):
            assert events[tag] == [(2, pytest.approx(test_map[key], rel=1e-6))]
    else:
        assert proc.stdout.count("tensorboard is not installed") == 1 and not (out / TENSORBOARD_DIR).exists()


@pytest.mark.slow
def test_resume_keeps_each_epoch_once(trained, tmp_path):
    """A run killed after epoch 2's line but before its checkpoint (simulated: checkpoint 2 removed, a
    cut-off line appended) resumes from epoch 1 and lists epochs 1 and 2 once each."""
    done, args, _, work = trained
    out = tmp_path / "resumed"
    shutil.copytree(done, out)
    before = (out / METRICS_FILE).read_text().splitlines()
    (out / "prompt_learner" / "model.pth.tar-2").unlink()
    (out / "prompt_learner" / "checkpoint").write_text("model.pth.tar-1\n")
    with open(out / METRICS_FILE, "a") as fh:
        fh.write('{"epoch": 3, "loss": 0.1')
    proc = run_train(["--output-dir", str(out), *args], work)
    assert "resumed from" in proc.stdout and "epoch [1/2]" not in proc.stdout
    lines = (out / METRICS_FILE).read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2]
    assert lines[0] == before[0]
    again, first = json.loads(lines[1]), json.loads(before[1])
    assert again["loss"] == pytest.approx(first["loss"], abs=1e-6)
    assert again["val_mAP"] == pytest.approx(first["val_mAP"])
    assert again["lr"] == first["lr"] and again["steps"] == first["steps"]
