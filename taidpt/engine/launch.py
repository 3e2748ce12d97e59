"""``train.py``'s engine choice and run, shared by the checkout's ``train.py`` and the ``taidpt-train`` command.

The core never imports Dassl: the checkout's ``train.py`` hands in a probe that finds the Dassl
plugin (``trainers/``), and this module only calls what the probe returns.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

# A probe for the Dassl path: (its main(args), "") when usable, else (None, why not).
PluginProbe = Callable[[], "tuple[Callable[[argparse.Namespace], int] | None, str]"]


def console_main() -> int:
    """Entry point of the ``taidpt-train`` command (the core runner; the Dassl path runs from a checkout)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return main()


def main(argv: list[str] | None = None, plugin: PluginProbe | None = None) -> int:
    """Parse CoOp's arguments, pick the engine and run one configuration; returns the exit code.

    ``plugin`` finds the Dassl path (the checkout's ``train.py`` passes one: the adapters live in
    ``trainers/`` beside it); it returns the plugin's ``main(args)`` or None with the reason. Without
    it, and under torchrun, the core runner runs.
    """
    from taidpt.engine.cli import parse_args, setup_cfg
    from taidpt.engine.config import get_cfg_default

    args = parse_args(argv)  # before any torch import: --help stays light
    from taidpt.engine.distributed import launched_by_torchrun

    engine = args.engine
    distributed = launched_by_torchrun()
    if distributed and engine == "dassl":
        print("error: the Dassl path runs in one process; under torchrun use --engine core or auto", file=sys.stderr)
        return 2
    if engine in ("auto", "dassl") and not distributed:
        dassl_main, why = plugin() if plugin is not None else (None, "this command has no Dassl plugin: use train.py")
        if dassl_main is not None:
            return dassl_main(args)
        if engine == "dassl":
            print(f"error: --engine dassl but Dassl cannot be imported ({why})", file=sys.stderr)
            return 2
        reason = why
        engine = "core"
        note = f"Dassl not used ({reason}): running taidpt's core runner"
    else:
        note = ("running taidpt's core runner (--engine core)" if not distributed
                else "running taidpt's core runner (the Dassl path is single-process)")

    try:
        cfg = setup_cfg(get_cfg_default(), args)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    # The model code (open_clip, torchvision) loads only once the configuration is known to be good.
    from taidpt.engine.session import run
    from taidpt.engine.runner import RunOptions

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
