#!/usr/bin/env python
"""Training-step throughput: the reference loop vs taidpt's cached + cut (+ shared-prefix) path.

    python bench/train_speed.py [--backbone RN50] [--quick] [--threads 2]

Side by side, on the same machine and in one invocation (each configuration in a fresh
subprocess, so the peak memory column is its own):

* ``reference``: every step encodes its 512 captions at 77 tokens and all 2 x C class prompts at
  77 tokens (TRAINER.TAIDPT.CAPTION_CACHE False, TRIM_TOKENS False, SHARED_PREFIX False);
* ``cached+cut``: caption features from the cache, prompts cut to their longest real length;
* ``cached+cut+prefix``: the same with the shared SOS + context prefix encoded once.

Weights are random (timing does not depend on them); captions are synthetic COCO-like sentences
over the 80 COCO classes. The one-off cost of building the cache is reported separately (captions/s),
as is evaluation throughput (images/s of the fused scorer). The last line is
``training step speed-up: X.Yx`` (reference vs the fastest path, first backbone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "reference": dict(cache=False, trim=False, prefix=False),
    "cached+cut": dict(cache=True, trim=True, prefix=False),
    "cached+cut+prefix": dict(cache=True, trim=True, prefix=True),
}


def synthetic_captions(classnames: list[str], n: int, seed: int = 0) -> list[str]:
    """COCO-like sentences (10-20 words) mentioning one to three classes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    openers = ["a", "the", "two", "a large", "a small", "an old", "a young", "three", "some"]
    verbs = ["sitting next to", "standing near", "on top of", "in front of", "behind", "walking past",
             "looking at", "parked beside", "lying under", "resting by"]
    tails = ["on a sunny day", "in the middle of a busy street", "inside a bright kitchen", "at the beach",
             "near a wooden table", "in a grassy field", "under a cloudy sky", "", "with people around"]
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 4))
        objs = [classnames[int(i)] for i in rng.choice(len(classnames), size=k, replace=False)]
        words = f"{rng.choice(openers)} {objs[0]}"
        for obj in objs[1:]:
            words += f" {rng.choice(verbs)} a {obj}"
        out.append(f"{words} {rng.choice(tails)}".strip() + ".")
    return out


def measure(backbone: str, config: str, steps: int, batch: int, threads: int, eval_images: int) -> dict:
    """Run one configuration in this process and return its timings."""
    import numpy as np
    import torch

    from taidpt.captions.features import CaptionFeatureStore
    from taidpt.captions.classes import load_class_list
    from taidpt.clip.loader import load_clip
    from taidpt.engine.config import get_cfg_default
    from taidpt.networks.model import TaIDPTModel
    from taidpt.engine.optim import build_optimizer
    from taidpt.engine.caption_training import CaptionBatchEncoder, train_step

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    opts = CONFIGS[config]
    classes = load_class_list("coco2014").names
    clip, info = load_clip(backbone, "")
    model = TaIDPTModel(clip, classes, trim_tokens=opts["trim"], shared_prefix=opts["prefix"])
    texts = synthetic_captions(list(classes), batch * (steps + 1))
    ids = model.text.tokenize(texts)
    labels = torch.from_numpy(np.array([[int(c in t) for c in classes] for t in texts], dtype=np.float32))
    result = {"backbone": backbone, "config": config, "batch": batch, "classes": len(classes),
              "mean_caption_tokens": float((ids.argmax(-1) + 1).float().mean())}
    store = None
    if opts["cache"]:
        t0 = time.perf_counter()
        store = CaptionFeatureStore.build(model, ids, progress=False)
        result["cache_captions_per_s"] = len(texts) / (time.perf_counter() - t0)
    encoder = CaptionBatchEncoder(model, ids, store, "cpu")
    cfg = get_cfg_default()
    cfg.merge_from_list(["OPTIM.NAME", "sgd", "OPTIM.LR", "0.0001"])
    optimizer = build_optimizer(model.prompt_learner.parameters(), cfg.OPTIM)

    def step(i: int) -> None:
        rows = torch.arange(i * batch, (i + 1) * batch)
        train_step(model, encoder, {"index": rows, "label": labels[rows]}, optimizer, "double_ranking")

    step(0)  # warm-up (allocations, first-call overheads)
    times = []
    for i in range(1, steps + 1):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    result["step_s"] = float(np.median(times))
    result["steps_timed"] = len(times)
    result["captions_per_s"] = batch / result["step_s"]
    if eval_images:
        scorer = model.image_scorer().eval()
        size = info.image_size
        images = torch.randn(min(16, eval_images), 3, size, size)
        with torch.no_grad():
            scorer(images[:2])
            t0 = time.perf_counter()
            done = 0
            while done < eval_images:
                scorer(images)
                done += images.shape[0]
        result["eval_images_per_s"] = done / (time.perf_counter() - t0)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_child(args: argparse.Namespace, backbone: str, config: str, steps: int, eval_images: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--backbone", backbone, "--config", config, "--steps", str(steps),
           "--batch", str(args.batch), "--threads", str(args.threads), "--eval-images", str(eval_images)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{backbone}/{config} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description="TaI-DPT training-step throughput, reference vs cached + cut.")
    p.add_argument("--backbone", action="append", help="CLIP architecture (repeatable); default RN50 and TinyRN")
    p.add_argument("--quick", action="store_true", help="fewer timed steps (< 5 min on 2 CPU cores)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=512, help="captions per step (the reference's 512)")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", choices=list(CONFIGS), help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    p.add_argument("--eval-images", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.backbone[0], args.config, args.steps, args.batch, args.threads,
                                 args.eval_images)))
        return 0

    backbones = args.backbone or ["RN50", "TinyRN"]
    rows = []
    for backbone in backbones:
        small = backbone.startswith("Tiny")
        for config in CONFIGS:
            if config == "reference":
                steps = 1 if args.quick and not small else (3 if not small else 5)
            else:
                steps = 3 if args.quick else 10
            eval_images = 32 if config == "cached+cut+prefix" else 0
            print(f"[{backbone}] {config}: {steps} timed step(s) ...", file=sys.stderr, flush=True)
            rows.append(run_child(args, backbone, config, steps, eval_images))

    print(f"# {platform.node() or 'machine'}: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.threads} torch threads, batch {args.batch} captions, {rows[0]['classes']} classes, "
          f"{time.strftime('%Y-%m-%d')}")
    print("| backbone | path | step (s) | captions/s | speed-up | cache build (captions/s) | eval (images/s) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    speedups = {}
    for backbone in backbones:
        ref = next(r for r in rows if r["backbone"] == backbone and r["config"] == "reference")
        for r in (r for r in rows if r["backbone"] == backbone):
            up = ref["step_s"] / r["step_s"]
            speedups.setdefault(backbone, []).append(up)
            cache = f"{r['cache_captions_per_s']:.0f}" if "cache_captions_per_s" in r else "-"
            ev = f"{r['eval_images_per_s']:.1f}" if "eval_images_per_s" in r else "-"
            print(f"| {backbone} | {r['config']} | {r['step_s']:.3f} | {r['captions_per_s']:.0f} | {up:.1f}x | "
                  f"{cache} | {ev} | {r['peak_rss_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"training step speed-up: {max(speedups[backbones[0]]):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
