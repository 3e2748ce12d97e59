"""Captions of demo scenes: a small grammar over the shapes' synonym lists.

Openers, counts ("two stars"), spatial relations from the real positions, optional adjectives, synonyms
(multi-word ones too) and distractor phrases. Colour is mentioned rarely on purpose: when captions often
name colours the small CLIP learns a colour shortcut and every method falls to near chance. Synonyms come
from ``world.CLASS_FILE`` or any list given to ``load_synonyms``, the lists the caption labeller reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .world import _SHAPE_INDEX, CLASS_FILE, COLOURS, SHAPES, Scene, SceneObject

__all__ = ["caption_vocabulary", "load_synonyms", "caption_scene"]


# Every word below is checked (tests) not to be a class synonym: captions may only name classes
# through the synonym lists, otherwise the caption labeller's precision drops.
_OPENERS: tuple[str, ...] = (
    "a photo of", "a photo showing", "an image of", "an image showing", "there {be}",
    "we can see", "an image with", "a drawing of", "a sketch of", "this image contains",
    "an illustration of", "a rendering of", "a small scene with", "the image shows",
    "here we see", "a close up photo of", "in this image there {be}",
)
_COUNTS: dict[int, tuple[str, ...]] = {
    2: ("two", "two", "two", "a pair of", "a couple of", "2"),
    3: ("three", "three", "three", "3", "a group of three"),
}
_RELATIONS: dict[str, tuple[str, ...]] = {
    "left": ("to the left of", "left of", "on the left of"),
    "right": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "beneath", "underneath"),
    "near": ("next to", "near", "beside", "close to"),
}
_CORNERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("top", "left"): ("in the top left corner", "in the upper left corner", "in the corner"),
    ("top", "right"): ("in the top right corner", "in the upper right corner", "in the corner"),
    ("bottom", "left"): ("in the bottom left corner", "in the lower left corner", "in the corner"),
    ("bottom", "right"): ("in the bottom right corner", "in the lower right corner", "in the corner"),
    ("top", "centre"): ("at the top", "near the top edge"),
    ("bottom", "centre"): ("at the bottom", "near the bottom edge"),
    ("middle", "left"): ("on the left", "on the left side"),
    ("middle", "right"): ("on the right", "on the right side"),
    ("middle", "centre"): ("in the middle", "in the centre", "at the centre"),
}
_DISTRACTORS: tuple[str, ...] = (
    " on a noisy background", " drawn roughly", " on a grey background",
    " with faint lines in the background", " in a simple flat style", " on a speckled canvas",
    " with some scribbles", ", slightly blurry", ", low resolution", " on a dark backdrop",
)
_SMALL = ("small", "tiny", "little")
_LARGE = ("large", "big")
# The vocabulary has no irregular nouns today; list any added synonym's plural here.
_IRREGULAR_PLURALS: dict[str, str] = {"rhombus": "rhombuses"}
DISTRACTOR_P = 0.25
SIZE_ADJECTIVE_P = 0.12
LOCATION_P = 0.35


def caption_vocabulary() -> set[str]:
    """Every word the grammar can emit besides class synonyms (for tests of the grammar)."""
    texts: list[str] = list(_OPENERS) + list(_DISTRACTORS) + list(_SMALL) + list(_LARGE)
    texts += [w for v in _COUNTS.values() for w in v]
    texts += [w for v in _RELATIONS.values() for w in v]
    texts += [w for v in _CORNERS.values() for w in v]
    texts += [c.name for c in COLOURS] + ["a", "an", "and", "with", "one", "is", "are", "nearby"]
    words: set[str] = set()
    for t in texts:
        words.update(t.replace("{be}", "").replace(",", " ").split())
    return words


def _pluralize(phrase: str) -> str:
    """Plural of a noun phrase: the last word is inflected ("plus sign" -> "plus signs")."""
    head, _, last = phrase.rpartition(" ")
    if last in _IRREGULAR_PLURALS:
        plural = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        plural = last + "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}" if head else plural


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def load_synonyms(class_list: Any = None) -> list[list[str]]:
    """Synonym lists aligned with ``SHAPES`` (first entry = class name).

    ``class_list`` may be None (the bundled ``shapes14.json``), a path to a class file, a dict in
    the class-file format, a sequence of synonym lists or of ``{"name", "synonyms"}`` dicts, or an
    object with ``.classes`` or ``.synonyms`` (as the class-list loader may return). Entries are
    matched to ``SHAPES`` by class name, so their order does not matter.
    """
    if class_list is None:
        class_list = CLASS_FILE
    if isinstance(class_list, (str, Path)):
        with open(class_list, encoding="utf-8") as fh:
            class_list = json.load(fh)
    if isinstance(class_list, dict):
        class_list = class_list["classes"]
    elif not isinstance(class_list, (list, tuple)):
        if hasattr(class_list, "synonyms"):
            syn = class_list.synonyms
            names = getattr(class_list, "names", None) or [s[0] for s in syn]
            class_list = [{"name": n, "synonyms": list(s)} for n, s in zip(names, syn)]
        elif hasattr(class_list, "classes"):
            class_list = list(class_list.classes)
        else:
            class_list = list(class_list)
    table: dict[str, list[str]] = {}
    for entry in class_list:
        if isinstance(entry, dict):
            name, syns = entry["name"], list(entry.get("synonyms") or [entry["name"]])
        elif hasattr(entry, "synonyms"):
            syns = list(entry.synonyms)
            name = getattr(entry, "name", syns[0])
        else:
            syns = list(entry)
            name = syns[0]
        if not syns or syns[0] != name:
            syns = [name] + [s for s in syns if s != name]
        table[name] = syns
    missing = [s for s in SHAPES if s not in table]
    if missing:
        raise ValueError(f"class list lacks the demo classes {missing}")
    return [table[s] for s in SHAPES]


class _SpokenTable(list):
    """Synonym lists already filtered by ``_spoken_synonyms`` (so callers can reuse them)."""


def _spoken_synonyms(table: list[list[str]]) -> "_SpokenTable":
    """The synonyms the grammar may say: the class file's lists without entries that are the
    plural of another entry of the same class. The class file lists "bars" because the offline
    lemminflect backend knows "bar" only as a verb and leaves "bars" unlemmatized, so the plural
    must be matched as written; the grammar must still never say "a bars"."""
    return _SpokenTable([s for s in syns if not any(_pluralize(t) == s for t in syns if t != s)]
                        for syns in table)


def _group_objects(scene: Scene) -> list[list[SceneObject]]:
    groups: dict[str, list[SceneObject]] = {}
    for obj in scene.objects:
        groups.setdefault(obj.shape, []).append(obj)
    return list(groups.values())


def _noun_phrase(group: list[SceneObject], rng: np.random.Generator, synonyms: list[str],
                 colour_p: float, synonym_p: float) -> tuple[str, bool]:
    """Noun phrase for one shape group, and whether it is plural."""
    n = len(group)
    if len(synonyms) > 1 and rng.random() < synonym_p:
        noun = synonyms[int(rng.integers(1, len(synonyms)))]
    else:
        noun = synonyms[0]
    adjectives: list[str] = []
    if rng.random() < SIZE_ADJECTIVE_P:
        sizes = [o.size for o in group]
        if max(sizes) < 0.135:
            adjectives.append(_SMALL[int(rng.integers(len(_SMALL)))])
        elif min(sizes) > 0.175:
            adjectives.append(_LARGE[int(rng.integers(len(_LARGE)))])
    colours = {o.colour_name for o in group}
    if rng.random() < colour_p and len(colours) == 1:
        adjectives.append(group[0].colour_name)
    head = " ".join(adjectives + [noun if n == 1 else _pluralize(noun)])
    if n == 1:
        return f"{_article(head)} {head}", False
    counts = _COUNTS[min(n, 3)] if n <= 3 else (str(n),)
    return f"{counts[int(rng.integers(len(counts)))]} {head}", True


def _centroid(group: list[SceneObject]) -> tuple[float, float]:
    return (sum(o.cx for o in group) / len(group), sum(o.cy for o in group) / len(group))


def _relation(a: list[SceneObject], b: list[SceneObject], rng: np.random.Generator) -> str:
    """A spatial relation phrase that is true of group ``a`` with respect to group ``b``."""
    (ax, ay), (bx, by) = _centroid(a), _centroid(b)
    dx, dy = ax - bx, ay - by
    if rng.random() < 0.3 or max(abs(dx), abs(dy)) < 0.12:
        key = "near"
    elif abs(dx) >= abs(dy):
        key = "left" if dx < 0 else "right"
    else:
        key = "above" if dy < 0 else "below"
    options = _RELATIONS[key]
    return options[int(rng.integers(len(options)))]


def _location(obj: SceneObject, rng: np.random.Generator) -> str:
    col = "left" if obj.cx < 0.38 else "right" if obj.cx > 0.62 else "centre"
    row = "top" if obj.cy < 0.38 else "bottom" if obj.cy > 0.62 else "middle"
    options = _CORNERS[(row, col)]
    return options[int(rng.integers(len(options)))]


def _opener(rng: np.random.Generator, plural: bool) -> str:
    text = _OPENERS[int(rng.integers(len(_OPENERS)))]
    return text.replace("{be}", "are" if plural else "is")


def _caption_with_labels(scene: Scene, rng: np.random.Generator, class_list: Any = None,
                         colour_p: float = 0.15, synonym_p: float = 0.2,
                         drop_group_p: float = 0.1) -> tuple[str, np.ndarray]:
    """Caption of ``scene`` and the uint8 [14] vector of the classes the caption mentions.

    Objects of one shape form a group, described together with a count. With probability
    ``drop_group_p`` (and at least two groups) one whole group is left out of the caption, as
    real captions omit things; the returned labels then lack it, while ``scene.labels`` keep it.
    """
    if not 0.0 <= colour_p <= 0.4:
        raise ValueError(f"colour_p must be in [0, 0.4] (more colour words teach a colour shortcut), got {colour_p}")
    if isinstance(class_list, _SpokenTable):
        synonyms = class_list
    else:
        synonyms = _spoken_synonyms(load_synonyms(class_list))
    groups = _group_objects(scene)
    groups = [groups[int(k)] for k in rng.permutation(len(groups))]
    if len(groups) >= 2 and rng.random() < drop_group_p:
        del groups[int(rng.integers(len(groups)))]
    phrases = [_noun_phrase(g, rng, synonyms[_SHAPE_INDEX[g[0].shape]], colour_p, synonym_p)
               for g in groups]
    (np1, plural1) = phrases[0]
    form = rng.random()
    if len(groups) == 1:
        single = len(groups[0]) == 1
        if single and form < 0.15:
            text = f"{np1} {_location(groups[0][0], rng)}"
        else:
            text = f"{_opener(rng, plural1)} {np1}"
            if single and rng.random() < LOCATION_P:
                text += f" {_location(groups[0][0], rng)}"
    elif len(groups) == 2:
        np2 = phrases[1][0]
        if form < 0.45:
            text = f"{_opener(rng, plural1)} {np1} {_relation(groups[0], groups[1], rng)} {np2}"
        elif form < 0.8:
            text = f"{_opener(rng, True)} {np1} and {np2}"
        else:
            text = f"{np1} {_relation(groups[0], groups[1], rng)} {np2}"
    else:
        np2, np3 = phrases[1][0], phrases[2][0]
        if form < 0.45:
            text = f"{_opener(rng, True)} {np1}, {np2} and {np3}"
        elif form < 0.8:
            rel = _relation(groups[0], groups[1], rng)
            text = f"{_opener(rng, plural1)} {np1} {rel} {np2}, and {np3}"
        else:
            where = _location(groups[2][0], rng) if len(groups[2]) == 1 else "nearby"
            text = f"{_opener(rng, True)} {np1} and {np2}, with {np3} {where}"
    if rng.random() < DISTRACTOR_P:
        text += _DISTRACTORS[int(rng.integers(len(_DISTRACTORS)))]
    labels = np.zeros(len(SHAPES), dtype=np.uint8)
    for g in groups:
        labels[_SHAPE_INDEX[g[0].shape]] = 1
    return text[0].upper() + text[1:] + ".", labels


def caption_scene(scene: Scene, rng: np.random.Generator, class_list: Any = None,
                  colour_p: float = 0.15, synonym_p: float = 0.2, drop_group_p: float = 0.1) -> str:
    """A natural-language caption of ``scene`` (see ``_caption_with_labels``).

    ``colour_p`` is the probability that a group's colour is named; it is capped at 0.4 because
    frequent colour words teach the small CLIP a colour shortcut. ``synonym_p`` is the
    probability of a synonym instead of the class name.
    """
    return _caption_with_labels(scene, rng, class_list, colour_p, synonym_p, drop_group_p)[0]
