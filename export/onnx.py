"""Checkout entry point: ``python -m export.onnx`` runs :func:`taidpt.export.onnx_cli.main`.

Installed with pip, the same command is ``taidpt-export``; this file is not part of the package.
"""

import sys

from taidpt.export.onnx_cli import main

if __name__ == "__main__":
    sys.exit(main())
