"""What ``python -m export.calibrate`` calibrates on, and the one rule for unreadable calibration images.

:func:`labelled_split` reads another split with the test-set readers and refuses it when it *is* the split
the numbers are reported on (same name, same images, or any image shared). :func:`caption_frequencies`
rebuilds a run's caption corpus as training did and returns each class's frequency among the caption
sentences, template sentences left out. :func:`check_readable` skips and counts unreadable images and
refuses only when fewer than half can be read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)


class CalibrationDataError(ValueError):
    """The calibration data cannot be used (it is the test split, classes differ, ...); one line."""


def unreadable_note(skipped: Sequence[tuple[str, str]]) -> str:
    """One line for the skipped images: how many, and the first with its reason."""
    name, reason = skipped[0]
    return f"{len(skipped)} unreadable image{'s' if len(skipped) != 1 else ''} skipped, first: {name} ({reason})"


def check_readable(n_read: int, skipped: Sequence[tuple[str, str]]) -> None:
    """Warn about ``skipped`` images in one line; raise :class:`CalibrationDataError` when none or fewer
    than half of the images could be read (then the list, not a few files, is wrong)."""
    if not skipped:
        return
    log.warning("%s", unreadable_note(skipped))
    total = n_read + len(skipped)
    if n_read == 0 or 2 * n_read < total:
        raise CalibrationDataError(f"only {n_read} of {total} calibration images could be read "
                                   f"({unreadable_note(skipped)}); at least half must be readable")


def readable_batch(metadata: Any, paths: Sequence[str]) -> np.ndarray:
    """The readable ones of ``paths`` as a float32 ``[N, 3, H, W]`` batch, preprocessed with ``metadata``
    as at inference (:func:`taidpt.serve.predictor.load_image`), under :func:`check_readable`'s rule."""
    from taidpt.serve.predictor import load_image

    cfg = metadata.preprocess_config()
    arrays, skipped = [], []
    for path in paths:
        item = load_image(path, cfg)
        if isinstance(item, str):
            skipped.append((str(path), item))
        else:
            arrays.append(item)
    check_readable(len(arrays), skipped)
    return np.stack(arrays).astype(np.float32)


def labelled_split(cfg: Any, split: str, classnames: Sequence[str]) -> Any:
    """The labelled ``split`` of ``cfg.DATASET`` as an ImageSet whose columns are ``classnames``; raises
    :class:`CalibrationDataError` when it is the reported test split or shares images with it."""
    from taidpt.images.registry import load_split, load_test_set

    reported = cfg.DATASET.TEST_SPLIT
    if reported and split == reported:
        raise CalibrationDataError(f"--labelled-split {split} is the split the test numbers are reported on "
                                   f"(DATASET.TEST_SPLIT); calibrate on another labelled split, e.g. trainval")
    image_set, classes = load_split(cfg, split)
    if tuple(classes.names) != tuple(classnames):
        raise CalibrationDataError(f"the model has classes {list(classnames)[:4]}... but the dataset config gives "
                                   f"{list(classes.names)[:4]}...: pass the run's DATASET.CLASS_LIST")
    try:
        test_set, _ = load_test_set(cfg)
    except (OSError, ValueError) as exc:
        log.warning("note: the reported test split could not be read (%s); only split names were compared", exc)
        return image_set
    shared = set(map(os.path.realpath, image_set.paths)) & set(map(os.path.realpath, test_set.paths))
    if image_set.name == test_set.name or shared:
        raise CalibrationDataError(f"--labelled-split {split} ({image_set.name}) is the test split {test_set.name} "
                                   f"or shares {len(shared)} image(s) with it; thresholds must not be chosen on the "
                                   f"images the numbers are reported on")
    return image_set


@dataclass(frozen=True)
class CaptionFrequencies:
    """Per-class frequency of a run's caption sentences, with what it was counted on."""

    classnames: tuple[str, ...]
    rates: np.ndarray  # [C] fraction of captions that name the class
    n_captions: int
    n_templates: int
    source: str  # the caption file


def _class_list(cfg: Any) -> Any:
    """The class list (names and synonyms) the run labelled its captions with, as training read it."""
    from taidpt.images.registry import class_list_of

    return class_list_of(cfg)


def given_rates(path: str, classnames: Sequence[str]) -> np.ndarray:
    """Target rates ``[C]`` from a file of ``class name, rate`` lines (every class, each rate in [0, 1])."""
    from taidpt.captions.class_values import read_class_values
    from taidpt.captions.classes import ClassList

    return read_class_values(path, ClassList.from_names("model", list(classnames)),
                             what="a rate between 0 and 1 (the fraction of images showing the class)", high=1.0)


def check_caption_rates(cfg: Any) -> None:
    """Raise :class:`CalibrationDataError` when the run's caption frequencies say nothing about images:
    its sentences were generated from the class list, so their rates are the generator's."""
    from taidpt.images.registry import GENERATED

    if cfg.DATASET.CAPTION_SOURCE == GENERATED:
        raise CalibrationDataError("the run trained on sentences generated from its class list (DATASET.CAPTION_SOURCE "
                                   "generated): their class frequencies are the generator's, not your images', so "
                                   "there are no caption rates to calibrate on; give --class-rates FILE ('class name, "
                                   "rate' per line: the fraction of your images that show the class)")


def caption_frequencies(cfg: Any, classnames: Sequence[str], progress: bool = False) -> CaptionFrequencies:
    """How often each of ``classnames`` is named by the caption sentences of the run configured by ``cfg``
    (refused for generated sentences: :func:`check_caption_rates`)."""
    from taidpt.images.registry import caption_source_and_path, load_caption_corpus

    check_caption_rates(cfg)
    corpus = load_caption_corpus(cfg, _class_list(cfg), progress=progress)
    column = {c: i for i, c in enumerate(corpus.classnames)}
    missing = [c for c in classnames if c not in column]
    if missing:
        raise CalibrationDataError(f"the run's caption corpus has no class {', '.join(missing[:4])}: the model and "
                                   f"--model-dir must be the same run")
    captions = corpus.labels[:corpus.n_captions, [column[c] for c in classnames]]
    rates = captions.mean(axis=0, dtype=np.float64)
    return CaptionFrequencies(tuple(classnames), rates, corpus.n_captions, corpus.n_templates,
                              caption_source_and_path(cfg)[1])
