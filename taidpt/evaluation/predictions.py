"""``predictions.npz``: the test-set scores of a run, in a safe format (numpy ``.npz``, no pickle).

Every trainer's test step writes ``RUN/predictions.npz`` beside ``results.json``, so runs can be compared or
ensembled without re-running the model. Read it with :func:`load_predictions` or
``numpy.load(path, allow_pickle=False)``. The arrays: docs/image-prompting.md, "Predictions and ensembling".
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from taidpt.utils.atomic import atomic_savez
from taidpt.networks.merge import merge_scores
from taidpt.images.readers.common import ImageSet

if TYPE_CHECKING:
    from taidpt.evaluation.scoring import ScoredSet

PREDICTIONS_FILE = "predictions.npz"


@dataclass
class Predictions:
    """The arrays of one ``predictions.npz`` (listed in docs/image-prompting.md)."""

    scores: np.ndarray
    global_: np.ndarray
    local: np.ndarray
    targets: np.ndarray
    paths: list[str]
    classnames: list[str]
    merge_rate: float
    trainer: str


def scored_paths(scored: ScoredSet, image_set: ImageSet) -> list[str]:
    """The image path of each scored row: from the row indices, or, when the collector did not
    keep them, the test set's (sequential) order without the skipped images."""
    if scored.indices is not None:
        return [image_set.paths[int(i)] for i in scored.indices]
    skipped = set(scored.skipped)
    paths = [p for p in image_set.paths if p not in skipped]
    if len(paths) != len(scored.targets):
        raise ValueError(f"{len(scored.targets)} scored rows but {len(paths)} readable images: cannot name the rows")
    return paths


def save_predictions(path: Path, scored: ScoredSet, image_set: ImageSet, classnames: Sequence[str],
                     merge_rate: float, trainer: str) -> Path:
    """Write ``path`` atomically from the scores of a test run."""
    glob = np.asarray(scored.global_logits, dtype=np.float32)
    local = glob if scored.local_logits is None else np.asarray(scored.local_logits, dtype=np.float32)
    scores = merge_scores(glob.astype(np.float64), local.astype(np.float64), merge_rate).astype(np.float32)
    atomic_savez(path, scores=scores, **{"global": glob}, local=local, targets=np.asarray(scored.targets, dtype=np.int8),
             paths=np.asarray(scored_paths(scored, image_set), dtype=str),
             classnames=np.asarray(list(classnames), dtype=str), merge_rate=np.float64(merge_rate),
             trainer=np.asarray(trainer))
    return path


SCORE_KEYS = ("scores", "global", "local", "targets")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``; one-line ValueError naming it when it is not a readable npz."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("one .npy array, not an .npz archive of arrays")
        with data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path} is not a readable predictions file ({reason})") from None


def _check_shapes(arrays: dict[str, np.ndarray], path: Path) -> None:
    shapes = {key: arrays[key].shape for key in SCORE_KEYS}
    n_c = shapes["scores"]
    if len(n_c) != 2 or len(set(shapes.values())) != 1:
        raise ValueError(f"{path}: scores, global, local and targets must share one [N, C] shape, got {shapes}")
    if arrays["classnames"].shape != (n_c[1],) or arrays["paths"].shape != (n_c[0],):
        raise ValueError(f"{path}: {arrays['classnames'].size} class names and {arrays['paths'].size} paths for "
                         f"[N, C] = {list(n_c)} scores")


def load_predictions(path: str | Path) -> Predictions:
    """Read a ``predictions.npz`` file, or the one inside a run folder (one-line errors naming the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no predictions at {path}: run the test step of a taidpt run first "
                                f"(train.py writes RUN/{PREDICTIONS_FILE})")
    data = _read_arrays(path)
    missing = {*SCORE_KEYS, "paths", "classnames", "merge_rate", "trainer"} - set(data)
    if missing:
        raise ValueError(f"{path} is not a taidpt predictions file (missing {sorted(missing)})")
    _check_shapes(data, path)
    return Predictions(scores=data["scores"], global_=data["global"], local=data["local"], targets=data["targets"],
                       paths=[str(p) for p in data["paths"]], classnames=[str(c) for c in data["classnames"]],
                       merge_rate=float(data["merge_rate"]), trainer=str(data["trainer"]))
