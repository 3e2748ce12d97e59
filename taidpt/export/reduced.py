"""The precision ladder of ``python -m export.onnx``: fp32 -> fp16 or int8, gated, then written.

The reduced file is made from the checked fp32 export in a staging folder
(:func:`write_reduced`), judged by its gate (:func:`run_gate`: mAP on a labelled set when one is
given, else agreement relative to the logits' scale; :mod:`taidpt.export.gate`) and only then
moved to the requested path with the rest of its export (:func:`taidpt.export.staging.publish_set`).
A file that fails its gate is never written: the command prints one line naming both numbers
(:func:`refusal`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from taidpt.export.errors import ExportError
from taidpt.export.gate import DEFAULT_LIMITS, DEFAULT_MAX_MAP_DROP, AgreementLimits, agreement_gate, map_gate
from taidpt.export.parity import check_onnx, parity_inputs
from taidpt.serve.metadata import PRECISIONS, ModelMetadata

GATE_IMAGES = 32  # images of the agreement gate
CALIBRATION_COUNT = 256  # calibration images used at most (evenly spaced over the list given)


class GateVerdict(Protocol):
    """What both gates report: a verdict and one line with the numbers."""

    precision: str

    @property
    def ok(self) -> bool: ...

    def line(self) -> str: ...


@dataclass(frozen=True)
class GateSetup:
    """How a reduced file is judged: the labelled set's config (None: agreement), and the limits."""

    agreement_images: np.ndarray
    labelled_cfg: Any = None
    max_map_drop: float = DEFAULT_MAX_MAP_DROP
    limits: AgreementLimits | None = None
    batch_size: int = 32


def resolve_precision(precision: str | None, fp16: bool) -> str:
    """``--precision`` and its alias ``--fp16`` -> one precision (ValueError when they disagree)."""
    if fp16 and precision not in (None, "fp16"):
        raise ValueError(f"--fp16 means --precision fp16, but --precision {precision} was given too")
    chosen = precision or ("fp16" if fp16 else "fp32")
    if chosen not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {chosen!r}")
    return chosen


def agreement_limits(precision: str, max_relative_diff: float | None, min_top_k: float | None) -> AgreementLimits:
    """The default limits of ``precision`` with the values given on the command line."""
    base = DEFAULT_LIMITS[precision]
    return AgreementLimits(base.max_relative_diff if max_relative_diff is None else float(max_relative_diff),
                           base.min_top_k_agreement if min_top_k is None else float(min_top_k))


def spread(paths: Sequence[str], count: int) -> list[str]:
    """At most ``count`` of ``paths``, evenly spaced over the list (not just its first folder)."""
    if len(paths) <= count:
        return list(paths)
    picks = np.unique(np.linspace(0, len(paths) - 1, count).round().astype(int))
    return [paths[i] for i in picks]


def image_batch(metadata: ModelMetadata, paths: Sequence[str], count: int, seed: int = 0) -> np.ndarray:
    """Up to ``count`` of the images, preprocessed as at inference; synthetic ones without paths.
    Unreadable images are skipped and reported (:func:`taidpt.export.calibration_data.check_readable`)."""
    from taidpt.export.calibration_data import readable_batch

    chosen = spread(paths, count)
    return readable_batch(metadata, chosen) if chosen else parity_inputs(metadata, count, seed=seed)


def write_reduced(fp32_path: str | os.PathLike, dst: str | os.PathLike, precision: str,
                  calibration: np.ndarray | None = None, *, int8_scope: str = "tower",
                  calibration_method: str = "minmax") -> str:
    """Convert the fp32 file to ``precision`` at ``dst`` and ``onnx.checker`` it; returns a one-line description."""
    if precision == "fp16":
        from taidpt.export.precision import convert_to_fp16

        convert_to_fp16(fp32_path, dst)
        what = "fp16: float16 image encoder, float32 input, outputs and scoring head"
    elif precision == "int8":
        from taidpt.export.quantize import convert_to_int8

        if calibration is None:
            raise ExportError("int8 needs calibration images")
        n = convert_to_int8(fp32_path, dst, calibration, scope=int8_scope, method=calibration_method)
        what = (f"int8: {n} image-encoder nodes in static QDQ int8 (per-channel int8 weights, uint8 activations, "
                f"{calibration_method} ranges from {len(calibration)} calibration images); scoring head float32")
    else:
        raise ExportError(f"no reduced precision {precision!r} (expected fp16 or int8)")
    check_onnx(dst)
    return what


def run_gate(fp32_path: str | os.PathLike, reduced_path: str | os.PathLike, precision: str,
             setup: GateSetup) -> GateVerdict:
    """The mAP gate when a labelled set is configured, else the agreement gate."""
    if setup.labelled_cfg is not None:
        return map_gate(fp32_path, reduced_path, setup.labelled_cfg, precision, setup.max_map_drop,
                        setup.batch_size)
    return agreement_gate(fp32_path, reduced_path, setup.agreement_images, precision, setup.limits)


def refusal(verdict: GateVerdict, out: Path) -> str:
    """The one error line of a refused file: the gate's numbers, and that nothing was written."""
    return f"{verdict.line()}; refusing to write {out} (nothing was written)"
