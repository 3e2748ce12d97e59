"""The int8 variant of an fp32 export: onnxruntime static (QDQ) quantization of the image encoder.

Weights are int8 per output channel, activations uint8 with ranges calibrated on the user's images. Only
``/encoder/`` nodes are quantized. Scope ``"tower"`` (the default) takes every Conv, every MatMul/Gemm with a
constant weight and the Relu, Add and AveragePool between them, so a ResNet's activations stay int8 from one
convolution to the next; ``"weights"`` takes only the Conv and constant-weight MatMul/Gemm. Attention products
of two activations, Softmax and the scoring head stay float. See docs/deployment.md, "Precision ladder".
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from taidpt.export.errors import ExportError
from taidpt.export.onnx_files import save_model, write_props
from taidpt.export.precision import ENCODER_SCOPE, fold_initializer_identities
from taidpt.serve.metadata import INPUT_NAME, ModelMetadata

WEIGHT_OPS = ("Conv", "MatMul", "Gemm")
BETWEEN_OPS = ("Relu", "Add", "AveragePool")
SCOPES = ("tower", "weights")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
CALIBRATION_BATCH = 8


def int8_nodes(model: Any, scope: str = "tower") -> list[str]:
    """Names of the encoder nodes to quantize under ``scope`` (see the module docstring).

    ``model`` must have its initializer aliases folded (:func:`fold_initializer_identities`), so
    that a shared weight reads as the constant it is.
    """
    if scope not in SCOPES:
        raise ExportError(f"int8 scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    constants = {t.name for t in model.graph.initializer}
    constants.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    ops = WEIGHT_OPS + (BETWEEN_OPS if scope == "tower" else ())
    chosen = []
    for node in model.graph.node:
        if not node.name.startswith(ENCODER_SCOPE) or node.op_type not in ops:
            continue
        if node.op_type in ("MatMul", "Gemm") and node.input[1] not in constants:
            continue  # an attention product of two activations
        chosen.append(node)
    if not any(node.op_type in WEIGHT_OPS for node in chosen):
        raise ExportError(f"no encoder node (names starting {ENCODER_SCOPE!r}) with a weight to quantize")
    return [node.name for node in chosen]


def _batches(images: np.ndarray, batch: int) -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, len(images), batch):
        yield {INPUT_NAME: np.ascontiguousarray(images[start:start + batch], dtype=np.float32)}


def calibration_reader(images: np.ndarray, batch: int = CALIBRATION_BATCH) -> Any:
    """An onnxruntime ``CalibrationDataReader`` over a preprocessed float32 ``[N, 3, H, W]`` array."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        """Feeds ``images`` in batches of ``batch``; ``rewind`` starts over."""

        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = _batches(images, batch)

    return _Reader()


def convert_to_int8(src: str | os.PathLike, dst: str | os.PathLike, calibration: np.ndarray, *,
                    scope: str = "tower", method: str = "minmax") -> int:
    """Write a static-int8 copy of the fp32 export ``src`` to ``dst``; returns how many nodes were quantized.

    ``calibration`` is a preprocessed float32 ``[N, 3, H, W]`` batch (a few hundred images like the
    deployment's are plenty); ``method`` is how activation ranges are taken from it (``minmax``,
    ``percentile`` 99.999 % or ``entropy``). The file's metadata says ``precision int8``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ExportError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ExportError(f"calibration images must be a non-empty [N, 3, H, W] batch, got shape {calibration.shape}")
    model = onnx.load(str(src))
    fold_initializer_identities(model.graph)
    nodes = int8_nodes(model, scope)
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=Path(dst).parent) as tmp:
        folded, quantized = Path(tmp) / "folded.onnx", Path(tmp) / "int8.onnx"
        save_model(model, folded)
        quantize_static(
            str(folded), str(quantized), calibration_reader(calibration), quant_format=QuantFormat.QDQ,
            per_channel=True, reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_quantize=nodes, op_types_to_quantize=sorted({*WEIGHT_OPS, *BETWEEN_OPS}),
            calibrate_method=methods[method],
            # Min-max calibration keeps only per-tensor ReduceMin/ReduceMax results, so memory stays
            # small without CalibMaxIntermediateOutputs (which onnxruntime 1.31 clears without merging).
            extra_options={"CalibPercentile": 99.999},
        )
        result = onnx.load(str(quantized))
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, src).replace(precision="int8")
    write_props(result, meta)
    result.producer_name, result.producer_version = model.producer_name, model.producer_version
    result.doc_string = model.doc_string
    save_model(result, dst)
    return len(nodes)
