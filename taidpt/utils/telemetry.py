"""No library this project runs reports home: the opt-outs, set once when ``taidpt`` is imported.

onnxruntime (1.29 and later) uploads usage events to Microsoft from Linux too unless
``ORT_DISABLE_TELEMETRY`` is set before it starts; Ray reports usage statistics from a new cluster;
gradio and the Hugging Face hub have their own switches. Each is set only where the user has not set it,
so exporting e.g. ``ORT_DISABLE_TELEMETRY=0`` before the command turns that one back on. docs/robustness.md.
"""

from __future__ import annotations

import os
from typing import Mapping, MutableMapping

OPT_OUTS: Mapping[str, str] = {
    "ORT_DISABLE_TELEMETRY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def opt_out(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set every opt-out of :data:`OPT_OUTS` that ``environ`` does not already set."""
    for key, value in OPT_OUTS.items():
        environ.setdefault(key, value)
