#!/usr/bin/env python
"""Train and evaluate TaI-DPT (or the dense zero-shot CLIP baseline), CoOp style.

    python train.py --trainer TaIDPT --root DATA \
        --dataset-config-file configs/datasets/coco2014.yaml \
        --config-file configs/trainers/TaIDPT/rn50_coco2014.yaml \
        --output-dir output/coco2014/TaIDPT/seed1 --seed 1 [KEY VALUE ...]

This file is the core path: the Dassl plugin path (``--engine dassl``) is selected here when Dassl
is importable and lives in ``trainers/`` and ``datasets/``.
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that spin while waiting starve everything else on a busy 2-core machine (a step
# can take 10x longer); passive waiting costs nothing measurable. Read when torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def dassl_importable() -> tuple[bool, str]:
    """Whether ``dassl.engine`` imports; any exception (a broken torchvision raises RuntimeError) counts."""
    try:
        import dassl.engine  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return True, ""


def main(argv: list[str] | None = None) -> int:
    from taidpt.engine.cli import parse_args, setup_cfg
    from taidpt.engine.config import get_cfg_default
    from taidpt.engine.distributed import launched_by_torchrun

    args = parse_args(argv)
    engine = args.engine
    distributed = launched_by_torchrun()
    if distributed and engine == "dassl":
        print("error: the Dassl path runs in one process; under torchrun use --engine core or auto", file=sys.stderr)
        return 2
    if engine in ("auto", "dassl") and not distributed:
        ok, why = dassl_importable()
        if engine == "dassl" and not ok:
            print(f"error: --engine dassl but Dassl cannot be imported ({why})", file=sys.stderr)
            return 2
        if ok:
            try:
                import trainers.dassl_train as dassl_train  # noqa: PLC0415 - only with Dassl
            except ImportError:
                dassl_train = None
            if dassl_train is not None:
                return dassl_train.main(args)
            if engine == "dassl":
                print("error: the Dassl plugin modules (trainers/) are not available", file=sys.stderr)
                return 2
        reason = why or "the Dassl plugin is not installed in this checkout"
        engine = "core"
        note = f"Dassl not used ({reason}): running taidpt's core runner"
    else:
        note = ("running taidpt's core runner (--engine core)" if not distributed
                else "running taidpt's core runner (the Dassl path is single-process)")

    from taidpt.engine.distributed_runner import run
    from taidpt.engine.runner import RunOptions

    try:
        cfg = setup_cfg(get_cfg_default(), args)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    options = RunOptions(eval_only=args.eval_only, model_dir=args.model_dir, load_epoch=args.load_epoch,
                         no_train=args.no_train, progress=not args.no_progress, note=note)
    try:
        run(cfg, options)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        from taidpt.clip.loader import ClipLoadError

        kind = "error" if not isinstance(exc, ClipLoadError) else "error (CLIP weights)"
        msg = exc.args[0] if exc.args else str(exc)
        logging.getLogger("taidpt").error("%s: %s", kind, msg)
        if os.environ.get("TAIDPT_DEBUG"):
            raise
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
