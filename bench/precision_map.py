#!/usr/bin/env python
"""mAP and file size of fp32 / fp16 / int8 exports of a trained run in the offline demo world.

    python bench/precision_map.py [--demo /work/demo_out] [--run taidpt_seed1] [--calibration 256] [--gate 500]

Needs a finished ``python -m taidpt.demo --out DIR`` (its ``runs/`` and ``data/``). Three image sets
of the demo world, all disjoint:

* calibration images (``--calibration`` of them, seed 11 of the demo's held-out image stream),
  written as JPEGs: the int8 activation ranges come from them;
* a labelled gate set (``--gate`` images, seed 12) in the VOC layout: ``export.onnx`` gates every
  reduced file on it (merged mAP may drop by at most 0.5 points from fp32);
* the demo's own test images (seed 2023): the reported mAP, never seen by calibration or gate.

The fp32, fp16 and int8 files are written by ``python -m export.onnx`` itself (subprocesses, as a
user runs them) and scored on the test set by ``python -m export.evaluate``'s code; beside the
default int8 recipe (``tower`` scope, min-max ranges) the alternatives of
:func:`taidpt.export.quantize.convert_to_int8` are measured the same way. For every reduced file the
table also gives what the agreement gate (used when no labelled set is given) measures on the first
32 calibration images: max abs difference over the fp32 logits' range, and top-k agreement. Prints one
markdown table with the machine, date and command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import cpu_features, cpu_name  # noqa: E402

DEMO_YAML = "configs/datasets/demo.yaml"
CALIBRATION_SEED, GATE_SEED = 11, 12


def write_images(root: Path, n: int, seed: int) -> Path:
    """``n`` demo-world images (labelled, VOC layout) under ``root``; returns the JPEG folder."""
    from taidpt.demo import scenes
    from taidpt.demo.voc_writer import write_voc_dataset

    images, labels = scenes.generate_images(n, seed)
    write_voc_dataset(root, images, labels, classnames=scenes.SHAPES, split="test")
    return root / "VOCdevkit" / "VOC2007" / "JPEGImages"


def export(run: Path, out: Path, extra: list[str]) -> str:
    """``python -m export.onnx`` in a subprocess; returns its gate line (or the parity verdict for fp32)."""
    cmd = [sys.executable, "-m", "export.onnx", "--model-dir", str(run), "--output", str(out), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"export failed ({' '.join(cmd)}): {proc.stderr.strip().splitlines()[-1]}")
    gate = [ln for ln in proc.stdout.splitlines() if ln.startswith("gate ")]
    return gate[0] if gate else "fp32 parity vs PyTorch OK"


def test_map(path: Path, cfg) -> dict:
    """export.evaluate's results (merged/global/local mAP, image count) of one file on the demo's test set."""
    from taidpt.export.gate import labelled_map

    return labelled_map(path, cfg, batch_size=250)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="mAP and size of fp32/fp16/int8 exports in the offline demo world.")
    p.add_argument("--demo", default="/work/demo_out", help="output folder of python -m taidpt.demo")
    p.add_argument("--run", default="taidpt_seed1", help="run folder under DEMO/runs")
    p.add_argument("--calibration", type=int, default=256, help="calibration images (int8)")
    p.add_argument("--gate", type=int, default=500, help="images of the labelled gate set")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    demo, run = Path(args.demo), Path(args.demo) / "runs" / args.run
    if not (run / "config.yaml").is_file() or not (demo / "data" / "VOCdevkit").is_dir():
        print(f"error: --demo {demo} / --run {args.run}: expected a finished python -m taidpt.demo output "
              f"(runs/{args.run}/config.yaml and data/VOCdevkit)", file=sys.stderr)
        return 2
    from taidpt.export.evaluate import load_eval_config
    from taidpt.export.quantize import convert_to_int8
    from taidpt.export.gate import agreement_gate
    from taidpt.export.reduced import GATE_IMAGES, image_batch
    from taidpt.serve.infer import collect_images
    from taidpt.serve.metadata import read_onnx_metadata

    t_start = time.time()
    test_cfg = load_eval_config(DEMO_YAML, [], str(demo / "data"), [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="taidpt-precision-") as tmp:
        tmp = Path(tmp)
        calib_dir = write_images(tmp / "calibration", args.calibration, CALIBRATION_SEED)
        write_images(tmp / "gate", args.gate, GATE_SEED)
        gate = ["--gate-root", str(tmp / "gate"), "--gate-dataset-config-file", DEMO_YAML]
        calib = ["--calibration-images", str(calib_dir)]
        variants = [("fp32", "-", []), ("fp16", "-", ["--precision", "fp16", *gate]),
                    ("int8", "tower, minmax (default)", ["--precision", "int8", *calib, *gate])]
        for name, recipe, extra in variants:
            out = tmp / f"m.{name}.onnx"
            rows.append((name, recipe, out, export(run, out, extra)))
        fp32 = tmp / "m.fp32.onnx"
        meta = read_onnx_metadata(fp32)
        calib_paths = collect_images(str(calib_dir))
        calibration = image_batch(meta, calib_paths, args.calibration)
        for scope, method in (("weights", "minmax"), ("tower", "percentile"), ("tower", "entropy")):
            out = tmp / f"m.int8-{scope}-{method}.onnx"
            convert_to_int8(fp32, out, calibration, scope=scope, method=method)
            rows.append(("int8", f"{scope}, {method}", out, "(API, not gated)"))
        # What the agreement gate (no labelled set) sees: the first images of the calibration list.
        agree_images = image_batch(meta, calib_paths, GATE_IMAGES)
        results = [(name, recipe, out.stat().st_size / 1e6, test_map(out, test_cfg), verdict,
                    agreement_gate(fp32, out, agree_images, name) if name != "fp32" else None)
                   for name, recipe, out, verdict in rows]

    ref = results[0][3]["mAP"]["merged"]
    trained = json.loads((run / "results.json").read_text())["mAP"]["merged"] if (run / "results.json").is_file() else None
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"\n### Precision ladder in the offline demo world: run {args.run} (DemoRN, 64 px, 14 classes)\n")
    print(f"Machine: {cpu_name()} ({cpu_features()}), {os.cpu_count()} logical CPUs; Python "
          f"{platform.python_version()}; {now}. Command: python bench/precision_map.py "
          f"{' '.join(argv if argv is not None else sys.argv[1:])}".rstrip() + ".")
    print(f"Test set: the demo's {results[0][3]['n_images']} test images ({demo / 'data'}); calibration: {args.calibration} "
          f"images (seed {CALIBRATION_SEED}); gate set: {args.gate} labelled images (seed {GATE_SEED}).\n")
    print("| precision | int8 recipe | file (MB) | test mAP merged | global | local | drop vs fp32 | export gate "
          "(gate set) | agreement on calibration images: max abs diff / fp32 range (scores, global, local), top-k |")
    print("|---|---|---:|---:|---:|---:|---:|---|---|")
    for name, recipe, size, res, verdict, agree in results:
        m = res["mAP"]
        gate_text = re.sub(r"^gate \S+ ", "", verdict)
        agree_text = "-" if agree is None else (
            ", ".join(f"{v:.1%}" for v in agree.relative.values()) + f"; top-{agree.k} {agree.top_k:.1%}; "
            + ("passes" if agree.ok else "fails") + f" the {name} limits ({agree.limits.max_relative_diff:.0%}, "
            f"{agree.limits.min_top_k_agreement:.0%})")
        print(f"| {name} | {recipe} | {size:.2f} | {m['merged']:.2f} | {m['global']:.2f} | {m['local']:.2f} | "
              f"{ref - m['merged']:+.2f} | {gate_text} | {agree_text} |")
    if trained is not None:
        print(f"\nThe run's own evaluation (PyTorch, runs/{args.run}/results.json): merged mAP {trained:.2f}.")
    print(f"\n(total {time.time() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
