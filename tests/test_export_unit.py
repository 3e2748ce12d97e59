"""A multi-file export is one unit: one export id in every part, the vocabulary's hash in ``M.onnx``, all parts
staged and checked before any is replaced, mixed sets refused in one line; TensorRT sidecars bound to their
engine file; staging folders of killed exports swept.

Two open-vocabulary exports of conftest's ``finished_run`` (epoch 1 in fp32, epoch 2 in fp16), made in-process:
the second one replaces a copy of the first, which is how a set gets mixed when an export is killed.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from taidpt.export import staging
from taidpt.export.onnx_cli import main as export_main
from taidpt.export.onnx_files import set_metadata
from taidpt.serve import export_unit
from taidpt.serve.infer import main as infer_main
from taidpt.serve.metadata import read_onnx_metadata, read_sidecar, sidecar_path
from taidpt.serve.open_vocab import OpenVocabError
from taidpt.serve.predictor import Predictor
from taidpt.utils.runlock import FolderLock

PARTS = ("m.onnx", "m.text.onnx", "m.open.onnx", "m.bpe.txt.gz")
NAMES = ["zebra", "dog", "hair drier"]


def export_ids(folder: Path) -> dict[str, str]:
    """The export id of each ONNX part in ``folder``."""
    return {name: read_onnx_metadata(folder / name).export_id for name in PARTS[:3]}


def copy_set(src: Path, dest: Path) -> Path:
    """The four parts of the set in ``src`` copied to ``dest``; returns ``dest/m.onnx``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PARTS:
        shutil.copyfile(src / name, dest / name)
    return dest / "m.onnx"


def scores(model: Path, images: list[Path]) -> np.ndarray:
    with Predictor.from_onnx(model, classes=NAMES) as p:
        return np.array([[r.scores[c] for c in NAMES] for r in p.predict(images)])


@pytest.fixture(scope="module")
def images(shared_voc) -> list[Path]:
    return sorted((shared_voc / "VOCdevkit" / "VOC2007" / "JPEGImages").iterdir())[:3]


@pytest.fixture(scope="module")
def sets(finished_run, tmp_path_factory, images):
    """(set A folder, set B folder, hook events of B replacing a copy of A, A's scores, B's scores)."""
    root = tmp_path_factory.mktemp("unit")
    run = str(finished_run.path)
    a = root / "a" / "m.onnx"
    assert export_main(["--model-dir", run, "--output", str(a), "--open-vocabulary", "--load-epoch", "1",
                        "--batch-sizes", "2"]) == 0
    b = copy_set(a.parent, root / "b")
    events: list[tuple[str, dict[str, str]]] = []
    staging._after_replace = lambda target: events.append((target.name, export_ids(target.parent)))
    try:
        assert export_main(["--model-dir", run, "--output", str(b), "--open-vocabulary", "--load-epoch", "2",
                            "--precision", "fp16", "--batch-sizes", "2"]) == 0
    finally:
        staging._after_replace = None
    return a.parent, b.parent, events, scores(a, images), scores(b, images)


def test_every_part_carries_the_export_id_and_m_onnx_the_vocabulary_hash(sets):
    a, b, _, score_a, score_b = sets
    ids_a, ids_b = export_ids(a), export_ids(b)
    assert len(set(ids_a.values())) == len(set(ids_b.values())) == 1
    id_a, id_b = ids_a["m.onnx"], ids_b["m.onnx"]
    assert len(id_a) == 32 and int(id_a, 16) and id_a != id_b
    assert read_onnx_metadata(b / "m.onnx").precision == "fp16"  # the reduced file keeps its export's id
    for folder in (a, b):
        digest = hashlib.sha256((folder / "m.bpe.txt.gz").read_bytes()).hexdigest()
        assert read_onnx_metadata(folder / "m.onnx").bpe_sha256 == digest
    assert np.abs(score_a - score_b).max() > 1e-3  # the two exports score differently: a mix would show
    assert not [p for p in b.iterdir() if p.name.startswith(".export-")]  # the staging folder is gone


def test_nothing_is_replaced_before_every_part_is_staged_and_checked(sets):
    a, b, events, _, _ = sets
    id_a, id_b = export_ids(a)["m.onnx"], export_ids(b)["m.onnx"]
    assert [name for name, _ in events] == ["m.text.onnx", "m.open.onnx", "m.bpe.txt.gz", "m.onnx"]
    first = events[0][1]
    assert first == {"m.onnx": id_a, "m.text.onnx": id_b, "m.open.onnx": id_a}  # the first replacement, not earlier
    assert events[-1][1] == {name: id_b for name in PARTS[:3]}


@pytest.mark.parametrize("k", range(5))
def test_a_replacement_killed_after_k_files_never_leaves_a_mixed_set(k, sets, images, tmp_path, capsys):
    a, b, _, score_a, score_b = sets
    out = copy_set(a, tmp_path / "deployed")
    staged = copy_set(b, tmp_path / ".export-k1ll3d_x")
    pid = os.fork()
    if pid == 0:  # the child replaces the set and is killed after the k-th file
        done = []

        def die(target: Path) -> None:
            done.append(target)
            if len(done) == k:
                os._exit(9)

        staging._after_replace = die
        if k:
            staging.publish_set(staged, out, {"text": "m.text.onnx", "open": "m.open.onnx", "bpe": "m.bpe.txt.gz"})
        os._exit(9)
    os.waitpid(pid, 0)
    if k in (0, 4):
        np.testing.assert_array_equal(scores(out, images), score_a if k == 0 else score_b)
        return
    with pytest.raises(OpenVocabError, match="belongs to another export than m.onnx") as info:
        scores(out, images)
    assert "\n" not in str(info.value)
    rc = infer_main(["--model", str(out), "--images", str(images[0]), "--output", str(tmp_path / "o.json"),
                     "--classes", ",".join(NAMES), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "another export" in err[0] and not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("part", ["m.text.onnx", "m.open.onnx", "m.bpe.txt.gz"])
def test_a_part_copied_from_another_export_is_refused_in_one_line(part, sets, images, tmp_path, capsys):
    from taidpt.serve.triton import main as triton_main

    a, b, _, _, _ = sets
    out = copy_set(b, tmp_path / "x")
    if part == "m.bpe.txt.gz":  # both exports ship the same vocabulary: copy a different one
        (out.parent / part).write_bytes(gzip.compress(gzip.decompress((a / part).read_bytes()) + b"\nx y"))
        expect = "m.bpe.txt.gz is not the vocabulary m.onnx was exported with"
    else:
        shutil.copyfile(a / part, out.parent / part)
        expect = f"{part} belongs to another export than m.onnx"
    rc = infer_main(["--model", str(out), "--images", str(images[0]), "--output", str(tmp_path / "o.json"),
                     "--classes", "zebra", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expect in err[0] and "re-export" in err[0], err
    assert triton_main(["--onnx", str(out), "--repository", str(tmp_path / "repo"), "--open-vocabulary"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0] and not (tmp_path / "repo").exists()


def _strip_ids(folder: Path, names: tuple[str, ...]) -> None:
    for name in names:
        set_metadata(folder / name, read_onnx_metadata(folder / name).replace(export_id="", bpe_sha256=""))


def test_a_legacy_set_without_ids_is_accepted_with_one_warning(sets, images, tmp_path):
    a, _, _, score_a, _ = sets
    out = copy_set(a, tmp_path / "legacy")
    _strip_ids(out.parent, PARTS[:3])
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    export_unit.log.addHandler(handler)
    try:
        np.testing.assert_array_equal(scores(out, images), score_a)
        np.testing.assert_array_equal(scores(out, images), score_a)
    finally:
        export_unit.log.removeHandler(handler)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "no export id" in warnings[0]
    assert "\n" not in warnings[0]


def test_one_empty_id_beside_a_set_one_is_a_mismatch(sets, tmp_path):
    a, _, _, _, _ = sets
    out = copy_set(a, tmp_path / "half")
    _strip_ids(out.parent, ("m.open.onnx",))
    with pytest.raises(OpenVocabError, match=r"m.open.onnx belongs to another export than m.onnx \(export id \(none\)"):
        Predictor.from_onnx(out, classes=["zebra"])


def test_failed_open_vocabulary_checks_keep_the_new_set_aside_and_the_old_one_in_place(sets, finished_run, tmp_path,
                                                                                       monkeypatch, capsys):
    """Also: stale staging folders beside the output are swept; a live export's (its lock held) is kept."""
    from taidpt.export import open_vocab

    a, _, _, _, _ = sets
    out = copy_set(a, tmp_path / "d")
    stale, legacy, young, live = (out.parent / n for n in (".export-k1ll3d_a", ".open-0ld0pen1", ".open-y0ung_12",
                                                           ".export-al1ve_ab"))
    for folder in (stale, legacy, young, live):
        folder.mkdir()
        (folder / "m.onnx").write_bytes(b"half a file")
    FolderLock(stale, what="export staging folder").acquire().release()  # a killed export's: its lock is free
    os.utime(legacy, (1, 1))  # no lock file: removed once an hour old
    holder = FolderLock(live, what="export staging folder").acquire()
    monkeypatch.setattr(open_vocab, "OPEN_VOCAB_TOL", -1.0)
    try:
        rc = export_main(["--model-dir", str(finished_run.path), "--output", str(out), "--open-vocabulary",
                          "--batch-sizes", "1"])
    finally:
        holder.release()
    stdout, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and "m.onnx.failed-parity" in lines[0] and "m.text.onnx.failed-parity" in lines[0]
    for name in PARTS:
        assert (out.parent / (name + ".failed-parity")).is_file()
        assert (out.parent / name).read_bytes() == (a / name).read_bytes()  # the deployed set is untouched
    assert export_ids(out.parent) == export_ids(a)
    assert not stale.exists() and not legacy.exists() and young.exists() and live.exists()
    assert f"removed {stale}" in stdout and f"removed {legacy}" in stdout
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == [live.name, young.name]


# ----------------------------------------------------------------------------- TensorRT sidecars
@pytest.fixture()
def engine(sets, tmp_path, capsys):
    """A stand-in engine file with a sidecar written by export.tensorrt --metadata-only."""
    from taidpt.export.tensorrt import main as trt_main

    plan = tmp_path / "m.plan"
    plan.write_bytes(b"a serialized engine" * 10)
    assert trt_main(["--onnx", str(sets[0] / "m.onnx"), "--engine", str(plan), "--metadata-only"]) == 0
    capsys.readouterr()
    return plan


def test_the_sidecar_records_its_engine_file(engine):
    meta, facts = read_sidecar(engine)
    assert facts["engine_bytes"] == engine.stat().st_size
    assert facts["engine_sha256"] == hashlib.sha256(engine.read_bytes()).hexdigest()
    assert meta.classnames  # the metadata still reads


@pytest.mark.parametrize("change", ["size", "bytes"])
def test_a_sidecar_beside_another_engine_is_refused_before_tensorrt_is_needed(change, engine, tmp_path, capsys):
    data = engine.read_bytes()
    engine.write_bytes(data + b"!" if change == "size" else data[:-1] + b"!")
    rc = infer_main(["--model", str(engine), "--images", str(tmp_path), "--output", str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert f"{sidecar_path(engine)} was written for another engine than {engine}" in err[0]
    assert ("bytes recorded" if change == "size" else "sha256") in err[0] and "TensorRT" not in err[0].split(";")[0]


def test_a_legacy_sidecar_is_accepted_with_a_warning(engine, sets):
    import json

    side = sidecar_path(engine)
    payload = json.loads(side.read_text())
    del payload["engine_sha256"], payload["engine_bytes"]
    side.write_text(json.dumps(payload))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    export_unit.log.addHandler(handler)
    try:
        meta, _ = read_sidecar(engine)
    finally:
        export_unit.log.removeHandler(handler)
    assert meta == read_onnx_metadata(sets[0] / "m.onnx").replace(precision=meta.precision)
    assert len(records) == 1 and "does not record which engine file" in records[0].getMessage()


def test_the_triton_writer_refuses_an_engine_its_sidecar_was_not_written_for(engine, sets, tmp_path, capsys):
    from taidpt.serve.triton import main as triton_main

    engine.write_bytes(engine.read_bytes() + b"!")
    repo = tmp_path / "repo"
    rc = triton_main(["--onnx", str(sets[0] / "m.onnx"), "--repository", str(repo), "--backend", "tensorrt",
                      "--engine", str(engine)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "was written for another engine" in err[0], err
    assert not repo.exists()
