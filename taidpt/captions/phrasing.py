"""The grammar of generated sentences and the noun phrases that name a class in them.

A grammar (``taidpt/data/grammar/<name>.json``) holds sentence frames with slots (``{A}`` ``{B}`` ``{C}``
for the classes' noun phrases, ``{scene}``, ``{relation}``, ... for fillers) and the filler lists.
:func:`usable_grammar` drops every filler and frame that would name a class of the class list by itself,
and :func:`class_nouns` keeps the synonyms (and their plurals) the labeller reads as that class alone, so
a generated sentence names the classes it was written for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import string
from dataclasses import dataclass
from importlib import resources
from typing import Any

from taidpt.captions.classes import ClassList
from taidpt.captions.labelling import CaptionLabeller
from taidpt.captions.lemmatize import tokenize

__all__ = ["Grammar", "Noun", "class_nouns", "load_grammar", "noun_phrase", "usable_grammar"]

DEFAULT_GRAMMAR = "photographs"
CLASS_SLOTS = ("A", "B", "C")
# Slots filled by agreement with the first noun phrase, not drawn from a list.
AGREEMENT_SLOTS = ("there", "it")


@dataclass(frozen=True)
class Grammar:
    """Frames per number of classes (1, 2, 3), filler lists per slot, and the noun-phrase vocabulary."""

    name: str
    version: int
    sha256: str
    frames: dict[int, tuple[str, ...]]
    fillers: dict[str, tuple[str, ...]]
    agreement: dict[str, dict[str, str]]
    adjectives: tuple[str, ...]
    singular: tuple[str, ...]
    plural: tuple[str, ...]
    an_exceptions: dict[str, tuple[str, ...]]
    adjective_share: float
    plural_share: float

    def settings(self) -> dict[str, Any]:
        """What identifies the grammar in a corpus's provenance."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def frame_slots(frame: str) -> list[str]:
    """The slot names of a frame, in order."""
    return [field for _, field, _, _ in string.Formatter().parse(frame) if field]


def load_grammar(name: str = DEFAULT_GRAMMAR) -> Grammar:
    """The grammar shipped as ``taidpt/data/grammar/<name>.json``."""
    ref = resources.files("taidpt").joinpath("data", "grammar", f"{name}.json")
    raw = ref.read_bytes()
    data = json.loads(raw.decode("utf-8"))
    frames = {int(k): tuple(v) for k, v in data["frames"].items()}
    slots = {s for fs in frames.values() for f in fs for s in frame_slots(f)}
    fillers = {s: tuple(data[s]) for s in sorted(slots - set(CLASS_SLOTS) - set(AGREEMENT_SLOTS))}
    return Grammar(name=data["name"], version=int(data["version"]), sha256=hashlib.sha256(raw).hexdigest(),
                   frames=frames, fillers=fillers, agreement={s: dict(data[s]) for s in AGREEMENT_SLOTS},
                   adjectives=tuple(data["adjective"]), singular=tuple(data["singular"]), plural=tuple(data["plural"]),
                   an_exceptions={k: tuple(v) for k, v in data["an_exceptions"].items()},
                   adjective_share=float(data["adjective_share"]), plural_share=float(data["plural_share"]))


def _names_nothing(text: str, labeller: CaptionLabeller) -> bool:
    return not labeller.label(text)


def usable_grammar(grammar: Grammar, labeller: CaptionLabeller) -> Grammar:
    """``grammar`` without the fillers, adjectives and counts that name a class of the labeller's list, and
    without the frames whose own words do; raises ``ValueError`` when no one-class frame is left."""
    keep = {slot: tuple(f for f in fs if _names_nothing(f, labeller)) for slot, fs in grammar.fillers.items()}

    def frame_ok(frame: str) -> bool:
        words = frame.format(**{s: " , " for s in frame_slots(frame)})
        return _names_nothing(words, labeller) and all(keep.get(s, True) for s in frame_slots(frame))

    frames = {k: tuple(f for f in fs if frame_ok(f)) for k, fs in grammar.frames.items()}
    if not frames.get(1):
        raise ValueError(f"every one-class frame of grammar {grammar.name!r} names a class of the class list")
    return dataclasses.replace(
        grammar, frames=frames, fillers=keep,
        adjectives=tuple(a for a in grammar.adjectives if _names_nothing(a, labeller)),
        singular=tuple(c for c in grammar.singular if _names_nothing(c, labeller)) or ("",),
        plural=tuple(c for c in grammar.plural if _names_nothing(c, labeller)) or ("",))


@dataclass(frozen=True)
class Noun:
    """A synonym that names its class alone, and its plural forms that do too."""

    singular: str
    plurals: tuple[str, ...]


def _plural_candidates(synonym: str) -> list[str]:
    """The synonym with its last word inflected as a plural noun: lemminflect's forms ("sheep" stays
    "sheep"), else ``+s``."""
    import lemminflect

    head, sep, last = synonym.rpartition(" ")
    forms = list(lemminflect.getInflection(last, "NNS")) if last.isalpha() else []
    return list(dict.fromkeys(f"{head}{sep}{f}" for f in (forms or [last + "s"])))


def class_nouns(classes: ClassList, labeller: CaptionLabeller) -> list[tuple[Noun, ...]]:
    """Per class, its synonyms that the labeller reads as exactly that class; raises ``ValueError``
    naming the classes without one (no sentence could name them)."""
    out: list[tuple[Noun, ...]] = []
    for idx, synonyms in enumerate(classes.synonyms):
        nouns = []
        for syn in dict.fromkeys(s.replace("_", " ").strip() for s in synonyms):
            # A synonym the lemmatizer changes ("bars" -> "bar") is matched only through its lemma.
            if labeller.lemmas(syn) != tokenize(syn) or labeller.label(f"one {syn}.") != [idx]:
                continue
            plurals = tuple(p for p in _plural_candidates(syn) if labeller.label(f"two {p}.") == [idx])
            nouns.append(Noun(syn, plurals[:1]))
        out.append(tuple(nouns))
    missing = [classes.names[i] for i, nouns in enumerate(out) if not nouns]
    if missing:
        raise ValueError(f"class list {classes.dataset!r}: no synonym of {', '.join(map(repr, missing[:4]))} is read "
                         f"as that class alone by the {labeller.lemmatizer.name} labeller (another class's name "
                         f"inside it, or a form the lemmatizer changes); add its singular form as a synonym")
    return out


def article(word: str, grammar: Grammar) -> str:
    """``a`` or ``an`` before ``word``, by its first letter and the grammar's exceptions."""
    low = word.lower()
    if low.startswith(grammar.an_exceptions.get("an", ())):
        return "an"
    if low.startswith(grammar.an_exceptions.get("a", ())):
        return "a"
    return "an" if low[:1] in "aeiou" else "a"


def noun_phrase(rng: random.Random, noun: Noun, grammar: Grammar) -> tuple[str, bool]:
    """A counted, sometimes described phrase for ``noun``; ``True`` when it is plural."""
    plural = bool(noun.plurals) and rng.random() < grammar.plural_share
    words = rng.choice(noun.plurals) if plural else noun.singular
    if grammar.adjectives and rng.random() < grammar.adjective_share:
        words = f"{rng.choice(grammar.adjectives)} {words}"
    count = rng.choice(grammar.plural if plural else grammar.singular)
    if count == "a":
        count = article(words, grammar)
    return (f"{count} {words}" if count else words), plural
