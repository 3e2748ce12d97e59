"""taidpt: TaI-DPT (Texts as Images in prompt tuning, CVPR 2023) on a modern stack.

The package root imports no third-party module, so the torch-free modules (serving, preprocessing,
metrics) stay importable without torch. Import submodules directly, e.g.
``from taidpt.networks.model import TaIDPTModel``. Importing it switches off the telemetry of the
libraries it drives (:mod:`taidpt.utils.telemetry`), before any of them starts.
"""

from taidpt.utils.telemetry import opt_out as _opt_out

__version__ = "0.1.0"
_opt_out()
