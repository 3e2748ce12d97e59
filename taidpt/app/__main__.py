"""``python -m taidpt.app``: see :mod:`taidpt.app.cli`."""

import sys

from taidpt.app.cli import main

sys.exit(main())
