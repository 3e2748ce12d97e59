"""The serving side of deployment: run an exported model on image files, without torch.

Everything here imports only the standard library, numpy, PIL, onnx/onnxruntime, TensorRT (when
used), tqdm, tritonclient (when used) and the torch-free parts of taidpt (:mod:`taidpt.utils`,
:mod:`taidpt.images.preprocess`); never torch, open_clip, the training code or the build side
(:mod:`taidpt.export`). ``tests/test_architecture.py`` holds that rule.

* :mod:`taidpt.serve.metadata` -- what an export carries (classes, preprocessing, provenance) and
  the graph's interface names, which the build side reads from here;
* :mod:`taidpt.serve.predictor` -- the Python API, ``Predictor.from_onnx(path).predict(images)``
  (also importable as ``taidpt.serve.Predictor``);
* :mod:`taidpt.serve.runtime` -- onnxruntime sessions and serialized TensorRT engines
  (:mod:`taidpt.serve.ort_packages`: the CPU/GPU onnxruntime double-install warning);
* :mod:`taidpt.serve.infer` -- ``python -m export.infer`` / ``taidpt-infer``: score image files;
* :mod:`taidpt.serve.batch_infer` -- ``python -m export.batch_infer`` / ``taidpt-batch-infer``:
  streaming, resumable batch inference (:mod:`taidpt.serve.result_log`: its JSONL/CSV outputs);
* :mod:`taidpt.serve.triton` -- ``python -m export.triton`` / ``taidpt-triton``: a Triton model
  repository (:mod:`taidpt.serve.pbtxt`: ``config.pbtxt``), and
  :mod:`taidpt.serve.triton_client`, a client for it.
"""


def __getattr__(name: str):
    """``taidpt.serve.Predictor``, imported on first use (the package root itself imports nothing)."""
    if name == "Predictor":
        from taidpt.serve.predictor import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
