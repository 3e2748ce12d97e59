#!/usr/bin/env python
"""Inference speed of the fused image scorer: PyTorch (eager and optimised) vs onnxruntime fp32 / fp16 / int8.

    python bench/inference_speed.py [--backbone RN50] [--quick] [--threads 1,2] [--image-size 224]
                                    [--wait-policy passive|active] [--batch-sizes 1,16]

One run builds a TaI-DPT scorer of the real architecture with random weights (speed does not depend
on the weights) and the 80 COCO classes, exports it with :mod:`taidpt.export.tracing`, makes its fp16
and int8 variants the way ``python -m export.onnx --precision`` does (int8 calibrated on synthetic
photo-like images) and gates each against fp32 with that command's agreement gate (relative to the
logits' range, on other synthetic images). Then, for each thread count, it times on the same
preprocessed batches at batch 1 and 16:

* ``pytorch-eager``: ``ImageScorer`` under ``inference_mode``;
* ``pytorch-frozen``: the scorer traced, ``torch.jit.freeze``-d and ``optimize_for_inference``-d;
* ``onnxruntime-fp32`` / ``-fp16`` / ``-int8`` on the CPU provider (and the CUDA / TensorRT
  providers and PyTorch CUDA when present).

Fairness: both runtimes get the same thread count and the same wait policy, set explicitly and
printed: ``OMP_WAIT_POLICY`` for PyTorch's OpenMP threads (set before torch is imported) and
``session.intra_op.allow_spinning`` for onnxruntime's (``passive``: idle threads sleep, the default
here since a shared machine punishes spinning; ``active``: they spin). Engines are timed in rounds
(each round runs a block of calls of every engine, in rotating order) so that load from other
processes spreads over all of them alike. Reported: images/s (batch / mean latency), p50/p95
latency per call, and for onnxruntime rows the gate. The last two lines give, at batch 1 with the
most threads, the speed-up of the fastest onnxruntime precision that passed its gate against the
optimised PyTorch, then against eager PyTorch: ``onnxruntime speed-up at batch 1: X.Yx``.
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
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import cpu_features, cpu_name  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8")


def build(backbone: str, image_size: int, out_dir: Path, precisions: list[str], calibration: int) -> dict[str, Any]:
    """The scorer, its exports per precision with their file sizes, and each reduced precision's gate."""
    import torch

    from taidpt import __version__
    from taidpt.captions.classes import load_class_list
    from taidpt.clip.loader import load_clip
    from taidpt.export.gate import agreement_gate
    from taidpt.export.parity import parity_inputs
    from taidpt.export.reduced import write_reduced
    from taidpt.export.tracing import export_scorer
    from taidpt.images.preprocess import CLIP_MEAN, CLIP_STD
    from taidpt.networks.model import TaIDPTModel
    from taidpt.serve.metadata import ModelMetadata

    torch.manual_seed(0)
    classes = load_class_list("coco2014").names
    clip, _ = load_clip(backbone, "")
    with torch.no_grad():
        scorer = TaIDPTModel(clip, classes).eval().image_scorer().eval()
    meta = ModelMetadata(classnames=classes, image_size=(image_size, image_size), mean=CLIP_MEAN, std=CLIP_STD,
                         interpolation="bicubic", merge_rate=0.5, backbone=backbone, trainer="TaIDPT",
                         weights="random", taidpt_version=__version__)
    x = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        scorer(x)  # fills the positional-embedding cache at this size
    paths = {"fp32": export_scorer(scorer, out_dir / f"{backbone}.onnx", meta)}
    gates = {}
    gate_images = parity_inputs(meta, 32, seed=2)
    for p in precisions:
        if p == "fp32":
            continue
        calib = parity_inputs(meta, calibration, seed=1) if p == "int8" else None
        paths[p] = out_dir / f"{backbone}.{p}.onnx"
        write_reduced(paths["fp32"], paths[p], p, calib)
        gates[p] = agreement_gate(paths["fp32"], paths[p], gate_images, p)
    sizes = {p: path.stat().st_size / 1e6 for p, path in paths.items()}
    return {"scorer": scorer, "paths": paths, "gates": gates, "sizes": sizes, "n_classes": len(classes)}


def frozen_scorer(scorer: Any, image_size: int) -> Any:
    """The scorer traced at batch 1 (the batch axis stays symbolic), frozen and optimised for inference."""
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        traced = torch.jit.trace(scorer, torch.zeros(1, 3, image_size, image_size), check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))


def make_engines(scorer: Any, frozen: Any, paths: dict[str, Path], threads: int, spin: bool) -> dict[str, Callable]:
    """name -> callable(batch ndarray) for every engine available on this machine."""
    import onnxruntime as ort
    import torch

    def torch_engine(model: Any, device: str = "cpu") -> Callable:
        def call(x: np.ndarray) -> Any:
            with torch.inference_mode():
                out = model(torch.from_numpy(x).to(device))
                if device != "cpu":
                    torch.cuda.synchronize()
                return out
        return call

    def session(path: Path, provider: str) -> Callable:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        s = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        return lambda x: s.run(None, {"images": x})

    engines = {"pytorch-eager": torch_engine(scorer), "pytorch-frozen": torch_engine(frozen)}
    for p, path in paths.items():
        engines[f"onnxruntime-{p}"] = session(path, "CPUExecutionProvider")
    available = ort.get_available_providers()
    if torch.cuda.is_available():
        engines["pytorch-eager-cuda"] = torch_engine(scorer.to("cuda"), "cuda")
    if "CUDAExecutionProvider" in available:
        engines["onnxruntime-cuda-fp32"] = session(paths["fp32"], "CUDAExecutionProvider")
    if "TensorrtExecutionProvider" in available:
        engines["onnxruntime-tensorrt"] = session(paths.get("fp16", paths["fp32"]), "TensorrtExecutionProvider")
    return engines


def time_engines(engines: dict, batch: int, image_size: int, warmup: int, iters: int, rounds: int,
                 seed: int = 0) -> dict:
    """Per-engine latencies (seconds) of ``iters`` calls on one fixed batch.

    The calls are split into ``rounds`` blocks; each round runs every engine's block back to back,
    in rotating order, so slow drifts in machine load reach all engines alike.
    """
    x = np.random.default_rng(seed).standard_normal((batch, 3, image_size, image_size)).astype(np.float32)
    names = list(engines)
    for name in names:
        for _ in range(warmup):
            engines[name](x)
    lat: dict[str, list[float]] = {n: [] for n in names}
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


def gate_cell(name: str, gates: dict) -> str:
    """The gate column of a row: the reduced precision's agreement with fp32, or a dash."""
    p = name.rsplit("-", 1)[-1]
    if name == "onnxruntime-fp32":
        return "reference"
    if name == f"onnxruntime-{p}" and p in gates:
        g = gates[p]
        return f"{'pass' if g.ok else 'FAIL'}: {g.worst_relative:.1%} of range, top-{g.k} {g.top_k:.0%}"
    return "-"


def speedups(results: dict, gates: dict, threads: int) -> tuple[str, float, float]:
    """Best gated onnxruntime precision at batch 1 and its speed-ups against frozen and eager PyTorch."""
    def p50(name: str) -> float:
        return results.get((name, threads, 1), {}).get("p50_ms", float("nan"))

    passing = [p for p in PRECISIONS if (p == "fp32" or (p in gates and gates[p].ok)) and
               (f"onnxruntime-{p}", threads, 1) in results]
    best = min(passing, key=lambda p: p50(f"onnxruntime-{p}")) if passing else "fp32"
    fast = p50(f"onnxruntime-{best}")
    return best, p50("pytorch-frozen") / fast, p50("pytorch-eager") / fast


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Images/s and latency: PyTorch eager/optimised vs onnxruntime fp32/fp16/int8.")
    p.add_argument("--backbone", default="RN50", help="CLIP architecture (random weights), e.g. RN50, RN101, ViT-B-16")
    p.add_argument("--quick", action="store_true", help="fewer iterations (< 5 min on 2 CPU cores)")
    p.add_argument("--threads", default="1,2", help="thread counts, one set of rows each (same for every engine)")
    p.add_argument("--wait-policy", choices=("passive", "active"), default="passive",
                   help="idle threads sleep (passive) or spin (active), on both sides alike")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-sizes", default="1,16")
    p.add_argument("--precisions", default="fp32,fp16,int8", help="onnxruntime precisions to time")
    p.add_argument("--json", default="", help="also write the raw numbers to this file")
    args = p.parse_args(argv)
    os.environ["OMP_WAIT_POLICY"] = args.wait_policy.upper()  # before torch starts its OpenMP pool
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    batches = [int(b) for b in args.batch_sizes.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    precisions = [q for q in args.precisions.split(",") if q]
    if "fp32" not in precisions or set(precisions) - set(PRECISIONS):
        p.error(f"--precisions must include fp32 and name only {', '.join(PRECISIONS)}")
    # batch -> (warm-up calls, timed calls, rounds)
    plan = {1: (2, 12, 3), 16: (0, 2, 1)} if args.quick else {1: (5, 60, 5), 16: (2, 12, 4)}

    import onnxruntime as ort
    import torch

    t_start = time.time()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results: dict[tuple[str, int, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="taidpt-bench-") as tmp:
        t0 = time.time()
        torch.set_num_threads(max(thread_counts))
        built = build(args.backbone, args.image_size, Path(tmp), precisions, 16 if args.quick else 64)
        frozen = frozen_scorer(built["scorer"], args.image_size)
        print(f"built, exported, reduced and gated {args.backbone} in {time.time() - t0:.1f} s", file=sys.stderr)
        for threads in thread_counts:
            torch.set_num_threads(threads)
            engines = make_engines(built["scorer"], frozen, built["paths"], threads, args.wait_policy == "active")
            for b in batches:
                warmup, iters, rounds = plan.get(b, plan[16] if b > 1 else plan[1])
                t0 = time.time()
                lat = time_engines(engines, b, args.image_size, warmup, iters, rounds)
                print(f"{threads} threads, batch {b}: {iters} timed calls per engine in {time.time() - t0:.1f} s",
                      file=sys.stderr)
                for name, values in lat.items():
                    v = np.asarray(values)
                    results[(name, threads, b)] = {"images_per_s": b / v.mean(), "p50_ms": 1e3 * np.percentile(v, 50),
                                                   "p95_ms": 1e3 * np.percentile(v, 95), "calls": len(v)}
            del engines

    gates, sizes = built["gates"], built["sizes"]
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n### Inference speed: {args.backbone}, {args.image_size}x{args.image_size} px, {built['n_classes']} classes "
          f"(random weights, fused ImageScorer)\n")
    print(f"Machine: {cpu_name()} ({cpu_features()}), {os.cpu_count()} logical CPUs; {platform.system()} "
          f"{platform.release()}; Python {platform.python_version()}, torch {torch.__version__}, onnxruntime "
          f"{ort.__version__}; {now}{'; quick run' if args.quick else ''}. Wait policy {args.wait_policy} on both "
          f"sides (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, onnxruntime allow_spinning="
          f"{1 if args.wait_policy == 'active' else 0}). 1-min load average {load_start:.1f} at start, "
          f"{load_end:.1f} at end (above the thread count, other processes were competing for the cores).")
    print(f"Command: python bench/inference_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print("File sizes: " + ", ".join(f"{q} {mb:.1f} MB" for q, mb in sizes.items()) + "\n")
    print("| engine | threads | batch | images/s | p50 latency (ms) | p95 latency (ms) | timed calls | gate vs fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for (name, threads, b), r in results.items():
        print(f"| {name} | {threads} | {b} | {r['images_per_s']:.2f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
              f"{r['calls']} | {gate_cell(name, gates)} |")
    print(f"\n(total {time.time() - t_start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{n}@{t}t@{b}": r for (n, t, b), r in results.items()}, indent=2))
    best, vs_frozen, vs_eager = speedups(results, gates, max(thread_counts))
    print(f"onnxruntime {best} speed-up against optimised PyTorch (pytorch-frozen) at batch 1, "
          f"{max(thread_counts)} threads: {vs_frozen:.1f}x")
    print(f"onnxruntime speed-up at batch 1: {vs_eager:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
