"""One invocation of a configuration: checks, the run folder's lock, logging, then the runner.

The runner class follows the method's kind (:data:`taidpt.methods.IMAGES` methods run on
:class:`~taidpt.engine.image_runner.ImagePromptRunner`, the others on
:class:`~taidpt.engine.runner.CoreRunner`); this module imports both, so neither imports the other.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
from yacs.config import CfgNode

from taidpt import __version__
from taidpt.engine.checkpoint import MODEL_NAME
from taidpt.engine.checks import check_resumable, validate_config
from taidpt.engine.image_runner import ImagePromptRunner
from taidpt.engine.logs import setup_logging
from taidpt.engine.runner import CoreRunner, RunOptions
from taidpt.methods import IMAGES, get_method
from taidpt.utils.atomic import atomic_write_text, remove_stale_temps
from taidpt.utils.runlock import FolderLock
from taidpt.utils.seeding import is_seeded, set_random_seed

log = logging.getLogger("taidpt")


def run(cfg: CfgNode, options: RunOptions | None = None, runner_cls: type[CoreRunner] | None = None,
        main_process: bool = True) -> dict[str, Any] | None:
    """Seed, set up logging, and run one configuration with the core runner (or ``runner_cls``).

    Only the main process (``main_process``) logs to the console and ``log.txt``, writes files and
    holds the run folder's lock; the others print warnings and errors only
    (``taidpt.engine.distributed_runner``). Everything that can refuse the run is checked before the
    first file is written, so a refused run leaves the folder as it was.
    """
    options = options or RunOptions()
    setup_logging(None, bool(cfg.VERBOSE) and main_process)  # console only until the checks pass
    runner_cls = runner_cls or runner_class(cfg.TRAINER.NAME)
    method = get_method(cfg.TRAINER.NAME)
    validate_config(cfg, method)
    lock = FolderLock(cfg.OUTPUT_DIR) if main_process else contextlib.nullcontext()
    with lock:
        if not options.eval_only:
            check_resumable(cfg, method.training_keys())
        setup_logging(cfg.OUTPUT_DIR if main_process else None, bool(cfg.VERBOSE) and main_process)
        if options.note:
            log.info("%s", options.note)
        if is_seeded(cfg.SEED):
            log.info("setting fixed seed: %d", cfg.SEED)
            set_random_seed(int(cfg.SEED))
        log.info("taidpt %s, core runner, torch %s, %d threads", __version__, torch.__version__,
                 torch.get_num_threads())
        if main_process:
            for folder in (Path(cfg.OUTPUT_DIR), Path(cfg.OUTPUT_DIR) / MODEL_NAME):
                for stale in remove_stale_temps(folder, locked=True):
                    log.info("removed %s, left by a writer that was killed", stale)
            atomic_write_text(Path(cfg.OUTPUT_DIR) / "config.yaml", cfg.dump())
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        return runner_cls(cfg, options).run()


def runner_class(trainer: str) -> type[CoreRunner]:
    """The core runner class of ``trainer``: images-trained prompts have their own (``taidpt.engine.image_runner``)."""
    return ImagePromptRunner if get_method(trainer).trains_on == IMAGES else CoreRunner


__all__ = ["run", "runner_class"]
