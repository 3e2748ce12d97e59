"""The build side of deployment: a trained run (or the zero-shot baseline) -> ONNX -> TensorRT, with torch.

The serving side that runs these files without torch is :mod:`taidpt.serve`; this side reads the interface
names and metadata from :mod:`taidpt.serve.metadata`, never the other way round. The package root imports
nothing (``Predictor`` loads on first use), so importing one module does not pull torch in.
Modules and commands: docs/deployment.md.
"""


def __getattr__(name: str):
    """``taidpt.export.Predictor``, imported on first use."""
    if name == "Predictor":
        from taidpt.export.predictor import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
