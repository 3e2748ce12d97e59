"""Checkout entry point: ``python -m export.evaluate`` runs :func:`taidpt.export.evaluate.main`.

Installed with pip, the same command is ``taidpt-evaluate``; this file is not part of the package.
"""

import sys

from taidpt.export.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
