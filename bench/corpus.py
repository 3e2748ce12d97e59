#!/usr/bin/env python
"""What a corpus generated from the class list alone is worth, in the offline demo world.

    python bench/corpus.py [--out DIR] [--data DIR] [--weights FILE] [--seeds 1 2 3] [--threads 2] [--quick]

Every row trains TaI-DPT with ``train.py`` (the demo's recipe, ``configs/trainers/TaIDPT/demo.yaml``) once
per prompt seed and reports its test mAP on the demo's images, merged (global / local), mean ± std over
the seeds:

* zero-shot CLIP (no training; one run) and templates only (the 89 template sentences per class);
* ``DATASET.CAPTION_SOURCE generated`` from the 14 shape *names* alone (no synonyms), 2k, 10k, 50k sentences;
* the demo's captions, and the demo's captions plus 10k generated sentences (one text file);
* open vocabulary (``bench/open_vocab.py``'s splits): trained on sentences generated from the 10 seen
  names, or on the captions that never mention the 4 held-out shapes, scored on the 4 held-out shapes
  through the open-vocabulary export; split k uses prompt seed k, and the row is the mean of the splits.

The grammar is the package's general-photograph grammar; nothing here is tuned to the demo's captions.
``--quick`` is a smoke run (quick data and pretraining, 2 epochs, one seed, smaller corpora, one split).
Prints the table (machine, date, command) and writes ``OUT/corpus.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import cpu_name  # noqa: E402
from bench.open_vocab import (BRANCHES, SPLITS, ZEROSHOT_YAML, demo_inputs, export, filtered_split,  # noqa: E402
                              held_out_ap, mean_ap, run_repo_command, train)

FULL_SIZES = (2000, 10000, 50000)
QUICK_SIZES = (500, 2000)
MIXED_SIZE = 10000  # generated sentences added to the demo's captions


def run(trainer: str, run_dir: Path, data: Path, weights: Path, seed: int, cache: Path, extra: Sequence[str],
        threads: int) -> dict[str, float]:
    """One fresh ``train.py`` run of the demo recipe plus ``extra``; its test mAP per branch."""
    results = train(run_dir, data, weights, seed, cache, extra, threads, trainer=trainer)
    return {b: float(results["mAP"][b]) for b in BRANCHES}


def write_names(path: Path, names: Sequence[str]) -> Path:
    """A class-list file of bare names: what a user who knows only the class names writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(n + "\n" for n in names), encoding="utf-8")
    return path


def write_templates(path: Path, names: Sequence[str]) -> Path:
    """The template sentences of every class, one per line (trained with ``ADD_TEMPLATES False``)."""
    from taidpt.captions.classes import ClassList
    from taidpt.captions.templates import template_sentences

    sentences = [s for s, _ in template_sentences(ClassList.from_names("names", list(names)))]
    path.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
    return path


def generate(class_list: Path, n: int, seed: int, out: Path, threads: int) -> Path:
    """``python -m taidpt.captions.generate`` as a user runs it."""
    run_repo_command(["-m", "taidpt.captions.generate", "--class-list", str(class_list), "--n", str(n),
                      "--seed", str(seed), "--out", str(out)], threads)
    return out


def closed_rows(args: argparse.Namespace, out: Path, data: Path, weights: Path) -> list[dict[str, Any]]:
    """The rows measured on all 14 shapes."""
    from taidpt.captions.classes import load_class_list

    names = load_class_list("shapes14").names
    names_file = write_names(out / "names14.txt", names)
    cache, extra = out / "cache", (["OPTIM.MAX_EPOCH", "2"] if args.quick else [])
    generated = ["DATASET.CLASS_LIST", str(names_file), "DATASET.CAPTION_SOURCE", "generated"]
    mixed = out / "captions_plus_generated.txt"
    mixed_n = QUICK_SIZES[-1] if args.quick else MIXED_SIZE
    extra_file = generate(names_file, mixed_n, 0, out / "generated_names14.txt", args.threads)
    mixed.write_text((data / "captions.txt").read_text(encoding="utf-8") + extra_file.read_text(encoding="utf-8"),
                     encoding="utf-8")
    templates = write_templates(out / "templates14.txt", names)
    rows = [("templates only", ["DATASET.CLASS_LIST", str(names_file), "DATASET.CAPTION_FILE", str(templates),
                                "DATASET.ADD_TEMPLATES", "False"])]
    rows += [(f"generated from the 14 names, {n // 1000}k" if n >= 1000 else f"generated from the 14 names, {n}",
              [*generated, "DATASET.GENERATED_SENTENCES", str(n)]) for n in (QUICK_SIZES if args.quick else FULL_SIZES)]
    rows += [("demo captions", []),
             (f"demo captions + {mixed_n // 1000}k generated", ["DATASET.CAPTION_FILE", str(mixed)])]
    zero = run("ZeroshotCLIPDense", out / "zeroshot", data, weights, args.seeds[0], cache, [], args.threads)
    measured = [{"row": "zero-shot CLIP", "seeds": {str(args.seeds[0]): zero}}]
    for label, opts in rows:
        slug = "".join(c if c.isalnum() else "_" for c in label)
        seeds = {str(s): run("TaIDPT", out / slug / f"seed{s}", data, weights, s, cache, [*opts, *extra], args.threads)
                 for s in args.seeds}
        measured.append({"row": label, "seeds": seeds})
        print(f"# {label}: merged {np.mean([m['merged'] for m in seeds.values()]):.1f}", flush=True)
    return measured


def open_rows(args: argparse.Namespace, out: Path, data: Path, weights: Path) -> list[dict[str, Any]]:
    """Held-out shapes through the open-vocabulary export: generated from the seen names, filtered captions,
    zero-shot; one row each, split k with prompt seed ``seeds[k % len(seeds)]``."""
    from taidpt.captions.classes import load_class_list
    from taidpt.captions.sources import read_text_file
    from taidpt.images.readers.voc import read_voc2007
    from taidpt.serve.open_vocab import OpenVocabModel

    shapes, cpu = load_class_list("shapes14"), ["CPUExecutionProvider"]
    captions = read_text_file(data / "captions.txt")
    cache, extra = out / "cache", (["OPTIM.MAX_EPOCH", "2"] if args.quick else [])
    n = QUICK_SIZES[-1] if args.quick else MIXED_SIZE
    zs_model = export(out / "open" / "zeroshot.onnx",
                      ["--trainer", "ZeroshotCLIPDense", "--config-file", str(ZEROSHOT_YAML), "--classes", "shapes14"],
                      ["MODEL.BACKBONE.PRETRAINED", str(weights)], args.threads)
    rows: dict[str, dict[str, Any]] = {k: {"row": k, "splits": []} for k in (
        f"open vocabulary: generated from the 10 seen names, {n // 1000}k",
        "open vocabulary: captions without the held-out shapes", "open vocabulary: zero-shot CLIP")}
    gen_key, cap_key, zs_key = rows
    for k, held_out in enumerate(SPLITS[:1] if args.quick else SPLITS):
        seed, where = args.seeds[k % len(args.seeds)], out / "open" / f"split{k + 1}"
        files = filtered_split(shapes, held_out, captions, where)
        seen = write_names(where / "seen_names.txt", [c for c in shapes.names if c not in held_out])
        test = read_voc2007(data, "test", classnames=held_out)
        every = list(range(len(held_out)))
        for key, opts in ((gen_key, ["DATASET.CLASS_LIST", str(seen), "DATASET.CAPTION_SOURCE", "generated",
                                     "DATASET.GENERATED_SENTENCES", str(n)]),
                          (cap_key, ["DATASET.CLASS_LIST", str(files["classes"]),
                                     "DATASET.CAPTION_FILE", str(files["captions"])])):
            run_dir = where / ("generated" if key == gen_key else "captions")
            run("TaIDPT", run_dir, data, weights, seed, cache, [*opts, *extra], args.threads)
            model = export(run_dir / "model.onnx", ["--model-dir", str(run_dir)], [], args.threads)
            aps = held_out_ap(OpenVocabModel(model, held_out, cpu), test, every)
            rows[key]["splits"].append({"held_out": list(held_out), "seed": seed,
                                        "mAP": {b: mean_ap(aps[b]) for b in BRANCHES}})
        aps = held_out_ap(OpenVocabModel(zs_model, held_out, cpu), test, every)
        rows[zs_key]["splits"].append({"held_out": list(held_out), "mAP": {b: mean_ap(aps[b]) for b in BRANCHES}})
    return list(rows.values())


def _cell(values: list[dict[str, float]]) -> str:
    def ms(b: str) -> tuple[float, float]:
        v = np.array([x[b] for x in values])
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    (m, s), (g, _), (loc, _) = ms("merged"), ms("global"), ms("local")
    return (f"{m:.1f} ± {s:.1f}" if len(values) > 1 else f"{m:.1f}") + f" ({g:.1f} / {loc:.1f})"


def table(summary: dict[str, Any]) -> str:
    """The markdown table: one row per corpus, mAP merged mean ± std (global / local)."""
    lines = ["| training sentences | scored on | mAP merged (global / local) | runs |", "|---|---|---|---|"]
    for row in summary["closed"]:
        values = list(row["seeds"].values())
        lines.append(f"| {row['row']} | 14 shapes | {_cell(values)} | {len(values)} seed(s) |")
    for row in summary["open"]:
        values = [s["mAP"] for s in row["splits"]]
        lines.append(f"| {row['row']} | 4 held-out shapes | {_cell(values)} | {len(values)} split(s) |")
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every row's numbers (and the settings they came from)."""
    out = Path(args.out)
    data, weights = demo_inputs(args)
    t0 = time.time()
    closed = closed_rows(args, out, data, weights)
    opened = open_rows(args, out, data, weights)
    return {"closed": closed, "open": opened, "seeds": list(args.seeds), "quick": bool(args.quick),
            "weights": str(weights), "data": str(data), "seconds": round(time.time() - t0, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Generated corpora vs captions vs zero-shot in the demo world.")
    p.add_argument("--out", default="/tmp/taidpt_corpus_bench", help="work folder (runs, corpora, json)")
    p.add_argument("--data", default="", help="the demo's data folder (VOCdevkit + captions.txt); default: write it")
    p.add_argument("--weights", default="", help="the demo CLIP weights; default: the demo's cached file")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="prompt seeds (default 1 2 3)")
    p.add_argument("--threads", type=int, default=2, help="torch/onnxruntime threads")
    p.add_argument("--quick", action="store_true", help="smoke run (< 5 min): not the measured setting")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds[:1]
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    summary = measure(args)
    command = "python bench/corpus.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    summary.update(machine=f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}",
                   date=datetime.date.today().isoformat(), command=command.strip())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"# {summary['machine']}; {summary['date']}; {summary['command']}")
    print(f"# TaI-DPT test mAP (%) on the demo's images, mean ± std over prompt seeds {summary['seeds']}; "
          f"{summary['seconds']:.0f} s" + ("; QUICK smoke run, not the measured setting" if summary["quick"] else ""))
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
