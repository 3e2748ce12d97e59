#!/usr/bin/env python
"""Decision rules on the offline demo's test images: threshold 0, top-3, and the two calibrations.

    python bench/calibration.py [--demo-dir /work/demo_out] [--runs taidpt_seed1 ...] [--quick] [--json OUT.json]

Needs a finished ``python -m taidpt.demo --out DEMO_DIR`` (its ``data/`` and ``runs/``). For each
TaI-DPT run (default: every ``runs/taidpt_seed*``, i.e. every prompt seed), one pass:

1. writes the demo's labelled ``trainval`` split beside the test split when it is not there
   (:func:`taidpt.demo.image_prompting.write_train_split`: 1000 scenes from a data seed disjoint
   from the test images');
2. exports the TaI-DPT run to ONNX (``python -m export.onnx``);
3. calibrates it twice with the real command, ``python -m export.calibrate``:
   (a) labelled: F1-optimal per class on the ``trainval`` split;
   (b) label-free: positive rate on the *unlabelled* trainval images = the class's frequency in the
   run's caption corpus (templates left out);
4. scores the test images once (the calibrated files have the same graph) and reports CP / CR /
   CF1 / OP / OR / OF1 (:func:`taidpt.evaluation.metrics.multilabel_prf`) and labels per image for each
   rule, applied by :mod:`taidpt.serve.decision` exactly as serving applies them.

No rule sees a test label, except the last row, an upper bound: thresholds chosen on the test
labels themselves. The table gives the mean (± sample std over runs when there are
several). ``--quick`` takes the first run only, 300 unlabelled images for (b) and the first 300
test images. Prints a markdown table with the machine, date and command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import cpu_name  # noqa: E402

DEMO_DATASET_YAML = ROOT / "configs" / "datasets" / "demo.yaml"
N_TRAINVAL = 1000
QUICK_IMAGES = 300


def command(args: list[str]) -> None:
    """Run ``python <args>`` from the repository root; stop with its output when it fails."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): python {shlex.join(args)}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    print(f"python {shlex.join(args)}  ({time.time() - t0:.0f} s)", file=sys.stderr)


def rule_metrics(rule, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """CP/CR/CF1/OP/OR/OF1 (percent) and labels per image of one decision rule."""
    from taidpt.evaluation.metrics import multilabel_prf

    chosen = rule.selected(logits)
    prf = multilabel_prf(chosen.astype(np.float32), targets, threshold=0.5)
    return {**{k: float(prf[k]) for k in ("CP", "CR", "CF1", "OP", "OR", "OF1")},
            "labels_per_image": float(chosen.sum(axis=1).mean())}


def measure_run(run_dir: Path, data: Path, out: Path, limit: int | None) -> dict:
    """Export one run, calibrate it both ways with the command, and score every rule on the test images."""
    from taidpt.demo.voc_writer import write_image_list
    from taidpt.engine.run import Run
    from taidpt.export.thresholds import f1_optimal
    from taidpt.images.registry import load_test_set
    from taidpt.serve.decision import for_model, resolve
    from taidpt.serve.predictor import score_images
    from taidpt.serve.metadata import read_onnx_metadata
    from taidpt.serve.runtime import open_model

    out.mkdir(parents=True, exist_ok=True)
    model = out / "model.onnx"
    command(["-m", "export.onnx", "--model-dir", str(run_dir), "--output", str(model)])
    labelled, label_free = out / "labelled.onnx", out / "label_free.onnx"
    command(["-m", "export.calibrate", "--model", str(model), "--output", str(labelled), "--labelled-split", "trainval",
             "--dataset-config-file", str(DEMO_DATASET_YAML), "--root", str(data), "--no-progress",
             "--report", str(out / "labelled.json")])
    images = write_image_list(data, "trainval", out / "trainval_images.txt", limit)
    command(["-m", "export.calibrate", "--model", str(model), "--output", str(label_free), "--unlabelled-images",
             str(images), "--model-dir", str(run_dir), "--no-progress", "--report", str(out / "label_free.json")])

    test_set, _ = load_test_set(Run(run_dir).config())
    runner = open_model(model)
    names = list(runner.metadata.classnames)
    preds = score_images(runner, test_set.paths[:limit], batch_size=100, progress=False)
    runner.close()
    targets = test_set.targets[np.asarray(preds.indices, dtype=np.int64)]
    rules = {
        "threshold 0 (logit 0, the old default)": resolve(names, threshold=0.0),
        "top-3": resolve(names, top_k=3),
        "(a) labelled: F1-optimal on trainval": for_model(read_onnx_metadata(labelled)),
        "(b) label-free: caption frequencies": for_model(read_onnx_metadata(label_free)),
        "oracle: F1-optimal on the test labels (not deployable)":
            resolve(names, {c: k.threshold for c, k in zip(names, f1_optimal(preds.scores, targets))}),
    }
    rates = json.loads((out / "label_free.json").read_text())["classes"]
    return {"rows": {name: rule_metrics(rule, preds.scores, targets) for name, rule in rules.items()},
            "n_test_images": len(preds.paths), "n_classes": len(names),
            "labels_per_test_image": float((targets > 0).sum(axis=1).mean()),
            "classes_per_caption": sum(c["target_rate"] for c in rates.values())}


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):.1f}" + (f" ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="CF1 / OF1 / labels per image of the serving decision rules (demo).")
    p.add_argument("--demo-dir", default="/work/demo_out", help="a finished python -m taidpt.demo --out DIR")
    p.add_argument("--runs", nargs="+", default=None, help="TaI-DPT runs under DIR/runs/ (default: taidpt_seed*)")
    p.add_argument("--out", default="", help="where models and reports go (default DIR/calibration)")
    p.add_argument("--quick", action="store_true",
                   help=f"the first run, {QUICK_IMAGES} unlabelled and {QUICK_IMAGES} test images")
    p.add_argument("--json", default="", help="also write the numbers to this file")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from taidpt.demo.image_prompting import write_train_split

    t_start = time.time()
    demo = Path(args.demo_dir)
    data = demo / "data"
    names = args.runs or sorted(d.name for d in (demo / "runs").glob("taidpt_seed*") if d.is_dir())
    names = names[:1] if args.quick else names
    missing = [n for n in names if not (demo / "runs" / n).is_dir()]
    if not names or missing:
        sys.exit(f"no TaI-DPT run {', '.join(missing)} under {demo / 'runs'}; finish python -m taidpt.demo --out {demo}")
    write_train_split(data, N_TRAINVAL)
    out = Path(args.out) if args.out else demo / "calibration"
    limit = QUICK_IMAGES if args.quick else None
    runs = {n: measure_run(demo / "runs" / n, data, out / n, limit) for n in names}
    first = runs[names[0]]

    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    import onnxruntime as ort

    print(f"\n### Decision rules on the demo's test images ({first['n_test_images']} images, {first['n_classes']} "
          f"classes; {len(names)} run(s): {', '.join(names)})\n")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs; {platform.system()} {platform.release()}; "
          f"Python {platform.python_version()}, onnxruntime {ort.__version__}; {now}"
          f"{'; quick run' if args.quick else ''}.")
    print(f"Command: python bench/calibration.py {shlex.join(argv if argv is not None else sys.argv[1:])}\n")
    print("| rule | CP | CR | CF1 | OP | OR | OF1 | labels / image |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for rule in first["rows"]:
        cells = [_cell([runs[n]["rows"][rule][k] for n in names]) for k in ("CP", "CR", "CF1", "OP", "OR", "OF1")]
        per_image = np.mean([runs[n]["rows"][rule]["labels_per_image"] for n in names])
        print(f"| {rule} | {' | '.join(cells)} | {per_image:.2f} |")
    print(f"\nTrue labels per test image: {first['labels_per_test_image']:.2f}; classes named per caption "
          f"(the label-free target, summed over classes): {first['classes_per_caption']:.2f}. "
          f"(total {time.time() - t_start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "date": now}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
