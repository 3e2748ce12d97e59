"""The Python API of a deployed model: images (paths, PIL images, arrays) in; labels, confidences, logits out.

:class:`Predictor` wraps any :class:`taidpt.serve.runtime.Runner`: an ONNX model or TensorRT engine here
(:meth:`Predictor.from_onnx`), or a run's PyTorch model on the build side (``taidpt.export.predictor``).
:meth:`Predictor.score` is the batched path ``python -m export.infer`` uses too, so the API and the CLI give
the same output. Usage: docs/deployment.md, "The Python API: Predictor".
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np
from PIL import Image

from taidpt.images.preprocess import ImageLoadError, PreprocessConfig, load_rgb, to_rgb
from taidpt.serve.class_names import validate_class_names
from taidpt.serve.decision import Decision, for_model
from taidpt.serve.metadata import ModelMetadata
from taidpt.serve.open_vocab import OpenVocabError, OpenVocabModel
from taidpt.serve.runtime import ENGINE_SUFFIXES, Runner, open_model

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]
SINGLE_TYPES = (str, os.PathLike, Image.Image, np.ndarray)
ACCEPTED = "an image (a file path, a PIL image or a uint8 numpy array) or a list of them"
CACHED_CLASS_LISTS = 4  # open-vocabulary class lists kept embedded


def source_name(item: Any, index: int) -> str:
    """How an input is named in outputs: its path, or ``<image N>`` (position in the call) for an in-memory one."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return f"<image {index}>"


def image_items(images: Any) -> tuple[list[Any], bool]:
    """``(items, single)``: ``images`` as a list, and whether it was one image; a value that is neither an
    image nor an iterable of them (``None``, a number, bytes) raises a ``TypeError`` saying what is accepted."""
    if isinstance(images, SINGLE_TYPES):
        return [images], True
    if isinstance(images, (bytes, bytearray, dict)) or not isinstance(images, Iterable):
        raise TypeError(f"images: expected {ACCEPTED}, got {type(images).__name__}")
    return list(images), False


def image_from_array(array: np.ndarray) -> Image.Image:
    """A PIL image of a ``uint8`` array: ``H x W`` grey, ``H x W x 3`` RGB or ``H x W x 4`` RGBA."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or not (
            array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) or 0 in array.shape:
        shape = getattr(array, "shape", None)
        dtype = getattr(array, "dtype", type(array).__name__)
        raise ValueError(f"expected a uint8 array of shape HxW, HxWx3 (RGB) or HxWx4 (RGBA), got {dtype} {shape}")
    return Image.fromarray(np.ascontiguousarray(array))


def load_image(item: ImageInput, cfg: PreprocessConfig, fast_decode: bool = False) -> np.ndarray | str:
    """The preprocessed float32 ``[3, H, W]`` image, or the reason it cannot be read (one line).

    ``fast_decode``: a JPEG file is decoded at the smallest 1/2, 1/4 or 1/8 scale that still covers the
    resize target (``--fast-decode``, docs/performance.md); off, the result is Dassl's, bit for bit.
    """
    try:
        if isinstance(item, (str, os.PathLike)):
            draft = max(cfg.out_hw) if fast_decode else None
            return cfg(load_rgb(item, exif_transpose=cfg.exif_transpose, draft=draft))
        if isinstance(item, Image.Image):
            return cfg(to_rgb(item))
        if isinstance(item, np.ndarray):
            return cfg(to_rgb(image_from_array(item)))
        return f"not an image: expected a path, a PIL image or a uint8 array, got {type(item).__name__}"
    except ImageLoadError as exc:
        return exc.reason
    except Exception as exc:  # noqa: BLE001 - e.g. a decompression-bomb check; reported, not fatal
        return f"{type(exc).__name__}: {exc}"


@dataclass
class Predictions:
    """Raw outputs of :meth:`Predictor.score`: rows for the images that loaded (input order) and the
    ones that did not."""

    paths: list[str]  # source names (paths, or <image N>) of the scored rows
    scores: np.ndarray  # [N, C] merged scores
    global_logits: np.ndarray
    local_logits: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source name, reason)
    seconds: float = 0.0
    indices: list[int] = field(default_factory=list)  # position in the input of each scored row


def score_images(model: Runner, items: Sequence[ImageInput], *, batch_size: int = 32, workers: int = 4,
                 progress: bool = False, on_skip: Callable[[str, str], None] | None = None,
                 fast_decode: bool = False) -> Predictions:
    """Preprocess and score ``items`` in batches; unreadable ones go to ``skipped``.

    Decoding and resizing run in a thread pool (PIL releases the GIL), so they overlap across the
    images of a batch.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    cfg = model.metadata.preprocess_config()
    kept: list[str] = []
    kept_idx: list[int] = []
    outs: dict[str, list[np.ndarray]] = {"scores": [], "global_logits": [], "local_logits": []}
    skipped: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(items), unit="img", desc="scoring", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(items), batch_size):
            chunk = list(items[start:start + batch_size])
            arrays = []
            for offset, (p, item) in enumerate(zip(chunk, pool.map(lambda q: load_image(q, cfg, fast_decode), chunk))):
                name = source_name(p, start + offset)
                if isinstance(item, str):
                    skipped.append((name, item))
                    if on_skip is not None:
                        on_skip(name, item)
                else:
                    kept.append(name)
                    kept_idx.append(start + offset)
                    arrays.append(item)
            if arrays:
                result = model.run(np.stack(arrays))
                for k in outs:
                    outs[k].append(result[k])
            bar.update(len(chunk))
    c = model.metadata.num_classes
    cat = {k: (np.concatenate(v) if v else np.zeros((0, c), np.float32)) for k, v in outs.items()}
    return Predictions(kept, cat["scores"], cat["global_logits"], cat["local_logits"], skipped,
                       time.perf_counter() - t0, kept_idx)


@dataclass(frozen=True)
class Prediction:
    """One image's result.

    ``labels``: the decided classes, highest logit first. ``confidence``: per class
    ``sigmoid(logit - threshold)``, 0.5 at the decision point (``None`` for a class decided by
    top-k); a squashed margin, not a calibrated probability. ``scores``: the merged logits.
    ``error``: why the image could not be read (then everything else is empty).
    """

    source: str
    labels: list[str]
    confidence: dict[str, float | None]
    scores: dict[str, float]
    error: str = ""


class Predictor:
    """A deployed model with its decision rule (see the module docstring).

    ``runner`` scores preprocessed batches; ``threshold`` / ``top_k`` override the stored thresholds
    for every class; ``open_classes`` opens a runner for another class list (None: only the
    runner's own classes); ``batch_size`` images go to the runner at once, decoded by ``workers``
    threads (JPEG files at a reduced scale with ``fast_decode``, :func:`load_image`). A rule that
    cannot apply (e.g. ``top_k`` above the class count) raises
    :class:`taidpt.serve.decision.DecisionError` and closes ``runner``.
    """

    def __init__(self, runner: Runner, *, threshold: float | None = None, top_k: int | None = None,
                 open_classes: Callable[[list[str]], Runner] | None = None, batch_size: int = 32,
                 workers: int | None = None, fast_decode: bool = False) -> None:
        self.runner = runner
        self._rule = {"threshold": threshold, "top_k": top_k}
        try:
            self.decision: Decision = for_model(runner.metadata, **self._rule)
        except Exception:
            runner.close()
            raise
        self._open_classes = open_classes
        self._class_lists: dict[tuple[str, ...], tuple[Runner, Decision]] = {}
        self.batch_size = int(batch_size)
        self.workers = int(workers) if workers else min(4, os.cpu_count() or 1)
        self.fast_decode = bool(fast_decode)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, *, classes: Sequence[str] | None = None,
                  providers: Sequence[str] | None = None, threads: int = 0, threshold: float | None = None,
                  top_k: int | None = None, batch_size: int = 32, workers: int | None = None,
                  fast_decode: bool = False) -> "Predictor":
        """An exported model (``.onnx``, or a TensorRT engine with its sidecar) in onnxruntime / TensorRT.

        ``classes`` makes another class list the default (an ``--open-vocabulary`` export);
        ``providers`` and ``threads`` go to onnxruntime. Errors are one-line
        :class:`taidpt.serve.runtime.ModelLoadError` / :class:`taidpt.serve.metadata.MetadataError`.
        """
        def open_classes(names: list[str]) -> Runner:
            return OpenVocabModel(path, names, providers, threads=threads, max_batch=batch_size)

        runner = (open_model(path, providers, threads=threads, max_batch=batch_size) if classes is None
                  else open_classes(validate_class_names(classes)))
        open_vocab = Path(path).suffix.lower() not in ENGINE_SUFFIXES and bool(runner.metadata.open_model)
        return cls(runner, threshold=threshold, top_k=top_k, open_classes=open_classes if open_vocab else None,
                   batch_size=batch_size, workers=workers, fast_decode=fast_decode)

    # ------------------------------------------------------------------ what it is
    @property
    def metadata(self) -> ModelMetadata:
        """The model's metadata (classes, preprocessing, provenance, stored thresholds)."""
        return self.runner.metadata

    @property
    def classnames(self) -> tuple[str, ...]:
        """The default class list (output columns when ``classes`` is not given)."""
        return tuple(self.runner.metadata.classnames)

    @property
    def provider(self) -> str:
        return self.runner.provider

    @property
    def open_vocabulary(self) -> bool:
        """Whether other class lists can be scored (an ``--open-vocabulary`` ONNX export)."""
        return self._open_classes is not None

    # ------------------------------------------------------------------ scoring
    def for_classes(self, classes: Sequence[str] | None) -> tuple[Runner, Decision]:
        """The runner and decision rule that score ``classes`` (the default list when None); a list other
        than the model's own is checked first (:func:`taidpt.serve.class_names.validate_class_names`)."""
        if isinstance(classes, str):
            raise TypeError("classes: expected a list of class names, got one string")
        if classes is None or (isinstance(classes, (list, tuple)) and tuple(classes) == self.classnames):
            return self.runner, self.decision
        key = tuple(validate_class_names(classes))
        if key == self.classnames:
            return self.runner, self.decision
        if key not in self._class_lists:
            if self._open_classes is None:
                raise OpenVocabError(f"{self.runner.path}: this model scores only its {len(self.classnames)} trained "
                                     f"classes; other class lists need an ONNX export made with --open-vocabulary")
            if len(self._class_lists) >= CACHED_CLASS_LISTS:
                oldest = next(iter(self._class_lists))
                self._class_lists.pop(oldest)[0].close()
            runner = self._open_classes(list(key))
            self._class_lists[key] = (runner, for_model(runner.metadata, **self._rule))
        return self._class_lists[key]

    def score(self, images: Sequence[ImageInput], *, classes: Sequence[str] | None = None, progress: bool = False,
              on_skip: Callable[[str, str], None] | None = None) -> tuple[Predictions, Decision]:
        """Raw batched scores of ``images`` and the rule that labels them (what the inference CLI writes)."""
        runner, decision = self.for_classes(classes)
        preds = score_images(runner, image_items(images)[0], batch_size=self.batch_size, workers=self.workers,
                             progress=progress, on_skip=on_skip, fast_decode=self.fast_decode)
        return preds, decision

    def predict(self, images: ImageInput | Iterable[ImageInput], classes: Sequence[str] | None = None, *,
                skip_unreadable: bool = False) -> Prediction | list[Prediction]:
        """Labels, confidences and logits of one image (returns one :class:`Prediction`) or of a sequence
        of images (returns a list, in input order).

        An image that cannot be read raises :class:`taidpt.images.preprocess.ImageLoadError` naming it,
        or with ``skip_unreadable`` comes back as a :class:`Prediction` whose ``error`` says why. ``images``
        that are neither (``None``, a number) raise ``TypeError``; a bad ``classes`` list raises
        :class:`taidpt.serve.class_names.ClassNameError` (or ``TypeError`` for a name that is not a str).
        """
        items, single = image_items(images)

        def refuse(name: str, reason: str) -> None:
            raise ImageLoadError(name, reason)

        preds, decision = self.score(items, classes=classes, on_skip=None if skip_unreadable else refuse)
        labels = decision.labels(preds.scores)
        out: list[Prediction] = [Prediction(source_name(item, i), [], {}, {}) for i, item in enumerate(items)]
        unread = sorted(set(range(len(items))) - set(preds.indices))  # preds.skipped is in input order too
        for index, (name, reason) in zip(unread, preds.skipped):
            out[index] = Prediction(name, [], {}, {}, reason)
        for row, index in enumerate(preds.indices):
            fields = decision.row_fields(preds.scores[row], labels[row])
            out[index] = Prediction(preds.paths[row], fields["labels"], fields["confidence"], fields["scores"])
        return out[0] if single else out

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Release the sessions (and device buffers of a TensorRT engine)."""
        for runner, _ in self._class_lists.values():
            runner.close()
        self._class_lists.clear()
        self.runner.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
