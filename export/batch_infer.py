"""Checkout entry point (deprecated alias of ``export.infer``): runs :func:`taidpt.serve.batch_infer.main`.

Installed with pip, the same command is ``taidpt-batch-infer``; this file is not part of the package.
"""

import sys

from taidpt.serve.batch_infer import main

if __name__ == "__main__":
    sys.exit(main())
