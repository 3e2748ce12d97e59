#!/usr/bin/env python
"""Scaling out: training throughput for 1 vs 2 processes, and batch-inference images/s vs decoding workers.

    python bench/scale_speed.py [--quick] [--backbone RN50] [--steps 5] [--batch 512]

Training (TaI-DPT, random CLIP weights, the 80 COCO classes, a global batch of 512 synthetic
captions with cached features; timing does not depend on the values): each configuration runs in
its own process group, side by side on this machine:

* ``1 x 1``: one process, one torch thread (the plain core step);
* ``1 x 2``: one process, two torch threads;
* ``2 x 1``: ``torchrun --nproc_per_node 2`` over Gloo, one thread each (the distributed step:
  captions and class prompts split across the processes).

On a 2-core machine ``2 x 1`` against ``1 x 2`` is the fair comparison (the same cores).

Batch inference (:mod:`taidpt.serve.batch_infer`'s pipeline on 640x480 JPEGs, onnxruntime on the CPU with one
intra-op thread): images/s with 1, 2 and 4 decoding threads, for a small model (decoding-bound)
and, without ``--quick``, RN50 at 224 px (model-bound).

The output is a markdown table headed by the machine and the date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from machine import cpu_name  # noqa: E402 - bench/ is on the path from here on

TRAIN_CONFIGS = (("1 x 1", 1, 1), ("1 x 2", 1, 2), ("2 x 1", 2, 1))


# ----------------------------------------------------------------------------- training (child)
def train_child(backbone: str, batch: int, steps: int, distributed: bool) -> dict | None:
    """Time ``steps`` training steps (after one warm-up) in this process / process group."""
    import numpy as np
    import torch

    from taidpt.captions.features import CaptionFeatureStore
    from taidpt.captions.classes import load_class_list
    from taidpt.clip.loader import load_clip
    from taidpt.networks.model import TaIDPTModel
    from taidpt.clip.text_encoder import eot_positions
    from taidpt.engine.caption_training import CaptionBatchEncoder, train_step
    from train_speed import synthetic_captions

    ctx = None
    if distributed:
        from taidpt.engine.distributed import init_process_group
        from taidpt.engine.distributed_runner import sharded_train_step

        ctx = init_process_group(use_cuda=False)
    torch.manual_seed(0)
    classes = list(load_class_list("coco2014").names)
    clip, _ = load_clip(backbone, "")
    model = TaIDPTModel(clip, classes)
    texts = synthetic_captions(classes, batch)
    lengths = (eot_positions(model.text.tokenize(texts)) + 1).numpy()
    dim = int(model.text.text_projection.shape[1])
    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        x = rng.normal(size=(n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    store = CaptionFeatureStore(unit(batch), unit(int(offsets[-1])), offsets)
    encoder = CaptionBatchEncoder(model, torch.zeros(batch, 1, dtype=torch.long), store, "cpu")
    labels = torch.tensor([[float(c in t) for c in classes] for t in texts])
    optimizer = torch.optim.SGD(model.prompt_learner.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    batch_rows = {"index": torch.arange(batch), "label": labels}

    def step() -> None:
        if ctx is None:
            train_step(model, encoder, batch_rows, optimizer, "double_ranking")
        else:
            sharded_train_step(model, encoder, batch_rows, optimizer, "double_ranking", ctx)

    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    if ctx is not None:
        from taidpt.engine.distributed import destroy_process_group

        destroy_process_group()
        if ctx.rank != 0:
            return None
    return {"step_s": float(np.median(times)), "classes": len(classes),
            "mean_tokens": float(lengths.mean()), "steps": steps}


def run_training(args: argparse.Namespace, backbone: str) -> list[dict]:
    rows = []
    for label, procs, threads in TRAIN_CONFIGS:
        print(f"[train {backbone}] {label} ...", file=sys.stderr, flush=True)
        child = [__file__, "--child", "--backbone", backbone, "--batch", str(args.batch), "--steps", str(args.steps)]
        if procs > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *child,
                   "--distributed"]
        else:
            cmd = [sys.executable, *child]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"training {label} failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-2500:]}")
        result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
        rows.append({"config": label, "processes": procs, "threads": threads, **result})
    return rows


# ----------------------------------------------------------------------------- batch inference
def write_photos(folder: Path, n: int) -> None:
    """``n`` 640x480 JPEGs with smooth gradients and noise (quality 90)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    for i in range(n):
        base = np.stack([(xx * (i % 7 + 1)) % 256, (yy * (i % 5 + 1)) % 256, (xx + yy + 13 * i) % 256], -1)
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"photo{i:05d}.jpg", quality=90)


def export_model(backbone: str, size: int, path: Path) -> Path:
    import torch

    from taidpt.export.tracing import export_scorer
    from taidpt.serve.metadata import ModelMetadata
    from taidpt.captions.classes import load_class_list
    from taidpt.clip.loader import load_clip
    from taidpt.networks.model import TaIDPTModel
    from taidpt.images.preprocess import CLIP_MEAN, CLIP_STD

    torch.manual_seed(0)
    classes = list(load_class_list("coco2014").names)
    clip, _ = load_clip(backbone, "")
    scorer = TaIDPTModel(clip, classes).eval().image_scorer().eval()
    meta = ModelMetadata(classnames=tuple(classes), image_size=(size, size), mean=CLIP_MEAN, std=CLIP_STD,
                         interpolation="bicubic", merge_rate=0.5, backbone=backbone, trainer="TaIDPT",
                         weights="random", taidpt_version="bench")
    return export_scorer(scorer, path, meta)


def run_inference(model_path: Path, photos: Path, workers: int, batch_size: int, out: Path) -> dict:
    from taidpt.serve.decision import for_model
    from taidpt.serve.inputs import walk_images
    from taidpt.serve.pipeline import run_batches
    from taidpt.serve.result_log import ResultLog
    from taidpt.serve.runtime import open_model

    model = open_model(model_path, ["CPUExecutionProvider"], threads=1, max_batch=batch_size)
    out.unlink(missing_ok=True)
    with ResultLog(out, model.metadata.classnames) as log:
        stats = run_batches(model, walk_images(photos), log, batch_size=batch_size, workers=workers,
                            prefetch=2 * workers, decision=for_model(model.metadata, threshold=0.0), progress=False)
    model.close()
    return {"images": stats.scored, "images_per_s": stats.rate}


# ----------------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description="Training 1 vs 2 processes, batch inference vs decoding workers.")
    p.add_argument("--backbone", default="RN50", help="CLIP architecture for the training rows (default RN50)")
    p.add_argument("--batch", type=int, default=512, help="global caption batch (default 512, the reference's)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per configuration")
    p.add_argument("--quick", action="store_true", help="fewer steps and images, small inference model only")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        result = train_child(args.backbone, args.batch, args.steps, args.distributed)
        if result is not None:
            print(json.dumps(result))
        return 0
    if args.quick:
        args.steps = min(args.steps, 3)
    load_before = os.getloadavg()[0]

    train_rows = run_training(args, args.backbone)
    infer_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_photos(work / "photos", 96 if args.quick else 192)
        models = [("TinyRN", 64, 96 if args.quick else 192)] + ([] if args.quick else [("RN50", 224, 48)])
        for backbone, size, n in models:
            print(f"[infer {backbone}] exporting ...", file=sys.stderr, flush=True)
            model_path = export_model(backbone, size, work / f"{backbone}.onnx")
            subset = work / f"photos_{n}"
            if not subset.exists():
                subset.mkdir()
                for f in sorted((work / "photos").iterdir())[:n]:
                    (subset / f.name).symlink_to(f)
            for workers in (1, 2, 4):
                print(f"[infer {backbone}] {workers} decoding thread(s) ...", file=sys.stderr, flush=True)
                infer_rows.append({"model": f"{backbone} {size} px", "workers": workers,
                                   **run_inference(model_path, subset, workers, 16, work / "out.jsonl")})

    print(f"# {cpu_name()}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}; 1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    base = train_rows[0]["step_s"]
    print(f"\nTraining step, {args.backbone} (random weights), {train_rows[0]['classes']} classes, global batch "
          f"{args.batch} captions (cached features, {train_rows[0]['mean_tokens']:.1f} tokens on average), median of "
          f"{train_rows[0]['steps']} steps:\n")
    print("| processes x threads | step (s) | captions/s | speed-up vs 1 x 1 |")
    print("|---|---:|---:|---:|")
    for r in train_rows:
        print(f"| {r['config']} | {r['step_s']:.3f} | {args.batch / r['step_s']:.0f} | {base / r['step_s']:.2f}x |")
    print("\nBatch inference (taidpt.serve.batch_infer pipeline, 640x480 JPEGs, batch 16, onnxruntime CPU, 1 intra-op "
          "thread):\n")
    print("| model | decoding threads | images | images/s |")
    print("|---|---:|---:|---:|")
    for r in infer_rows:
        print(f"| {r['model']} | {r['workers']} | {r['images']} | {r['images_per_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
