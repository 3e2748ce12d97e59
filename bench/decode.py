#!/usr/bin/env python
"""Decoding against scoring: is a camera photo's decode the bottleneck of inference?

    python bench/decode.py [--backbone RN50] [--repeats 5] [--batch 16]

Times, on one core each: decoding + preprocessing one 12-megapixel (4000x3000, quality 90) JPEG to the
model input, exactly (Dassl's transform) and with ``--fast-decode`` (libjpeg draft mode); and scoring
one image with a random-weight ``--backbone`` export in onnxruntime fp32 on the CPU (batch ``--batch``).
Prints a markdown table headed by the machine and the date; results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from machine import cpu_name  # noqa: E402 - bench/ is on the path from here on
from scale_speed import export_model  # noqa: E402


def write_photo(path: Path, width: int = 4000, height: int = 3000) -> Path:
    """A camera-sized JPEG with smooth shapes and sensor-like noise (decode cost depends on the detail)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 255, y / height * 255, 127 + 120 * np.sin(x / 170.0) * np.cos(y / 130.0)], -1)
    noisy = base + rng.normal(0, 6, base.shape).astype(np.float32)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def best_ms(fn, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn``, in milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="RN50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = ap.parse_args()

    from taidpt.serve.predictor import load_image
    from taidpt.serve.runtime import open_model

    with tempfile.TemporaryDirectory() as tmp:
        photo = write_photo(Path(tmp) / "photo.jpg")
        model = open_model(export_model(args.backbone, args.size, Path(tmp) / "model.onnx"), ["CPUExecutionProvider"],
                           threads=args.threads, max_batch=args.batch)
        cfg = model.metadata.preprocess_config()
        exact = best_ms(lambda: load_image(photo, cfg), args.repeats)
        fast = best_ms(lambda: load_image(photo, cfg, fast_decode=True), args.repeats)
        a, b = load_image(photo, cfg), load_image(photo, cfg, fast_decode=True)
        batch = np.stack([a] * args.batch)
        score = best_ms(lambda: model.run(batch), args.repeats) / args.batch
        diff = float(np.abs(model.run(a[None])["scores"] - model.run(b[None])["scores"]).max())
        model.close()
    print(f"Machine: {cpu_name()}, {platform.system()} {platform.machine()}; {time.strftime('%Y-%m-%d')}; "
          f"command: python bench/decode.py --backbone {args.backbone} --repeats {args.repeats} --batch {args.batch}\n")
    print(f"| step (one 4000x3000 JPEG, q90, to {args.size} px) | ms/image |\n|---|---:|")
    print(f"| decode + preprocess, exact (default) | {exact:.1f} |")
    print(f"| decode + preprocess, --fast-decode | {fast:.1f} |")
    print(f"| score, {args.backbone} fp32, onnxruntime CPU, {args.threads} thread(s), batch {args.batch} "
          f"| {score:.1f} |")
    print(f"\n--fast-decode: {exact / fast:.1f}x faster; max |logit difference| on this photo {diff:.2g} "
          f"(random weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
