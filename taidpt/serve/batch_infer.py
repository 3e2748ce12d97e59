"""Deprecated alias of ``python -m export.infer`` (``python -m export.batch_infer``, ``taidpt-batch-infer``).

The streaming, resumable batch inference it used to run is now what ``export.infer`` does for every
output; this command runs the same :func:`taidpt.serve.infer.main` after one deprecation line on stderr,
for one release. The pipeline's names are re-exported here for the code that imported them from here.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from taidpt.serve import infer
from taidpt.serve.inputs import count_lines, image_source, walk_images  # noqa: F401 - re-exported
from taidpt.serve.pipeline import BatchStats, pending_paths, run_batches, score_batch  # noqa: F401 - re-exported

PROG = "python -m export.batch_infer"
DEPRECATION = ("warning: python -m export.batch_infer (taidpt-batch-infer) is deprecated and will be removed in the "
               "next release; use python -m export.infer (taidpt-infer), which takes the same flags")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``export.infer``, named as this alias."""
    return infer.build_parser(PROG)


def main(argv: Sequence[str] | None = None) -> int:
    print(DEPRECATION, file=sys.stderr)
    return infer.main(argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
