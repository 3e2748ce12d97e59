"""Checkout entry point: ``python -m export.infer`` runs :func:`taidpt.serve.infer.main`.

Installed with pip, the same command is ``taidpt-infer``; this file is not part of the package.
"""

import sys

from taidpt.serve.infer import main

if __name__ == "__main__":
    sys.exit(main())
