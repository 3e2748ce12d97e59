#!/usr/bin/env python
"""Batch inference throughput: the local engine (Predictor.score) vs the Ray Data engine, one node and two.

    python bench/batch_inference.py [--images 64] [--photos-12mp 16] [--demo-model demo.onnx] [--batch-size 16]

Two image sets: ``--images`` synthetic 640x480 JPEGs (bench/scale_speed.py's) and ``--photos-12mp``
copies of one 4000x3000 camera-like JPEG (bench/decode.py's; copies, so the set is written in seconds:
the decode cost is the same for each). Two models: the demo's small model (``--demo-model``, an export
of the offline demo's TaI-DPT run: DemoRN, 64 px, 14 classes; without it a random-weight TinyRN 64 px
export stands in) and RN50 int8 (a random-weight 224 px export with the 80 COCO classes, reduced by the
project's int8 path, ``taidpt.export.reduced.write_reduced``, calibrated on 16 of the 640x480 images).
Every engine scores the same files on the CPU provider, one scoring actor per Ray job.

Ray's costs are shown apart: ``start`` is the cluster's start-up until a first image is scored
(``ray.cluster_utils.Cluster`` with one node, or a head and a worker on this machine, ``ray.init``, and
a warm-up ``run_ray_job`` over one image, which starts the worker processes); ``task`` the round trip
of an empty Ray task on that cluster; ``1-image job`` a ``run_ray_job`` over one image on the warm
cluster (the per-job overhead: planning, the model opened once in a task, the actor started and its
model loaded, the pipeline's start and end); ``img/s`` the whole job's rate; ``marginal img/s`` the
rate of the second half, n/2 / (time of n - time of the first n/2 as a job of its own): the
steady-state rate with the per-job overhead taken off ("-" where the two jobs are too close to tell).
The local rows time opening the model (``start``) apart from ``Predictor.score``, the same way.
Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from decode import write_photo  # noqa: E402
from machine import cpu_features, cpu_name  # noqa: E402
from scale_speed import export_model, write_photos  # noqa: E402

PROVIDERS = ["CPUExecutionProvider"]


def write_camera_photos(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    first = write_photo(folder / "camera00000.jpg")
    for i in range(1, n):
        shutil.copyfile(first, folder / f"camera{i:05d}.jpg")


def int8_rn50(work: Path, calibration_photos: Path) -> Path:
    """A random-weight RN50 export, reduced to static int8 by the project's path (16 calibration images)."""
    import numpy as np

    from taidpt.export.reduced import write_reduced
    from taidpt.serve.predictor import load_image
    from taidpt.serve.runtime import open_model

    fp32 = export_model("RN50", 224, work / "RN50_fp32.onnx")
    model = open_model(fp32, PROVIDERS)
    cfg = model.metadata.preprocess_config()
    model.close()
    calibration = np.stack([load_image(p, cfg) for p in sorted(calibration_photos.iterdir())[:16]])
    write_reduced(fp32, work / "RN50_int8.onnx", "int8", calibration)
    return work / "RN50_int8.onnx"


def local_row(model: Path, photos: Path, batch_size: int) -> dict:
    from taidpt.serve.predictor import Predictor

    paths = sorted(str(p) for p in photos.iterdir())
    t0 = time.perf_counter()
    with Predictor.from_onnx(model, providers=PROVIDERS, batch_size=batch_size) as predictor:
        t1 = time.perf_counter()
        predictor.score(paths[:1])
        t2 = time.perf_counter()
        predictor.score(paths[:len(paths) // 2])
        t3 = time.perf_counter()
        predictor.score(paths)
        t4 = time.perf_counter()
    return {"start": t1 - t0, "one": t2 - t1, "half": t3 - t2, "job": t4 - t3, "n": len(paths)}


class RayCluster:
    """A ``ray.cluster_utils.Cluster`` on this machine: one node with both cores, or a head and a worker."""

    def __init__(self, nodes: int, warm_up: tuple[Path, str, int, Path]) -> None:
        import ray
        from ray.cluster_utils import Cluster

        t0 = time.perf_counter()
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2 if nodes == 1 else 1,
                                                                     "include_dashboard": False})
        for _ in range(nodes - 1):
            self.cluster.add_node(num_cpus=1)
        self.cluster.wait_for_nodes()
        ray.init(address=self.cluster.address, logging_level="warning")
        try:  # Ray Data's memory hints on every job: the worker's whole footprint, not ours to act on here
            ray.data.DataContext.get_current().issue_detectors_config.detectors = []
        except AttributeError:
            pass
        self.job(warm_up[0], [warm_up[1]], warm_up[2], warm_up[3] / "ray_warm")
        self.start = time.perf_counter() - t0

        @ray.remote(num_cpus=0)
        def noop() -> None:
            return None

        ray.get([noop.remote() for _ in range(5)])  # workers up
        t0 = time.perf_counter()
        for _ in range(50):
            ray.get(noop.remote())
        self.task_ms = 1000 * (time.perf_counter() - t0) / 50

    def job(self, model: Path, inputs: list[str] | Path, batch_size: int, out: Path) -> tuple[float, int]:
        from taidpt.serve.ray_engine import run_ray_job

        shutil.rmtree(out, ignore_errors=True)
        if isinstance(inputs, list):
            listing = out.with_suffix(".txt")
            listing.write_text("\n".join(inputs) + "\n")
            inputs = listing
        t0 = time.perf_counter()
        n = run_ray_job(str(inputs), str(model), out, classes=None, threshold=None, top_k=None, shard_size=64,
                        batch_size=batch_size, actors=1, address=self.cluster.address, providers=PROVIDERS,
                        fast_decode=False, progress=False)
        return time.perf_counter() - t0, n

    def close(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


def ray_row(cluster: RayCluster, model: Path, photos: Path, batch_size: int, work: Path) -> dict:
    paths = sorted(str(p) for p in photos.iterdir())
    one, _ = cluster.job(model, paths[:1], batch_size, work / "ray_one")
    half, _ = cluster.job(model, paths[:len(paths) // 2], batch_size, work / "ray_half")
    job, n = cluster.job(model, photos, batch_size, work / "ray_all")
    return {"start": cluster.start, "task_ms": cluster.task_ms, "one": one, "half": half, "job": job, "n": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64, help="640x480 JPEGs (default 64)")
    ap.add_argument("--photos-12mp", type=int, default=16, help="4000x3000 JPEGs (default 16)")
    ap.add_argument("--demo-model", default="", help="ONNX export of the offline demo's TaI-DPT run")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--engines", default="local,ray1,ray2", help="which of local, ray1, ray2 to run")
    args = ap.parse_args()
    engines = args.engines.split(",")
    work = Path(tempfile.mkdtemp(prefix="taidpt-batch-bench-"))
    began = time.perf_counter()
    try:
        sets = {"640x480": work / "vga", "4000x3000": work / "12mp"}
        write_photos(sets["640x480"], args.images)
        write_camera_photos(sets["4000x3000"], args.photos_12mp)
        demo = (Path(args.demo_model), "demo DemoRN 64 px (trained), fp32") if args.demo_model else (
            export_model("TinyRN", 64, work / "TinyRN.onnx"), "TinyRN 64 px (random weights, demo stand-in), fp32")
        t0 = time.perf_counter()
        rn50 = int8_rn50(work, sets["640x480"])
        int8_s = time.perf_counter() - t0
        models = [demo, (rn50, "RN50 224 px (random weights), int8")]

        results: dict[tuple[str, str, str], dict] = {}
        if "local" in engines:
            for model, name in models:
                for size, photos in sets.items():
                    results[(name, size, "local")] = local_row(model, photos, args.batch_size)
        for nodes in (1, 2):
            if f"ray{nodes}" not in engines:
                continue
            first = str(sorted(sets["640x480"].iterdir())[0])
            cluster = RayCluster(nodes, (models[0][0], first, args.batch_size, work))
            try:
                for model, name in models:
                    for size, photos in sets.items():
                        results[(name, size, f"ray{nodes}")] = ray_row(cluster, model, photos, args.batch_size, work)
            finally:
                cluster.close()

        print(f"{datetime.date.today()} {cpu_name()} ({cpu_features()}), {platform.system()}, "
              f"Python {platform.python_version()}; onnxruntime CPU, batch {args.batch_size}, one scoring actor "
              f"per Ray job; RN50 int8 reduction {int8_s:.0f} s; whole run {time.perf_counter() - began:.0f} s")
        print("command: python bench/batch_inference.py " + " ".join(sys.argv[1:]) + "\n")
        label = {"local": "local (Predictor.score)", "ray1": "Ray, 1 node", "ray2": "Ray, 2 nodes on this machine"}
        print("| model | JPEGs | engine | start s | Ray task ms | 1-image job s | job s | img/s | marginal img/s |\n"
              "|---|---|---|---:|---:|---:|---:|---:|---:|")
        for (name, size, engine), r in results.items():
            half = r["n"] // 2
            net = f"{(r['n'] - half) / (r['job'] - r['half']):.1f}" if r["job"] > 1.1 * r["half"] else "-"
            task = f"{r['task_ms']:.1f}" if "task_ms" in r else "-"
            print(f"| {name} | {r['n']} x {size} | {label[engine]} | {r['start']:.1f} | {task} | {r['one']:.2f} | "
                  f"{r['job']:.1f} | {r['n'] / r['job']:.1f} | {net} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
