"""Training sentences written from a class list alone: the built-in corpus generator.

Each sentence names one to three classes (:attr:`GeneratorRecipe.mix`), drawn by the optional per-class
frequencies and pairs prior, in a frame of the shipped grammar (:mod:`taidpt.captions.phrasing`). Every
sentence is labelled by the :class:`~taidpt.captions.labelling.CaptionLabeller` before it is kept: one whose
labels differ from the classes it was written for is drawn again (counted in the stats). The same class
list, recipe, grammar and lemmatizer give the same sentences. See docs/datasets.md.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from taidpt.captions.class_values import read_class_pairs, read_class_values
from taidpt.captions.classes import ClassList
from taidpt.captions.labelling import CaptionLabeller
from taidpt.captions.phrasing import Grammar, Noun, class_nouns, frame_slots, load_grammar, noun_phrase, usable_grammar

__all__ = ["DEFAULT_MIX", "GeneratedSentences", "GeneratorRecipe", "generate_sentences", "parse_mix",
           "recipe_from_files"]

DEFAULT_MIX = (0.5, 0.35, 0.15)
# Wordings drawn for one set of classes, and sets of classes drawn per sentence, before giving up: a
# rejected wording is rare, so this is never reached in practice.
MAX_DRAWS = 50
CLASS_DRAWS = 5
# A draw that repeats an earlier sentence is drawn again this many times before the repeat is kept.
REPEAT_DRAWS = 4


def parse_mix(text: str | Sequence[float]) -> tuple[float, ...]:
    """Shares of sentences naming 1, 2, 3 classes from ``"0.5,0.35,0.15"`` (or numbers); normalised."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        shares = tuple(float(p) for p in parts)
    except ValueError:
        shares = ()
    if not 1 <= len(shares) <= 3 or not all(math.isfinite(s) and s >= 0 for s in shares) or sum(shares) <= 0:
        raise ValueError(f"expected one to three shares >= 0 for sentences naming 1, 2, 3 classes, "
                         f"e.g. '0.5,0.35,0.15', got {text!r}")
    return tuple(s / sum(shares) for s in shares)


@dataclass(frozen=True)
class GeneratorRecipe:
    """How many sentences, from which seed, naming how many classes, drawn how.

    ``frequencies``: relative weight of each class (default equal); ``pairs``: ``(i, j, weight)`` classes
    seen together; a sentence naming two or more classes starts from a pair with probability ``pair_share``.
    """

    n: int = 10000
    seed: int = 0
    mix: tuple[float, ...] = DEFAULT_MIX
    frequencies: tuple[float, ...] | None = None
    pairs: tuple[tuple[int, int, float], ...] = ()
    pair_share: float = 0.75

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"the number of sentences must be a positive integer, got {self.n!r}")
        object.__setattr__(self, "mix", parse_mix(self.mix))
        if not 0.0 <= self.pair_share <= 1.0:
            raise ValueError(f"pair_share must be between 0 and 1, got {self.pair_share}")

    def settings(self) -> dict[str, Any]:
        """JSON-safe description (part of a run's record and of the cache key)."""
        return {"n": self.n, "seed": self.seed, "mix": list(self.mix),
                "frequencies": None if self.frequencies is None else list(self.frequencies),
                "pairs": [list(p) for p in self.pairs], "pair_share": self.pair_share}


def recipe_from_files(classes: ClassList, *, n: int, seed: int, mix: str | Sequence[float] = DEFAULT_MIX,
                      frequencies: str = "", pairs: str = "") -> GeneratorRecipe:
    """A recipe whose class frequencies and pairs prior come from files (``""``: none); a bad file line
    raises ``ValueError`` naming it (:mod:`taidpt.captions.class_values`)."""
    freqs = read_class_values(frequencies, classes, what="a frequency >= 0") if frequencies else None
    return GeneratorRecipe(n=n, seed=seed, mix=parse_mix(mix),
                           frequencies=None if freqs is None else tuple(float(f) for f in freqs),
                           pairs=tuple(read_class_pairs(pairs, classes)) if pairs else ())


@dataclass
class GeneratedSentences:
    """The sentences, the classes each was written for (sorted indices), and counts of the draw."""

    sentences: list[str]
    classes: list[tuple[int, ...]]
    stats: dict[str, Any] = field(default_factory=dict)


class _Drawer:
    """Draws the classes of one sentence and writes it."""

    def __init__(self, classes: ClassList, recipe: GeneratorRecipe, grammar: Grammar,
                 nouns: list[tuple[Noun, ...]]) -> None:
        c = len(classes)
        self.weights = list(recipe.frequencies) if recipe.frequencies is not None else [1.0] * c
        if len(self.weights) != c:
            raise ValueError(f"{len(self.weights)} class frequencies for {c} classes")
        drawable = sum(w > 0 for w in self.weights)
        if drawable == 0:
            raise ValueError("every class frequency is 0: no class can be named")
        # A k-class share is used only where k classes can be drawn and the grammar has a k-class frame.
        ks = [k for k in range(1, len(recipe.mix) + 1) if k <= drawable and grammar.frames.get(k)]
        self.ks, self.k_weights = ks, [recipe.mix[k - 1] for k in ks]
        if sum(self.k_weights) <= 0:
            self.ks, self.k_weights = [1], [1.0]
        self.pairs = [p for p in recipe.pairs if self.weights[p[0]] > 0 and self.weights[p[1]] > 0]
        self.pair_share, self.grammar, self.nouns = recipe.pair_share, grammar, nouns

    def classes(self, rng: random.Random) -> list[int]:
        k = rng.choices(self.ks, weights=self.k_weights)[0]
        chosen: list[int] = []
        if k >= 2 and self.pairs and rng.random() < self.pair_share:
            i, j, _ = rng.choices(self.pairs, weights=[p[2] for p in self.pairs])[0]
            chosen = [i, j]
        while len(chosen) < k:
            w = [0.0 if i in chosen else x for i, x in enumerate(self.weights)]
            chosen.append(rng.choices(range(len(w)), weights=w)[0])
        rng.shuffle(chosen)
        return chosen

    def sentence(self, rng: random.Random, chosen: list[int]) -> str:
        frame = rng.choice(self.grammar.frames[len(chosen)])
        values: dict[str, str] = {}
        first_plural = False
        for slot, idx in zip("ABC", chosen):
            values[slot], plural = noun_phrase(rng, rng.choice(self.nouns[idx]), self.grammar)
            first_plural = first_plural or (slot == "A" and plural)
        for slot in frame_slots(frame):
            if slot in self.grammar.agreement:
                values[slot] = self.grammar.agreement[slot]["plural" if first_plural else "singular"]
            elif slot not in values:
                values[slot] = rng.choice(self.grammar.fillers[slot])
        text = frame.format(**values)
        return text[:1].upper() + text[1:]


def generate_sentences(classes: ClassList, labeller: CaptionLabeller, recipe: GeneratorRecipe,
                       grammar: Grammar | None = None) -> GeneratedSentences:
    """``recipe.n`` sentences for ``classes``, each labelled by ``labeller`` as exactly the classes it
    was written for. Raises ``ValueError`` when a class cannot be named (see :func:`class_nouns`)."""
    if labeller.class_list != classes:
        raise ValueError(f"the labeller was built for class list {labeller.class_list.dataset!r}, "
                         f"not {classes.dataset!r}")
    grammar = usable_grammar(grammar or load_grammar(), labeller)
    drawer = _Drawer(classes, recipe, grammar, class_nouns(classes, labeller))
    rng = random.Random(recipe.seed)
    sentences: list[str] = []
    written: list[tuple[int, ...]] = []
    seen: set[str] = set()
    rejected = repeats = 0
    for _ in range(recipe.n):
        kept: str | None = None
        for _classes_draw in range(CLASS_DRAWS):
            # Redraws keep the classes, so repeats and rejections do not shift the mix or the frequencies.
            chosen = drawer.classes(rng)
            want = tuple(sorted(chosen))
            for draw in range(MAX_DRAWS):
                text = drawer.sentence(rng, chosen)
                if tuple(labeller.label(text)) != want:
                    rejected += 1
                    continue
                kept = text
                if text not in seen or draw >= REPEAT_DRAWS:
                    break
            if kept is not None:
                break
        if kept is None:
            raise RuntimeError(f"no sentence of {CLASS_DRAWS} x {MAX_DRAWS} draws was labelled as written "
                               f"(last: {text!r})")
        repeats += kept in seen
        seen.add(kept)
        sentences.append(kept)
        written.append(want)
    per_k = [sum(len(w) == k for w in written) for k in (1, 2, 3)]
    mentions = [0] * len(classes)
    for w in written:
        for i in w:
            mentions[i] += 1
    stats = {"recipe": recipe.settings(), "grammar": grammar.settings(), "lemmatizer": labeller.lemmatizer.name,
             "sentences": len(sentences), "naming_1_2_3": per_k, "redrawn_mislabelled": rejected,
             "repeated_sentences": repeats, "class_mentions": mentions}
    return GeneratedSentences(sentences, written, stats)
