"""Mean and spread of results over seeds: ``python -m taidpt.evaluation.summarize RUN_DIR [RUN_DIR ...]``.

Each RUN_DIR is either a run (holding ``results.json``) or a folder of runs (``seed1/``, ``seed2/``,
...). Prints global / local / merged mAP, CF1 and OF1 as mean ± std over the runs found.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

METRICS = (("mAP global", ("mAP", "global")), ("mAP local", ("mAP", "local")), ("mAP merged", ("mAP", "merged")),
           ("CF1", ("CF1",)), ("OF1", ("OF1",)))


def find_results(folder: Path) -> list[Path]:
    """``folder/results.json`` if present, else every ``folder/*/results.json`` (sorted)."""
    direct = folder / "results.json"
    return [direct] if direct.is_file() else sorted(folder.glob("*/results.json"))


def _get(d: dict, keys: tuple[str, ...]) -> float | None:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return None if d is None else float(d)


def summarize(folder: Path) -> dict[str, tuple[float, float, int]]:
    """{metric: (mean, std, n)} over the runs under ``folder`` (std is 0 for a single run)."""
    rows = [json.loads(p.read_text(encoding="utf-8")) for p in find_results(folder)]
    out = {}
    for name, keys in METRICS:
        values = [v for v in (_get(r, keys) for r in rows) if v is not None]
        if values:
            out[name] = (float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                         len(values))
    return out


def format_summary(folder: Path, stats: dict[str, tuple[float, float, int]]) -> str:
    n = max((v[2] for v in stats.values()), default=0)
    lines = [f"{folder}  ({n} run{'s' if n != 1 else ''})"]
    lines += [f"  {name:<11} {mean:6.2f} ± {std:4.2f}" for name, (mean, std, _) in stats.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args(argv)
    status = 0
    for folder in args.folders:
        stats = summarize(folder)
        if not stats:
            print(f"{folder}: no results.json found", file=sys.stderr)
            status = 1
            continue
        print(format_summary(folder, stats))
    return status


if __name__ == "__main__":
    sys.exit(main())
