"""The build side of deployment: a trained run (or the zero-shot baseline) -> ONNX -> TensorRT.

Needs torch (tracing, the PyTorch side of the parity check). The serving side, which runs the files
written here without torch, is :mod:`taidpt.serve`; this side reads its interface names and
metadata from :mod:`taidpt.serve.metadata`, and never the other way round.

* :mod:`taidpt.export.scorer_loading` -- a run's config, class names and frozen scorer;
* :mod:`taidpt.export.tracing` -- ``torch.onnx.export`` of the scorer (fp32, dynamic batch);
* :mod:`taidpt.export.onnx_files` -- saving ONNX files (external data over 2 GB) and their metadata;
* :mod:`taidpt.export.precision` -- the fp16 variant (float16 encoder, float32 interface and head);
* :mod:`taidpt.export.quantize` -- the int8 variant (static QDQ int8 encoder, calibrated on images);
* :mod:`taidpt.export.reduced`, :mod:`taidpt.export.gate` -- the precision ladder: a reduced file is
  written only when it passes its gate (mAP on a labelled set, else agreement relative to the logits);
* :mod:`taidpt.export.parity` -- ``onnx.checker`` and onnxruntime vs PyTorch comparison;
* :mod:`taidpt.export.onnx_cli` -- ``python -m export.onnx`` / ``taidpt-export``;
* :mod:`taidpt.export.tensorrt` -- ``python -m export.tensorrt``: a TensorRT engine and its sidecar;
* :mod:`taidpt.export.predictor` -- ``Predictor.from_run(RUN)``: the Python API on a run's PyTorch
  model (also importable as ``taidpt.export.Predictor``; ``from_onnx`` too);
* :mod:`taidpt.export.evaluate` -- ``python -m export.evaluate`` / ``taidpt-evaluate``: mAP of an export.

This package root imports nothing, so that importing one module does not pull torch in.
"""


def __getattr__(name: str):
    """``taidpt.export.Predictor``, imported on first use."""
    if name == "Predictor":
        from taidpt.export.predictor import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
