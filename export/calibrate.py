"""Checkout entry point: ``python -m export.calibrate`` runs :func:`taidpt.export.calibrate.main`.

Installed with pip, the same command is ``taidpt-calibrate``; this file is not part of the package.
"""

import sys

from taidpt.export.calibrate import main

if __name__ == "__main__":
    sys.exit(main())
