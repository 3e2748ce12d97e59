"""taidpt: TaI-DPT (Texts as Images in prompt tuning, CVPR 2023) on a modern stack.

The package root imports nothing, so the torch-free modules (serving, preprocessing, metrics) stay
importable without torch. Import submodules directly, e.g. ``from taidpt.networks.model import TaIDPTModel``.
"""

__version__ = "0.1.0"
