"""The labelled caption corpus and its on-disk cache entry.

A :class:`CaptionCorpus` holds the training sentences (captions, then templates) with their
multi-hot labels. :func:`store_cached` / :func:`load_cached` write and read one cache entry
(json + npz); the key and the decision to use it are :func:`~taidpt.captions.builder.build_corpus`'s.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taidpt.utils.atomic import atomic_savez, atomic_write_text

__all__ = ["CaptionCorpus"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class CaptionCorpus:
    """Labelled training sentences: captions first, then ``n_templates`` template sentences.

    ``labels`` is a ``[N, C]`` uint8 multi-hot matrix, row ``i`` for ``texts[i]``.
    ``lemmatizer`` names the backend that labelled the captions; ``stats`` counts
    what happened while building (sentences read, dropped, excluded, ...).
    """

    texts: list[str]
    labels: np.ndarray
    classnames: tuple[str, ...]
    source: str
    lemmatizer: str
    n_templates: int
    stats: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.uint8)
        self.classnames = tuple(self.classnames)
        if self.labels.ndim != 2 or self.labels.shape != (len(self.texts), len(self.classnames)):
            raise ValueError(
                f"labels must have shape [len(texts), len(classnames)] = "
                f"[{len(self.texts)}, {len(self.classnames)}], got {list(self.labels.shape)}"
            )
        if not 0 <= self.n_templates <= len(self.texts):
            raise ValueError(f"n_templates={self.n_templates} out of range for {len(self.texts)} sentences")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_captions(self) -> int:
        """Number of caption sentences (the rows before the templates)."""
        return len(self.texts) - self.n_templates

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CaptionCorpus):
            return NotImplemented
        return (
            self.texts == other.texts
            and self.labels.shape == other.labels.shape
            and bool(np.array_equal(self.labels, other.labels))
            and self.classnames == other.classnames
            and self.source == other.source
            and self.lemmatizer == other.lemmatizer
            and self.n_templates == other.n_templates
            and self.stats == other.stats
        )


# ----------------------------------------------------------------------------- cache


def store_cached(corpus: CaptionCorpus, cache_json: Path, cache_npz: Path, settings: dict) -> None:
    payload = {
        "settings": settings,
        "classnames": list(corpus.classnames),
        "source": corpus.source,
        "lemmatizer": corpus.lemmatizer,
        "n_templates": corpus.n_templates,
        "stats": corpus.stats,
        "texts": corpus.texts,
    }
    # The labels first: the json appearing is what marks the entry complete.
    atomic_savez(cache_npz, labels=corpus.labels)
    atomic_write_text(cache_json, json.dumps(payload, ensure_ascii=False))


def load_cached(cache_json: Path, cache_npz: Path, settings: dict) -> CaptionCorpus | None:
    if not cache_json.is_file():
        return None
    try:
        payload = json.loads(cache_json.read_bytes().decode("utf-8"))
        if payload.get("settings") != settings:
            log.warning("caption corpus cache %s was built with other settings; rebuilding", cache_json)
            return None
        with np.load(cache_npz, allow_pickle=False) as z:
            labels = z["labels"]
        return CaptionCorpus(
            texts=list(payload["texts"]),
            labels=labels,
            classnames=tuple(payload["classnames"]),
            source=payload["source"],
            lemmatizer=payload["lemmatizer"],
            n_templates=int(payload["n_templates"]),
            stats=payload["stats"],
        )
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        log.warning("caption corpus cache %s is unreadable (%s); rebuilding", cache_json, exc)
        return None
