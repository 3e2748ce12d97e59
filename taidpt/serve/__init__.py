"""The serving side of deployment: run an exported model on image files, without torch.

It imports the standard library, numpy, PIL, onnx/onnxruntime, tqdm, TensorRT and tritonclient (when
used) and the torch-free parts of taidpt; never torch, open_clip, the training code or the build side
(:mod:`taidpt.export`): ``tests/test_architecture.py``. Modules and commands: docs/deployment.md.
"""


def __getattr__(name: str):
    """``taidpt.serve.Predictor``, imported on first use (the package root itself imports nothing)."""
    if name == "Predictor":
        from taidpt.serve.predictor import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
