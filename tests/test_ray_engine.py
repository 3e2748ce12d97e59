"""The Ray Data engine on real Ray: the local rows exactly, resume after a killed driver, refusal, two nodes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="pyarrow is a test requirement (the Parquet output)")
ray = pytest.importorskip("ray", reason="ray[data] is a test requirement (the Ray engine)")
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image  # noqa: E402

from export_support import export_tiny_taidpt  # noqa: E402
from taidpt.serve.parquet_parts import ParquetOutputError  # noqa: E402
from taidpt.serve.predictor import Predictor  # noqa: E402
from taidpt.serve.ray_engine import run_ray_job  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog", "car", "tree"]
JOB = dict(classes=None, threshold=None, top_k=None, shard_size=4, batch_size=3, actors=1, providers=None,
           fast_decode=False, progress=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_rn):
    """12 inputs (a text file named .jpg and a truncated PNG among them) and two models of other seeds."""
    root = tmp_path_factory.mktemp("ray_engine")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (40 + 3 * i, 56, 3), dtype=np.uint8)).save(
            images / ("sub" if i % 3 == 0 else "") / f"img{i:02d}.{'png' if i % 2 else 'jpg'}")
    (images / "notes.jpg").write_text("not an image")
    (images / "cut.png").write_bytes((images / "img01.png").read_bytes()[:120])
    model = export_tiny_taidpt(tiny_rn, CLASSES, root / "a.onnx", seed=1)[1]
    other = export_tiny_taidpt(tiny_rn, CLASSES, root / "b.onnx", seed=2)[1]
    return {"root": root, "images": images, "model": model, "other": other}


@pytest.fixture(scope="module")
def reference(world):
    """The local engine's rows (Predictor.score and its decision) by path."""
    paths = sorted(str(p) for p in world["images"].rglob("*") if p.is_file())
    with Predictor.from_onnx(world["model"]) as predictor:
        preds, decision = predictor.score(paths)
    labels = decision.labels(preds.scores)
    rows = {p: {"error": reason} for p, reason in preds.skipped}
    for i, p in enumerate(preds.paths):
        rows[p] = {"scores": preds.scores[i], "labels": labels[i], "error": None}
    assert len(rows) == 12 and len(preds.skipped) == 2
    return rows


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for the module's single-node tests; run_ray_job joins it and leaves it up."""
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield context.address_info["address"]
    ray.shutdown()


def read_rows(folder: Path) -> dict[str, dict]:
    """The folder's rows by path, checking that each path appears once."""
    rows = pq.read_table(folder).to_pylist()
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "a path appears twice"
    return {r["path"]: r for r in rows}


def assert_local_rows(folder: Path, reference: dict) -> None:
    rows = read_rows(folder)
    assert sorted(rows) == sorted(reference)
    for path, want in reference.items():
        got = rows[path]
        assert got["error"] == want["error"], path
        if want["error"] is None:
            np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-6, rtol=0)
            assert got["labels"] == want["labels"], path
    assert sorted(p.name for p in folder.iterdir()) == [f"part-00000{i}.parquet" for i in range(3)]


def run(world, output: Path, **changes) -> int:
    return run_ray_job(str(world["images"]), str(changes.pop("model", world["model"])), output,
                       address=changes.pop("address", None), **{**JOB, **changes})


def test_ray_rows_equal_the_local_engine_rows(world, reference, local_ray):
    out = world["root"] / "local.parquet"
    assert run(world, out) == 12
    assert_local_rows(out, reference)
    errors = {Path(p).name: r["error"] for p, r in read_rows(out).items() if r["error"]}
    assert set(errors) == {"notes.jpg", "cut.png"}
    assert run(world, out) == 0  # every shard finished: nothing to do


def test_a_killed_driver_resumes_to_the_uninterrupted_rows(world, reference, local_ray):
    out = world["root"] / "resumed.parquet"
    child = ("import sys, time; from pathlib import Path; import taidpt.serve.ray_engine as eng\n"
             "write = eng.write_part\n"
             "def slow(*a):\n    path = write(*a); time.sleep(120); return path\n"
             "eng.write_part = slow\n"
             f"eng.run_ray_job({str(world['images'])!r}, {str(world['model'])!r}, Path({str(out)!r}), "
             f"address={local_ray!r}, **{JOB!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("part-*.parquet")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(list(out.glob("part-*.parquet"))) == 1
    (out / ".part-000002.parquet.999.tmp").write_bytes(b"half a part")  # what a kill mid-write leaves
    assert run(world, out) == 8
    assert not list(out.glob(".*"))
    assert_local_rows(out, reference)


def test_another_model_is_refused_and_the_folder_left_alone(world, local_ray):
    out = world["root"] / "local.parquet"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(ParquetOutputError, match="model_sha256"):
        run(world, out, model=world["other"])
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@pytest.fixture(scope="module")
def two_nodes(local_ray):
    """A head and one worker node on this machine (after the local Ray is shut down)."""
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="warning")
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def test_two_nodes_give_the_same_rows_also_when_a_node_is_lost(world, reference, two_nodes, monkeypatch):
    cluster, worker = two_nodes
    out = world["root"] / "two_nodes.parquet"
    assert run(world, out, address=cluster.address) == 12
    assert_local_rows(out, reference)

    lost = world["root"] / "node_lost.parquet"
    import taidpt.serve.ray_engine as eng

    write = eng.write_part

    def first_part_then_lose_the_worker(*args):
        path = write(*args)
        if worker in cluster.worker_nodes:
            cluster.remove_node(worker)
            cluster.add_node(num_cpus=1)  # a replacement, as an autoscaler would bring
        return path

    monkeypatch.setattr(eng, "write_part", first_part_then_lose_the_worker)
    try:
        written = run(world, lost, address=cluster.address, batch_size=1)
        outcome = "Ray Data recovered within the run"
    except Exception as exc:  # noqa: BLE001 - a job that ends on the loss must finish on a rerun
        written = len(list(lost.glob("part-*"))) * 4 + run(world, lost, address=cluster.address, batch_size=1)
        outcome = f"the run ended ({type(exc).__name__}) and a rerun finished it"
    print(f"node lost mid-job: {outcome}")  # shown with -s / -rP: which of the two this Ray did
    assert written >= 12 - 4
    assert_local_rows(lost, reference)


def test_inputs_from_a_table_of_paths(world, reference, local_ray):
    """A Parquet or CSV file whose 'path' column (or only column) lists the inputs."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from taidpt.serve.ray_inputs import list_inputs

    paths = sorted(reference)
    table = pa.table({"path": paths, "note": ["x"] * len(paths)})
    pq.write_table(table, world["root"] / "inputs.parquet")
    pcsv.write_csv(pa.table({"file": paths}), world["root"] / "inputs.csv")
    assert sorted(list_inputs(str(world["root"] / "inputs.parquet"))) == paths
    assert sorted(list_inputs(str(world["root"] / "inputs.csv"))) == paths  # the only column
    out = world["root"] / "from_table.parquet"
    assert run_ray_job(str(world["root"] / "inputs.csv"), str(world["model"]), out, address=None, **JOB) == 12
    assert_local_rows(out, reference)
