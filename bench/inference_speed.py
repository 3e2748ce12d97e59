#!/usr/bin/env python
"""Inference speed of the fused image scorer: PyTorch eager vs onnxruntime (and CUDA/TensorRT when present).

    python bench/inference_speed.py [--backbone RN50] [--quick] [--threads N] [--image-size 224]

One run builds a TaI-DPT scorer of the real architecture with random weights (speed does not depend
on the weights) and the 80 COCO classes, exports it with :mod:`taidpt.export.tracing`, and times
every engine available here on the same preprocessed batches at batch 1 and 16:

* ``pytorch-eager`` (CPU, and CUDA when torch sees a GPU): ``ImageScorer`` under ``inference_mode``;
* ``onnxruntime-cpu`` (and the CUDA / TensorRT execution providers when installed);
* ``onnxruntime-cpu-fp16`` with ``--fp16`` (the half-precision export on the CPU provider).

Engines are timed in rounds (each round runs a block of calls of every engine, in rotating order)
so that load from other processes on a shared machine spreads over all of them alike; onnxruntime's
idle threads do not spin, so they do not slow the engine timed after them. Reported: images/s
(batch / mean latency) and p50/p95 latency per call. The last line is
``onnxruntime speed-up at batch 1: X.Yx`` (PyTorch CPU p50 / onnxruntime CPU p50).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def build(backbone: str, image_size: int, threads: int, out_dir: Path, fp16: bool):
    """The scorer, its ONNX export (and fp16 variant) and the parity of the fp32 export at batch 1."""
    import torch

    from taidpt.export.precision import convert_to_fp16
    from taidpt.export.tracing import export_scorer
    from taidpt.serve.metadata import ModelMetadata
    from taidpt import __version__
    from taidpt.captions.classes import load_class_list
    from taidpt.clip.loader import load_clip
    from taidpt.networks.model import TaIDPTModel
    from taidpt.images.preprocess import CLIP_MEAN, CLIP_STD

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    classes = load_class_list("coco2014").names
    clip, info = load_clip(backbone, "")
    with torch.no_grad():
        scorer = TaIDPTModel(clip, classes).eval().image_scorer().eval()
    meta = ModelMetadata(classnames=classes, image_size=(image_size, image_size), mean=CLIP_MEAN, std=CLIP_STD,
                         interpolation="bicubic", merge_rate=0.5, backbone=backbone, trainer="TaIDPT",
                         weights="random", taidpt_version=__version__)
    x = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        scorer(x)  # fills the positional-embedding cache at this size
    path = export_scorer(scorer, out_dir / f"{backbone}.onnx", meta)
    paths = {"fp32": path}
    if fp16:
        paths["fp16"] = out_dir / f"{backbone}.fp16.onnx"
        convert_to_fp16(path, paths["fp16"])
    return scorer, paths, len(classes)


def make_engines(scorer, paths: dict[str, Path], threads: int, with_fp16: bool) -> dict[str, Callable[[np.ndarray], object]]:
    """name -> callable(batch ndarray) for every engine available on this machine."""
    import onnxruntime as ort
    import torch

    engines = {}

    def torch_cpu(x: np.ndarray):
        with torch.inference_mode():
            return scorer(torch.from_numpy(x))

    engines["pytorch-eager-cpu"] = torch_cpu
    if torch.cuda.is_available():
        gpu = scorer.to("cuda")

        def torch_cuda(x: np.ndarray):
            with torch.inference_mode():
                out = gpu(torch.from_numpy(x).to("cuda", non_blocking=True))
                torch.cuda.synchronize()
                return out

        engines["pytorch-eager-cuda"] = torch_cuda

    def session(path: Path, provider: str):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # Idle worker threads must not spin and steal the cores from the engine timed next.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        s = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        return lambda x: s.run(None, {"images": x})

    available = ort.get_available_providers()
    engines["onnxruntime-cpu"] = session(paths["fp32"], "CPUExecutionProvider")
    if with_fp16:
        engines["onnxruntime-cpu-fp16"] = session(paths["fp16"], "CPUExecutionProvider")
    if "CUDAExecutionProvider" in available:
        engines["onnxruntime-cuda"] = session(paths["fp32"], "CUDAExecutionProvider")
    if "TensorrtExecutionProvider" in available:
        engines["onnxruntime-tensorrt"] = session(paths["fp16" if with_fp16 else "fp32"], "TensorrtExecutionProvider")
    return engines


def time_engines(engines: dict, batch: int, image_size: int, warmup: int, iters: int, rounds: int,
                 seed: int = 0) -> dict:
    """Per-engine latencies (seconds) of ``iters`` calls on one fixed batch.

    The calls are split into ``rounds`` blocks; each round runs every engine's block back to back,
    in rotating order, so slow drifts in machine load reach all engines alike while no engine's
    idle threads compete with another's measurement.
    """
    x = np.random.default_rng(seed).standard_normal((batch, 3, image_size, image_size)).astype(np.float32)
    names = list(engines)
    for name in names:
        for _ in range(warmup):
            engines[name](x)
    lat = {n: [] for n in names}
    per_round = [len(r) for r in np.array_split(np.arange(iters), max(1, min(rounds, iters)))]
    for r, count in enumerate(per_round):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            engines[name](x)  # one untimed call after switching engines
            for _ in range(count):
                t0 = time.perf_counter()
                engines[name](x)
                lat[name].append(time.perf_counter() - t0)
    return lat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Images/s and latency: PyTorch eager vs onnxruntime (fused scorer).")
    p.add_argument("--backbone", default="RN50", help="CLIP architecture (random weights), e.g. RN50, RN101, ViT-B-16")
    p.add_argument("--quick", action="store_true", help="fewer iterations (< 5 min on 2 CPU cores)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else (os.cpu_count() or 1), help="threads for torch and onnxruntime alike")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-sizes", default="1,16")
    p.add_argument("--fp16", action="store_true", help="also time the fp16 export on the CPU provider")
    p.add_argument("--json", default="", help="also write the raw numbers to this file")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    batches = [int(b) for b in args.batch_sizes.split(",")]
    # batch -> (warm-up calls, timed calls, rounds)
    plan = {1: (2, 12, 3), 16: (1, 3, 3)} if args.quick else {1: (5, 60, 5), 16: (2, 12, 4)}

    import onnxruntime as ort
    import torch

    t_start = time.time()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory(prefix="taidpt-bench-") as tmp:
        t0 = time.time()
        scorer, paths, n_cls = build(args.backbone, args.image_size, args.threads, Path(tmp), args.fp16)
        print(f"built and exported {args.backbone} in {time.time() - t0:.1f} s", file=sys.stderr)
        engines = make_engines(scorer, paths, args.threads, args.fp16)
        results = {}
        for b in batches:
            warmup, iters, rounds = plan.get(b, plan[16] if b > 1 else plan[1])
            t0 = time.time()
            lat = time_engines(engines, b, args.image_size, warmup, iters, rounds)
            print(f"batch {b}: {iters} timed calls per engine in {time.time() - t0:.1f} s", file=sys.stderr)
            for name, values in lat.items():
                v = np.asarray(values)
                results[(name, b)] = {"images_per_s": b / v.mean(), "p50_ms": 1e3 * np.percentile(v, 50),
                                      "p95_ms": 1e3 * np.percentile(v, 95), "calls": len(v)}

    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"\n### Inference speed: {args.backbone}, {args.image_size}x{args.image_size} px, {n_cls} classes "
          f"(random weights, fused ImageScorer)\n")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {args.threads} threads for every engine; "
          f"{platform.system()} {platform.release()}; Python {platform.python_version()}, torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}; {now}{'; quick run' if args.quick else ''}. 1-min load average "
          f"{load_start:.1f} at start, {os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan'):.1f} "
          f"at end (above the thread count, other processes were competing for the cores).\n")
    print("| engine | batch | images/s | p50 latency (ms) | p95 latency (ms) | timed calls |")
    print("|---|---:|---:|---:|---:|---:|")
    for (name, b), r in results.items():
        print(f"| {name} | {b} | {r['images_per_s']:.2f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['calls']} |")
    print(f"\n(total {time.time() - t_start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{n}@{b}": r for (n, b), r in results.items()}, indent=2))
    base, fast = results.get(("pytorch-eager-cpu", 1)), results.get(("onnxruntime-cpu", 1))
    speedup = base["p50_ms"] / fast["p50_ms"] if base and fast else float("nan")
    print(f"onnxruntime speed-up at batch 1: {speedup:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
