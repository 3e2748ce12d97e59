"""Helpers for the subprocess tests of ``train.py`` (training CLI, robustness harness, run folders).

One place for what those tests share: the VOC-format fixture (and its awkward images), the tiny-CLIP
test configuration, running ``train.py`` (one process, or several side by side), snapshots and copies
of run folders, and the one-error-line checks. ``test_train_cli`` re-exports the names other test
files import from it (``CLASSES``, ``ROOT``, ``common``, ``run_train``, ``write_voc_fixture``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["dog", "cat", "car"]


# ----------------------------------------------------------------------------- fixture data
def write_voc_fixture(root: Path, n: int = 12, seed: int = 0) -> None:
    """A VOC2007-layout test split with 3 classes, written by hand in the real file formats."""
    voc = root / "VOCdevkit" / "VOC2007"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}" for i in range(1, n + 1)]
    labels = rng.integers(0, 2, (n, len(CLASSES)))
    labels[: len(CLASSES)] = np.eye(len(CLASSES), dtype=int)
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{i}.jpg")
    (voc / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")
    for c, name in enumerate(CLASSES):
        lines = [f"{i} {' 1' if labels[k, c] else '-1'}" for k, i in enumerate(ids)]
        (voc / "ImageSets" / "Main" / f"{name}_test.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("dog, puppy\ncat, kitten\ncar, automobile\n")
    captions = ["a dog on a sofa", "two cats and a puppy", "a red car", "nothing to see", "a kitten near a car"]
    (root / "captions.txt").write_text("\n".join(captions * 12) + "\n")


def exif_rotated(path: Path, rng) -> None:
    """A 80x40 JPEG whose EXIF orientation says 'rotate 90 degrees clockwise to display'."""
    img = Image.fromarray(rng.integers(0, 255, (40, 80, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, format="JPEG", exif=exif)


def write_bad_images(voc: Path) -> dict[str, str]:
    """Overwrite fixture images with every awkward kind; returns id -> expected outcome."""
    rng = np.random.default_rng(7)
    jpg = voc / "JPEGImages"
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8), mode="L").save(jpg / "000001.jpg", "PNG")
    Image.fromarray(rng.integers(0, 255, (50, 70, 4), dtype=np.uint8), mode="RGBA").save(jpg / "000002.jpg", "PNG")
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).convert("CMYK").save(jpg / "000003.jpg", "JPEG")
    Image.fromarray(rng.integers(0, 65535, (50, 70), dtype=np.uint16)).save(jpg / "000004.jpg", "PNG")
    exif_rotated(jpg / "000006.jpg", rng)
    (jpg / "000007.jpg").write_bytes(b"")
    data = (jpg / "000008.jpg").read_bytes()
    (jpg / "000008.jpg").write_bytes(data[: len(data) // 3])  # truncated JPEG
    (jpg / "000009.jpg").unlink()  # listed in test.txt but missing
    return {"000001": "ok", "000002": "ok", "000003": "ok", "000004": "ok", "000006": "ok",
            "000007": "skipped", "000008": "skipped", "000009": "missing"}


def common(root: Path, weights: Path) -> list[str]:
    """The test configuration: tiny CLIP, 64 px, text captions, 3 classes, 19 batches per epoch."""
    return [
        "--root", str(root),
        "--dataset-config-file", "configs/datasets/voc2007.yaml",
        "--config-file", "configs/trainers/TaIDPT/rn50_voc2007.yaml",
        "--seed", "1", "--no-progress",
        "DATASET.CLASS_LIST", str(root / "classes.txt"),
        "DATASET.CAPTION_FILE", "captions.txt",
        "MODEL.BACKBONE.PRETRAINED", str(weights),
        "INPUT.SIZE", "(64, 64)",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "16",
        "DATALOADER.NUM_WORKERS", "0",
        "OPTIM.LR", "0.01",
    ]


# ----------------------------------------------------------------------------- running train.py
def worker_threads() -> int:
    """Torch/OpenMP threads for a test (in process or a subprocess it starts): 2, the machines the
    suite was sized on, shared out among pytest-xdist workers (1 each on 2 cores), so that the
    measured demo running beside them keeps its cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, min(2, (os.cpu_count() or 1) // max(1, workers)))


def train_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a test run: offline hub, caches under ``tmp_path``, :func:`worker_threads` threads."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "OMP_NUM_THREADS": str(worker_threads())}


def run_train(args: Sequence[str], tmp_path: Path, expect_ok: bool = True, cwd: Path | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """``python train.py ARGS`` (from the checkout, or from ``cwd`` with train.py named by path)."""
    script = "train.py" if cwd is None else str(ROOT / "train.py")
    proc = subprocess.run([sys.executable, script, *args], cwd=cwd or ROOT, env=train_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_side_by_side(jobs: dict[str, tuple[Sequence[str], Path]],
                     workers: int | None = None) -> dict[str, subprocess.CompletedProcess | BaseException]:
    """Run several ``train.py`` processes (name -> (args, tmp_path)) a few at a time; name -> result.

    Meant for runs that stop early (refusals, bad input): they are mostly interpreter start-up, one
    core each, so two at a time on a 2-core machine take half the wall time. A run that could not be
    started (or timed out) maps to its exception, for the test of that name to raise.
    """
    if workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = max(1, min(4, cpus))

    def one(item: tuple[str, tuple[Sequence[str], Path]]):
        name, (args, tmp) = item
        try:
            return name, run_train(args, tmp, expect_ok=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test of this name
            return name, exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(one, jobs.items()))


# ----------------------------------------------------------------------------- run folders
def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (what 'left untouched' compares)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a run folder at ``dest`` (for a test that writes into it)."""
    shutil.copytree(run, dest)
    return dest


# ----------------------------------------------------------------------------- one clear error line
def last_error_line(proc: subprocess.CompletedProcess) -> str:
    """The last line of the output (stdout, then stderr) that mentions an error, or ''."""
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "error" in ln.lower()]
    return lines[-1] if lines else ""


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The refusal's last stderr line, after checking the run failed without a traceback."""
    tail = proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.returncode != 0, tail
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines, tail
    return lines[-1]


__all__ = ["CLASSES", "ROOT", "common", "copy_run", "exif_rotated", "last_error_line", "one_error_line",
           "run_side_by_side", "run_train", "snapshot", "train_env", "write_bad_images", "write_voc_fixture"]
