#!/usr/bin/env python
"""Train and evaluate TaI-DPT (or another registered method), CoOp style.

    python train.py --trainer TaIDPT --root DATA \
        --dataset-config-file configs/datasets/coco2014.yaml \
        --config-file configs/trainers/TaIDPT/rn50_coco2014.yaml \
        --output-dir output/coco2014/TaIDPT/seed1 --seed 1 [KEY VALUE ...]

The engine choice and the run live in ``taidpt.engine.launch``; this file adds the Dassl plugin
path (``trainers/``, ``datasets/`` beside it), used when Dassl imports (``--engine auto``) or when
asked for (``--engine dassl``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that spin while waiting starve everything else on a busy 2-core machine (a step
# can take 10x longer); passive waiting costs nothing measurable. Read when torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def dassl_plugin() -> tuple[Callable[[argparse.Namespace], int] | None, str]:
    """The Dassl path's ``main`` when ``dassl.engine`` and the adapters import, else None and why.

    Any exception counts as "not importable": a torchvision that does not match torch makes
    ``import dassl.engine`` raise a RuntimeError, not an ImportError.
    """
    try:
        import dassl.engine  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        first = str(exc).splitlines()[0] if str(exc) else ""
        return None, f"{type(exc).__name__}: {first}"
    try:
        import trainers.dassl_train as dassl_train
    except ImportError as exc:
        return None, f"the Dassl plugin modules (trainers/) do not import: {exc}"
    return dassl_train.main, ""


if __name__ == "__main__":
    from taidpt.engine.launch import main

    sys.exit(main(plugin=dassl_plugin))
