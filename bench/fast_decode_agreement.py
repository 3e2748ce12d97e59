#!/usr/bin/env python
"""--fast-decode against the exact decode: the mAP and the largest score difference on the offline demo.

    python bench/fast_decode_agreement.py --model demo.onnx --data output/demo/data [--long-side 2000] [--limit 0]

``--model``: an export of the demo's TaI-DPT run (``python -m export.onnx --model-dir
output/demo/runs/taidpt_seed1 --output demo.onnx``); ``--data``: the demo's data folder (VOC layout, its
test split and 14 classes). The demo's test images are 64x64, so JPEG draft mode never engages on them;
the script writes JPEG copies upscaled (Lanczos) to ``--long-side`` px (quality ``--quality``), the size
of a camera photo, where libjpeg decodes at 1/8 scale. Each set is scored through
``Predictor.from_onnx(..., fast_decode=...).score`` (onnxruntime CPU) and its merged mAP computed with
the demo's labels (difficult as negative, as the demo scores). Prints a Markdown table headed by the
machine and the date; results: docs/performance.md, "Decoding against scoring".
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from machine import cpu_name  # noqa: E402 - bench/ is on the path from here on


def upscale(src: str, dst: Path, long_side: int, quality: int) -> str:
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        scale = long_side / max(im.size)
        im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS).save(dst, quality=quality)
    return str(dst)


def score(model: str, paths: list[str], fast: bool, batch_size: int) -> tuple[np.ndarray, float]:
    from taidpt.serve.predictor import Predictor

    with Predictor.from_onnx(model, providers=["CPUExecutionProvider"], batch_size=batch_size,
                             fast_decode=fast) as predictor:
        t0 = time.perf_counter()
        preds, _ = predictor.score(paths)
        seconds = time.perf_counter() - t0
    if preds.skipped or len(preds.scores) != len(paths):
        raise SystemExit(f"{len(preds.skipped)} image(s) not scored: {preds.skipped[:3]}")
    return preds.scores, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="ONNX export of the demo's TaI-DPT run")
    ap.add_argument("--data", required=True, help="the demo's data folder (holds VOCdevkit/)")
    ap.add_argument("--long-side", type=int, default=2000)
    ap.add_argument("--quality", type=int, default=92)
    ap.add_argument("--limit", type=int, default=0, help="score only the first N test images (0: all)")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    from taidpt.evaluation.metrics import mean_ap
    from taidpt.images.readers.voc import read_voc2007
    from taidpt.serve.runtime import open_model

    probe = open_model(args.model, ["CPUExecutionProvider"])
    classes = probe.metadata.classnames
    size = probe.metadata.preprocess_config().out_hw
    probe.close()
    test = read_voc2007(args.data, "test", classnames=classes)
    n = args.limit or len(test.paths)
    paths, targets = test.paths[:n], test.targets[:n]

    with tempfile.TemporaryDirectory(prefix="taidpt-fastdecode-") as tmp, ThreadPoolExecutor(2) as pool:
        big = list(pool.map(lambda i: upscale(paths[i], Path(tmp) / f"{i:05d}.jpg", args.long_side, args.quality),
                            range(n)))
        rows = []
        original, _ = score(args.model, paths, False, args.batch_size)
        rows.append((f"original {Path(paths[0]).suffix} files as the demo wrote them, exact", original, None))
        exact, t_exact = score(args.model, big, False, args.batch_size)
        fast, t_fast = score(args.model, big, True, args.batch_size)
        rows.append((f"{args.long_side} px JPEG copies, exact (default)", exact, t_exact))
        rows.append((f"{args.long_side} px JPEG copies, --fast-decode", fast, t_fast))

    print(f"Machine: {cpu_name()}, {platform.system()} {platform.machine()}; {time.strftime('%Y-%m-%d')}; "
          f"command: python bench/fast_decode_agreement.py --model {Path(args.model).name} --data {args.data} "
          f"--long-side {args.long_side} --quality {args.quality}" + (f" --limit {args.limit}" if args.limit else "")
          + "\n")
    print(f"{n} demo test images, {len(classes)} classes, model input {size[0]}x{size[1]} px, onnxruntime CPU, "
          f"batch {args.batch_size}\n")
    print("| images, decode | merged mAP | wall time (decode + score) |\n|---|---:|---:|")
    for name, scores, seconds in rows:
        print(f"| {name} | {mean_ap(scores, targets):.2f} | "
              + (f"{seconds:.1f} s ({n / seconds:.0f} img/s)" if seconds else "-") + " |")
    diff = np.abs(exact - fast)
    top1 = float((exact.argmax(1) == fast.argmax(1)).mean())
    print(f"\nexact vs --fast-decode on the {args.long_side} px copies: max |merged score difference| "
          f"{diff.max():.3g} (mean {diff.mean():.2g}; merged scores span {exact.min():.2f}..{exact.max():.2f}); "
          f"top-1 class agrees on {100 * top1:.1f}% of images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
