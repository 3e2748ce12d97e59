"""The offline demo's report: the result table printed at the end and the per-class AP chart.

Both read only the summary that ``experiment.run_demo`` writes to ``summary.json`` (zero-shot
CLIP's mAP and per-class AP, TaI-DPT's mean and sample std over prompt seeds), so a saved summary
can be reported again without rerunning anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["format_table", "plot_per_class_ap"]


def format_table(summary: dict[str, Any]) -> str:
    """The demo's result table: zero-shot (global/local/merged) and TaI-DPT mean ± std over prompt seeds."""
    z = summary["zero_shot"]["mAP"]
    t = summary["taidpt"]
    label = ("measured setting" if summary["measured"]
             else f"{summary['setting'].upper()} SMOKE RUN - not the measured setting")
    head = (f"taidpt demo ({label}): {summary['data']['n_test_images']} test images, "
            f"{summary['data']['n_captions']} captions, pretrain seed {summary['pretrain']['seed']}, "
            f"prompt seeds {' '.join(str(s) for s in t['seeds'])}")
    rows = [
        f"{'mAP (%)':<28}{'global':>16}{'local':>16}{'merged':>16}",
        f"{'zero-shot CLIP':<28}{z['global']:>16.1f}{z['local']:>16.1f}{z['merged']:>16.1f}",
    ]
    cells = [f"{t['mean'][k]:.1f} ± {t['std'][k]:.1f}" for k in ("global", "local", "merged")]
    rows.append(f"{'TaI / local / TaI-DPT':<28}{cells[0]:>16}{cells[1]:>16}{cells[2]:>16}")
    gain = {k: t["mean"][k] - z[k] for k in ("global", "local", "merged")}
    rows.append(f"{'gain over zero-shot':<28}" + "".join(f"{gain[k]:>+16.1f}" for k in ("global", "local", "merged")))
    return "\n".join([head, *rows])


def plot_per_class_ap(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Grouped bar chart of per-class AP: zero-shot merged vs TaI-DPT merged (mean over seeds, std bars)."""
    # The Agg canvas directly, not pyplot: no global backend switch, no figure registry.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    classes = list(summary["classes"])
    zs = [summary["zero_shot"]["per_class_AP"].get(c) for c in classes]
    ti = [summary["taidpt"]["per_class_AP_mean"].get(c) for c in classes]
    te = [summary["taidpt"]["per_class_AP_std"].get(c) for c in classes]
    nan = float("nan")
    x = np.arange(len(classes))
    fig = Figure(figsize=(11, 4.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    w = 0.4
    ax.bar(x - w / 2, [nan if v is None else v for v in zs], w, label="zero-shot CLIP (merged)", color="#9aa5b1")
    ax.bar(x + w / 2, [nan if v is None else v for v in ti], w, yerr=[0 if v is None else v for v in te],
           capsize=2, label="TaI-DPT (merged, mean over prompt seeds)", color="#2a7ab9")
    ax.set_xticks(x, classes, rotation=35, ha="right")
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 100)
    z = summary["zero_shot"]["mAP"]["merged"]
    t = summary["taidpt"]["mean"]["merged"]
    tag = "" if summary["measured"] else f" [{summary['setting']} smoke run]"
    ax.set_title(f"Per-class AP on held-out shape scenes: zero-shot {z:.1f} vs TaI-DPT {t:.1f} mAP{tag}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
