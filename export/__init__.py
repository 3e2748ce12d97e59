"""Checkout entry points of the deployment tools: ``python -m export.<name>`` from the repository root.

Each module here is a thin shim that runs a ``main`` from the installed-package code; it is not
part of the pip package (installed, the same commands are the ``taidpt-*`` console scripts).

* ``export.onnx`` -> :mod:`taidpt.export.onnx_cli` (``taidpt-export``; needs torch);
* ``export.tensorrt`` -> :mod:`taidpt.export.tensorrt` (``taidpt-tensorrt``);
* ``export.evaluate`` -> :mod:`taidpt.export.evaluate` (``taidpt-evaluate``);
* ``export.calibrate`` -> :mod:`taidpt.export.calibrate` (``taidpt-calibrate``; per-class thresholds);
* ``export.infer`` -> :mod:`taidpt.serve.infer` (``taidpt-infer``; no torch);
* ``export.batch_infer`` -> :mod:`taidpt.serve.batch_infer` (``taidpt-batch-infer``);
* ``export.triton`` -> :mod:`taidpt.serve.triton` (``taidpt-triton``);
* ``export.triton_client`` -> :mod:`taidpt.serve.triton_client` (``taidpt-triton-client``).

This package root imports nothing, so ``export.infer`` stays torch-free.
"""
