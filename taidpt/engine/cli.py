"""CoOp's ``train.py`` arguments and config assembly, shared by the core and Dassl paths."""

from __future__ import annotations

import argparse
from typing import Sequence

from yacs.config import CfgNode

from taidpt.methods import method_names
from taidpt.utils.seeding import is_seeded


def build_parser() -> argparse.ArgumentParser:
    """The arguments of CoOp's train.py (same names and meaning), plus ``--engine``."""
    p = argparse.ArgumentParser(
        description="Train / evaluate TaI-DPT (texts as images) or the dense zero-shot CLIP baseline.",
        epilog="Trailing KEY VALUE pairs override config keys, e.g. OPTIM.MAX_EPOCH 5 TRAINER.TAIDPT.N_CTX 8.",
    )
    p.add_argument("--root", type=str, default="", help="dataset root (DATASET.ROOT)")
    p.add_argument("--output-dir", type=str, default="", help="run directory (OUTPUT_DIR)")
    p.add_argument("--resume", type=str, default="", help="run directory to resume from (RESUME)")
    p.add_argument("--seed", type=int, default=-1, help="random seed; negative = unseeded (SEED)")
    p.add_argument("--source-domains", type=str, nargs="+", help="unused by TaI-DPT (CoOp compatibility)")
    p.add_argument("--target-domains", type=str, nargs="+", help="unused by TaI-DPT (CoOp compatibility)")
    p.add_argument("--transforms", type=str, nargs="+", help="INPUT.TRANSFORMS (test-time transform only)")
    p.add_argument("--config-file", type=str, default="", help="method yaml, e.g. configs/trainers/TaIDPT/rn50_coco2014.yaml")
    p.add_argument("--dataset-config-file", type=str, default="", help="dataset yaml, e.g. configs/datasets/coco2014.yaml")
    p.add_argument("--trainer", type=str, default="", help=f"one of {', '.join(method_names())} (TRAINER.NAME)")
    p.add_argument("--backbone", type=str, default="", help="CLIP backbone (MODEL.BACKBONE.NAME)")
    p.add_argument("--head", type=str, default="", help="unused (CoOp compatibility)")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate only; with --model-dir RUN the run's config.yaml is the base and results go to "
                        "RUN/eval/<timestamp>/ unless --output-dir is given")
    p.add_argument("--model-dir", type=str, default="", help="run directory to load prompts from (eval-only)")
    p.add_argument("--load-epoch", type=int, default=None, help="load model.pth.tar-<epoch> instead of the best/last")
    p.add_argument("--no-train", action="store_true", help="build everything, then stop")
    p.add_argument("--engine", choices=("auto", "dassl", "core"), default="auto",
                   help="auto: Dassl's build_trainer when Dassl imports, else the core runner")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (logs stay)")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def reset_cfg(cfg: CfgNode, args: argparse.Namespace) -> None:
    """Apply CLI flags to the config exactly as CoOp's ``reset_cfg`` does (``--seed 0`` included)."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if is_seeded(args.seed):
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def setup_cfg(base: CfgNode, args: argparse.Namespace) -> CfgNode:
    """[run folder's config.yaml ->] dataset yaml -> method yaml -> CLI flags -> trailing KEY VALUE
    pairs, then freeze (:func:`taidpt.engine.config.assemble_config`).

    With ``--eval-only --model-dir RUN`` the run's own ``config.yaml`` is the base, so the run folder
    alone is enough, and results go to a new ``RUN/eval/<timestamp>/`` unless ``--output-dir`` says
    where.
    """
    from taidpt.engine.config import assemble_config
    from taidpt.engine.run import Run

    if args.load_epoch is not None and args.load_epoch < 1:
        raise ValueError(f"--load-epoch must be an epoch number >= 1 (checkpoints are 1-based), got {args.load_epoch}")
    run = Run(args.model_dir) if args.eval_only and args.model_dir else None

    def flags(cfg: CfgNode) -> None:
        if run is not None:
            cfg.OUTPUT_DIR, cfg.RESUME = str(run.new_eval_dir()), ""
        reset_cfg(cfg, args)

    return assemble_config(base, saved=run.config_path if run is not None and run.has_config else None,
                           files=[args.dataset_config_file, args.config_file], opts=args.opts, flags=flags)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)
