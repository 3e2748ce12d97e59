"""Offline demo of the paper's second claim: TaI-DPT adds to prompts learned from labelled images.

``python -m taidpt.demo.image_prompting`` runs the TaI-DPT demo with one prompt seed, writes labelled
training images from a data seed disjoint from the test images', trains DualCoOp (partial labels) and
few-shot CoOp on them through train.py's path, and ensembles each with TaI-DPT at every given rate. Every
setting is fixed in advance; nothing is chosen on the test images. See docs/image-prompting.md, "Offline".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see taidpt/demo/__main__.py

from taidpt.evaluation.ensemble import ensemble_runs  # noqa: E402 - after the OpenMP setting
from . import scenes  # noqa: E402
from .experiment import _pick, _run_cli, run_demo, train_cli_args  # noqa: E402
from .pretrain import demo_cache_dir  # noqa: E402
from .voc_writer import write_voc_dataset  # noqa: E402

log = logging.getLogger("taidpt.demo")

TRAIN_DATA_SEED = 4046  # the test images use 2023 (FULL.data_seed): disjoint draws
TRAIN_FIRST_ID = 100001  # training image ids never collide with the test ids 1..N


def write_train_split(data_dir: Path, n: int, seed: int = TRAIN_DATA_SEED) -> None:
    """Write ``n`` generated, fully labelled scenes as the ``trainval`` split (kept when already there)."""
    listing = data_dir / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "trainval.txt"
    if listing.is_file() and len(listing.read_text(encoding="utf-8").split()) == n:
        return
    images, labels = scenes.generate_images(n, seed)
    write_voc_dataset(data_dir, images, labels, classnames=scenes.SHAPES, split="trainval", first_id=TRAIN_FIRST_ID)


def run_image_demo(out_dir: str | os.PathLike, *, proportions: Sequence[float] = (0.1, 0.5),
                   shots: Sequence[int] = (1, 4, 16), rates: Sequence[float] = (0.5, 0.9), n_train: int = 1000,
                   seed: int = 1, pretrain_seed: int = 0, threads: int = 2, progress: bool = True,
                   verbose: bool = False) -> dict[str, Any]:
    """Run the whole comparison into ``out_dir``; returns (and writes) the summary."""
    import torch

    out = Path(out_dir)
    base = run_demo(out, seeds=(seed,), pretrain_seed=pretrain_seed, threads=threads, progress=progress,
                    verbose=verbose)
    data_dir, weights, cache_root = out / "data", base["pretrain"]["weights"], demo_cache_dir(None)
    write_train_split(data_dir, n_train)
    taidpt_run = out / "runs" / f"taidpt_seed{seed}"
    jobs = [("DualCoOp", f"dualcoop_p{p:g}", ["DATASET.PARTIAL_PROPORTION", str(p)]) for p in proportions]
    jobs += [("CoOpMultiLabel", f"coop_{k}shot", ["DATASET.NUM_SHOTS", str(k)]) for k in shots]
    rows: dict[str, Any] = {}
    torch.set_num_threads(int(threads))
    for trainer, name, opts in jobs:
        run_dir = out / "runs" / f"{name}_seed{seed}"
        argv = train_cli_args(trainer, data_dir, run_dir, weights, seed, cache_root, opts)
        result = _pick(_run_cli(argv, progress=progress, verbose=verbose))
        ensembles = {f"{r:g}": ensemble_runs(taidpt_run, run_dir, r, out / "ensembles" / f"{name}_rate{r:g}")["mAP"]
                     for r in rates}
        rows[name] = {"trainer": trainer, "options": opts, "mAP": result["mAP"], "ensemble": ensembles}
        log.info("%s: mAP %.1f; with TaI-DPT %s", name, result["mAP"]["merged"],
                 ", ".join(f"{v['ensemble']:.1f} (rate {k})" for k, v in ensembles.items()))
    summary = {"zero_shot": base["zero_shot"]["mAP"], "taidpt": base["taidpt"]["runs"][str(seed)]["mAP"],
               "image_prompting": rows, "rates": [float(r) for r in rates], "n_train_images": int(n_train),
               "seed": int(seed), "pretrain_seed": int(pretrain_seed),
               "rate_meaning": "ensemble = (1 - rate) * minmax(TaI-DPT merged) + rate * minmax(image-prompting score)"}
    (out / "image_prompting.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return summary


def format_table(summary: dict[str, Any]) -> str:
    """The comparison as a Markdown table (mAP in %)."""
    rates = [f"{r:g}" for r in summary["rates"]]
    lines = [f"TaI-DPT (captions only): {summary['taidpt']['merged']:.1f}; zero-shot CLIP: "
             f"{summary['zero_shot']['merged']:.1f}",
             "| image prompting | alone | " + " | ".join(f"+ TaI-DPT, rate {r}" for r in rates) + " |",
             "|---|---:|" + "---:|" * len(rates)]
    for name, row in summary["image_prompting"].items():
        lines.append(f"| {name} | {row['mAP']['merged']:.1f} | "
                     + " | ".join(f"{row['ensemble'][r]['ensemble']:.1f}" for r in rates) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m taidpt.demo.image_prompting", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (data/, runs/, ensembles/, image_prompting.json)")
    p.add_argument("--proportions", type=float, nargs="+", default=[0.1, 0.5], help="DualCoOp label proportions")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 4, 16], help="few-shot CoOp: images per class")
    p.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.9], help="ensemble weights of the image run")
    p.add_argument("--n-train", type=int, default=1000, help="generated training images (trainval split)")
    p.add_argument("--seed", type=int, default=1, help="prompt / label seed of every run")
    p.add_argument("--pretrain-seed", type=int, default=0, help="seed of the demo CLIP's pretraining")
    p.add_argument("--verbose", action="store_true", help="show every run's log")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = run_image_demo(args.out, proportions=args.proportions, shots=args.shots, rates=args.rates,
                             n_train=args.n_train, seed=args.seed, pretrain_seed=args.pretrain_seed,
                             progress=not args.no_progress, verbose=args.verbose)
    print(format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
