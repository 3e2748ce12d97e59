"""Run folders stay truthful: one writer at a time, refusals before any write, eval-only from the
folder alone, results that name the checkpoint they came from, logs CoOp's parser reads."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from taidpt.utils.runlock import FolderLock
from taidpt.engine.logs import StepClock
from test_train_cli import common, run_train, write_voc_fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_runs")
    write_voc_fixture(root)
    return root


@pytest.fixture(scope="module")
def finished_run(voc_root, tiny_rn_openai_file, tmp_path_factory):
    """A finished 2-epoch TaI-DPT run (core engine)."""
    tmp = tmp_path_factory.mktemp("finished")
    out = tmp / "run"
    run_train(["--engine", "core", "--trainer", "TaIDPT", "--output-dir", str(out),
               *common(voc_root, tiny_rn_openai_file), "OPTIM.MAX_EPOCH", "2"], tmp)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (what 'left untouched' compares)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_run(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(run, dest)
    return dest


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines, proc.stdout[-2000:]
    return lines[-1]


# ----------------------------------------------------------------------------- one writer per run folder
def test_second_process_on_a_held_run_folder_stops_naming_the_holder(voc_root, tiny_rn_openai_file, tmp_path):
    out = tmp_path / "busy"
    with FolderLock(out):
        before = snapshot(out)
        proc = run_train(["--engine", "core", "--trainer", "TaIDPT", "--output-dir", str(out),
                          *common(voc_root, tiny_rn_openai_file), "OPTIM.MAX_EPOCH", "1"], tmp_path, expect_ok=False)
        after = snapshot(out)
    line = one_error_line(proc)
    assert f"pid {os.getpid()} on {socket.gethostname()}" in line and str(out) in line
    assert after == before  # no config.yaml, log.txt or checkpoint from the refused process


def test_lock_is_released_when_the_run_ends(finished_run):
    assert not (finished_run / ".taidpt.lock.owner").exists()
    with FolderLock(finished_run):  # would raise if the finished run still held it
        assert (finished_run / ".taidpt.lock.owner").exists()
    assert not (finished_run / ".taidpt.lock.owner").exists()


# ----------------------------------------------------------------------------- refusals come before writes
@pytest.mark.parametrize("override", [["OPTIM.LR", "0.02"], ["OPTIM.MAX_EPOCH", "1"]])
def test_refused_resume_leaves_the_folder_untouched(override, finished_run, voc_root, tiny_rn_openai_file, tmp_path):
    run = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    proc = run_train(["--engine", "core", "--trainer", "TaIDPT", "--output-dir", str(run),
                      *common(voc_root, tiny_rn_openai_file), "OPTIM.MAX_EPOCH", "2", *override], tmp_path,
                     expect_ok=False)
    line = one_error_line(proc)
    assert ("OPTIM.LR" in line) if override[0] == "OPTIM.LR" else ("OPTIM.MAX_EPOCH 1" in line and "epoch 2" in line)
    after = snapshot(run)
    after.pop(".taidpt.lock", None)
    before.pop(".taidpt.lock", None)
    assert after == before


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_invalid_epoch_count_is_refused_up_front(epochs, voc_root, tiny_rn_openai_file, tmp_path):
    out = tmp_path / "fresh"
    proc = run_train(["--engine", "core", "--trainer", "TaIDPT", "--output-dir", str(out),
                      *common(voc_root, tiny_rn_openai_file), "OPTIM.MAX_EPOCH", epochs], tmp_path, expect_ok=False)
    line = one_error_line(proc)
    assert "OPTIM.MAX_EPOCH" in line and epochs in line
    assert not out.exists() or not any(p.name in ("config.yaml", "log.txt") for p in out.iterdir())


def test_rerunning_a_finished_run_keeps_its_label(finished_run, voc_root, tiny_rn_openai_file, tmp_path):
    run = copy_run(finished_run, tmp_path)
    run_train(["--engine", "core", "--trainer", "TaIDPT", "--output-dir", str(run),
               *common(voc_root, tiny_rn_openai_file), "OPTIM.MAX_EPOCH", "2"], tmp_path)
    res = json.loads((run / "results.json").read_text())
    assert res["epochs_trained"] == 2 and res["checkpoint"] == "prompt_learner/model.pth.tar-2"
    assert res["mAP"] == json.loads((finished_run / "results.json").read_text())["mAP"]


# ----------------------------------------------------------------------------- eval-only from the run folder
def test_eval_only_from_the_run_folder_alone(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--eval-only", "--model-dir", str(run),
                           "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    evals = list((run / "eval").iterdir())
    assert len(evals) == 1 and re.fullmatch(r"\d{8}-\d{6}(-\d+)?", evals[0].name)
    res = json.loads((evals[0] / "results.json").read_text())
    trained = json.loads((finished_run / "results.json").read_text())
    assert res["mAP"] == trained["mAP"] and res["checkpoint"].endswith("model.pth.tar-2")
    assert not (tmp_path / "output").exists()  # nothing in the working directory


def test_eval_only_overrides_apply_and_a_wrong_class_list_is_refused(finished_run, voc_root, tmp_path):
    run = copy_run(finished_run, tmp_path)
    ev = tmp_path / "ev"
    run_train(["--eval-only", "--model-dir", str(run), "--output-dir", str(ev), "--no-progress",
               "TEST.THRESHOLD", "0.25"], tmp_path)
    res = json.loads((ev / "results.json").read_text())
    assert res["protocol"]["threshold"] == 0.25
    other = tmp_path / "classes.txt"
    other.write_text("dog\ncat\nbus\n")
    proc = run_train(["--eval-only", "--model-dir", str(run), "--output-dir", str(tmp_path / "ev2"), "--no-progress",
                      "DATASET.CLASS_LIST", str(other)], tmp_path, expect_ok=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "class" in (proc.stdout + proc.stderr).lower() and not (tmp_path / "ev2" / "results.json").exists()


@pytest.mark.parametrize("case", ["negative_epoch", "not_a_run"])
def test_eval_only_bad_run_arguments_give_one_line(case, tmp_path):
    if case == "negative_epoch":
        args, expect = ["--eval-only", "--model-dir", str(tmp_path), "--load-epoch", "-1"], "--load-epoch"
    else:
        (tmp_path / "empty").mkdir()
        args, expect = ["--eval-only", "--model-dir", str(tmp_path / "empty")], "training run folder"
    proc = run_train(args, tmp_path, expect_ok=False)
    assert expect in one_error_line(proc)


# ----------------------------------------------------------------------------- logs
def coop_parse(log_text: str, end_signal: str, keyword: str = "mAP") -> float | None:
    """CoOp's ``parse_test_res.py`` rule: whole stripped lines equal to the end signal, then the
    last ``* <keyword>: x%`` line after it."""
    regex = re.compile(rf"\* {keyword}: ([\.\deE+-]+)%")
    good, value = False, None
    for line in log_text.splitlines():
        line = line.strip()
        if line == end_signal:
            good = True
        match = regex.search(line)
        if match and good:
            value = float(match.group(1))
    return value


def test_coop_result_parser_reads_the_core_log(finished_run):
    text = (finished_run / "log.txt").read_text()
    merged = json.loads((finished_run / "results.json").read_text())["mAP"]["merged"]
    for signal in ("Finish training", "=> result"):
        assert coop_parse(text, signal) == pytest.approx(merged, abs=0.005)
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d epoch \[1/2\]", text, re.M)  # other lines keep their time


def test_eta_counts_only_step_time(monkeypatch):
    ticks = iter([100.0, 102.0, 500.0, 502.0])  # two 2-second steps, 400 s of other work between them
    monkeypatch.setattr("taidpt.engine.logs.time.perf_counter", lambda: next(ticks))
    clock = StepClock()
    for _ in range(2):
        with clock:
            pass
    assert clock.eta(10) == pytest.approx(20.0)


def test_help_lists_every_trainer():
    from taidpt.methods import method_names

    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120).stdout
    assert all(name in " ".join(out.split()) for name in method_names())


def test_loader_workers_capped_at_the_cpu_count(caplog):
    from taidpt.images.loaders import capped_workers

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with caplog.at_level(logging.INFO, logger="taidpt"):
        logging.getLogger("taidpt").propagate = True
        try:
            assert capped_workers(cpus + 7) == cpus and capped_workers(cpus + 7) == cpus
        finally:
            logging.getLogger("taidpt").propagate = False
    assert capped_workers(0) == 0
    assert sum("NUM_WORKERS" in r.getMessage() for r in caplog.records) == 1


# ----------------------------------------------------------------------------- config files
@pytest.mark.parametrize("case", ["malformed", "folder", "not_utf8", "wrong_type"])
def test_bad_config_file_gives_one_line(case, tmp_path):
    path = tmp_path / "bad.yaml"
    if case == "malformed":
        path.write_text("OPTIM:\n  LR: [0.1,\n")
        expect = f"{path}:3: malformed yaml"
    elif case == "folder":
        path = tmp_path
        expect = f"{tmp_path}: is a folder"
    elif case == "not_utf8":
        path.write_bytes(b"OPTIM:\n  NAME: caf\xe9\n")
        expect = f"{path}:2: not UTF-8 (byte 0xe9"
    else:
        path.write_text("OPTIM: 3\n")
        expect = "OPTIM has the wrong type"
    proc = run_train(["--trainer", "TaIDPT", "--config-file", str(path), "--output-dir", str(tmp_path / "o")],
                     tmp_path, expect_ok=False)
    assert expect in one_error_line(proc)
    assert not (tmp_path / "o").exists()


def test_training_start_sweeps_temp_files_of_killed_writers(finished_run, voc_root, tiny_rn_openai_file, tmp_path):
    run = copy_run(finished_run, tmp_path)
    stale = [run / ".results.json.a1b2c3d4.tmp", run / "prompt_learner" / ".model.pth.tar-2.deadbeef.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    keep = run / "notes.tmp"
    keep.write_text("mine")
    run_train(["--engine", "core", "--trainer", "TaIDPT", "--output-dir", str(run),
               *common(voc_root, tiny_rn_openai_file), "OPTIM.MAX_EPOCH", "2"], tmp_path)
    assert not any(p.exists() for p in stale) and keep.read_text() == "mine"
