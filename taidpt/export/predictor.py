"""The Python API straight from a training run, in PyTorch: ``Predictor.from_run(RUN)``.

The same :class:`taidpt.serve.predictor.Predictor` as the ONNX one, over :class:`TorchRunner`: the run read
through :class:`taidpt.engine.run.Run` as ``python -m export.onnx`` reads it, its frozen scorer on CUDA when
available. A run holds no calibrated thresholds, so labels are top-k unless ``thresholds`` (e.g. the
calibrated export of the same run), ``threshold`` or ``top_k`` is given. Usage: docs/deployment.md, section 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from taidpt.export.scorer_loading import LoadedScorer, load_scorer
from taidpt.serve.class_names import validate_class_names
from taidpt.serve.metadata import OUTPUT_NAMES
from taidpt.serve.open_vocab import OpenVocabError
from taidpt.serve.predictor import Predictor as ServingPredictor


ThresholdSource = Union[Mapping[str, float], str, os.PathLike, None]


def read_thresholds(source: ThresholdSource) -> tuple[dict[str, float], str]:
    """``(class -> threshold, description)`` from a mapping, or from the metadata of an exported model
    (``M.onnx``, or an engine's sidecar) calibrated with ``python -m export.calibrate``."""
    if source is None:
        return {}, ""
    if isinstance(source, Mapping):
        return {str(c): float(t) for c, t in source.items()}, "given thresholds"
    from taidpt.serve.metadata import read_onnx_metadata, read_sidecar
    from taidpt.serve.runtime import ENGINE_SUFFIXES

    path = Path(source)
    meta = read_sidecar(path)[0] if path.suffix.lower() in ENGINE_SUFFIXES else read_onnx_metadata(path)
    return dict(meta.threshold_map), f"{meta.calibration or 'stored thresholds'} (from {path.name})"


def default_device() -> str:
    """``cuda`` when a CUDA device is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchRunner:
    """A run's frozen PyTorch scorer as a :class:`taidpt.serve.runtime.Runner` (same inputs and outputs
    as an exported model), scoring ``classnames`` (the run's own when None), with ``thresholds``
    (:func:`read_thresholds`'s pair) for the names it shares."""

    def __init__(self, loaded: LoadedScorer, path: str | os.PathLike, classnames: Sequence[str] | None = None,
                 device: str | None = None, thresholds: tuple[Mapping[str, float], str] = ({}, "")) -> None:
        import copy

        import torch

        self.path = Path(path)
        self.device = torch.device(device or default_device())
        scorer = loaded.scorer
        stored, source = thresholds
        self.metadata = loaded.metadata
        if classnames is not None and tuple(classnames) != tuple(loaded.metadata.classnames):
            text_global, text_local = self._embed(loaded, list(classnames))
            scorer = copy.copy(scorer)  # a shallow copy shares the encoder; only the class embeddings differ
            scorer._buffers = dict(scorer._buffers, text_global=text_global, text_local=text_local)
            self.metadata = loaded.metadata.replace(classnames=tuple(classnames))
        names = set(self.metadata.classnames)
        self.metadata = self.metadata.replace(thresholds={c: t for c, t in stored.items() if c in names},
                                              calibration=source)
        self.scorer = scorer.to(self.device).eval()
        self.provider = f"PyTorch {torch.__version__} ({self.device})"

    @staticmethod
    def _embed(loaded: LoadedScorer, classnames: list[str]) -> tuple[Any, Any]:
        from taidpt.export.open_vocab_graphs import embeddings_for, open_vocabulary_refusal

        trained = loaded.trained
        reason = open_vocabulary_refusal(trained.method, loaded.cfg, trained.model)
        if reason:
            raise OpenVocabError(reason.replace("--open-vocabulary: ", "classes: ", 1))
        return embeddings_for(trained.method, loaded.cfg, trained.model, classnames)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Scores of a preprocessed float32 batch ``[N, 3, H, W]``."""
        import torch

        with torch.inference_mode():
            values = self.scorer(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device))
        return {name: v.float().cpu().numpy() for name, v in zip(OUTPUT_NAMES, values)}

    def close(self) -> None:
        self.scorer = None


class Predictor(ServingPredictor):
    """:class:`taidpt.serve.predictor.Predictor` plus :meth:`from_run` (needs torch)."""

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, classes: Sequence[str] | None = None, epoch: int | None = None,
                 device: str | None = None, thresholds: ThresholdSource = None, threshold: float | None = None,
                 top_k: int | None = None, batch_size: int = 32, workers: int | None = None,
                 opts: Sequence[str] = ()) -> "Predictor":
        """A training run's model in PyTorch (``device``: CUDA when available, else CPU).

        ``epoch`` picks a checkpoint (default: best, else last); ``thresholds`` are per-class
        thresholds (a mapping, or a calibrated export of this run whose stored ones to use: labels
        then match that export's); ``opts`` are ``KEY VALUE`` config overrides (e.g.
        ``MODEL.BACKBONE.PRETRAINED``). Errors are one line: ``FileNotFoundError`` for a folder that
        is not a run, ``ValueError`` for its config, :class:`OpenVocabError` for ``classes`` a run
        with class-specific contexts cannot embed.
        """
        loaded = load_scorer(os.fspath(run_dir), opts=opts, load_epoch=epoch)
        stored = read_thresholds(thresholds)  # read once; each class list keeps the names it shares

        def open_classes(names: list[str] | None) -> TorchRunner:
            return TorchRunner(loaded, run_dir, names, device, stored)

        runner = open_classes(validate_class_names(classes) if classes is not None else None)
        return cls(runner, threshold=threshold, top_k=top_k, open_classes=open_classes, batch_size=batch_size,
                   workers=workers)
