"""The Python API straight from a training run, in PyTorch: ``Predictor.from_run(RUN)``.

    from taidpt.export.predictor import Predictor

    predictor = Predictor.from_run("output/voc2007/TaIDPT/rn50_voc2007/seed1")
    print(predictor.predict("photo.jpg", classes=["cat", "zebra"]).labels)

The same :class:`taidpt.serve.predictor.Predictor` as the ONNX one (``from_onnx`` works here too),
over :class:`TorchRunner`: the run read through :class:`taidpt.engine.run.Run` (config, class names,
checkpoint) as ``python -m export.onnx`` reads it, its frozen scorer on CUDA when available, images
preprocessed from the same metadata an export would carry. ``classes`` re-embeds other class names
with the run's learned contexts (refused, in one line, for class-specific contexts); an export's
stored thresholds do not exist here, so labels are top-k unless ``threshold`` is given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from taidpt.export.scorer_loading import LoadedScorer, load_scorer
from taidpt.serve.metadata import OUTPUT_NAMES
from taidpt.serve.open_vocab import OpenVocabError
from taidpt.serve.predictor import Predictor as ServingPredictor


def default_device() -> str:
    """``cuda`` when a CUDA device is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchRunner:
    """A run's frozen PyTorch scorer as a :class:`taidpt.serve.runtime.Runner` (same inputs and outputs
    as an exported model), scoring ``classnames`` (the run's own when None)."""

    def __init__(self, loaded: LoadedScorer, path: str | os.PathLike, classnames: Sequence[str] | None = None,
                 device: str | None = None) -> None:
        import copy

        import torch

        self.path = Path(path)
        self.device = torch.device(device or default_device())
        scorer = loaded.scorer
        self.metadata = loaded.metadata
        if classnames is not None and tuple(classnames) != tuple(loaded.metadata.classnames):
            text_global, text_local = self._embed(loaded, list(classnames))
            scorer = copy.copy(scorer)  # a shallow copy shares the encoder; only the class embeddings differ
            scorer._buffers = dict(scorer._buffers, text_global=text_global, text_local=text_local)
            self.metadata = loaded.metadata.replace(classnames=tuple(classnames), thresholds={})
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
                 device: str | None = None, threshold: float | None = None, top_k: int | None = None,
                 batch_size: int = 32, workers: int | None = None, opts: Sequence[str] = ()) -> "Predictor":
        """A training run's model in PyTorch (``device``: CUDA when available, else CPU).

        ``epoch`` picks a checkpoint (default: best, else last); ``opts`` are ``KEY VALUE`` config
        overrides (e.g. ``MODEL.BACKBONE.PRETRAINED``). Errors are one line: ``FileNotFoundError`` for
        a folder that is not a run, ``ValueError`` for its config, :class:`OpenVocabError` for
        ``classes`` a run with class-specific contexts cannot embed.
        """
        loaded = load_scorer(os.fspath(run_dir), opts=opts, load_epoch=epoch)

        def open_classes(names: list[str]) -> TorchRunner:
            return TorchRunner(loaded, run_dir, names, device)

        runner = open_classes(list(classes)) if classes is not None else TorchRunner(loaded, run_dir, None, device)
        return cls(runner, threshold=threshold, top_k=top_k, open_classes=open_classes, batch_size=batch_size,
                   workers=workers)
