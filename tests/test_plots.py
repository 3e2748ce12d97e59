"""python -m taidpt.evaluation.plots: PR curves and per-class AP bars from a predictions.npz the project's writer made."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taidpt.evaluation.scoring import ScoredSet
from taidpt.evaluation.metrics import average_precision, mean_ap
from taidpt.evaluation.plots import AP_FILE, EXTREMES, PR_FILE, class_curves, draw_pr_curves, main
from taidpt.evaluation.predictions import load_predictions, save_predictions
from taidpt.images.readers.common import ImageSet

MERGE_RATE = 0.7


def write_run(folder: Path, n_classes: int = 5, n: int = 40, seed: int = 0) -> Path:
    """A run folder holding a predictions.npz from synthetic scores: class 0 has no negative, class 1 an
    ignored label, class 2 integer (heavily tied) scores."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, (n, n_classes)).astype(np.int8)
    targets[:, 0] = 1
    targets[3, 1] = -1
    g = (targets + rng.normal(0, 0.9, targets.shape)).astype(np.float32)
    loc = (targets + rng.normal(0, 1.2, targets.shape)).astype(np.float32)
    g[:, 2] = loc[:, 2] = np.round(g[:, 2])
    classes = [f"c{i}" for i in range(n_classes)]
    paths = [f"/data/{i}.jpg" for i in range(n)]
    folder.mkdir(parents=True)
    save_predictions(folder / "predictions.npz", ScoredSet(g, loc, targets, np.arange(n)),
                     ImageSet(paths=paths, targets=targets, classnames=tuple(classes), name="synthetic"), classes,
                     MERGE_RATE, "TaIDPT")
    return folder


def drawn_points(fig, name: str) -> np.ndarray:
    lines = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == name]
    assert len(lines) == 1 and lines[0].get_drawstyle() == "steps-pre"
    return lines[0].get_xydata()


def test_command_writes_both_pngs_and_lists_skipped_classes(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    out = tmp_path / "figures"
    assert main([str(run), "--out", str(out)]) == 0
    for name in (PR_FILE, AP_FILE):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.width >= 400 and img.height >= 250
            img.verify()
        assert (out / name).stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "skipped c0: no negative label" in printed and "4 classes drawn" in printed
    pred = load_predictions(run)
    merged = MERGE_RATE * pred.global_.astype(np.float64) + (1 - MERGE_RATE) * pred.local.astype(np.float64)
    assert f"mAP {mean_ap(merged, pred.targets):.2f}" in printed  # the run's merged mAP, as results.json has it
    assert main([str(run / "predictions.npz"), "--score", "local", "--classes", "c2, c3"]) == 0  # next to the npz
    assert (run / PR_FILE).is_file() and (run / AP_FILE).is_file()


def test_area_under_the_drawn_curve_is_the_ap_with_tied_scores(tmp_path):
    pred = load_predictions(write_run(tmp_path / "run"))
    for score in ("merged", "global"):
        cc = class_curves(pred, score)
        fig = draw_pr_curves(cc)
        for name, col in (("c2", 2), ("c1", 1)):
            scores = {"merged": MERGE_RATE * pred.global_.astype(np.float64)
                      + (1 - MERGE_RATE) * pred.local.astype(np.float64), "global": pred.global_}[score][:, col]
            labelled = pred.targets[:, col] != -1
            if name == "c2":
                assert len(np.unique(scores[labelled])) < labelled.sum() / 3  # many ties
            x, y = drawn_points(fig, name).T
            area = float(np.sum(np.diff(x) * y[1:]))
            assert area == pytest.approx(average_precision(scores, pred.targets[:, col]), abs=1e-9)
            assert cc.ap[name] == pytest.approx(100 * area, abs=1e-7)
            assert x[0] == 0 and x[-1] == 1 and np.all(np.diff(x) >= 0)


def test_many_classes_draw_the_best_and_worst_in_one_plot(tmp_path):
    cc = class_curves(load_predictions(write_run(tmp_path / "run", n_classes=24)))
    fig = draw_pr_curves(cc)
    drawn = [ln.get_gid() for ax in fig.axes for ln in ax.get_lines()]
    ranked = sorted(cc.ap, key=lambda c: -cc.ap[c])
    assert len(fig.axes) == 1 and drawn == ranked[:EXTREMES] + ranked[-EXTREMES:]
    assert "c0" not in cc.ap and "c0" in cc.skipped


@pytest.mark.parametrize("case", ["no_folder", "no_npz", "corrupt", "npy", "not_predictions", "unknown_class",
                                  "only_unscorable", "bad_out"])
def test_bad_input_is_one_line_naming_the_file(case, tmp_path, capsys):
    run = tmp_path / "run"
    args, expect = [str(run)], str(run)
    if case == "no_folder":
        expect = f"{run}: no such run folder"
    elif case == "no_npz":
        run.mkdir()
        expect = f"no predictions at {run / 'predictions.npz'}"
    elif case == "corrupt":
        run.mkdir()
        (run / "predictions.npz").write_bytes(b"PK\x03\x04 not really a zip file")
        expect = f"{run / 'predictions.npz'} is not a readable predictions file"
    elif case == "npy":
        np.save(tmp_path / "scores.npy", np.zeros((2, 2)))
        args, expect = [str(tmp_path / "scores.npy")], f"{tmp_path / 'scores.npy'} is not a readable predictions file"
    elif case == "not_predictions":
        run.mkdir()
        np.savez(run / "predictions.npz", scores=np.zeros((2, 2)))
        expect = f"{run / 'predictions.npz'} is not a taidpt predictions file"
    elif case == "unknown_class":
        write_run(run)
        args += ["--classes", "c1,zebra"]
        expect = f"{run / 'predictions.npz'}: unknown class(es) 'zebra'"
    elif case == "only_unscorable":
        write_run(run)
        args += ["--classes", "c0"]
        expect = f"{run / 'predictions.npz'}: no chosen class has both a positive and a negative label"
    else:
        write_run(run)
        (tmp_path / "taken").write_text("a file")
        args += ["--out", str(tmp_path / "taken")]
        expect = str(tmp_path / "taken")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expect in err, err
