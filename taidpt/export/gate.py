"""The gate a reduced-precision export (fp16, int8) must pass before ``python -m export.onnx`` writes it.

The reduced file is compared with the fp32 one, both in onnxruntime on the CPU: with a labelled set, by the
merged mAP it loses (``--max-map-drop``); without one, by agreement on images measured relative to the
scale of the logits, never as an absolute difference (a scale of 100 makes 1e-2 noise, a scale of 0.01
makes it a different ranking). See docs/deployment.md, "Precision ladder".
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from taidpt.export.errors import ExportError
from taidpt.serve.metadata import OUTPUT_NAMES

DEFAULT_MAX_MAP_DROP = 0.5


def max_map_drop(text: str) -> float:
    """``--max-map-drop``'s argparse type: a finite number of points >= 0 (a negative limit would ask the
    reduced file to beat fp32, nan would pass or refuse every file)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of mAP points >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of mAP points >= 0, got {text!r}")
    return value


@dataclass(frozen=True)
class AgreementLimits:
    """What the agreement gate allows: the largest relative difference and the smallest top-k agreement."""

    max_relative_diff: float
    min_top_k_agreement: float


# Measured (bench/precision_map.py, bench/inference_speed.py; docs/performance.md): fp16 differs by ~0.1 %
# of the range; int8 files that lose no mAP differ by 2-9 % of the range at their worst image and class
# (the max is an outlier statistic: a recipe with a smaller max lost more mAP), with top-3 agreement
# 98-100 %. The limits sit above that, so that they catch broken conversions (outputs off by a large
# part of their range, classes re-ranked) rather than grade faithful ones; grading is the mAP gate's job.
DEFAULT_LIMITS = {"fp16": AgreementLimits(0.01, 0.95), "int8": AgreementLimits(0.15, 0.9)}


def top_k_for(num_classes: int) -> int:
    """k of the top-k agreement: 3, fewer for small class lists (k = C would always agree)."""
    return max(1, min(3, num_classes // 2))


def top_k_agreement(reference: np.ndarray, reduced: np.ndarray, k: int) -> float:
    """Mean over images of |top-k(reference) & top-k(reduced)| / k (ties broken by class order)."""
    ref = np.argsort(-reference, axis=1, kind="stable")[:, :k]
    red = np.argsort(-reduced, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref, red)]))


@dataclass(frozen=True)
class Agreement:
    """How closely a reduced model follows the fp32 one on ``n_images`` images."""

    precision: str
    n_images: int
    k: int
    max_abs: dict[str, float]
    ranges: dict[str, float]
    top_k: float
    limits: AgreementLimits

    @property
    def relative(self) -> dict[str, float]:
        """max |reduced - fp32| / range(fp32) per output (inf when the fp32 output is constant)."""
        return {o: (d / r if r > 0 else (0.0 if d == 0 else float("inf"))) for (o, d), r in
                zip(self.max_abs.items(), self.ranges.values())}

    @property
    def worst_relative(self) -> float:
        return max(self.relative.values())

    @property
    def ok(self) -> bool:
        return self.worst_relative <= self.limits.max_relative_diff and self.top_k >= self.limits.min_top_k_agreement

    def line(self) -> str:
        """One line with every number and the verdict."""
        rel = ", ".join(f"{o} {v:.2%}" for o, v in self.relative.items())
        verdict = "OK" if self.ok else "FAILED"
        return (f"gate {self.precision} vs fp32 on {self.n_images} images: max abs difference / fp32 range: {rel} "
                f"(limit {self.limits.max_relative_diff:.2%}); top-{self.k} agreement {self.top_k:.1%} "
                f"(limit {self.limits.min_top_k_agreement:.1%}): {verdict}")


def measure_agreement(reference: Mapping[str, np.ndarray], reduced: Mapping[str, np.ndarray], precision: str,
                      limits: AgreementLimits) -> Agreement:
    """Compare the reduced model's outputs with the fp32 model's on the same images."""
    max_abs, ranges = {}, {}
    for o in OUTPUT_NAMES:
        ref, red = np.asarray(reference[o], np.float64), np.asarray(reduced[o], np.float64)
        max_abs[o] = float(np.max(np.abs(red - ref)))
        ranges[o] = float(ref.max() - ref.min())
    k = top_k_for(reference[OUTPUT_NAMES[0]].shape[1])
    agree = top_k_agreement(reference[OUTPUT_NAMES[0]], reduced[OUTPUT_NAMES[0]], k)
    return Agreement(precision, len(reference[OUTPUT_NAMES[0]]), k, max_abs, ranges, agree, limits)


def agreement_gate(fp32_path: str | os.PathLike, reduced_path: str | os.PathLike, images: np.ndarray,
                   precision: str, limits: AgreementLimits | None = None) -> Agreement:
    """Run both files in onnxruntime (CPU) on ``images`` and measure their agreement."""
    from taidpt.serve.runtime import OnnxModel

    outputs = []
    for path in (fp32_path, reduced_path):
        model = OnnxModel(path, ["CPUExecutionProvider"])
        try:
            outputs.append(model.run(images))
        finally:
            model.close()
    return measure_agreement(outputs[0], outputs[1], precision, limits or DEFAULT_LIMITS[precision])


@dataclass(frozen=True)
class MapGate:
    """Merged mAP (percent) of the fp32 and the reduced model on a labelled set."""

    precision: str
    test_set: str
    n_images: int
    fp32: float
    reduced: float
    max_drop: float

    @property
    def drop(self) -> float:
        return self.fp32 - self.reduced

    @property
    def ok(self) -> bool:
        return self.drop <= self.max_drop

    def line(self) -> str:
        """One line: both numbers, the drop, the limit and the verdict."""
        verdict = "OK" if self.ok else "FAILED"
        return (f"gate {self.precision} on {self.test_set} ({self.n_images} images): mAP fp32 {self.fp32:.2f}, "
                f"{self.precision} {self.reduced:.2f}, drop {self.drop:.2f} points (--max-map-drop "
                f"{self.max_drop:g}): {verdict}")


def labelled_map(onnx_path: str | os.PathLike, cfg: Any, batch_size: int = 32) -> dict[str, Any]:
    """``export.evaluate``'s results of one ONNX file (CPU provider, no progress bar) on ``cfg``'s test set."""
    from taidpt.export.evaluate import evaluate_model
    from taidpt.serve.runtime import OnnxModel

    model = OnnxModel(onnx_path, ["CPUExecutionProvider"], max_batch=batch_size)
    try:
        return evaluate_model(model, cfg, batch_size=batch_size, workers=min(4, os.cpu_count() or 1),
                              progress=False)
    finally:
        model.close()


def map_gate(fp32_path: str | os.PathLike, reduced_path: str | os.PathLike, cfg: Any, precision: str,
             max_drop: float = DEFAULT_MAX_MAP_DROP, batch_size: int = 32) -> MapGate:
    """Merged mAP of both files on the labelled set of ``cfg`` (see :func:`labelled_map`)."""
    ref = labelled_map(fp32_path, cfg, batch_size)
    red = labelled_map(reduced_path, cfg, batch_size)
    if ref["mAP"]["merged"] is None or red["mAP"]["merged"] is None:
        raise ExportError(f"the gate set {ref['test_set']} has no class with both positive and negative images: "
                          f"mAP is undefined there")
    return MapGate(precision, str(ref["test_set"]), int(red["n_images"]), float(ref["mAP"]["merged"]),
                   float(red["mAP"]["merged"]), float(max_drop))
