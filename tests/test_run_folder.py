"""Run folders stay truthful: one writer at a time, refusals before any write, eval-only from the
folder alone, results that name the checkpoint they came from, logs CoOp's parser reads.

The refusals (a held run folder, resuming under other settings or fewer epochs, invalid epoch counts,
bad config files, bad eval-only arguments, a wrong class list) are cases of test_train_cli's bad-input
table, with their "folder left untouched" checks. ``finished_run`` is conftest's shared 2-epoch run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import pytest

from cli_support import ROOT, copy_run, run_train
from taidpt.engine.logs import StepClock
from taidpt.utils.runlock import FolderLock


# ----------------------------------------------------------------------------- one writer per run folder
def test_lock_is_released_when_the_run_ends(finished_run):
    run = finished_run.path
    assert not (run / ".taidpt.lock.owner").exists()
    with FolderLock(run):  # would raise if the finished run still held it
        assert (run / ".taidpt.lock.owner").exists()
    assert not (run / ".taidpt.lock.owner").exists()


# ----------------------------------------------------------------------------- reruns and eval-only
def test_rerun_of_a_finished_run_keeps_its_label_and_sweeps_dead_temp_files(finished_run, tmp_path):
    """Training start removes the temporary files of killed writers (and nothing else); rerunning a
    finished run re-evaluates it under the same label and numbers."""
    run = copy_run(finished_run.path, tmp_path / "run")
    stale = [run / ".results.json.a1b2c3d4.tmp", run / "prompt_learner" / ".model.pth.tar-2.deadbeef.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    keep = run / "notes.tmp"
    keep.write_text("mine")
    run_train(["--output-dir", str(run), *finished_run.args], tmp_path)
    assert not any(p.exists() for p in stale) and keep.read_text() == "mine"
    res = json.loads((run / "results.json").read_text())
    assert res["epochs_trained"] == 2 and res["checkpoint"] == "prompt_learner/model.pth.tar-2"
    assert res["mAP"] == json.loads((finished_run.path / "results.json").read_text())["mAP"]


def test_eval_only_from_the_run_folder_alone_with_overrides(finished_run, tmp_path):
    """--model-dir alone (from another working directory) writes eval/<time>/ in the run folder, with
    the trained numbers and KEY VALUE overrides applied; nothing lands in the working directory."""
    run = copy_run(finished_run.path, tmp_path / "run")
    work = tmp_path / "work"
    work.mkdir()
    run_train(["--eval-only", "--model-dir", str(run), "--no-progress", "TEST.THRESHOLD", "0.25"], tmp_path, cwd=work)
    evals = list((run / "eval").iterdir())
    assert len(evals) == 1 and re.fullmatch(r"\d{8}-\d{6}(-\d+)?", evals[0].name)
    res = json.loads((evals[0] / "results.json").read_text())
    trained = json.loads((finished_run.path / "results.json").read_text())
    assert res["mAP"] == trained["mAP"] and res["checkpoint"].endswith("model.pth.tar-2")
    assert res["protocol"]["threshold"] == 0.25
    assert not list(work.iterdir())  # nothing in the working directory


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
    text = (finished_run.path / "log.txt").read_text()
    merged = json.loads((finished_run.path / "results.json").read_text())["mAP"]["merged"]
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


def test_loader_workers_capped_at_the_cpu_count(monkeypatch):
    from taidpt.images import loaders

    monkeypatch.setattr(loaders, "_capped_noted", set())  # other tests may have said it already
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger, handler = logging.getLogger("taidpt"), Collect()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        assert loaders.capped_workers(cpus + 7) == cpus and loaders.capped_workers(cpus + 7) == cpus
        assert loaders.capped_workers(0) == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert sum("NUM_WORKERS" in m for m in messages) == 1


TORCH_BLOCKED_READ = """
import json, sys
sys.modules["torch"] = None
from taidpt.engine.run import Run
from taidpt.evaluation.predictions import load_predictions
run = Run(sys.argv[1])
cfg = run.config()
out = {"trainer": cfg.TRAINER.NAME, "classes": run.classnames(cfg), "trained": run.trained,
       "checkpoint": run.checkpoint().name, "mAP": run.results()["mAP"]["merged"],
       "rows": len(load_predictions(run.predictions_path).paths)}
for module in ("taidpt.evaluation.ensemble", "taidpt.evaluation.summarize", "taidpt.export.onnx_cli"):
    __import__(module)
print(json.dumps(out))
"""


def test_a_run_folder_is_read_without_torch(finished_run):
    """Config, class names, checkpoints, results and predictions of a run, and the commands that only read
    runs, load with torch unimportable."""
    proc = subprocess.run([sys.executable, "-c", TORCH_BLOCKED_READ, str(finished_run.path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    results = json.loads((finished_run.path / "results.json").read_text())
    assert got["trainer"] == "TaIDPT" and got["trained"] and got["mAP"] == results["mAP"]["merged"]
    assert got["checkpoint"].startswith("model") and got["classes"] and got["rows"] > 0


def test_train_help_needs_no_torch():
    code = "import runpy, sys; sys.modules['torch'] = None; sys.argv = ['train.py', '--help']; " \
           "runpy.run_path('train.py', run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TaIDPT" in proc.stdout and "DualCoOp" in proc.stdout


def test_docs_name_every_checkout_entry_point():
    """docs/testing.md's layout lists each ``python -m export.X`` shim of the checkout."""
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    listed = re.search(r"python -m export\.\{([^}]*)\}", text).group(1)
    names = {n.strip() for n in listed.replace("\n", " ").split(",")}
    shims = {p.stem for p in (ROOT / "export").glob("*.py") if p.stem != "__init__"}
    assert names == shims


def test_the_rebuilt_model_gives_the_provenance_and_preprocessing_training_recorded(finished_run):
    """One factory: the model a run folder rebuilds names what results.json says it trained with."""
    from taidpt.engine.checks import preprocess_config
    from taidpt.engine.run import Run

    run = Run(finished_run.path)
    cfg = run.config()
    trained = run.load_model(cfg)
    results = run.results()
    assert trained.provenance() == {k: results[k] for k in ("trainer", "dataset", "backbone", "weights",
                                                            "pretrained", "taidpt_version")}
    assert trained.preprocess == preprocess_config(cfg)
    assert list(trained.preprocess.out_hw) == results["image_size"]
