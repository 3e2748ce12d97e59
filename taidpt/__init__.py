"""taidpt: TaI-DPT (Texts as Images in prompt tuning, CVPR 2023) on a modern stack.

The package root imports nothing heavy on purpose: ``taidpt.images.preprocess`` and
``taidpt.evaluation.metrics`` must stay usable without torch (the ONNX inference CLI needs
numpy + PIL only). Import submodules directly, e.g. ``from taidpt.networks.model import
TaIDPTModel``.
"""

__version__ = "0.1.0"
