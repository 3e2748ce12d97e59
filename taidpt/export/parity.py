"""Checking an export: ``onnx.checker``, and onnxruntime against PyTorch on preprocessed images.

The images are real files or synthetic photo-like ones, put through the model's own preprocessing,
at several batch sizes; the report holds the max abs difference of each output. For the fp32 file
this is the exporter's correctness check, with an absolute tolerance of 1e-4 (tracing is exact up to
float rounding). A reduced-precision file (fp16, int8) gets the same table for information only: an
absolute difference means nothing without the scale of the logits, so what decides there is the gate
of :mod:`taidpt.export.gate` (mAP on a labelled set, else agreement relative to the logits' range).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from taidpt.export.errors import ExportError
from taidpt.serve.metadata import OUTPUT_NAMES, ModelMetadata
from taidpt.utils.seeding import synthetic_images_rng

FP32_TOL = 1e-4


def check_onnx(path: str | os.PathLike) -> None:
    """``onnx.checker`` on the file path (works for models over 2 GB with external data) plus shape inference."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def synthetic_images(n: int, seed: int = 0) -> list[Any]:
    """``n`` photo-like RGB PIL images (gradients, shapes, noise) of varied sizes and aspect ratios.

    They go through the real preprocessing (resize, crop, normalise), so the parity check sees the
    same value ranges as deployment does.
    """
    from PIL import Image, ImageDraw

    rng = synthetic_images_rng(seed)
    out = []
    for _ in range(n):
        w, h = int(rng.integers(160, 520)), int(rng.integers(160, 520))
        gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-0.5, 0.5, (3, 2))
        arr = np.stack([base[c] + slope[c, 0] * gx + slope[c, 1] * gy for c in range(3)], axis=-1)
        arr += rng.normal(0, 12, arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 7))):
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
        out.append(img)
    return out


def parity_inputs(metadata: ModelMetadata, n: int, image_paths: Sequence[str] = (), seed: int = 0) -> np.ndarray:
    """A float32 ``[n, 3, H, W]`` batch of preprocessed images: the given files (cycled), else synthetic ones."""
    from taidpt.images.preprocess import load_rgb

    cfg = metadata.preprocess_config()
    if image_paths:
        imgs = [load_rgb(image_paths[i % len(image_paths)]) for i in range(n)]
    else:
        imgs = synthetic_images(n, seed)
    return np.stack([cfg(img) for img in imgs]).astype(np.float32)


@dataclass
class ParityReport:
    """Max abs difference per output and batch size between onnxruntime and PyTorch.

    ``tolerance`` None: the table is informational (a reduced-precision file, judged by its gate).
    """

    precision: str
    provider: str
    tolerance: float | None
    rows: dict[int, dict[str, float]]
    reference_max: dict[str, float]

    @property
    def worst(self) -> dict[str, float]:
        return {o: max(r[o] for r in self.rows.values()) for o in OUTPUT_NAMES}

    @property
    def ok(self) -> bool:
        return self.tolerance is None or all(v <= self.tolerance for v in self.worst.values())

    def table(self) -> str:
        head = f"{'batch':>5}  " + "  ".join(f"{o:>14}" for o in OUTPUT_NAMES)
        lines = [f"parity {self.precision} onnxruntime ({self.provider}) vs PyTorch fp32, max abs difference:", head]
        for b, row in self.rows.items():
            lines.append(f"{b:>5}  " + "  ".join(f"{row[o]:>14.3e}" for o in OUTPUT_NAMES))
        lines.append(f"{'max':>5}  " + "  ".join(f"{v:>14.3e}" for v in self.worst.values()))
        lines.append(f"{'|ref|':>5}  " + "  ".join(f"{self.reference_max[o]:>14.3e}" for o in OUTPUT_NAMES)
                     + "   (largest |PyTorch output|, for scale)")
        if self.tolerance is None:
            lines.append(f"({self.precision}: for information; the gate below decides)")
        else:
            lines.append(f"tolerance {self.tolerance:g}: {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


def torch_reference(scorer: Any, images: np.ndarray, batch_sizes: Sequence[int]) -> dict[int, dict[str, np.ndarray]]:
    """PyTorch outputs of the first ``b`` images for each batch size ``b``."""
    import torch

    out = {}
    with torch.no_grad():
        for b in batch_sizes:
            values = scorer(torch.from_numpy(images[:b]))
            out[b] = {name: v.float().numpy() for name, v in zip(OUTPUT_NAMES, values)}
    return out


def measure_parity(onnx_path: str | os.PathLike, images: np.ndarray, reference: dict[int, dict[str, np.ndarray]],
                   tolerance: float | None, precision: str, providers: Sequence[str] = ("CPUExecutionProvider",)) -> ParityReport:
    """Run the ONNX file in onnxruntime on the reference's batches and compare every output."""
    from taidpt.serve.runtime import OnnxModel

    model = OnnxModel(onnx_path, list(providers))
    rows: dict[int, dict[str, float]] = {}
    ref_max = {o: 0.0 for o in OUTPUT_NAMES}
    for b, ref in reference.items():
        got = model.run(images[:b])
        rows[b] = {}
        for o in OUTPUT_NAMES:
            if got[o].shape != ref[o].shape:
                raise ExportError(f"{onnx_path}: output {o} has shape {got[o].shape}, PyTorch {ref[o].shape}")
            rows[b][o] = float(np.max(np.abs(got[o].astype(np.float64) - ref[o].astype(np.float64))))
            ref_max[o] = max(ref_max[o], float(np.max(np.abs(ref[o]))))
    provider = model.provider
    model.close()
    return ParityReport(precision, provider, tolerance, rows, ref_max)

