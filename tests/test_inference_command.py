"""One inference command (issue 23): every output through one pipeline, the Parquet folder and its resume,
the engine flags, the deprecated alias, and ``--fast-decode``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from export_support import export_tiny_taidpt
from taidpt.images.preprocess import load_rgb, preprocess
from taidpt.serve.batch_infer import DEPRECATION, main as alias_main
from taidpt.serve.infer import build_parser, collect_images, main
from taidpt.serve.inputs import image_source
from taidpt.serve.predictor import Predictor, load_image
from taidpt.serve.runtime import open_model
from taidpt.serve.triton_client import build_parser as triton_parser
from test_batch_infer import photo_dir  # noqa: F401 - fixture
from test_infer import CLASSES, SIZE, exported  # noqa: F401 - fixture

# Measured on the 4000x3000 test photo below (draft decodes it at 1/8 scale, 500x375): max |difference| of
# the preprocessed (normalised) pixels 0.015, of the random TinyRN test model's logits 6e-6 (logits up to
# 0.47); the bounds leave room for other libjpeg builds.
FAST_DECODE_MAX_PIXEL_DIFF = 0.05
FAST_DECODE_MAX_LOGIT_DIFF = 1e-3


def run(args: list[str]) -> int:
    return main([*args, "--no-progress"])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def sorted_table(folder: Path) -> dict[str, list]:
    return pq.read_table(folder).sort_by("path").to_pydict()


@pytest.fixture(scope="module")
def other_seed(tiny_rn, tmp_path_factory):
    """The test model's twin with other contexts (another model_sha256, the same classes)."""
    return export_tiny_taidpt(tiny_rn, CLASSES, tmp_path_factory.mktemp("m2") / "seed4.onnx", seed=4, size=SIZE)[1]


@pytest.fixture(scope="module")
def other_classes(tiny_rn, tmp_path_factory):
    return export_tiny_taidpt(tiny_rn, CLASSES[:4], tmp_path_factory.mktemp("m3") / "four.onnx", seed=3, size=SIZE)[1]


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A smooth 4000x3000 camera-sized JPEG (quality 90) and the same picture as a PNG."""
    folder = tmp_path_factory.mktemp("photo")
    y, x = np.mgrid[0:3000, 0:4000].astype(np.float32)
    rgb = np.stack([x / 4000 * 255, y / 3000 * 255, 127 + 120 * np.sin(x / 170.0) * np.cos(y / 130.0)], axis=-1)
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    img.save(folder / "big.jpg", quality=90)
    img.resize((800, 600)).save(folder / "small.png")
    return folder


# ----------------------------------------------------------------------------- Parquet folder output
def test_parquet_folder_resumes_to_the_uninterrupted_table(exported, photo_dir, tmp_path):
    model = str(exported[1])
    common = ["--model", model, "--images", str(photo_dir), "--batch-size", "4", "--workers", "2", "--shard-size", "5"]
    full, part, rows = tmp_path / "full.parquet", tmp_path / "part.parquet", tmp_path / "rows.jsonl"
    assert run([*common, "--output", str(full)]) == 0
    assert run([*common, "--output", str(part)]) == 0
    assert run([*common, "--output", str(rows)]) == 0
    names = sorted(p.name for p in full.iterdir())
    assert names == [f"part-{i:06d}.parquet" for i in range(13)]  # 62 inputs in shards of 5
    expected = sorted_table(full)
    assert len(expected["path"]) == len(set(expected["path"])) == 62
    # A kill: one part missing, and a half-written temporary part left behind.
    (part / "part-000007.parquet").unlink()
    (part / ".part-000007.parquet.4242.tmp").write_bytes((full / "part-000007.parquet").read_bytes()[:100])
    kept = (part / "part-000002.parquet").stat().st_mtime_ns
    assert run([*common, "--output", str(part)]) == 0
    assert sorted(p.name for p in part.iterdir()) == names  # the temporary file is swept
    assert (part / "part-000002.parquet").stat().st_mtime_ns == kept  # finished shards are not redone
    assert sorted_table(part) == expected
    # The parts hold what the streamed outputs hold: escaped paths, scores in class order, labels, errors.
    streamed = {r["path"]: r for r in map(json.loads, rows.read_text().splitlines())}
    assert set(streamed) == set(expected["path"])
    for i, path in enumerate(expected["path"]):
        row = streamed[path]
        if "error" in row:
            assert expected["error"][i] == row["error"] and expected["scores"][i] is None
            continue
        assert expected["error"][i] is None and expected["labels"][i] == row["labels"]
        np.testing.assert_allclose(expected["scores"][i], [row["scores"][c] for c in CLASSES], atol=1e-5)
        assert expected["confidence"][i] == [None] * len(CLASSES)  # top-3 decides: no threshold, no confidence
    meta = json.loads(pq.read_schema(full / names[0]).metadata[b"taidpt.job"])
    assert meta["classnames"] == CLASSES and meta["shard_size"] == 5 and meta["decision"]["rule"] == "top_k"


@pytest.mark.parametrize("case", ["other_model", "other_classes", "other_top_k"])
def test_parquet_rerun_of_another_job_is_refused(case, exported, other_seed, other_classes, photo_dir, tmp_path,
                                                 capsys):
    folder = tmp_path / "out.parquet"
    args = ["--model", str(exported[1]), "--images", str(photo_dir), "--output", str(folder), "--shard-size", "20"]
    assert run(args) == 0
    before = snapshot(folder)
    capsys.readouterr()
    if case == "other_model":
        args[1], differs = str(other_seed), "model_sha256"
    elif case == "other_classes":
        args[1], differs = str(other_classes), "classnames"
    else:
        args, differs = [*args, "--top-k", "2"], "decision"
    assert run(args) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("error")]
    assert len(err) == 1 and "written by another job" in err[0] and differs in err[0], err
    assert snapshot(folder) == before


def test_a_parquet_output_that_is_a_file_is_refused(exported, photo_dir, tmp_path, capsys):
    out = tmp_path / "x.parquet"
    out.write_text("not a folder")
    assert run(["--model", str(exported[1]), "--images", str(photo_dir), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a folder" in err[0], err


# ----------------------------------------------------------------------------- flags, engines, the alias
@pytest.mark.parametrize("flags, expect", [
    (["--engine", "ray"], "--engine ray writes a .parquet folder"),
    (["--shard-size", "0"], "--shard-size must be >= 1"),
    (["--engine", "ray", "--actors", "0", "--output-parquet"], "--actors must be >= 1"),
])
def test_bad_flag_combinations_are_one_line(flags, expect, exported, photo_dir, tmp_path, capsys):
    out = tmp_path / ("o.parquet" if "--output-parquet" in flags else "o.jsonl")
    flags = [f for f in flags if f != "--output-parquet"]
    assert run(["--model", str(exported[1]), "--images", str(photo_dir), "--output", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0], err
    assert not out.exists()


def test_engine_ray_without_ray_says_how_to_install_it(exported, photo_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    out = tmp_path / "o.parquet"
    assert run(["--model", str(exported[1]), "--images", str(photo_dir), "--output", str(out), "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --engine ray needs Ray: pip install 'taidpt[ray]'"]


def test_flags_are_declared_once():
    """The alias takes exactly infer's flags; the Triton client's shared flags read the same."""
    from taidpt.serve.batch_infer import build_parser as alias_parser

    ours = {a.dest: a.help for a in build_parser()._actions}
    assert {a.dest: a.help for a in alias_parser()._actions} == ours
    assert {"fast_decode", "engine", "ray_address", "actors", "shard_size", "prefetch"} <= set(ours)
    theirs = {a.dest: a.help for a in triton_parser()._actions}
    for dest in ("images", "class_list", "top_k"):
        assert theirs[dest] == ours[dest]


def test_the_alias_runs_infer_after_one_deprecation_line(exported, photo_dir, tmp_path, capsys):
    args = ["--model", str(exported[1]), "--images", str(photo_dir), "--no-progress"]
    assert alias_main([*args, "--output", str(tmp_path / "a.json")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == DEPRECATION and sum("deprecated" in ln for ln in err) == 1
    assert main([*args, "--output", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert [im["path"] for im in a["images"]] == [im["path"] for im in b["images"]] and a["n_skipped"] == 2


def test_folders_stream_in_the_sorted_order_of_the_listing(photo_dir):
    assert list(image_source(str(photo_dir))[0]) == collect_images(str(photo_dir)) == sorted(
        collect_images(str(photo_dir)), key=lambda p: Path(p).parts)


# ----------------------------------------------------------------------------- --fast-decode
def test_fast_decode_is_close_and_the_default_is_exact(exported, photo, tmp_path):
    model = open_model(exported[1])
    cfg = model.metadata.preprocess_config()
    big, png = photo / "big.jpg", photo / "small.png"
    exact = load_image(big, cfg)
    np.testing.assert_array_equal(exact, preprocess(load_rgb(big), SIZE))  # off: Dassl's transform, bit for bit
    fast = load_image(big, cfg, fast_decode=True)
    assert fast.shape == exact.shape and not np.array_equal(fast, exact)  # the draft really was used
    assert np.abs(fast - exact).max() < FAST_DECODE_MAX_PIXEL_DIFF
    np.testing.assert_array_equal(load_image(png, cfg, fast_decode=True), load_image(png, cfg))  # PNG: unaffected
    diff = np.abs(model.run(np.stack([fast]))["scores"] - model.run(np.stack([exact]))["scores"]).max()
    model.close()
    assert diff < FAST_DECODE_MAX_LOGIT_DIFF, diff
    # The flag reaches the pipeline, and the Predictor takes the same option.
    for flag, name in (([], "exact.jsonl"), (["--fast-decode"], "fast.jsonl")):
        assert run(["--model", str(exported[1]), "--images", str(photo), "--output", str(tmp_path / name), *flag]) == 0
    rows = {n: {r["path"]: r["scores"] for r in map(json.loads, (tmp_path / n).read_text().splitlines())}
            for n in ("exact.jsonl", "fast.jsonl")}
    with Predictor.from_onnx(exported[1], fast_decode=True) as predictor:
        api = predictor.predict(str(big)).scores
    cli_fast, cli_exact = rows["fast.jsonl"][str(big)], rows["exact.jsonl"][str(big)]
    assert api == pytest.approx(cli_fast, abs=1e-5) and cli_fast != cli_exact
    assert rows["fast.jsonl"][str(png)] == rows["exact.jsonl"][str(png)]


@pytest.mark.slow
def test_engine_ray_writes_the_local_engines_table(exported, photo_dir, tmp_path):
    """The same command with --engine ray (a local Ray) gives the local engine's table, and each engine
    takes the other's folder as finished."""
    pytest.importorskip("ray")
    common = ["--model", str(exported[1]), "--images", str(photo_dir), "--shard-size", "20"]
    local, ray_out = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert run([*common, "--output", str(local)]) == 0
    assert run([*common, "--output", str(ray_out), "--engine", "ray", "--actors", "1"]) == 0
    expected, got = sorted_table(local), sorted_table(ray_out)
    assert got["path"] == expected["path"] and got["labels"] == expected["labels"]
    assert got["error"] == expected["error"]
    for a, b in zip(got["scores"], expected["scores"]):
        assert (a is None) == (b is None) and (a is None or np.allclose(a, b, atol=1e-5))
    before = snapshot(ray_out)
    assert run([*common, "--output", str(ray_out)]) == 0 and snapshot(ray_out) == before
