"""Caption corpora: labelled training sentences built from one caption file.

TaI-DPT trains on sentences instead of images. A corpus holds the sentences of one source
(:data:`SOURCES`, read by :mod:`taidpt.captions.sources`) that mention a class, labelled by a
:class:`~taidpt.captions.labelling.CaptionLabeller`, plus 89 template sentences per class
(:mod:`taidpt.captions.templates`); it can be cached on disk, keyed by every setting
(:mod:`taidpt.captions.corpus`). Each source has the reference's defaults (:func:`source_defaults`).
See docs/datasets.md, "Captions".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taidpt.captions.classes import ClassList
from taidpt.captions.corpus import CaptionCorpus, load_cached, store_cached
from taidpt.captions.labelling import CaptionLabeller
from taidpt.captions.selection import CaptionSelection, ids_key
from taidpt.captions.sources import int_set, read_coco_captions, read_localized_narratives, read_text_file
from taidpt.captions.templates import template_sentences

__all__ = [
    "AUTO",
    "CorpusRecipe",
    "SOURCES",
    "assign_rarest",
    "build_corpus",
    "source_defaults",
]

log = logging.getLogger(__name__)

SOURCES = ("coco_captions", "localized_narratives", "text", "generated")
AUTO = "auto"
# Bump when the stored layout or the build recipe changes, so caches are rebuilt.
# 2: caption selection (all / caption ids / k per image) in the settings and the stats.
CORPUS_FORMAT_VERSION = 2

_DEFAULTS: dict[str, dict[str, Any]] = {
    "coco_captions": {"rarest_assignment": False, "per_class_cap": None, "max_words": None},
    "localized_narratives": {"rarest_assignment": True, "per_class_cap": 1000, "max_words": 77},
    "text": {"rarest_assignment": False, "per_class_cap": None, "max_words": None},
    "generated": {"rarest_assignment": False, "per_class_cap": None, "max_words": None},
}


def source_defaults(source: str) -> dict[str, Any]:
    """The values ``"auto"`` resolves to for ``rarest_assignment``, ``per_class_cap``, ``max_words``."""
    _check_source(source)
    return dict(_DEFAULTS[source])


# ----------------------------------------------------------------------------- rarest class and per-class cap


def assign_rarest(labels: np.ndarray) -> np.ndarray:
    """For each labelled row, its rarest class: the one with the fewest rows.

    Classes are ranked by row count ascending, ties by class index; row ``i`` is
    assigned the first class in that ranking it has. Rows without a class get -1.
    """
    labels = np.asarray(labels)
    c = labels.shape[1]
    counts = labels.sum(axis=0, dtype=np.int64)
    order = np.lexsort((np.arange(c), counts))
    rank = np.empty(c, dtype=np.int64)
    rank[order] = np.arange(c)
    best = np.where(labels > 0, rank[None, :], c).min(axis=1, initial=c)
    return np.where(best < c, order[np.minimum(best, c - 1)], -1)


def _cap_per_class(assigned: np.ndarray, cap: int) -> np.ndarray:
    """Indices (in file order) of the rows kept when each class keeps its first ``cap`` rows."""
    keep = np.zeros(len(assigned), dtype=bool)
    for cls in np.unique(assigned[assigned >= 0]):
        rows = np.flatnonzero(assigned == cls)[:cap]
        keep[rows] = True
    return np.flatnonzero(keep)


# ----------------------------------------------------------------------------- builder


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown caption source {source!r}; expected one of {', '.join(SOURCES)}")


def _resolve(value: Any, default: Any) -> Any:
    return default if isinstance(value, str) and value == AUTO else value


def _check_positive_or_none(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, None or {AUTO!r}, got {value!r}")


@dataclass(frozen=True)
class CorpusRecipe:
    """How a corpus is made from its caption file: which captions are read, labelled and kept.

    ``"auto"`` options take the source's defaults (:func:`source_defaults`); ``None`` means no cap /
    no word limit. ``max_words`` limits the tokens that are labelled (the text stays whole).
    ``per_class_cap`` assigns each labelled sentence to one class (its rarest with
    ``rarest_assignment``, else its lowest class index) and keeps the first ``per_class_cap`` of each
    class, in file order. ``exclude_image_ids`` and ``selection`` apply to ``"coco_captions"`` only.
    Templates (89 per class) come after the captions when ``add_templates``.
    """

    add_templates: bool = True
    exclude_image_ids: Iterable[int] | None = None
    per_class_cap: int | None | str = AUTO
    rarest_assignment: bool | str = AUTO
    max_words: int | None | str = AUTO
    selection: CaptionSelection | None = None

    def resolve(self, source: str) -> "CorpusRecipe":
        """This recipe for ``source``: ``"auto"`` replaced by its defaults, every option checked."""
        _check_source(source)
        defaults = _DEFAULTS[source]
        rarest = _resolve(self.rarest_assignment, defaults["rarest_assignment"])
        cap = _resolve(self.per_class_cap, defaults["per_class_cap"])
        max_words = _resolve(self.max_words, defaults["max_words"])
        if not isinstance(rarest, bool):
            raise ValueError(f"rarest_assignment must be True, False or {AUTO!r}, got {rarest!r}")
        _check_positive_or_none("per_class_cap", cap)
        _check_positive_or_none("max_words", max_words)
        exclude = int_set(self.exclude_image_ids, "exclude_image_ids")
        if exclude is not None and source != "coco_captions":
            raise ValueError(f"exclude_image_ids applies to the 'coco_captions' source only, not {source!r}")
        if self.selection is not None and self.selection.kind != "all" and source != "coco_captions":
            raise ValueError(f"a caption selection ({self.selection.describe()}) applies to the 'coco_captions' "
                             f"source only, not {source!r}")
        return dataclasses.replace(self, exclude_image_ids=exclude, rarest_assignment=rarest,
                                   per_class_cap=None if cap is None else int(cap),
                                   max_words=None if max_words is None else int(max_words))

    def settings(self, source: str) -> dict[str, Any]:
        """The options of a resolved recipe as they enter the cache key."""
        exclude = self.exclude_image_ids
        return {
            "add_templates": bool(self.add_templates),
            "exclude_image_ids": None if exclude is None else ids_key(sorted(exclude)),
            "per_class_cap": self.per_class_cap,
            "rarest_assignment": self.rarest_assignment,
            "max_words": self.max_words,
            "selection": (self.selection or CaptionSelection()).settings() if source == "coco_captions" else None,
        }


def build_corpus(source: str, path: str | Path, class_list: ClassList, labeller: CaptionLabeller,
                 recipe: CorpusRecipe | None = None, *, cache_dir: str | Path | None = None, progress: bool = True,
                 **options: Any) -> CaptionCorpus:
    """Read, label and select the sentences of a caption file of ``source`` (:data:`SOURCES`) by
    ``recipe`` (or its fields as keywords); append the templates.

    With ``cache_dir``, the result is stored as ``corpus-<sha256>.json`` + ``.npz`` keyed by every
    setting (labeller, file identity, recipe) and reused. Raises ``ValueError`` when nothing is left.
    A text file with undecodable lines is read anyway and logged as a warning (also from the cache).
    """
    _check_source(source)
    if not isinstance(class_list, ClassList):
        raise TypeError(f"class_list must be a ClassList, got {type(class_list).__name__}")
    if labeller.class_list != class_list:
        raise ValueError(
            f"the labeller was built for class list {labeller.class_list.dataset!r}, "
            f"not {class_list.dataset!r}"
        )
    recipe = dataclasses.replace(recipe or CorpusRecipe(), **options).resolve(source)
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path} (source {source!r})")
    st = path.stat()
    settings = {
        "corpus_format": CORPUS_FORMAT_VERSION,
        "source": source,
        "path": str(path),
        "file_size": st.st_size,
        "file_mtime_ns": st.st_mtime_ns,
        "labeller": labeller.settings(),
        "options": recipe.settings(source),
    }
    cache = _cache_files(cache_dir, settings)
    if cache is not None:
        cached = load_cached(*cache, settings)
        if cached is not None:
            log.info("caption corpus: reusing %s (%d sentences)", cache[0], len(cached))
            _warn_about_undecodable_lines(cached, path)
            return cached

    stats: dict[str, Any] = {}
    texts = _read_source(source, path, recipe.exclude_image_ids, recipe.selection, stats)  # type: ignore[arg-type]
    labels = labeller.label_many(texts, max_words=recipe.max_words, progress=progress)  # type: ignore[arg-type]
    kept = _kept_rows(labels, recipe, len(class_list), stats)
    out_texts = [texts[i] for i in kept]
    out_labels = labels[kept]
    stats["captions"] = len(out_texts)
    stats["caption_class_counts"] = out_labels.sum(axis=0, dtype=np.int64).tolist()
    n_templates = 0
    if recipe.add_templates:
        out_texts, out_labels, n_templates = _with_templates(out_texts, out_labels, class_list)
    stats["templates"] = n_templates
    stats["total"] = len(out_texts)
    if not out_texts:
        raise ValueError(
            f"{path}: no sentence of this {source!r} file mentions a class of class list "
            f"{class_list.dataset!r} ({len(class_list)} classes), and templates are off: the corpus is empty"
        )
    corpus = CaptionCorpus(texts=out_texts, labels=out_labels, classnames=class_list.names, source=source,
                           lemmatizer=labeller.lemmatizer.name, n_templates=n_templates, stats=stats)
    log.info(
        "caption corpus from %s: %d read, %d labelled, %d kept, %d templates (lemmatizer %s)",
        path, stats["sentences_read"], stats["labelled"], stats["captions"], n_templates, corpus.lemmatizer,
    )
    _warn_about_undecodable_lines(corpus, path)
    if cache is not None:
        store_cached(corpus, *cache, settings)
    return corpus


def _cache_files(cache_dir: str | Path | None, settings: dict[str, Any]) -> tuple[Path, Path] | None:
    """``(corpus-<key>.json, corpus-<key>.npz)`` under ``cache_dir`` for these settings, None without a cache."""
    if cache_dir is None:
        return None
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()
    folder = Path(cache_dir).expanduser()
    return folder / f"corpus-{key}.json", folder / f"corpus-{key}.npz"


def _kept_rows(labels: np.ndarray, recipe: CorpusRecipe, n_classes: int, stats: dict[str, Any]) -> np.ndarray:
    """Rows that name a class, after the per-class cap; the counts go into ``stats``."""
    labelled = np.flatnonzero(labels.any(axis=1))
    stats["labelled"] = int(len(labelled))
    stats["dropped_no_class"] = int(len(labels) - len(labelled))
    kept = labelled
    if recipe.per_class_cap is not None or recipe.rarest_assignment:
        sub = labels[labelled]
        assigned = assign_rarest(sub) if recipe.rarest_assignment else np.argmax(sub, axis=1)  # else lowest index
        stats["assigned_per_class"] = np.bincount(assigned, minlength=n_classes).tolist()
        if recipe.per_class_cap is not None:
            kept = labelled[_cap_per_class(assigned, int(recipe.per_class_cap))]
    stats["dropped_by_cap"] = int(len(labelled) - len(kept))
    return kept


def _with_templates(texts: list[str], labels: np.ndarray, class_list: ClassList) -> tuple[list[str], np.ndarray, int]:
    """The sentences and labels with the template sentences of every class appended."""
    templ = template_sentences(class_list)
    t_labels = np.zeros((len(templ), len(class_list)), dtype=np.uint8)
    t_labels[np.arange(len(templ)), [c for _, c in templ]] = 1
    return [*texts, *(s for s, _ in templ)], np.concatenate([labels, t_labels], axis=0), len(templ)


def _read_source(source: str, path: Path, exclude: set[int] | None, selection: CaptionSelection | None,
                 stats: dict[str, Any]) -> list[str]:
    """The sentences of one caption file, with the reader's counts (and the COCO recipe) in ``stats``."""
    if source == "coco_captions":
        texts = read_coco_captions(path, exclude, selection=selection, stats=stats)
        log.info("COCO captions of %s: %s, %d of %d captions", path.name, stats["caption_recipe"],
                 stats["selected_captions"], stats["sentences_read"])
        return texts
    if source == "localized_narratives":
        return read_localized_narratives(path, stats=stats)
    return read_text_file(path, stats=stats)  # "text", and "generated" (a text file the generator wrote)


def _warn_about_undecodable_lines(corpus: CaptionCorpus, path: Path) -> None:
    """Say in the log (not only in the stats) that a text file had lines that are not UTF-8."""
    bad = int(corpus.stats.get("invalid_utf8_lines", 0))
    if bad:
        log.warning("%s: %d line%s not valid UTF-8; their undecodable bytes were replaced by U+FFFD and "
                    "training goes on (check the caption file's encoding)", path, bad, "s are" if bad > 1 else " is")
