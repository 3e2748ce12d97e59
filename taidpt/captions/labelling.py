"""Caption labelling: the classes a sentence mentions, read off its lemmatized words.

Multi-word synonyms are matched first, longest first in a fixed order (the reference iterated a Python
set), and each match is removed, so "a hot dog" is not also "dog"; then whole single words, including the
space-free form of every multi-word synonym. Synonyms are matched as written against the lemmatized
sentence ("two dogs" -> "two dog"). Unlike the reference, a removed phrase leaves a gap (no new match
across it) and a phrase listed under two classes labels both. See docs/datasets.md, "Captions".
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence

import numpy as np

from taidpt.captions.classes import ClassList
from taidpt.captions.lemmatize import Lemmatizer, tokenize

__all__ = ["MATCHING_RULES_VERSION", "CaptionLabeller"]

log = logging.getLogger(__name__)

# Bump when the matching rules change, so cached corpora are rebuilt.
MATCHING_RULES_VERSION = 1
# Below this many sentences a progress bar is more noise than help.
_PROGRESS_MIN_SENTENCES = 2000


class CaptionLabeller:
    """Labels sentences with the classes of ``class_list`` they mention.

    Built once per (class list, lemmatizer); :meth:`label` and :meth:`label_many`
    are then pure functions of the sentence.
    """

    def __init__(self, class_list: ClassList, lemmatizer: Lemmatizer) -> None:
        if not isinstance(class_list, ClassList):
            raise TypeError(f"class_list must be a ClassList, got {type(class_list).__name__}")
        if not isinstance(lemmatizer, Lemmatizer):
            raise TypeError(f"lemmatizer must be a taidpt.captions.lemmatize.Lemmatizer, got {type(lemmatizer).__name__}")
        self.class_list = class_list
        self.lemmatizer = lemmatizer

        phrases: dict[tuple[str, ...], set[int]] = {}
        singles: dict[str, set[int]] = {}
        for idx, syns in enumerate(class_list.synonyms):
            for syn in syns:
                toks = tuple(tokenize(syn.replace("_", " ")))
                if not toks:
                    continue
                if len(toks) == 1:
                    singles.setdefault(toks[0], set()).add(idx)
                else:
                    phrases.setdefault(toks, set()).add(idx)
                    singles.setdefault("".join(toks), set()).add(idx)

        def priority(toks: tuple[str, ...]) -> tuple[int, int, str]:
            text = " ".join(toks)
            return (-len(toks), -len(text), text)

        ordered = sorted(phrases, key=priority)
        # Phrases in matching order; a phrase's position is its priority.
        self._phrases: list[tuple[tuple[str, ...], tuple[int, ...]]] = [
            (p, tuple(sorted(phrases[p]))) for p in ordered
        ]
        self._phrases_by_first: dict[str, list[int]] = {}
        for rank, (p, _) in enumerate(self._phrases):
            self._phrases_by_first.setdefault(p[0], []).append(rank)
        self._singles: dict[str, tuple[int, ...]] = {w: tuple(sorted(c)) for w, c in singles.items()}
        self._warn_unmatchable()

    def __len__(self) -> int:
        return len(self.class_list)

    def _warn_unmatchable(self) -> None:
        # A synonym can only match if the lemmatizer leaves it as it is ("glasses"
        # becomes "glass" in a sentence, so the synonym "glasses" never matches).
        for idx, syns in enumerate(self.class_list.synonyms):
            ok = False
            for syn in syns:
                toks = tokenize(syn.replace("_", " "))
                if toks and self.lemmatizer.lemmatize_tokens(list(toks)) == toks:
                    ok = True
                    break
            if not ok:
                log.warning(
                    "class %r (%s): no synonym survives lemmatization by %s, so no caption can match it; "
                    "add the lemma (singular form) as a synonym",
                    self.class_list.names[idx],
                    self.class_list.dataset,
                    self.lemmatizer.name,
                )

    def lemmas(self, sentence: str, *, max_words: int | None = None) -> list[str]:
        """The lemmatized tokens of ``sentence`` (the first ``max_words`` tokens if given)."""
        if not isinstance(sentence, str):
            raise TypeError(f"sentence must be a str, got {type(sentence).__name__}")
        toks = self.lemmatizer.tokenize(sentence)
        if max_words is not None:
            toks = toks[:max_words]
        return self.lemmatizer.lemmatize_tokens(toks)

    def label_lemmas(self, lemmas: Sequence[str]) -> list[int]:
        """Sorted class indices matched in already lemmatized tokens."""
        toks: list[str | None] = list(lemmas)
        found: set[int] = set()
        ranks = sorted({r for t in toks if t in self._phrases_by_first for r in self._phrases_by_first[t]})
        for rank in ranks:
            phrase, classes = self._phrases[rank]
            n = len(phrase)
            i, hit = 0, False
            while i + n <= len(toks):
                if tuple(toks[i : i + n]) == phrase:
                    toks[i : i + n] = [None] * n  # a gap: never part of a later match
                    hit = True
                    i += n
                else:
                    i += 1
            if hit:
                found.update(classes)
        for t in toks:
            if t is not None:
                classes = self._singles.get(t)
                if classes:
                    found.update(classes)
        return sorted(found)

    def label(self, sentence: str, *, max_words: int | None = None) -> list[int]:
        """Sorted indices of the classes ``sentence`` mentions; empty if none."""
        return self.label_lemmas(self.lemmas(sentence, max_words=max_words))

    def label_many(
        self,
        sentences: Iterable[str],
        *,
        max_words: int | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Multi-hot labels ``[N, C]`` (uint8) of ``sentences``, one row per sentence.

        ``progress`` shows a tqdm bar when there are more than ~2000 sentences.
        """
        sentences = list(sentences)
        out = np.zeros((len(sentences), len(self.class_list)), dtype=np.uint8)
        it: Iterable[str] = sentences
        if progress and len(sentences) > _PROGRESS_MIN_SENTENCES:
            from tqdm import tqdm

            it = tqdm(sentences, desc=f"labelling ({self.lemmatizer.name})", unit="sent")
        for row, sentence in enumerate(it):
            idx = self.label(sentence, max_words=max_words)
            if idx:
                out[row, idx] = 1
        return out

    def settings(self) -> dict:
        """JSON-safe description of everything that decides the labels (for caching)."""
        cl = self.class_list
        blob = json.dumps(
            {"dataset": cl.dataset, "names": list(cl.names), "synonyms": [list(s) for s in cl.synonyms]},
            sort_keys=True,
            ensure_ascii=True,
        )
        return {
            "lemmatizer": self.lemmatizer.name,
            "lemmatizer_version": self.lemmatizer.version,
            "class_list": {
                "dataset": cl.dataset,
                "n_classes": len(cl),
                "sha256": hashlib.sha256(blob.encode("utf-8")).hexdigest(),
            },
            "matching_rules_version": MATCHING_RULES_VERSION,
        }
