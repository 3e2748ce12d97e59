"""Tokenizing and lemmatizing captions for caption labelling, with two backends sharing :func:`tokenize`.

``"nltk"`` is the reference recipe (POS tag -> WordNet lemmatizer); it exists only where NLTK's tagger and
WordNet data are installed. ``"lemminflect"`` works offline but has no tagger, so every token is lemmatized
as a noun: verbs stay inflected, which is harmless because class synonyms are nouns. The two disagree on a
few words ("leaves", "men"): see docs/datasets.md, "Captions".
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from functools import lru_cache
from importlib import metadata

__all__ = [
    "BACKENDS",
    "LemminflectLemmatizer",
    "Lemmatizer",
    "LemmatizerUnavailable",
    "NLTK_DOWNLOAD_COMMAND",
    "NltkLemmatizer",
    "get_lemmatizer",
    "missing_nltk_data",
    "nltk_data_available",
    "tokenize",
]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "nltk", "lemminflect")
NLTK_DOWNLOAD_COMMAND = "python -m nltk.downloader averaged_perceptron_tagger_eng wordnet"
# nltk.data resource names of the two data packages the NLTK backend needs.
_NLTK_RESOURCES = {
    "averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng/",
    "wordnet": "corpora/wordnet",
}

# NLTK's tokenizer, run on one line (preserve_line=True), splits only the period
# that ends the whole text. A period closing an inner sentence stays on its word
# ("dog." in "a dog. a cat"), and a missing space glues two words ("dog.in").
_TRAILING_PERIOD = re.compile(r"([^\W\d_][^.]*)\.")
_GLUED_PERIOD = re.compile(r"([^\W\d_]{2,})\.([^\W\d_]{2,})")


class LemmatizerUnavailable(RuntimeError):
    """A requested lemmatizer backend cannot run on this machine."""


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it into word and punctuation tokens.

    NLTK's ``word_tokenize(text, preserve_line=True)`` (Treebank rules: "man's"
    -> "man", "'s"; "isn't" -> "is", "n't"; punctuation split off words; this
    needs no NLTK data) followed by splitting off inner sentence periods, which
    that tokenizer leaves attached ("dog." -> "dog", "."; "dog.in" -> "dog",
    ".", "in"). Abbreviations with inner periods ("u.s.") are kept whole.
    """
    from nltk.tokenize import word_tokenize

    out: list[str] = []
    for tok in word_tokenize(text.lower(), preserve_line=True):
        m = _TRAILING_PERIOD.fullmatch(tok)
        if m is not None:
            out.extend((m.group(1), "."))
            continue
        m = _GLUED_PERIOD.fullmatch(tok)
        if m is not None:
            out.extend((m.group(1), ".", m.group(2)))
            continue
        out.append(tok)
    return out


class Lemmatizer(ABC):
    """A lemmatizer backend: ``name`` identifies it in corpus metadata and cache keys."""

    name: str = ""

    @property
    def version(self) -> str:
        """Version of the package doing the work (part of the corpus cache key)."""
        return ""

    @abstractmethod
    def lemmatize_tokens(self, tokens: list[str]) -> list[str]:
        """Lemmas of ``tokens`` (already lower-cased), one per token."""

    def tokenize(self, text: str) -> list[str]:
        """The shared tokenizer, :func:`tokenize`."""
        return tokenize(text)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.version}>"


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def missing_nltk_data() -> list[str]:
    """Names of the NLTK data packages the ``"nltk"`` backend needs but cannot find."""
    try:
        import nltk.data
    except ImportError:
        return list(_NLTK_RESOURCES)
    missing = []
    for pkg, resource in _NLTK_RESOURCES.items():
        try:
            nltk.data.find(resource)
        except LookupError:
            missing.append(pkg)
    return missing


def nltk_data_available() -> bool:
    """True when NLTK's English tagger and WordNet data are installed."""
    return not missing_nltk_data()


class NltkLemmatizer(Lemmatizer):
    """The reference lemmatizer: NLTK POS tags mapped to WordNet POS + WordNetLemmatizer."""

    name = "nltk"

    def __init__(self) -> None:
        missing = missing_nltk_data()
        if missing:
            raise LemmatizerUnavailable(
                f"the 'nltk' lemmatizer needs NLTK data that is not installed "
                f"({', '.join(missing)}); install it with `{NLTK_DOWNLOAD_COMMAND}`, "
                f"or use the offline 'lemminflect' backend"
            )
        from nltk import pos_tag
        from nltk.corpus import wordnet
        from nltk.stem import WordNetLemmatizer

        self._pos_tag = pos_tag
        self._wn_pos = {"J": wordnet.ADJ, "V": wordnet.VERB, "N": wordnet.NOUN, "R": wordnet.ADV}
        self._noun = wordnet.NOUN
        self._lemmatize = lru_cache(maxsize=200_000)(WordNetLemmatizer().lemmatize)

    @property
    def version(self) -> str:
        return _package_version("nltk")

    def lemmatize_tokens(self, tokens: list[str]) -> list[str]:
        if not tokens:
            return []
        return [
            self._lemmatize(tok, self._wn_pos.get(tag[:1], self._noun))
            for tok, tag in self._pos_tag(tokens)
        ]


class LemminflectLemmatizer(Lemmatizer):
    """Offline noun lemmatizer on lemminflect's dictionary (see the module docstring)."""

    name = "lemminflect"

    def __init__(self) -> None:
        try:
            import lemminflect
        except ImportError as exc:  # pragma: no cover - lemminflect is a base requirement
            raise LemmatizerUnavailable(
                "the 'lemminflect' lemmatizer needs the lemminflect package (pip install lemminflect)"
            ) from exc
        self._lemminflect = lemminflect
        self._cached = lru_cache(maxsize=200_000)(self._lemma)

    @property
    def version(self) -> str:
        return _package_version("lemminflect")

    def _lemma(self, token: str) -> str:
        known = self._lemminflect.getAllLemmas(token)
        if "NOUN" in known:
            # Shortest candidate, as WordNetLemmatizer does ("glasses" -> "glass").
            return min(known["NOUN"], key=len)
        if known or not token.isalpha() or len(token) < 3:
            # A known non-noun ("was", "is"), punctuation, a number or a clitic: the
            # out-of-vocabulary noun rules would only mangle it ("was" -> "wa").
            return token
        guesses = self._lemminflect.getLemma(token, upos="NOUN", lemmatize_oov=True)
        return guesses[0] if guesses and guesses[0] else token

    def lemmatize_tokens(self, tokens: list[str]) -> list[str]:
        return [self._cached(tok) for tok in tokens]


def get_lemmatizer(name: str = "auto") -> Lemmatizer:
    """Build a lemmatizer backend: ``"nltk"``, ``"lemminflect"`` or ``"auto"``.

    ``"auto"`` picks ``"nltk"`` when its tagger and WordNet data are installed,
    else ``"lemminflect"``, and logs one line saying which. ``"nltk"`` without
    its data raises :class:`LemmatizerUnavailable` naming the download command.
    """
    key = name.strip().lower()
    if key == "auto":
        missing = missing_nltk_data()
        if not missing:
            log.info("caption lemmatizer: nltk (tagger and WordNet data found)")
            return NltkLemmatizer()
        log.info(
            "caption lemmatizer: lemminflect (NLTK data missing: %s; `%s` enables the reference 'nltk' backend)",
            ", ".join(missing),
            NLTK_DOWNLOAD_COMMAND,
        )
        return LemminflectLemmatizer()
    if key == "nltk":
        return NltkLemmatizer()
    if key == "lemminflect":
        return LemminflectLemmatizer()
    raise ValueError(f"unknown lemmatizer {name!r}; expected one of {', '.join(BACKENDS)}")
