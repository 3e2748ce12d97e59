"""Deployment of TaI-DPT: one fused ONNX graph (image in, class scores out) and its runtimes.

Modules (run each with ``python -m export.<name> --help``):

* :mod:`export.onnx` -- export a trained run (or the zero-shot baseline) to ONNX, check it with
  ``onnx.checker`` and against PyTorch in onnxruntime (needs torch);
* :mod:`export.infer` -- score image files with an exported model (onnxruntime or a serialized
  TensorRT engine); numpy + PIL only, no torch;
* :mod:`export.tensorrt` -- build a TensorRT engine with explicit batch profiles and print the
  matching ``trtexec`` command;
* :mod:`export.evaluate` -- mAP of an exported model on a dataset, with the training code's readers
  and metrics (no torch).

This package root stays import-light: :mod:`export.infer` and :mod:`export.evaluate` must not pull
torch in through it.
"""
