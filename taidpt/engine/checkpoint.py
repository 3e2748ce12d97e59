"""Checkpoints in Dassl's layout, written atomically and read with ``weights_only=True``.

Layout (what Dassl's ``save_model`` writes, and the reference's ``prompt_learner`` name)::

    <run>/prompt_learner/model.pth.tar-<epoch>     (epoch is 1-based)
    <run>/prompt_learner/model-best.pth.tar
    <run>/prompt_learner/checkpoint                (text: basename of the last file written)

Each file is a dict ``{"state_dict", "epoch", "optimizer", "scheduler", "val_result", "meta"}``
holding tensors and primitives only. ``meta`` records the class names and prompt settings so that a
mismatching class list is refused with a clear message instead of a shape error.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taidpt.utils.atomic import atomic_file, atomic_write_text

if TYPE_CHECKING:
    import torch

MODEL_NAME = "prompt_learner"
BEST_FILE = "model-best.pth.tar"
POINTER_FILE = "checkpoint"


def epoch_file(epoch: int) -> str:
    """File name of the checkpoint saved after ``epoch`` epochs (1-based, Dassl's convention)."""
    return f"model.pth.tar-{epoch}"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch  # noqa: PLC0415 - reading a run folder's layout needs no torch

    with atomic_file(path) as fh:
        torch.save(obj, fh)


def save_checkpoint(
    run_dir: str | Path,
    state: dict[str, Any],
    *,
    epoch: int,
    is_best: bool = False,
    model_name: str = MODEL_NAME,
) -> Path:
    """Save ``state`` (state_dict, optimizer, scheduler, val_result, meta) for ``epoch`` (1-based)."""
    folder = Path(run_dir) / model_name
    name = BEST_FILE if is_best else epoch_file(epoch)
    path = folder / name
    atomic_torch_save({**state, "epoch": int(epoch)}, path)
    atomic_write_text(folder / POINTER_FILE, name + "\n")
    return path


def resolve_checkpoint(run_dir: str | Path, epoch: int | None = None, model_name: str = MODEL_NAME) -> Path:
    """Path of the checkpoint to load: ``model.pth.tar-<epoch>`` if given, else the best file if it
    exists, else the file named in the ``checkpoint`` pointer, else the highest epoch."""
    folder = Path(run_dir) / model_name
    if not folder.is_dir():
        raise FileNotFoundError(f"no {model_name}/ folder under {run_dir}: not a taidpt/Dassl run directory")
    if epoch is not None:
        path = folder / epoch_file(epoch)
        if not path.is_file():
            found = sorted(p.name for p in folder.glob("model*.pth.tar*"))
            raise FileNotFoundError(f"checkpoint not found: {path} (available: {', '.join(found) or 'none'})")
        return path
    if (folder / BEST_FILE).is_file():
        return folder / BEST_FILE
    pointer = folder / POINTER_FILE
    if pointer.is_file():
        named = folder / pointer.read_text(encoding="utf-8").strip()
        if named.is_file():
            return named
    epochs = sorted(folder.glob("model.pth.tar-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    if not epochs:
        raise FileNotFoundError(f"no checkpoint file in {folder}")
    return epochs[-1]


def latest_checkpoint(run_dir: str | Path, model_name: str = MODEL_NAME) -> Path | None:
    """Checkpoint named by the pointer file (what resume continues from), or None."""
    pointer = Path(run_dir) / model_name / POINTER_FILE
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    return path if path.is_file() else None


TRUST_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary unpickling).

    Files written by Dassl's warm-up schedulers (the reference TaI-DPT checkpoints among them)
    pickle a scheduler object and fail that check. torch's own opt-out variable
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` does not apply to an explicit ``weights_only=True``, so it
    is honoured here: with it set, such a file is loaded with full unpickling (trusted files only).
    """
    import torch  # noqa: PLC0415 - reading a run folder's layout needs no torch

    path = Path(path)
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report one line with the path
        if os.environ.get(TRUST_ENV, "0").lower() in ("1", "y", "yes", "true"):
            logging.getLogger(__name__).warning("%s: not loadable with weights_only=True; %s is set, so it is "
                                                "unpickled in full (only do this for files you trust)", path, TRUST_ENV)
            return torch.load(str(path), map_location=map_location, weights_only=False)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(
            f"cannot load checkpoint {path} safely ({type(exc).__name__}: {msg}). Checkpoints written by Dassl's "
            f"warm-up schedulers pickle objects: re-save them with taidpt, or set {TRUST_ENV}=1 if you trust the file"
        ) from exc


def check_meta(meta: dict[str, Any] | None, expected: dict[str, Any], path: Path | str) -> None:
    """Refuse a checkpoint whose class list or prompt shape differs from the model being built."""
    if not meta:
        return
    for key, value in expected.items():
        if key in meta and meta[key] != value:
            have = meta[key]
            if key == "classnames":
                raise ValueError(
                    f"{path} was trained for {len(have)} classes ({', '.join(have[:4])}...) but this run has "
                    f"{len(value)} ({', '.join(list(value)[:4])}...): use the same class list")
            raise ValueError(f"{path} has {key}={have!r} but this run expects {value!r}")
