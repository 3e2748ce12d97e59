"""Which onnxruntime distributions are installed, and the one warning when both the CPU and GPU builds are.

``onnxruntime`` and ``onnxruntime-gpu`` install the same import package into the same folder; with both,
the CPU files usually hide the CUDA provider and everything silently runs on the CPU. Serving checks this
when it opens its first onnxruntime model. Tests replace :data:`distribution` in this module.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, distribution

CPU_DIST = "onnxruntime"
GPU_DIST = "onnxruntime-gpu"

log = logging.getLogger(__name__)
_warned = False


def installed(name: str) -> bool:
    """Whether the distribution ``name`` is installed in this environment."""
    try:
        distribution(name)
    except PackageNotFoundError:
        return False
    return True


def conflict_message() -> str:
    """The warning text when both onnxruntime distributions are installed, else ``""``."""
    if not (installed(CPU_DIST) and installed(GPU_DIST)):
        return ""
    return (f"both {CPU_DIST} and {GPU_DIST} are installed: they share one import package, and the CPU "
            f"package's files usually hide the CUDA execution provider. Keep one: pip uninstall -y {CPU_DIST} "
            f"{GPU_DIST} && pip install {GPU_DIST} (or pip install 'taidpt[gpu]')")


def warn_if_both_installed() -> bool:
    """Log :func:`conflict_message` once per process; True when this call logged it."""
    global _warned
    if _warned:
        return False
    _warned = True
    message = conflict_message()
    if message:
        log.warning("warning: %s", message)
    return bool(message)
