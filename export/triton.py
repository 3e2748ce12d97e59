"""Checkout entry point: ``python -m export.triton`` runs :func:`taidpt.serve.triton.main`.

Installed with pip, the same command is ``taidpt-triton``; this file is not part of the package.
"""

import sys

from taidpt.serve.triton import main

if __name__ == "__main__":
    sys.exit(main())
