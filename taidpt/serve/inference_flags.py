"""The flags of the inference commands, declared once.

``python -m export.infer`` (and its alias ``export.batch_infer``) takes all of them
(:func:`add_inference_arguments`); the Triton client takes the ones it shares (images, batch size,
class list, decision rule). Their meaning: docs/deployment.md, "Inference".
"""

from __future__ import annotations

import argparse
import glob
import os

from taidpt.serve.open_vocab import CLASS_LIST_HELP
from taidpt.serve.parquet_parts import DEFAULT_SHARD_SIZE
from taidpt.serve.runtime import add_runtime_arguments

OUTPUT_HELP = ("OUT.json (one document), OUT.jsonl or OUT.csv (rows streamed; a rerun resumes), or OUT.parquet "
               "(a folder of part files; a rerun redoes the missing ones)")
STORED_RULE = "the model's stored per-class thresholds"


def add_images_flag(p: argparse.ArgumentParser) -> None:
    """``--images``: what to score."""
    p.add_argument("--images", required=True, help="a folder (walked recursively), a .txt list of paths, or a glob")


def add_batch_size_flag(p: argparse.ArgumentParser, default: int = 32, what: str = "model call") -> None:
    """``--batch-size``: images per model call (per request for a server)."""
    p.add_argument("--batch-size", type=int, default=default, help=f"images per {what} (default {default})")


def add_class_flags(p: argparse.ArgumentParser, where: str = "a model exported with --open-vocabulary") -> None:
    """``--classes`` / ``--class-list``: another class list to score."""
    p.add_argument("--classes", default=None,
                   help=f'score these class names instead of the trained ones, e.g. "cat,dog,zebra" ({where})')
    p.add_argument("--class-list", default=None, help=CLASS_LIST_HELP)


def add_rule_flags(p: argparse.ArgumentParser, stored: str = STORED_RULE) -> None:
    """``--threshold`` / ``--top-k``: the decision rule, overriding the stored thresholds."""
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=float, default=None,
                      help=f"labels = classes with merged logit >= T, for every class (default: {stored}, top-3 "
                           f"for a class without one)")
    rule.add_argument("--top-k", type=int, default=None, help="labels = the K highest-scoring classes, for every image")


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    """``--engine``, ``--ray-address``, ``--actors``: who runs the job."""
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: a Ray Data job, .parquet output only")
    p.add_argument("--ray-address", default=None,
                   help="with --engine ray: 'auto' or HOST:PORT of a running Ray cluster (default: start a local Ray)")
    p.add_argument("--actors", type=int, default=None,
                   help="with --engine ray: scoring actors (default: one per GPU of this machine for a local Ray, "
                        "else 1; on a cluster set it to its GPU count)")


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """Every flag of ``python -m export.infer``."""
    p.add_argument("--model", required=True, help="MODEL.onnx, or MODEL.plan with its MODEL.plan.json")
    add_class_flags(p)
    add_images_flag(p)
    p.add_argument("--output", required=True, help=OUTPUT_HELP)
    add_batch_size_flag(p)
    p.add_argument("--prefetch", type=int, default=None,
                   help="decoded batches that may wait for the model (default 2 x workers): bounds memory")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help=f"images per part file of a .parquet output (default {DEFAULT_SHARD_SIZE})")
    add_rule_flags(p)
    add_runtime_arguments(p)
    p.add_argument("--fast-decode", action="store_true",
                   help="decode JPEGs at 1/2, 1/4 or 1/8 scale when still larger than the model input: several "
                        "times faster for camera photos, scores close to but not identical with the default")
    add_engine_flags(p)
    p.add_argument("--all-outputs", action="store_true", help="also write global and local logits (.json, .jsonl)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def default_actors(address: str | None) -> int:
    """``--actors`` when not given: for a local Ray the GPUs this process may use (``CUDA_VISIBLE_DEVICES``,
    else the ``/dev/nvidiaN`` devices), at least 1; for a cluster 1."""
    if address:
        return 1
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return max(1, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    return max(1, len(glob.glob("/dev/nvidia[0-9]*")))
