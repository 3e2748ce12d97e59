#!/usr/bin/env python
"""Open vocabulary in the offline demo world: prompts tuned on captions of 10 shapes score 4 unseen ones.

    python bench/open_vocab.py [--out DIR] [--data DIR] [--weights FILE] [--seed 1] [--threads 2] [--quick]

For each of three fixed splits of the demo's 14 shapes into 10 seen and 4 held-out shapes:

1. the caption file loses every caption that mentions a held-out shape by any of its synonyms, as
   whole words after lemmatisation (so "a hollow circle" counts as mentioning "circle"); the class
   list is the 10 seen shapes with their synonyms (a json class-list file);
2. ``train.py`` tunes TaI-DPT prompts on it (the demo's recipe, ``configs/trainers/TaIDPT/demo.yaml``,
   one prompt seed); its own evaluation gives the mAP on the 10 seen shapes;
3. ``python -m export.onnx --open-vocabulary`` exports the run;
4. the exported pair (text model + open image graph, the torch-free serving code of
   :mod:`taidpt.serve.open_vocab`) scores the 4 held-out shapes on the demo's test images: mAP.

On the same 4 shapes and images: zero-shot CLIP (the same small CLIP, template "a photo of a {}.")
through its own ``--open-vocabulary`` export, and TaI-DPT tuned on all captions and 14 shapes (the
held-out shapes seen in training) through its fused export: what seeing the shapes is worth.

Data: the demo's test images and captions (``--data``, default: written under ``--out`` as
``python -m taidpt.demo`` writes them); CLIP: the demo's pretrained weights (``--weights``, default:
the cached file of ``python -m taidpt.demo``, pretrained if missing). ``--quick`` is a smoke run
(one split, 2 epochs, the demo's quick data and pretraining when not given): not the measured setting.
Prints a table (machine, date, command) and writes ``OUT/open_vocab.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import cpu_name  # noqa: E402

SPLITS = (("circle", "star", "heart", "hexagon"), ("square", "cross", "moon", "semicircle"),
          ("triangle", "ring", "diamond", "arrow"))
BRANCHES = ("merged", "global", "local")
ZEROSHOT_YAML = ROOT / "configs" / "trainers" / "ZeroshotCLIPDense" / "demo.yaml"


def run_repo_command(args: Sequence[str], threads: int) -> str:
    """Run a repository command (``train.py`` or ``-m export.onnx``) as a user would; its stdout, or exit."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(args[:3])} failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return proc.stdout


def filtered_split(shapes: Any, held_out: Sequence[str], captions: list[str], out_dir: Path) -> dict[str, Any]:
    """Write ``out_dir/captions.txt`` (captions mentioning no held-out shape) and ``out_dir/classes.json``
    (the seen shapes with their synonyms); returns the paths and counts."""
    from taidpt.captions.classes import ClassList
    from taidpt.captions.labelling import CaptionLabeller
    from taidpt.captions.lemmatize import get_lemmatizer

    index = [shapes.names.index(h) for h in held_out]
    unseen = ClassList("held_out", [shapes.names[i] for i in index], [shapes.synonyms[i] for i in index])
    mentions = CaptionLabeller(unseen, get_lemmatizer("auto")).label_many(captions).any(axis=1)
    kept = [c for c, m in zip(captions, mentions) if not m]
    seen = [{"name": n, "synonyms": list(s)} for n, s in zip(shapes.names, shapes.synonyms) if n not in held_out]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "captions.txt").write_text("".join(c + "\n" for c in kept), encoding="utf-8")
    (out_dir / "classes.json").write_text(json.dumps({"dataset": "shapes_seen", "classes": seen}, indent=1) + "\n",
                                          encoding="utf-8")
    return {"captions": out_dir / "captions.txt", "classes": out_dir / "classes.json", "n_kept": len(kept),
            "n_dropped": len(captions) - len(kept)}


def train(run_dir: Path, data: Path, weights: Path, seed: int, cache: Path, extra: Sequence[str],
          threads: int, trainer: str = "TaIDPT") -> dict[str, Any]:
    """A fresh run through train.py (the demo's recipe plus ``extra`` KEY VALUE pairs); its results."""
    from taidpt.demo.experiment import train_cli_args

    shutil.rmtree(run_dir, ignore_errors=True)
    run_repo_command(["train.py", "--no-progress", *train_cli_args(trainer, data, run_dir, weights, seed, cache, extra)],
                     threads)
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


def export(out: Path, source: Sequence[str], opts: Sequence[str], threads: int) -> Path:
    """``python -m export.onnx SOURCE --output out --open-vocabulary OPTS`` (stops the bench unless parity is OK)."""
    stdout = run_repo_command(["-m", "export.onnx", *source, "--output", str(out), "--open-vocabulary", *opts], threads)
    if "open vocabulary: OK" not in stdout:
        sys.exit(f"error: the open-vocabulary export {out} did not report OK:\n{stdout[-2000:]}")
    return out


def held_out_ap(runner: Any, test: Any, columns: Sequence[int]) -> dict[str, dict[str, float]]:
    """Per-class AP (percent) of ``runner`` on the test images, per branch, for the given score columns."""
    from taidpt.evaluation.metrics import per_class_ap
    from taidpt.serve.predictor import score_images

    preds = score_images(runner, test.paths, batch_size=250, workers=2, progress=False)
    if preds.skipped:
        sys.exit(f"error: {len(preds.skipped)} test images could not be read, e.g. {preds.skipped[0]}")
    arrays = {"merged": preds.scores, "global": preds.global_logits, "local": preds.local_logits}
    runner.close()
    return {b: dict(zip(test.classnames, per_class_ap(arrays[b][:, list(columns)], test.targets).tolist()))
            for b in BRANCHES}


def mean_ap(aps: dict[str, float]) -> float:
    return float(np.mean(list(aps.values())))


def demo_inputs(args: argparse.Namespace) -> tuple[Path, Path]:
    """The demo's data folder (``--data``, else written under ``--out``; quick data with ``--quick``) and
    CLIP weights (``--weights``, else the demo's cached file, pretrained when missing)."""
    from taidpt.demo.experiment import FULL, QUICK, write_demo_data
    from taidpt.demo.pretrain import cached_demo_clip

    settings = QUICK if args.quick else FULL
    data = Path(args.data) if args.data else Path(args.out) / "data"
    if not args.data:
        write_demo_data(data, settings.n_test_images, settings.n_captions, settings.data_seed)
    weights = Path(args.weights) if args.weights else cached_demo_clip(0, None, progress=False, threads=args.threads,
                                                                       **settings.pretrain)
    return data, weights


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every split's numbers (and the settings they came from)."""
    from taidpt.captions.classes import load_class_list
    from taidpt.captions.sources import read_text_file
    from taidpt.images.readers.voc import read_voc2007
    from taidpt.serve.open_vocab import OpenVocabModel
    from taidpt.serve.runtime import OnnxModel

    out = Path(args.out)
    data, weights = demo_inputs(args)
    extra = ["OPTIM.MAX_EPOCH", "2"] if args.quick else []
    shapes = load_class_list("shapes14")
    captions = read_text_file(data / "captions.txt")
    cache, cpu = out / "cache", ["CPUExecutionProvider"]

    t0 = time.time()
    zs_model = export(out / "zeroshot" / "model.onnx",
                      ["--trainer", "ZeroshotCLIPDense", "--config-file", str(ZEROSHOT_YAML), "--classes", "shapes14"],
                      ["MODEL.BACKBONE.PRETRAINED", str(weights)], args.threads)
    full_results = train(out / "full" / "run", data, weights, args.seed, cache, extra, args.threads)
    full_model = export(out / "full" / "model.onnx", ["--model-dir", str(out / "full" / "run")], [], args.threads)
    splits = []
    for k, held_out in enumerate(SPLITS[:1] if args.quick else SPLITS):
        where = out / f"split{k + 1}"
        files = filtered_split(shapes, held_out, captions, where)
        results = train(where / "run", data, weights, args.seed, cache,
                        ["DATASET.CLASS_LIST", str(files["classes"]), "DATASET.CAPTION_FILE", str(files["captions"]),
                         *extra], args.threads)
        model = export(where / "model.onnx", ["--model-dir", str(where / "run")], [], args.threads)
        test = read_voc2007(data, "test", classnames=held_out)
        every = list(range(len(held_out)))
        fused_columns = [shapes.names.index(h) for h in held_out]
        splits.append({
            "held_out": list(held_out),
            "captions_kept": files["n_kept"], "captions_dropped": files["n_dropped"],
            "seen_mAP": {b: float(results["mAP"][b]) for b in BRANCHES},
            "open_vocab_taidpt": held_out_ap(OpenVocabModel(model, held_out, cpu), test, every),
            "zero_shot": held_out_ap(OpenVocabModel(zs_model, held_out, cpu), test, every),
            "taidpt_all_14": held_out_ap(OnnxModel(full_model, cpu), test, fused_columns),
        })
    return {"splits": splits, "full_run_mAP": {b: float(full_results["mAP"][b]) for b in BRANCHES},
            "weights": str(weights), "data": str(data), "seed": int(args.seed), "quick": bool(args.quick),
            "n_test_images": len(read_voc2007(data, "test", classnames=shapes.names).paths),
            "seconds": round(time.time() - t0, 1)}


def table(summary: dict[str, Any]) -> str:
    """The markdown table: per split and the mean, mAP on the 4 held-out shapes (merged, global / local)."""
    cols = ("open_vocab_taidpt", "zero_shot", "taidpt_all_14")

    def cell(aps: dict[str, dict[str, float]] | dict[str, float]) -> str:
        return f"{aps['merged']:.1f} ({aps['global']:.1f} / {aps['local']:.1f})"

    lines = ["| held-out shapes | TaI-DPT, open vocabulary (never saw them) | zero-shot CLIP | TaI-DPT trained "
             "with them (in vocabulary) | TaI-DPT on its 10 seen shapes | captions kept |",
             "|---|---|---|---|---|---|"]
    means: dict[str, dict[str, list[float]]] = {c: {b: [] for b in BRANCHES} for c in (*cols, "seen_mAP")}
    for s in summary["splits"]:
        maps = {c: {b: mean_ap(s[c][b]) for b in BRANCHES} for c in cols}
        for c in cols:
            for b in BRANCHES:
                means[c][b].append(maps[c][b])
        for b in BRANCHES:
            means["seen_mAP"][b].append(s["seen_mAP"][b])
        lines.append(f"| {', '.join(s['held_out'])} | " + " | ".join(cell(maps[c]) for c in cols)
                     + f" | {cell(s['seen_mAP'])} | {s['captions_kept']} (-{s['captions_dropped']}) |")
    if len(summary["splits"]) > 1:
        avg = {c: {b: float(np.mean(v)) for b, v in means[c].items()} for c in means}
        lines.append("| **mean of the splits** | " + " | ".join(f"**{cell(avg[c])}**" for c in cols)
                     + f" | {cell(avg['seen_mAP'])} | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Open vocabulary in the demo world: held-out shapes through the export.")
    p.add_argument("--out", default="/tmp/taidpt_open_vocab", help="work folder (runs, exports, json)")
    p.add_argument("--data", default="", help="the demo's data folder (VOCdevkit + captions.txt); default: write it")
    p.add_argument("--weights", default="", help="the demo CLIP weights; default: the demo's cached file")
    p.add_argument("--seed", type=int, default=1, help="prompt seed of every TaI-DPT run (default 1)")
    p.add_argument("--threads", type=int, default=2, help="torch/onnxruntime threads")
    p.add_argument("--quick", action="store_true", help="smoke run: one split, 2 epochs; not the measured setting")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    summary = measure(args)
    command = "python bench/open_vocab.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    summary["machine"] = f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}"
    summary["date"] = datetime.date.today().isoformat()
    summary["command"] = command.strip()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "open_vocab.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"# {summary['machine']}; {summary['date']}; {summary['command']}")
    print(f"# mAP (%) on the 4 held-out shapes over {summary['n_test_images']} demo test images, merged (global / "
          f"local); prompt seed {summary['seed']}; {summary['seconds']:.0f} s"
          + ("; QUICK smoke run, not the measured setting" if summary["quick"] else ""))
    print(table(summary))
    print(f"# TaI-DPT trained on all 14 shapes, mAP over all 14: {summary['full_run_mAP']['merged']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
