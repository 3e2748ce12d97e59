"""``python -m taidpt.demo --out DIR [--seeds 1 2 3] [--pretrain-seed 0] [--quick]``: the offline demo.

Pretrains (or reuses) the demo's small CLIP, evaluates zero-shot CLIP and TaI-DPT on held-out
generated shape scenes through train.py's code path, prints the table, and writes
``DIR/summary.json`` and ``DIR/per_class_ap.png``. See ``taidpt.demo.experiment``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Idle OpenMP threads sleep instead of spinning. Numerics are unchanged (same thread count), but on
# a shared 2-core machine a spinning barrier waits for a descheduled thread: measured 5.3 s per
# pretraining step with spinning vs 0.38 s passive when another process held one core (0.2 s idle).
# Read once when torch loads, so it is set before any torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m taidpt.demo",
        description="Offline demo: pretrain a small CLIP on generated scenes, then compare zero-shot CLIP "
                    "with TaI-DPT trained on captions only.")
    p.add_argument("--out", required=True, help="output directory (data/, runs/, summary.json, per_class_ap.png)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="TaI-DPT prompt seeds (default 1 2 3)")
    p.add_argument("--pretrain-seed", type=int, default=0, help="seed of the CLIP pretraining (default 0)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: fewer test images, captions and pretraining steps (NOT the measured setting)")
    p.add_argument("--cache-dir", default=None,
                   help="cache root for the pretrained CLIP and caption corpora (default $XDG_CACHE_HOME/taidpt "
                        "or ~/.cache/taidpt)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (fixed, part of the weights' cache key)")
    p.add_argument("--pretrain-only", action="store_true",
                   help="only pretrain (or find) the demo CLIP and print its path")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--verbose", action="store_true", help="also show the runner's log (always in runs/*/log.txt)")
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="KEY VALUE config overrides appended to every run, last on the line (after --seeds, "
                        "separate them with --), e.g. TRAINER.TAIDPT.SPATIAL_SCALE_IMAGE 20.0")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.opts and args.opts[0] == "--":
        args.opts = args.opts[1:]
    logger = logging.getLogger("taidpt.demo")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[demo] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if args.threads < 1:
        print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2

    from .experiment import FULL, QUICK, run_demo
    from .pretrain import cached_demo_clip
    from .report import format_table

    try:
        if args.pretrain_only:
            settings = QUICK if args.quick else FULL
            path = cached_demo_clip(args.pretrain_seed, args.cache_dir, progress=not args.no_progress,
                                    threads=args.threads, **settings.pretrain)
            print(path)
            return 0
        summary = run_demo(args.out, seeds=args.seeds, pretrain_seed=args.pretrain_seed, quick=args.quick,
                           cache_dir=args.cache_dir, threads=args.threads, progress=not args.no_progress,
                           verbose=args.verbose, extra_opts=args.opts or [])
    except (FileNotFoundError, ValueError, KeyError, RuntimeError, OSError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        print(f"error: {msg}", file=sys.stderr)
        if os.environ.get("TAIDPT_DEBUG"):
            raise
        return 1
    print()
    print(format_table(summary))
    t = summary["timing"]
    print(f"wall time {t['total_s']:.0f} s (pretraining {t['pretrain_s']:.0f} s"
          f"{', cached' if t['pretrain_cached'] else ''}); summary: {os.path.join(args.out, 'summary.json')}, "
          f"chart: {os.path.join(args.out, 'per_class_ap.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
