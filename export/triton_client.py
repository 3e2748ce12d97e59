"""Checkout entry point: ``python -m export.triton_client`` runs :func:`taidpt.serve.triton_client.main`.

Installed with pip, the same command is ``taidpt-triton-client``; this file is not part of the package.
"""

import sys

from taidpt.serve.triton_client import main

if __name__ == "__main__":
    sys.exit(main())
