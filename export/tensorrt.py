"""Checkout entry point: ``python -m export.tensorrt`` runs :func:`taidpt.export.tensorrt.main`.

Installed with pip, the same command is ``taidpt-tensorrt``; this file is not part of the package.
"""

import sys

from taidpt.export.tensorrt import main

if __name__ == "__main__":
    sys.exit(main())
