"""taidpt.engine.metrics_log / taidpt.engine.tensorboard_log: the per-epoch records, the resume cut, TensorBoard events."""

from __future__ import annotations

import json
import logging
import math

import pytest

from taidpt.engine import tensorboard_log
from taidpt.engine.metrics_log import METRICS_FILE, EpochStats, TrainingLog, keep_epochs_upto, read_metrics


def line(epoch: int, loss: float = 1.0) -> str:
    return json.dumps({"epoch": epoch, "loss": loss, "lr": 0.01, "val_mAP": None, "steps": 2, "step_seconds": 0.1})


def test_epoch_record_means_and_strict_json():
    rec = EpochStats([1.0, 2.0, 4.5], 0.002, 0.9).record(3, 71.25)
    assert rec == {"epoch": 3, "loss": 2.5, "lr": 0.002, "val_mAP": 71.25, "steps": 3,
                   "step_seconds": pytest.approx(0.3)}
    diverged = EpochStats([1.0, math.nan], 0.1, 0.2).record(1, None)
    assert diverged["loss"] is None and diverged["val_mAP"] is None
    json.dumps(diverged, allow_nan=False)  # strict JSON: no NaN reaches the file


def test_resume_cut_keeps_epochs_up_to_the_checkpoint_once_each(tmp_path):
    path = tmp_path / METRICS_FILE
    # epochs 1-3 written, epoch 2 twice (an earlier resume), then a line cut off by a kill
    path.write_text("\n".join([line(1), line(2, 5.0), line(2, 2.0), line(3)]) + '\n{"epoch": 4, "lo')
    assert keep_epochs_upto(path, 2) == 3
    assert [(r["epoch"], r["loss"]) for r in read_metrics(path)] == [(1, 1.0), (2, 2.0)]
    assert path.read_text().endswith("\n")
    before = path.stat().st_mtime_ns, path.read_bytes()
    assert keep_epochs_upto(path, 5) == 0  # already consistent: left as it is
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    assert keep_epochs_upto(path, 0) == 2 and path.read_text() == ""
    assert keep_epochs_upto(tmp_path / "absent.jsonl", 3) == 0 and read_metrics(tmp_path / "absent.jsonl") == []


def test_a_complete_last_line_without_newline_is_repaired_before_appending(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorboard_log, "tensorboard_available", lambda: False)
    path = tmp_path / METRICS_FILE
    path.write_text(line(1) + "\n" + line(2))  # killed between the record and its newline
    log = TrainingLog.open(tmp_path, 2)
    log.epoch_done(EpochStats([0.5], 0.01, 0.1).record(3, None))
    assert [r["epoch"] for r in read_metrics(path)] == [1, 2, 3]
    assert len(path.read_text().splitlines()) == 3


def test_log_appends_lines_and_says_once_that_tensorboard_is_skipped(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tensorboard_log, "tensorboard_available", lambda: False)
    (tmp_path / METRICS_FILE).write_text(line(1) + "\n" + line(2) + "\n")
    with caplog.at_level(logging.INFO, logger="taidpt"):
        log = TrainingLog.open(tmp_path, 1)
    assert caplog.text.count("tensorboard is not installed") == 1 and "dropped 1 line(s) after epoch 1" in caplog.text
    log.epoch_done(EpochStats([0.25, 0.75], 0.005, 0.4).record(2, 60.0))
    log.test_done({"global": 1.0, "local": 2.0, "merged": 3.0}, 2)
    log.close()
    log.close()
    assert [(r["epoch"], r["loss"], r["val_mAP"]) for r in read_metrics(tmp_path / METRICS_FILE)] == [
        (1, 1.0, None), (2, 0.5, 60.0)]
    assert not (tmp_path / tensorboard_log.TENSORBOARD_DIR).exists()


def test_disabled_log_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = TrainingLog.disabled()
    log.epoch_done(EpochStats([1.0], 0.1, 0.1).record(1, None))
    log.test_done({"merged": 1.0}, 1)
    log.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not tensorboard_log.tensorboard_available(),
                    reason="the tensorboard package is not installed (it is optional; .venv-dassl has it)")
def test_tensorboard_events_match_the_records_and_hide_epochs_after_a_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = TrainingLog.open(tmp_path, 0)
    for epoch, loss in ((1, 0.9), (2, 0.7), (3, 0.6)):  # the killed attempt reached epoch 3, its checkpoint did not
        log.epoch_done(EpochStats([loss], 0.01 * epoch, 0.1).record(epoch, 40.0 + epoch))
    log.close()
    log = TrainingLog.open(tmp_path, 1)  # resumed from epoch 1's checkpoint
    log.epoch_done(EpochStats([0.5], 0.02, 0.1).record(2, 50.0))
    log.test_done({"global": 61.0, "local": 62.0, "merged": 63.0}, 2)
    log.close()

    acc = EventAccumulator(str(tmp_path / tensorboard_log.TENSORBOARD_DIR))
    acc.Reload()
    scalars = {tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert scalars["train/loss"] == [(1, 0.9), (2, 0.5)]
    assert scalars["train/lr"] == [(1, 0.01), (2, 0.02)]
    assert scalars["val/mAP"] == [(1, 41.0), (2, 50.0)]
    assert scalars["test/mAP"] == [(2, 63.0)] and scalars["test/mAP_global"] == [(2, 61.0)]
    assert scalars["test/mAP_local"] == [(2, 62.0)]
    assert [r["epoch"] for r in read_metrics(tmp_path / METRICS_FILE)] == [1, 2]
