"""The offline demo end to end (``python -m taidpt.demo``): pretrain a small CLIP, then zero-shot vs TaI-DPT.

Test images, the caption corpus and the CLIP's pretraining pairs come from three disjoint random streams,
so no test image is seen during pretraining or prompt tuning. The zero-shot baseline and TaI-DPT (once per
prompt seed) run through train.py's own path (``taidpt.engine.cli`` then ``taidpt.engine.session.run``);
the table and chart come from :mod:`taidpt.demo.report`. ``quick=True`` is a smoke run, labelled as not
the measured setting. Cost and measured numbers: docs/demo.md and the README.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import shlex
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import scenes
from .pretrain import PRETRAIN_DEFAULTS, cached_demo_clip, demo_cache_dir
from .report import format_table, plot_per_class_ap
from .voc_writer import write_caption_file, write_voc_dataset

__all__ = [
    "DemoSettings",
    "FULL",
    "QUICK",
    "REPO_ROOT",
    "format_table",
    "plot_per_class_ap",
    "run_demo",
    "train_cli_args",
    "write_demo_data",
]

log = logging.getLogger("taidpt.demo")

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASET_YAML = REPO_ROOT / "configs" / "datasets" / "demo.yaml"
TRAINER_YAMLS = {
    "TaIDPT": REPO_ROOT / "configs" / "trainers" / "TaIDPT" / "demo.yaml",
    "ZeroshotCLIPDense": REPO_ROOT / "configs" / "trainers" / "ZeroshotCLIPDense" / "demo.yaml",
    "DualCoOp": REPO_ROOT / "configs" / "trainers" / "DualCoOp" / "demo.yaml",  # taidpt.demo.image_prompting
    "CoOpMultiLabel": REPO_ROOT / "configs" / "trainers" / "CoOpMultiLabel" / "demo.yaml",
}
DATA_VERSION = 1  # bump when the layout of DIR/data changes


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run. ``data_seed`` seeds the test-image and caption streams (both disjoint
    from the pretraining stream whatever the seeds); ``pretrain`` holds ``pretrain_clip`` keywords."""

    name: str
    n_test_images: int
    n_captions: int
    data_seed: int
    pretrain: dict[str, Any]
    measured: bool


FULL = DemoSettings("full", n_test_images=1000, n_captions=10000, data_seed=2023,
                    pretrain=dict(PRETRAIN_DEFAULTS), measured=True)
QUICK = DemoSettings("quick", n_test_images=300, n_captions=3000, data_seed=2023,
                     pretrain={**PRETRAIN_DEFAULTS, "steps": 300, "pool_size": 6000, "warmup_steps": 30},
                     measured=False)


# ----------------------------------------------------------------------------- data
def write_demo_data(data_dir: str | os.PathLike, n_images: int, n_captions: int, seed: int) -> dict[str, Any]:
    """Write the demo's test set (VOC layout) and caption corpus under ``data_dir``; returns the manifest.

    A ``manifest.json`` records what was written. When it matches the request (and the scene
    generator's code is unchanged) nothing is rewritten, so ``captions.txt`` keeps its mtime and
    the core's caption-corpus cache stays valid across runs.
    """
    data_dir = Path(data_dir)
    manifest = {
        "data_version": DATA_VERSION,
        "scene_code": scenes.code_digest(),
        "seed": int(seed),
        "n_test_images": int(n_images),
        "n_captions": int(n_captions),
        "test_images": "taidpt.demo.scenes.generate_images (stream STREAM_IMAGES)",
        "captions": "taidpt.demo.scenes.generate_captions (stream STREAM_CAPTIONS)",
        "classes": list(scenes.SHAPES),
    }
    manifest_path = data_dir / "manifest.json"
    main_dir = data_dir / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    if manifest_path.is_file() and (main_dir / "test.txt").is_file() and (data_dir / "captions.txt").is_file():
        try:
            if json.loads(manifest_path.read_text(encoding="utf-8")) == manifest:
                log.info("demo data: reusing %s (%d test images, %d captions)", data_dir, n_images, n_captions)
                return manifest
        except (OSError, ValueError):
            pass
    t0 = time.time()
    manifest_path.unlink(missing_ok=True)
    images, labels = scenes.generate_images(n_images, seed)
    write_voc_dataset(data_dir, images, labels, classnames=scenes.SHAPES, split="test")
    captions, _ = scenes.generate_captions(n_captions, seed)
    write_caption_file(data_dir / "captions.txt", captions)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("demo data: wrote %d test images and %d captions to %s in %.1f s", n_images, n_captions, data_dir,
             time.time() - t0)
    return manifest


# ----------------------------------------------------------------------------- runs through the CLI path
def train_cli_args(trainer: str, data_dir: str | os.PathLike, output_dir: str | os.PathLike, weights: str | os.PathLike,
                   seed: int, cache_dir: str | os.PathLike, extra: Sequence[str] = ()) -> list[str]:
    """The ``train.py`` argument list of one demo run (also what the summary prints as a command)."""
    if trainer not in TRAINER_YAMLS:
        raise ValueError(f"unknown trainer {trainer!r}: expected one of {', '.join(TRAINER_YAMLS)}")
    return [
        "--trainer", trainer, "--root", str(data_dir),
        "--dataset-config-file", str(DATASET_YAML), "--config-file", str(TRAINER_YAMLS[trainer]),
        "--output-dir", str(output_dir), "--seed", str(int(seed)),
        "MODEL.BACKBONE.PRETRAINED", str(weights), "DATASET.CACHE_DIR", str(cache_dir), *extra,
    ]


@contextlib.contextmanager
def _runner_logging(verbose: bool) -> Iterator[None]:
    """Keep the runner's console log out of the demo's output (it is also in each run's log.txt)
    and restore the ``taidpt`` logger afterwards, closing the handlers the runner added."""
    logger = logging.getLogger("taidpt")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    try:
        with sink:
            yield
    finally:
        for handler in list(logger.handlers):
            if handler not in saved[0]:
                logger.removeHandler(handler)
                handler.close()
        for handler in saved[0]:
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


def _run_cli(argv: list[str], *, progress: bool, verbose: bool) -> dict[str, Any]:
    """Parse ``argv`` as train.py does, assemble the config with ``setup_cfg``, run the core runner."""
    from taidpt.engine.cli import parse_args, setup_cfg
    from taidpt.engine.config import get_cfg_default
    from taidpt.engine.runner import RunOptions
    from taidpt.engine.session import run

    args = parse_args(argv)
    cfg = setup_cfg(get_cfg_default(), args)
    _forget_stale_run(Path(cfg.OUTPUT_DIR), cfg.dump())
    options = RunOptions(eval_only=args.eval_only, model_dir=args.model_dir, load_epoch=args.load_epoch,
                         no_train=args.no_train, progress=progress and not args.no_progress,
                         note="taidpt.demo: running taidpt's core runner (train.py's path)")
    with _runner_logging(verbose):
        results = run(cfg, options)
    if results is None:
        raise RuntimeError(f"the run in {cfg.OUTPUT_DIR} returned no results (see its log.txt)")
    return results


def _forget_stale_run(run_dir: Path, config_text: str) -> None:
    """Delete a previous run in ``run_dir`` unless it was made with exactly this config.

    The runner resumes from checkpoints found in its output directory (Dassl semantics), so a
    rerun of the demo with identical settings only re-tests the saved prompts (same numbers); a
    rerun with other settings (weights, KEY VALUE overrides) must start from scratch instead.
    """
    if not run_dir.exists():
        return
    previous = run_dir / "config.yaml"
    if previous.is_file() and previous.read_text(encoding="utf-8") == config_text:
        return
    log.info("removing the previous run in %s (other settings)", run_dir)
    shutil.rmtree(run_dir)


def _pick(results: dict[str, Any]) -> dict[str, Any]:
    return {"mAP": {k: float(v) for k, v in results["mAP"].items()},
            "per_class_AP": dict(results["per_class_AP"]),
            "per_class_AP_global": dict(results.get("per_class_AP_global", {})),
            "per_class_AP_local": dict(results.get("per_class_AP_local", {})),
            "elapsed_s": results.get("elapsed_s")}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


# ----------------------------------------------------------------------------- the experiment
def run_demo(
    out_dir: str | os.PathLike,
    *,
    seeds: Sequence[int] = (1, 2, 3),
    pretrain_seed: int = 0,
    quick: bool = False,
    cache_dir: str | os.PathLike | None = None,
    threads: int = 2,
    progress: bool = True,
    verbose: bool = False,
    extra_opts: Sequence[str] = (),
    settings: DemoSettings | None = None,
) -> dict[str, Any]:
    """Run the whole demo into ``out_dir`` and return the summary (also written to ``summary.json``).

    ``cache_dir`` relocates both the pretrained-CLIP cache and the caption-corpus cache (default
    ``$XDG_CACHE_HOME/taidpt`` or ``~/.cache/taidpt``). ``threads`` fixes torch's thread count for
    pretraining and for the runs. ``extra_opts`` are KEY VALUE pairs appended to every run's
    command line (e.g. ``TRAINER.TAIDPT.SPATIAL_SCALE_IMAGE 20``). ``verbose`` shows the runner's
    log on stdout (it is always in each run's ``log.txt``). ``settings`` replaces the sizes chosen
    by ``quick`` (``FULL`` or ``QUICK``), for tests and experiments.
    """
    import torch

    if not seeds:
        raise ValueError("at least one prompt seed is needed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"prompt seeds must be distinct, got {list(seeds)}")
    if len(extra_opts) % 2:
        raise ValueError(f"extra options must be KEY VALUE pairs, got an odd list: {list(extra_opts)}")
    for path in (DATASET_YAML, *TRAINER_YAMLS.values()):
        if not path.is_file():
            raise FileNotFoundError(f"demo config {path} not found: run the demo from a checkout of the repository")
    settings = settings or (QUICK if quick else FULL)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_root = demo_cache_dir(cache_dir)
    timing: dict[str, Any] = {}
    t_start = time.time()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        if not settings.measured:
            log.info("%s smoke run: fewer images, captions and pretraining steps; NOT the measured setting",
                     settings.name.upper())
        t0 = time.time()
        data_dir = out / "data"
        write_demo_data(data_dir, settings.n_test_images, settings.n_captions, settings.data_seed)
        timing["data_s"] = round(time.time() - t0, 1)

        t0 = time.time()
        weights_cached = _weights_exist(pretrain_seed, cache_dir, settings.pretrain, threads)
        weights = cached_demo_clip(pretrain_seed, cache_dir, progress=progress, threads=threads, **settings.pretrain)
        timing["pretrain_s"] = round(time.time() - t0, 1)
        timing["pretrain_cached"] = weights_cached
        pretrain_meta = _weights_meta(weights)

        commands: list[str] = []
        t0 = time.time()
        argv = train_cli_args("ZeroshotCLIPDense", data_dir, out / "runs" / "zeroshot", weights, seeds[0],
                              cache_root, extra_opts)
        commands.append(_command(argv))
        zero = _pick(_run_cli(argv, progress=progress, verbose=verbose))
        timing["zeroshot_s"] = round(time.time() - t0, 1)
        log.info("zero-shot CLIP: mAP global %.1f, local %.1f, merged %.1f (%.0f s)", zero["mAP"]["global"],
                 zero["mAP"]["local"], zero["mAP"]["merged"], timing["zeroshot_s"])

        runs: dict[str, Any] = {}
        timing["taidpt_s"] = {}
        for seed in seeds:
            t0 = time.time()
            argv = train_cli_args("TaIDPT", data_dir, out / "runs" / f"taidpt_seed{seed}", weights, seed,
                                  cache_root, extra_opts)
            commands.append(_command(argv))
            runs[str(seed)] = _pick(_run_cli(argv, progress=progress, verbose=verbose))
            timing["taidpt_s"][str(seed)] = round(time.time() - t0, 1)
            m = runs[str(seed)]["mAP"]
            log.info("TaI-DPT seed %d: mAP global %.1f, local %.1f, merged %.1f (%.0f s)", seed, m["global"],
                     m["local"], m["merged"], timing["taidpt_s"][str(seed)])
    finally:
        torch.set_num_threads(old_threads)
    timing["total_s"] = round(time.time() - t_start, 1)

    classes = list(scenes.SHAPES)
    mean, std = {}, {}
    for k in ("global", "local", "merged"):
        mean[k], std[k] = _mean_std([runs[str(s)]["mAP"][k] for s in seeds])
    ap_mean, ap_std = {}, {}
    for c in classes:
        vals = [runs[str(s)]["per_class_AP"].get(c) for s in seeds]
        if any(v is None for v in vals):
            ap_mean[c] = ap_std[c] = None
        else:
            ap_mean[c], ap_std[c] = _mean_std(vals)
    summary: dict[str, Any] = {
        "setting": settings.name,
        "measured": settings.measured,
        "note": None if settings.measured else
        f"{settings.name} smoke run: smaller data and pretraining, not the measured setting",
        "classes": classes,
        "data": {"dir": str(data_dir), "n_test_images": settings.n_test_images, "n_captions": settings.n_captions,
                 "seed": settings.data_seed},
        "pretrain": {"seed": int(pretrain_seed), "weights": str(weights), "cached": weights_cached,
                     "settings": {**settings.pretrain, "threads": int(threads)}, "meta": pretrain_meta},
        "zero_shot": zero,
        "taidpt": {"seeds": [int(s) for s in seeds], "runs": runs, "mean": mean, "std": std,
                   "std_kind": "sample standard deviation over prompt seeds (ddof=1)",
                   "per_class_AP_mean": ap_mean, "per_class_AP_std": ap_std},
        "gain": {k: mean[k] - zero["mAP"][k] for k in ("global", "local", "merged")},
        "extra_opts": list(extra_opts),
        "commands": commands,
        "timing": timing,
        "threads": int(threads),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    plot_per_class_ap(summary, out / "per_class_ap.png")
    return summary


def _command(argv: list[str]) -> str:
    return "python train.py " + " ".join(shlex.quote(a) for a in argv)


def _weights_exist(seed: int, cache_dir: str | os.PathLike | None, pretrain: dict[str, Any], threads: int) -> bool:
    from .pretrain import cache_key

    key = cache_key(seed, **{**pretrain, "threads": threads})
    return (demo_cache_dir(cache_dir) / "demo" / f"clip-{key}.pt").is_file()


def _weights_meta(path: Path) -> dict[str, Any]:
    import torch

    meta = torch.load(str(path), map_location="cpu", weights_only=True).get("meta", {})
    return {k: v for k, v in meta.items() if isinstance(v, (int, float, str, bool)) and not
            (isinstance(v, float) and not math.isfinite(v))}
