"""train.py end to end on a VOC-format fixture with an OpenAI-format small CLIP (subprocesses), and the
one table of bad input that must stop train.py with one clear line.

The finished 2-epoch run that most of these tests start from is conftest's session-scoped
``finished_run`` (shared with test_robustness and test_run_folder); the helpers live in ``cli_support``
(some re-exported here for the test files that import them from ``test_train_cli``).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Callable

import pytest

from cli_support import (CLASSES, common, copy_run, last_error_line, one_error_line, run_side_by_side, run_train,
                         snapshot)
from cli_support import ROOT, write_voc_fixture  # noqa: F401 - re-exported: other test files import them from here
from dassl_support import dassl_status


# ----------------------------------------------------------------------------- training, resuming, evaluating
@pytest.mark.slow
def test_finished_run_writes_results_checkpoint_and_log(finished_run):
    out = finished_run.path
    assert "core runner" in finished_run.proc.stdout
    res = json.loads((out / "results.json").read_text())
    assert set(res["mAP"]) == {"global", "local", "merged"}
    assert all(0 <= res["mAP"][k] <= 100 for k in res["mAP"])
    assert {"CF1", "OF1", "per_class_AP"} <= set(res)
    assert set(res["per_class_AP"]) == set(CLASSES)
    assert res["weights"] == "openai-state-dict" and res["model_selection"] == "last_step"
    assert res["epochs_trained"] == 2 and res["n_skipped_images"] == 0
    assert (out / "prompt_learner" / "model.pth.tar-2").is_file()
    assert (out / "log.txt").read_text().count("epoch [2/2]") >= 1


@pytest.mark.slow
def test_extended_run_resumes_and_matches_a_straight_run(finished_run, tmp_path):
    """A finished 2-epoch run extended to 3 epochs continues from epoch 2 (a changed setting that is not
    a training key, given as an integer for a float key, does not block it), ends where an
    uninterrupted 3-epoch run ends, and eval-only reproduces that run from its checkpoint."""
    run = copy_run(finished_run.path, tmp_path / "run")
    tau = ["TRAINER.TAIDPT.SPATIAL_SCALE_IMAGE", "20"]  # config default 40.0: an evaluation setting
    proc = run_train(["--output-dir", str(run), *finished_run.args, "OPTIM.MAX_EPOCH", "3", *tau], tmp_path)
    assert "resumed from" in proc.stdout and "epoch [1/3]" not in proc.stdout and "epoch [3/3]" in proc.stdout
    resumed = json.loads((run / "results.json").read_text())
    assert resumed["epochs_trained"] == 3

    # the straight run takes the default engine (auto: the core runner where Dassl does not import)
    args = [a for a in finished_run.args if a not in ("--engine", "core")]
    assert len(args) == len(finished_run.args) - 2
    fresh = tmp_path / "fresh"
    proc = run_train(["--output-dir", str(fresh), *args, "OPTIM.MAX_EPOCH", "3", tau[0], "20.0"], tmp_path)
    assert ("core runner" in proc.stdout) != dassl_status()[0]  # where Dassl imports, auto runs the plugin
    straight = json.loads((fresh / "results.json").read_text())
    assert resumed["mAP"] == pytest.approx(straight["mAP"], abs=1e-6)

    ev = tmp_path / "eval"
    run_train(["--eval-only", "--model-dir", str(fresh), "--load-epoch", "3", "--output-dir", str(ev), *args,
               tau[0], "20.0"], tmp_path)
    assert json.loads((ev / "results.json").read_text())["mAP"] == pytest.approx(straight["mAP"], abs=1e-9)


@pytest.mark.slow
def test_best_val_selection(voc_root, tiny_rn_openai_file, tmp_path):
    best = tmp_path / "best"
    proc = run_train(["--trainer", "TaIDPT", "--output-dir", str(best), *common(voc_root, tiny_rn_openai_file),
                      "OPTIM.MAX_EPOCH", "2", "TEST.FINAL_MODEL", "best_val", "DATASET.VAL_CAPTIONS", "0.2"], tmp_path)
    assert "held-out caption mAP" in proc.stdout
    res = json.loads((best / "results.json").read_text())
    assert res["model_selection"].startswith("best_val") and res["captions"]["n_val_captions"] == 10
    assert (best / "prompt_learner" / "model-best.pth.tar").is_file()


# ----------------------------------------------------------------------------- bad input: one clear line
class Case:
    """What one bad-input case needs: a private folder, the shared fixture and run, and checks to run after."""

    def __init__(self, tmp: Path, voc: Path, weights: Path, finished_run: Callable[[], object]) -> None:
        self.tmp, self.voc, self.weights, self._finished_run = tmp, voc, weights, finished_run
        self.out = tmp / "out"
        self.checks: list[Callable[[], None]] = []
        self.hold = None  # a FolderLock this test holds while the case runs
        self.expect: list[str] = []
        self.watched: list[tuple[Path, bool, bool, dict[str, bytes] | None]] = []
        self.after: list[dict[str, bytes] | None] = []

    def train(self, *extra: str, root: Path | None = None, config: Path | None = None) -> list[str]:
        """A TaI-DPT training command into ``self.out`` (``root``/``config`` replace only those arguments)."""
        args = common(self.voc, self.weights)
        if root is not None:
            args[args.index("--root") + 1] = str(root)
        if config is not None:
            args[args.index("--config-file") + 1] = str(config)
        return ["--trainer", "TaIDPT", "--output-dir", str(self.out), *args, *extra]

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return path

    @property
    def finished(self):
        """conftest's shared finished run (trained only when a selected case needs it)."""
        return self._finished_run()

    def run_copy(self) -> Path:
        return copy_run(self.finished.path, self.tmp / "run")

    def untouched(self, folder: Path, absent: bool = False, exact: bool = False) -> None:
        """Check that the run leaves ``folder`` holding the same files (the lock file aside unless
        ``exact``) or, with ``absent``, that it does not create it."""
        self.watched.append((folder, absent, exact, self._files(folder, exact)))
        if absent:
            assert not folder.exists()

    @staticmethod
    def _files(folder: Path, exact: bool) -> dict[str, bytes] | None:
        if not folder.exists():
            return None
        return {k: v for k, v in snapshot(folder).items() if exact or k != ".taidpt.lock"}

    def observe(self) -> None:
        """Right after the run (while any lock this test holds is still held): what the folders hold now."""
        self.after = [self._files(folder, exact) for folder, _, exact, _ in self.watched]

    def verify(self) -> None:
        for (folder, absent, _, before), after in zip(self.watched, self.after):
            if absent:
                assert not folder.exists(), f"{folder} was created"
            else:
                assert after == before, f"the refused run changed {folder}"
        for check in self.checks:
            check()


def _assert_absent(path: Path) -> None:
    assert not path.exists(), f"{path} was written"


def _missing_root(c: Case):
    return c.train(root=c.tmp / "nowhere"), str(c.tmp / "nowhere")


def _empty_corpus(c: Case):
    return c.train("DATASET.CAPTION_FILE", str(c.write("empty.txt", "nothing here\nor here\n"))), "empty.txt"


def _bad_yaml_key(c: Case):
    return c.train(config=c.write("bad.yaml", "TRAINER:\n  TAIDPT:\n    NCTX: 4\n")), "bad.yaml"


def _class_mismatch(c: Case):
    """Eval-only of a 3-class run with a 4-class list (whose labels exist) is refused."""
    run, data = c.run_copy(), c.tmp / "data"
    copy_run(c.voc, data)
    (data / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "bus_test.txt").write_text(
        "".join(f"{i:06d} -1\n" for i in range(1, 13)))
    other = c.write("other_classes.txt", "dog\ncat\ncar\nbus\n")
    c.untouched(run)
    args = ["--trainer", "TaIDPT", "--eval-only", "--model-dir", str(run), "--output-dir", str(c.tmp / "eval"),
            *common(data, c.weights), "DATASET.CLASS_LIST", str(other)]
    return args, "class list"


def _eval_only_wrong_class_list(c: Case):
    """Eval-only from the run folder (and a data root) with other class names, as many, is refused."""
    run, data = c.run_copy(), c.tmp / "data"
    copy_run(c.voc, data)
    (data / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "bus_test.txt").write_text(
        "".join(f"{i:06d} -1\n" for i in range(1, 13)))
    c.untouched(run)
    other = c.write("classes.txt", "dog\ncat\nbus\n")
    c.checks.append(lambda: _assert_absent(c.tmp / "ev2" / "results.json"))
    return ["--eval-only", "--model-dir", str(run), "--output-dir", str(c.tmp / "ev2"), "--no-progress",
            "--root", str(data), "DATASET.CLASS_LIST", str(other)], "class list"


def _held_run_folder(c: Case):
    """A second process on a run folder this test holds stops, names the holder and writes nothing."""
    from taidpt.utils.runlock import FolderLock

    c.hold = FolderLock(c.out).acquire()
    c.untouched(c.out, exact=True)  # no config.yaml, log.txt or checkpoint from the refused process
    return (["--engine", "core", *c.train("OPTIM.MAX_EPOCH", "1")],
            [f"pid {os.getpid()} on {socket.gethostname()}", str(c.out)])


def _resume_other_settings(c: Case):
    """Continuing a finished run under another learning rate is refused before any write."""
    run = c.run_copy()
    c.untouched(run)
    return (["--output-dir", str(run), *c.finished.args, "OPTIM.MAX_EPOCH", "3", "OPTIM.LR", "0.5"],
            "other settings (OPTIM.LR 0.01 -> 0.5)")


def _resume_fewer_epochs(c: Case):
    """Rerunning a finished 2-epoch run with OPTIM.MAX_EPOCH 1 is refused before any write."""
    run = c.run_copy()
    c.untouched(run)
    return ["--output-dir", str(run), *c.finished.args, "OPTIM.MAX_EPOCH", "1"], ["OPTIM.MAX_EPOCH 1", "epoch 2"]


def _max_epoch(value: str):
    def case(c: Case):
        def nothing_written() -> None:
            assert not c.out.exists() or not any(p.name in ("config.yaml", "log.txt") for p in c.out.iterdir())

        c.checks.append(nothing_written)
        return ["--engine", "core", *c.train("OPTIM.MAX_EPOCH", value)], ["OPTIM.MAX_EPOCH", value]
    return case


def _bad_config_file(kind: str):
    def case(c: Case):
        path = c.tmp / "bad.yaml"
        if kind == "malformed":
            path.write_text("OPTIM:\n  LR: [0.1,\n")
            expect = f"{path}:3: malformed yaml"
        elif kind == "folder":
            path = c.tmp / "a_folder"
            path.mkdir()
            expect = f"{path}: is a folder"
        elif kind == "not_utf8":
            path.write_bytes(b"OPTIM:\n  NAME: caf\xe9\n")
            expect = f"{path}:2: not UTF-8 (byte 0xe9"
        else:
            path.write_text("OPTIM: 3\n")
            expect = "OPTIM has the wrong type"
        c.untouched(c.out, absent=True)
        return ["--trainer", "TaIDPT", "--config-file", str(path), "--output-dir", str(c.out)], expect
    return case


def _eval_only_negative_epoch(c: Case):
    return ["--eval-only", "--model-dir", str(c.tmp), "--load-epoch", "-1"], "--load-epoch"


def _eval_only_not_a_run(c: Case):
    (c.tmp / "empty").mkdir()
    return ["--eval-only", "--model-dir", str(c.tmp / "empty")], "training run folder"


# case -> (Case -> (train.py arguments, substring(s) of the one error line)); a case may add checks.
BAD_INPUT: dict[str, Callable[[Case], tuple[list[str], str | list[str]]]] = {
    # data and corpus
    "missing_root": _missing_root,
    "empty_corpus": _empty_corpus,
    # configuration on the command line
    "unknown_backbone": lambda c: (c.train("MODEL.BACKBONE.PRETRAINED", "", "MODEL.BACKBONE.NAME", "RN5O"),
                                   "unknown backbone 'RN5O'"),
    "bad_key": lambda c: (c.train("TRAINER.TAIDPT.N_CTXX", "4"), "N_CTXX"),
    "unknown_dataset": lambda c: (["--engine", "core", *c.train("DATASET.NAME", "VOC2012")],  # Dassl words it its way
                                  "unknown DATASET.NAME 'VOC2012'"),
    "bad_image_size": lambda c: (c.train("INPUT.SIZE", "(100, 100)"), "multiples of 32"),
    "max_epoch_0": _max_epoch("0"),
    "max_epoch_-1": _max_epoch("-1"),
    # configuration files
    "bad_yaml_key": _bad_yaml_key,
    "config_malformed": _bad_config_file("malformed"),
    "config_folder": _bad_config_file("folder"),
    "config_not_utf8": _bad_config_file("not_utf8"),
    "config_wrong_type": _bad_config_file("wrong_type"),
    # run folders: one writer, refusals before writes
    "held_run_folder": _held_run_folder,
    "resume_other_settings": _resume_other_settings,
    "resume_fewer_epochs": _resume_fewer_epochs,
    # eval-only
    "class_mismatch": _class_mismatch,
    "eval_only_wrong_class_list": _eval_only_wrong_class_list,
    "eval_only_negative_epoch": _eval_only_negative_epoch,
    "eval_only_not_a_run": _eval_only_not_a_run,
}


@pytest.fixture(scope="module")
def bad_input_runs(request, shared_voc, tiny_rn_openai_file, tmp_path_factory):
    """Every selected bad-input case, run side by side once: case -> (Case, process or exception)."""
    wanted = sorted({item.callspec.params["case"] for item in request.session.items
                     if getattr(item, "originalname", "") == "test_bad_input_gives_one_error_line"
                     and hasattr(item, "callspec")}) or sorted(BAD_INPUT)
    cases, jobs, failed = {}, {}, {}
    try:
        for name in wanted:
            case = cases[name] = Case(tmp_path_factory.mktemp(f"bad_{name}"), shared_voc, tiny_rn_openai_file,
                                      lambda: request.getfixturevalue("finished_run"))
            try:
                args, expect = BAD_INPUT[name](case)
            except Exception as exc:  # noqa: BLE001 - a broken case fails its own test only
                failed[name] = exc
                continue
            case.expect = [expect] if isinstance(expect, str) else expect
            jobs[name] = args, case.tmp
        procs = {**run_side_by_side(jobs), **failed}
        for name in jobs:
            cases[name].observe()
    finally:
        for case in cases.values():
            if case.hold is not None:
                case.hold.release()
    return {name: (cases[name], procs[name]) for name in wanted}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gives_one_error_line(case, bad_input_runs):
    """train.py stops with a non-zero status, no traceback, and one last line on stderr that says
    'error' and names the problem; refused runs leave their folders as they were."""
    c, proc = bad_input_runs[case]
    if isinstance(proc, BaseException):
        raise proc
    line = one_error_line(proc)
    assert "error" in line.lower(), proc.stderr[-2000:]
    assert line == last_error_line(proc)
    for text in c.expect:
        assert text in line, proc.stdout[-2000:] + proc.stderr[-2000:]
    c.verify()
