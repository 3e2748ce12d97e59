"""How a command names itself in ``--help``: the console script a user typed, or the module form.

The same ``main`` runs as ``python -m export.infer`` from a checkout and as ``taidpt-infer`` from an
installed package; usage lines should show the one the user ran. Torch-free.
"""

from __future__ import annotations

import sys
from pathlib import Path


def prog_name(module_form: str) -> str:
    """``taidpt-*`` when started through that console script, else ``module_form`` (``python -m ...``)."""
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return invoked if invoked.startswith("taidpt-") else module_form


__all__ = ["prog_name"]
