"""The Dassl path of ``train.py`` (``--engine dassl``, or ``auto`` when Dassl imports).

CoOp's ``main``: Dassl's ``get_cfg_default()`` extended with taidpt's keys (``extend_cfg``), the
same dataset and method yaml files and CLI flags as the core path, Dassl's ``setup_logger`` (a
tee of stdout into ``OUTPUT_DIR/log.txt``) and ``set_random_seed``, ``build_trainer``, then one of
CoOp's three branches: ``--eval-only`` (load, test), train (tests at the end), ``--no-train``.

Unlike CoOp's script it does not switch on ``cudnn.benchmark``: the core path does not either,
and the two engines must pick the same convolution algorithms to give the same numbers.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from taidpt.utils.atomic import atomic_write_text
from taidpt.engine.cli import setup_cfg
from taidpt.engine.config import extend_cfg
from taidpt.utils.runlock import FolderLock
from taidpt.engine.checks import check_resumable, validate_config
from taidpt.engine.logs import setup_logging
from taidpt.methods import get_method

log = logging.getLogger("taidpt")


def dassl_version() -> str:
    """Dassl's version string, plus the git commit when it is installed from a git checkout."""
    import dassl

    version = getattr(dassl, "__version__", "unknown version")
    root = Path(dassl.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        out = None
    commit = out.stdout.strip() if out is not None and out.returncode == 0 else ""
    return f"{version} (commit {commit}, {root})" if commit else f"{version} ({root}, commit unknown)"


def print_args(args: argparse.Namespace, cfg) -> None:
    """Arguments and the merged config, as CoOp's train.py prints them."""
    print("** Arguments **")
    for key in sorted(vars(args)):
        print(f"{key}: {getattr(args, key)}")
    print("** Config **")
    print(cfg)


def main(args: argparse.Namespace) -> int:
    """Run one configuration through Dassl; returns the process exit code."""
    from dassl.config import get_cfg_default

    import datasets.taidpt_datasets  # noqa: F401 - registers the dataset classes
    import trainers.taidpt  # noqa: F401 - registers a trainer per taidpt method, and the evaluator

    try:
        cfg = setup_cfg(extend_cfg(get_cfg_default()), args)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    try:
        lock = preflight(cfg, args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    try:
        return _run_locked(cfg, args)
    finally:
        lock.release()


def preflight(cfg, args: argparse.Namespace) -> FolderLock:
    """Check the configuration and take the run folder's lock before anything is written (the
    same checks as the core path: a refused run leaves the folder as it was)."""
    method = get_method(cfg.TRAINER.NAME)
    validate_config(cfg, method)
    lock = FolderLock(cfg.OUTPUT_DIR).acquire()
    try:
        if not args.eval_only:
            check_resumable(cfg, method.training_keys())
    except BaseException:
        lock.release()
        raise
    return lock


def _run_locked(cfg, args: argparse.Namespace) -> int:
    from dassl.engine import build_trainer
    from dassl.utils import collect_env_info, set_random_seed, setup_logger

    from trainers.taidpt import enable_taidpt_logging
    from taidpt.clip.loader import ClipLoadError
    from taidpt.utils.seeding import is_seeded

    if is_seeded(cfg.SEED):
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    setup_logging(None, bool(cfg.VERBOSE))  # taidpt's log lines go to the tee as well
    enable_taidpt_logging(bool(cfg.VERBOSE))
    log.info("Dassl %s: running the Dassl plugin (trainers/, datasets/)", dassl_version())
    Path(cfg.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(cfg.OUTPUT_DIR) / "config.yaml", cfg.dump())
    print_args(args, cfg)
    print(f"** System info **\n{collect_env_info()}\n")
    try:
        if args.eval_only and get_method(cfg.TRAINER.NAME).trains() and not args.model_dir:
            raise ValueError(f"--eval-only with {cfg.TRAINER.NAME} needs --model-dir RUN (a training output directory)")
        trainer = build_trainer(cfg)
        if hasattr(trainer, "core"):
            trainer.core.opts.progress = not args.no_progress
        if args.eval_only:
            trainer.load_model(args.model_dir, epoch=args.load_epoch)
            trainer.test()
        elif not args.no_train:
            trainer.train()
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        kind = "error (CLIP weights)" if isinstance(exc, ClipLoadError) else "error"
        log.error("%s: %s", kind, exc.args[0] if exc.args else str(exc))
        if os.environ.get("TAIDPT_DEBUG"):
            raise
        return 1
    return 0
