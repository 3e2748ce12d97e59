"""One invocation of a configuration: the process group, checks, the run folder's lock, logging, then
the method's runner (:func:`taidpt.engine.runners.runner_class`).

Launched by ``torchrun`` (``WORLD_SIZE > 1``) the process joins the group first and its runner is
given it (:mod:`taidpt.engine.distributed_runner`); otherwise the runner runs in this process alone
(the trivial group).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch
from yacs.config import CfgNode

from taidpt import __version__
from taidpt.engine.checkpoint import MODEL_NAME
from taidpt.engine.checks import check_resumable, validate_config
from taidpt.engine.distributed import DistContext, destroy_process_group, init_process_group, launched_by_torchrun
from taidpt.engine.logs import setup_logging
from taidpt.engine.runner import RunOptions
from taidpt.engine.runners import runner_class
from taidpt.methods import get_method
from taidpt.utils.atomic import atomic_write_text, remove_stale_temps
from taidpt.utils.runlock import FolderLock
from taidpt.utils.seeding import is_seeded, set_random_seed

log = logging.getLogger("taidpt")


def run(cfg: CfgNode, options: RunOptions | None = None) -> dict[str, Any] | None:
    """Run one configuration: across the torchrun group when torchrun launched this process, else in it alone."""
    if not launched_by_torchrun():
        return run_in_group(cfg, options)
    runner_class(cfg.TRAINER.NAME, distributed=True)  # a refusal comes before the group is joined
    group = init_process_group(use_cuda=bool(cfg.USE_CUDA))
    finished = None
    try:
        options = options or RunOptions()
        what = (f"distributed: {group.world_size} processes ({group.backend}), captions and class prompts of each "
                f"batch split across them, test images too")
        options = dataclasses.replace(options, progress=options.progress and group.is_main,
                                      note=f"{options.note}; {what}" if options.note else what)
        result = run_in_group(cfg, options, group)
        finished = group
        return result
    finally:
        destroy_process_group(finished)


def run_in_group(cfg: CfgNode, options: RunOptions | None = None,
                 group: DistContext | None = None) -> dict[str, Any] | None:
    """Seed, set up logging, and run one configuration with its method's runner, given ``group``
    (None: this process alone).

    Only the main process logs to the console and ``log.txt``, writes files and holds the run
    folder's lock; the others print warnings and errors only. Everything that can refuse the run is
    checked before the first file is written, so a refused run leaves the folder as it was.
    """
    options = options or RunOptions()
    main_process = group is None or group.is_main
    setup_logging(None, bool(cfg.VERBOSE) and main_process)  # console only until the checks pass
    runner_cls = runner_class(cfg.TRAINER.NAME, distributed=group is not None and group.is_distributed)
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
        return runner_cls(cfg, options, group=group).run()


__all__ = ["run", "run_in_group"]
