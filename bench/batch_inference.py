#!/usr/bin/env python
"""Batch inference throughput: the local engine (Predictor.score) vs the Ray Data engine, one node and two.

    python bench/batch_inference.py [--images 192] [--backbones TinyRN:64,RN50:224] [--batch-size 16]

Synthetic 640x480 JPEGs (bench/scale_speed.py's), a random-weight export of each backbone with the 80 COCO
classes; every engine scores the same folder on the CPU provider. The Ray rows start a fresh Ray each
(start-up excluded: the time is the run_ray_job call on a running cluster). Prints a Markdown table.
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

from machine import cpu_name  # noqa: E402
from scale_speed import export_model, write_photos  # noqa: E402


def local_rate(model: Path, photos: Path, batch_size: int) -> float:
    from taidpt.serve.predictor import Predictor

    paths = sorted(str(p) for p in photos.iterdir())
    with Predictor.from_onnx(model, providers=["CPUExecutionProvider"], batch_size=batch_size) as predictor:
        t0 = time.perf_counter()
        predictor.score(paths)
        return len(paths) / (time.perf_counter() - t0)


def ray_rate(model: Path, photos: Path, batch_size: int, work: Path, nodes: int) -> float:
    import ray
    from ray.cluster_utils import Cluster

    from taidpt.serve.ray_engine import run_ray_job

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2 if nodes == 1 else 1,
                                                            "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    out = work / f"ray{nodes}.parquet"
    shutil.rmtree(out, ignore_errors=True)
    try:
        ray.init(address=cluster.address, logging_level="warning")
        t0 = time.perf_counter()
        n = run_ray_job(str(photos), str(model), out, classes=None, threshold=None, top_k=None, shard_size=64,
                        batch_size=batch_size, actors=1, address=cluster.address, providers=["CPUExecutionProvider"],
                        fast_decode=False, progress=False)
        return n / (time.perf_counter() - t0)
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--backbones", default="TinyRN:64,RN50:224", help="BACKBONE:SIZE,... to export and time")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="taidpt-batch-bench-"))
    try:
        photos = work / "photos"
        write_photos(photos, args.images)
        print(f"{datetime.date.today()} {cpu_name()}, {platform.system()}, Python {platform.python_version()}; "
              f"{args.images} 640x480 JPEGs, batch {args.batch_size}, onnxruntime CPU, 1 scoring actor per run")
        print("| model | local (Predictor.score) | Ray, 1 node | Ray, 2 nodes on this machine |\n|---|---:|---:|---:|")
        for spec in args.backbones.split(","):
            backbone, size = spec.split(":")
            model = export_model(backbone, int(size), work / f"{backbone}.onnx")
            rates = [local_rate(model, photos, args.batch_size)] + [
                ray_rate(model, photos, args.batch_size, work, nodes) for nodes in (1, 2)]
            print(f"| {backbone}, {size} px | " + " | ".join(f"{r:.1f} img/s" for r in rates) + " |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
