"""Streaming batch inference (taidpt.serve.batch_infer): resume after interruption, bounded memory, errors as rows."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import taidpt.serve.batch_infer
import taidpt.serve.predictor
from taidpt.serve.batch_infer import DEPRECATION, image_source, main, run_batches, walk_images
from taidpt.serve.decision import for_model, resolve
from taidpt.serve.result_log import DoneSet, ResultLog, ResultLogError, digest, drop_partial_tail, file_sha256
from taidpt.serve.runtime import open_model
from test_infer import exported, latin1_dir  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """60 small JPEGs in nested folders, plus an empty file and a truncated JPEG."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i in range(60):
        sub = root / f"d{i % 3}" / ("deep" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48 + i, 80, 3), dtype=np.uint8)).save(sub / f"img{i:03d}.jpg")
    good = (root / "d0" / "img000.jpg").read_bytes()
    (root / "d1" / "broken.jpg").write_bytes(good[: len(good) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "readme.txt").write_text("not an image")
    return root


def read_rows(path: Path) -> dict[str, dict]:
    """Rows of a JSONL or CSV result file keyed by path (the order of a run is not part of the contract)."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    else:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    keyed = {r["path"]: r for r in rows}
    assert len(keyed) == len(rows), "a path was written twice"
    return keyed


def cli(args: list[str]) -> int:
    return main([*args, "--no-progress"])


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_interrupted_run_resumes_to_the_same_rows(exported, photo_dir, tmp_path, suffix):
    _, model_path = exported
    full, part = tmp_path / f"full{suffix}", tmp_path / f"part{suffix}"
    common = ["--model", str(model_path), "--images", str(photo_dir), "--batch-size", "4", "--workers", "2"]
    assert cli([*common, "--output", str(full)]) == 0
    expected = read_rows(full)
    assert len(expected) == 62
    assert {Path(p).name for p, r in expected.items() if r.get("error")} == {"broken.jpg", "empty.png"}

    # Interrupted after 5 batches, with the last row torn in half as a kill mid-write leaves it.
    model = open_model(model_path)
    with ResultLog(part, model.metadata.classnames, model_sha256=file_sha256(model_path)) as log:
        stats = run_batches(model, walk_images(photo_dir), log, batch_size=4, workers=2, prefetch=2,
                            decision=for_model(model.metadata), progress=False, max_batches=5)
    assert stats.batches == 5 and stats.scored + stats.failed == 20
    text = part.read_text()
    part.write_text(text[: len(text) - 7])
    assert cli([*common, "--output", str(part)]) == 0
    resumed = read_rows(part)
    assert resumed.keys() == expected.keys()
    for path, row in expected.items():
        other = resumed[path]
        assert other.get("error") == row.get("error") and other.get("labels") == row.get("labels")
        if suffix == ".jsonl" and "scores" in row:
            np.testing.assert_allclose(list(other["scores"].values()), list(row["scores"].values()), atol=1e-5)
    # A finished output is left alone.
    before = part.read_bytes()
    assert cli([*common, "--output", str(part)]) == 0
    assert part.read_bytes() == before


def test_memory_is_bounded_by_the_queue_not_the_input(exported, tmp_path):
    """200k paths from a generator (all missing files): the reader never runs ahead of the writer by more
    than the queue bound, and every path becomes one error row."""
    _, model_path = exported
    model = open_model(model_path)
    n, batch, prefetch = 200_000, 256, 2
    pulled = 0

    def paths():
        nonlocal pulled
        for i in range(n):
            pulled += 1
            yield f"/nonexistent/{i // 1000}/{i}.jpg"

    out = tmp_path / "missing.jsonl"
    with ResultLog(out, model.metadata.classnames) as log:
        stats = run_batches(model, paths(), log, batch_size=batch, workers=2, prefetch=prefetch,
                            decision=resolve(model.metadata.classnames, threshold=0.0), progress=False)
    assert pulled == n and stats.failed == n and stats.scored == 0
    assert stats.max_in_flight <= (prefetch + 2) * batch
    with open(out) as fh:
        assert sum(1 for _ in fh) == n


def test_list_file_is_streamed_and_relative_to_its_folder(exported, photo_dir, tmp_path):
    _, model_path = exported
    listing = photo_dir / "list.txt"
    listing.write_text("# a comment\n\nd0/img000.jpg\nd1/deep/img001.jpg\nnot_there.jpg\n")
    source, total = image_source(str(listing))
    assert total == 5 and not isinstance(source, list)
    out = tmp_path / "list.csv"
    assert cli(["--model", str(model_path), "--images", str(listing), "--output", str(out), "--top-k", "2"]) == 0
    rows = read_rows(out)
    assert set(rows) == {str(photo_dir / "d0/img000.jpg"), str(photo_dir / "d1/deep/img001.jpg"),
                         str(photo_dir / "not_there.jpg")}
    assert rows[str(photo_dir / "not_there.jpg")]["error"] == "no such file"
    assert all(len(r["labels"].split(";")) == 2 for p, r in rows.items() if not r["error"])


def test_output_of_another_model_or_format_is_refused(exported, photo_dir, tmp_path, capsys):
    _, model_path = exported
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"path": "x.jpg", "scores": {"a": 1.0}, "labels": []}) + "\n")
    assert cli(["--model", str(model_path), "--images", str(photo_dir), "--output", str(other)]) == 2
    assert "other classes" in capsys.readouterr().err
    # .json is an output of the merged command now (the alias runs export.infer); an unknown suffix is refused.
    assert cli(["--model", str(model_path), "--images", str(photo_dir), "--output", str(tmp_path / "x.txt")]) == 2
    assert cli(["--model", str(model_path), "--images", str(tmp_path / "nothing*"), "--output",
                str(tmp_path / "y.jsonl")]) == 2


def test_done_set_and_partial_tail(tmp_path):
    done = DoneSet(digest(f"/p/{i}.jpg") for i in range(1000))
    assert len(done) == 1000 and "/p/5.jpg" in done and "/p/1000.jpg" not in done
    f = tmp_path / "r.jsonl"
    f.write_bytes(b'{"path": "a"}\n{"path": "b"}\n{"pa')
    assert drop_partial_tail(f) == 4 and f.read_bytes().endswith(b'"b"}\n')
    assert drop_partial_tail(f) == 0
    f.write_bytes(b"no newline at all")
    assert drop_partial_tail(f) == len(b"no newline at all") and f.read_bytes() == b""
    with pytest.raises(ResultLogError):
        ResultLog(tmp_path / "r.csv", ["dog", "labels"])


@pytest.mark.slow
def test_killed_subprocess_resumes_to_the_same_rows(exported, photo_dir, tmp_path):
    """A real process killed with SIGKILL mid-run; rerunning gives the rows of an uninterrupted run."""
    _, model_path = exported
    many = tmp_path / "many.txt"
    images = sorted(str(p) for p in walk_images(photo_dir))
    many.write_text("\n".join(images * 1) + "\n")
    args = [sys.executable, "-m", "export.batch_infer", "--model", str(model_path), "--images", str(many),
            "--batch-size", "1", "--workers", "1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full.jsonl"
    subprocess.run([*args, "--output", str(full)], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    out = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([*args, "--output", str(out)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 10):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = out.read_text().count("\n")
    assert 10 <= written < len(images), "the run was not interrupted mid-way"
    subprocess.run([*args, "--output", str(out)], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    expected, resumed = read_rows(full), read_rows(out)
    assert resumed.keys() == expected.keys()
    assert all(resumed[p].get("labels") == r.get("labels") for p, r in expected.items())


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_undecodable_names_are_written_escaped_and_skipped_on_rerun(exported, latin1_dir, tmp_path, suffix):
    """A latin-1 file name used to stop every run at the same batch (CSV); now its row holds the escaped name,
    which is also what a rerun matches, so the rerun adds nothing."""
    _, model_path = exported
    out = tmp_path / f"out{suffix}"
    args = ["--model", str(model_path), "--images", str(latin1_dir), "--output", str(out), "--batch-size", "2"]
    assert cli(args) == 0
    rows = read_rows(out)
    assert set(rows) == {f"{latin1_dir}/caf\\xe9.jpg", f"{latin1_dir}/vid\\xe9.png", f"{latin1_dir}/plain.jpg"}
    assert rows[f"{latin1_dir}/vid\\xe9.png"]["error"] and not rows[f"{latin1_dir}/caf\\xe9.jpg"].get("error")
    before = out.read_bytes()
    assert cli(args) == 0
    assert out.read_bytes() == before


def test_list_file_that_is_not_utf8_fails_before_scoring(exported, photo_dir, tmp_path, capsys):
    _, model_path = exported
    listing = tmp_path / "list.txt"
    listing.write_bytes(f"{photo_dir}/d0/img000.jpg\n".encode() * 3 + b"\xff.jpg\n")
    out = tmp_path / "o.jsonl"
    assert cli(["--model", str(model_path), "--images", str(listing), "--output", str(out)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(err) == 1 and f"{listing} line 4, byte 1 (0xff): not UTF-8" in err[0], err
    assert not out.exists()


def test_output_under_a_regular_file_fails_before_the_model_is_opened(exported, photo_dir, tmp_path, monkeypatch,
                                                                     capsys):
    _, model_path = exported
    (tmp_path / "somefile.txt").write_text("x")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was opened although the output cannot be written")

    monkeypatch.setattr(taidpt.serve.predictor, "open_model", no_model)
    out = tmp_path / "somefile.txt" / "out.jsonl"
    assert cli(["--model", str(model_path), "--images", str(photo_dir), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == DEPRECATION  # the alias says so first, then the one error line
    assert len(err) == 2 and "somefile.txt is a file, not a folder" in err[1], err
