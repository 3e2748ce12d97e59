"""Procedural multi-label scenes of 14 shape classes, and captions that describe them.

The demo of the project needs an "offline world": images with multi-hot labels and natural
sentences about such images, so that a small CLIP can be pretrained on (image, caption) pairs and
TaI-DPT can then be prompt-tuned on captions only and tested on held-out images.

Scenes hold 1-3 objects drawn from 14 shape classes; 70% of scenes draw their shapes from one of 5
co-occurrence themes, so the label distribution has structure, as in real data. Each object has a
jittered colour, a position, a size and a rotation. Images are rendered at 4x with PIL polygons and
downsampled with a box filter (anti-aliasing), over a noisy background with faint clutter strokes.

Captions come from a small grammar: openers ("a photo of", ...), counts for repeated shapes
("two stars", "a pair of crosses"), spatial relations computed from the real positions, optional
size/colour adjectives, synonyms (including multi-word ones such as "half circle") and distractor
phrases. Colour is mentioned rarely on purpose: when captions often name colours the small CLIP
learns a colour shortcut and every method falls to near chance (observed while building the demo).

Determinism and disjoint streams: item ``i`` of a generator call uses its own
``numpy.random.Generator`` seeded with ``SeedSequence(seed, spawn_key=(stream, i))``, where
``stream`` is fixed per purpose (pretraining pairs, prompt-tuning captions, test images). Streams
with different spawn keys are statistically independent, so for any seed the test images are not
drawn from the pretraining pool, and item ``i`` does not depend on ``n`` (a longer call extends a
shorter one).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES",
    "COLOURS",
    "THEMES",
    "Colour",
    "SceneObject",
    "Scene",
    "CLASS_FILE",
    "STREAM_PAIRS",
    "STREAM_CAPTIONS",
    "STREAM_IMAGES",
    "caption_vocabulary",
    "item_rng",
    "load_synonyms",
    "sample_scene",
    "render_scene",
    "caption_scene",
    "generate_pairs",
    "generate_captions",
    "generate_images",
    "contact_sheet",
]

CLASS_FILE: Path = Path(__file__).resolve().parent.parent / "data" / "classes" / "shapes14.json"

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "heart",
    "diamond", "hexagon", "arrow", "moon", "bar", "frame", "semicircle",
)
_SHAPE_INDEX = {name: i for i, name in enumerate(SHAPES)}


@dataclass(frozen=True)
class Colour:
    """A named object colour: base RGB and the per-channel uniform jitter applied per object."""

    name: str
    rgb: tuple[int, int, int]
    jitter: int


COLOURS: tuple[Colour, ...] = (
    Colour("red", (225, 40, 40), 25),
    Colour("orange", (245, 140, 30), 20),
    Colour("yellow", (240, 225, 50), 20),
    Colour("green", (50, 190, 60), 25),
    Colour("cyan", (40, 210, 220), 20),
    Colour("blue", (50, 90, 235), 25),
    Colour("purple", (150, 60, 210), 20),
    Colour("pink", (245, 130, 190), 20),
    Colour("white", (240, 240, 240), 12),
)

# Co-occurrence groups: a themed scene draws all of its shapes (with replacement) from one group.
THEMES: dict[str, tuple[str, ...]] = {
    "night_sky": ("moon", "star", "circle"),
    "jewellery": ("ring", "diamond", "heart"),
    "road_signs": ("arrow", "cross", "bar"),
    "tiling": ("hexagon", "square", "triangle"),
    "gallery": ("frame", "semicircle", "bar"),
}
THEME_P = 0.7

# Spawn keys of the independent random streams (see the module docstring).
STREAM_PAIRS = 0
STREAM_CAPTIONS = 1
STREAM_IMAGES = 2

# Object radius as a fraction of the image side (7-13 px at 64 px).
_MIN_RADIUS = 0.11
_MAX_RADIUS = 0.20
_SUPERSAMPLE = 4


@dataclass
class SceneObject:
    """One drawn object. ``cx``, ``cy`` and ``size`` (the radius) are fractions of the image
    side, so a scene can be rendered at any resolution; ``angle`` is in degrees."""

    shape: str
    colour_name: str
    rgb: tuple[int, int, int]
    cx: float
    cy: float
    size: float
    angle: float


@dataclass
class Scene:
    """A scene: its objects and the multi-hot label vector (uint8, one entry per ``SHAPES``)."""

    objects: list[SceneObject]
    labels: np.ndarray
    theme: str | None = field(default=None)


def item_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` in ``stream`` for ``seed`` (independent per key)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream, index))))


# --------------------------------------------------------------------------- scenes


def _angle_for(shape: str, rng: np.random.Generator) -> float:
    """Rotation in degrees. Shapes whose identity depends on orientation (a square turned by 45
    degrees looks like a diamond) only get a small jitter; the others turn freely."""
    if shape in ("square", "frame", "diamond", "cross"):
        return float(rng.uniform(-15.0, 15.0))
    if shape in ("triangle", "heart"):
        return float(rng.uniform(-25.0, 25.0))
    if shape in ("circle", "ring"):
        return 0.0
    return float(rng.uniform(0.0, 360.0))


def sample_scene(rng: np.random.Generator, max_objects: int = 3) -> Scene:
    """Draw a random scene of 1..``max_objects`` objects (themed with probability 0.7).

    Positions are drawn by rejection so that objects overlap at most a little; after 30 failed
    tries the last candidate is kept, so the function always terminates.
    """
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    n = int(rng.integers(1, max_objects + 1))
    theme: str | None = None
    if rng.random() < THEME_P:
        theme = list(THEMES)[int(rng.integers(len(THEMES)))]
        pool = THEMES[theme]
        shapes = [pool[int(k)] for k in rng.integers(len(pool), size=n)]
    else:
        shapes = [SHAPES[int(k)] for k in rng.integers(len(SHAPES), size=n)]

    objects: list[SceneObject] = []
    for shape in shapes:
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        jitter = rng.integers(-colour.jitter, colour.jitter + 1, size=3)
        rgb = tuple(int(v) for v in np.clip(np.asarray(colour.rgb) + jitter, 0, 255))
        radius = float(rng.uniform(_MIN_RADIUS, _MAX_RADIUS))
        lo, hi = radius + 0.02, 1.0 - radius - 0.02
        cx = cy = 0.5
        for _ in range(30):
            cx, cy = (float(v) for v in rng.uniform(lo, hi, size=2))
            if all(math.hypot(cx - o.cx, cy - o.cy) >= 0.9 * (radius + o.size) for o in objects):
                break
        objects.append(SceneObject(shape, colour.name, rgb, cx, cy, radius, _angle_for(shape, rng)))

    labels = np.zeros(len(SHAPES), dtype=np.uint8)
    for obj in objects:
        labels[_SHAPE_INDEX[obj.shape]] = 1
    return Scene(objects=objects, labels=labels, theme=theme)


# --------------------------------------------------------------------------- rendering


def _regular(n: int, radius: float = 1.0, start_deg: float = -90.0) -> np.ndarray:
    t = np.deg2rad(start_deg) + 2.0 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _star() -> np.ndarray:
    outer = _regular(5, 1.0)
    inner = _regular(5, 0.42, -90.0 + 36.0)
    pts = np.empty((10, 2))
    pts[0::2], pts[1::2] = outer, inner
    return pts + np.array([0.0, 0.08])


def _heart() -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], axis=1) / 16.5


def _moon() -> np.ndarray:
    # Circle A (centre 0, radius 1) minus circle B (centre (d, 0), radius rb).
    d, rb = 0.45, 0.85
    x = (1.0 - rb * rb + d * d) / (2.0 * d)
    y = math.sqrt(1.0 - x * x)
    phi, psi = math.atan2(y, x), math.atan2(y, x - d)
    outer_t = np.linspace(phi, 2.0 * np.pi - phi, 28)
    inner_t = np.linspace(2.0 * np.pi - psi, psi, 20)
    outer = np.stack([np.cos(outer_t), np.sin(outer_t)], axis=1)
    inner = np.stack([d + rb * np.cos(inner_t), rb * np.sin(inner_t)], axis=1)
    return np.concatenate([outer, inner[1:-1]]) + np.array([0.3, 0.0])


def _semicircle() -> np.ndarray:
    t = np.linspace(np.pi, 2.0 * np.pi, 25)
    return np.stack([np.cos(t), np.sin(t) + 0.42], axis=1)


def _frame_quads() -> list[np.ndarray]:
    outer = np.array([[-0.9, -0.9], [0.9, -0.9], [0.9, 0.9], [-0.9, 0.9]])
    inner = outer * 0.6
    return [np.array([outer[k], outer[(k + 1) % 4], inner[(k + 1) % 4], inner[k]]) for k in range(4)]


# Polygons of every shape in unit coordinates (radius ~1, y pointing down). Circle and ring are
# drawn as ellipses.
_POLYGONS: dict[str, list[np.ndarray]] = {
    "square": [np.array([[-0.82, -0.82], [0.82, -0.82], [0.82, 0.82], [-0.82, 0.82]])],
    "triangle": [_regular(3, 1.1) + np.array([0.0, 0.2])],
    "star": [_star()],
    "cross": [np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3],
                        [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]])],
    "heart": [_heart()],
    "diamond": [np.array([[0.0, -1.05], [0.62, 0.0], [0.0, 1.05], [-0.62, 0.0]])],
    "hexagon": [_regular(6, 0.95, 0.0)],
    "arrow": [np.array([[-1.0, -0.22], [0.15, -0.22], [0.15, -0.62], [1.0, 0.0],
                        [0.15, 0.62], [0.15, 0.22], [-1.0, 0.22]])],
    "moon": [_moon()],
    "bar": [np.array([[-1.05, -0.27], [1.05, -0.27], [1.05, 0.27], [-1.05, 0.27]])],
    "frame": _frame_quads(),
    "semicircle": [_semicircle()],
}
_RING_INNER = 0.58


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """A smooth float32 [size, size, 3] background (tinted dark-to-mid grey plus a gradient) and
    the standard deviation of the per-pixel noise that ``render_scene`` adds to it."""
    base = rng.uniform(25.0, 100.0) + rng.uniform(-12.0, 12.0, size=3)
    gx, gy = rng.uniform(-25.0, 25.0, size=2)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    grad = gx * ramp[None, :] + gy * ramp[:, None]
    return base.astype(np.float32)[None, None, :] + grad[:, :, None], float(rng.uniform(4.0, 12.0))


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, big: int, scale: int) -> None:
    """Two to four faint, thin zig-zag strokes: texture that is not any class shape."""
    for _ in range(int(rng.integers(2, 5))):
        n_pts = int(rng.integers(3, 5))
        start = rng.uniform(0.0, big, size=2)
        steps = rng.normal(0.0, big * 0.18, size=(n_pts - 1, 2))
        pts = np.concatenate([start[None], start[None] + np.cumsum(steps, axis=0)])
        grey = int(rng.integers(90, 230))
        alpha = int(rng.integers(35, 85))
        value = grey * alpha // 255  # the layer holds premultiplied colour
        draw.line([tuple(p) for p in pts.tolist()], fill=(value, value, value, alpha), width=scale)


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, big: int) -> None:
    r = obj.size * big
    cx, cy = obj.cx * big, obj.cy * big
    fill = (*obj.rgb, 255)
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        return
    if obj.shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill,
                     width=max(1, int(round(r * (1.0 - _RING_INNER)))))
        return
    a = math.radians(obj.angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * r
    for poly in _POLYGONS[obj.shape]:
        pts = poly @ rot.T + np.array([cx, cy])
        draw.polygon([tuple(p) for p in pts.tolist()], fill=fill)


def render_scene(scene: Scene, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Render ``scene`` as an RGB image of ``size`` x ``size`` pixels.

    Clutter and objects are drawn at 4x resolution on a premultiplied-alpha layer (PIL mode
    "RGBa", so a box reduction averages colour and coverage correctly and edges come out
    anti-aliased), then composited over the background. Per-pixel Gaussian noise is strong on
    the background and weak (sensor-like) on objects. ``rng`` drives the background, the
    clutter and the noise.
    """
    big = size * _SUPERSAMPLE
    bg, bg_sigma = _background(rng, size)
    layer = Image.new("RGBa", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    _draw_clutter(draw, rng, big, _SUPERSAMPLE)
    for obj in scene.objects:
        _draw_object(draw, obj, big)
    small = np.asarray(layer.reduce(_SUPERSAMPLE), dtype=np.float32)
    alpha = small[:, :, 3:4] * np.float32(1.0 / 255.0)
    sigma = np.float32(bg_sigma) + np.float32(3.0 - bg_sigma) * alpha
    out = bg * (1.0 - alpha) + small[:, :, :3]
    out += rng.standard_normal(out.shape, dtype=np.float32) * sigma
    out += 0.5
    np.clip(out, 0.0, 255.0, out=out)
    return Image.fromarray(out.astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- captions

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


# --------------------------------------------------------------------------- datasets


def generate_pairs(n: int, seed: int, size: int = 64, *, max_objects: int = 3,
                   colour_p: float = 0.15, synonym_p: float = 0.2, drop_group_p: float = 0.1,
                   ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``n`` (image, caption) pairs for CLIP pretraining, from stream ``STREAM_PAIRS``.

    Returns uint8 images [n, size, size, 3], the captions, and the true scene labels uint8 [n, 14]
    (not the mention labels: a caption may omit a group).
    """
    synonyms = _spoken_synonyms(load_synonyms())
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions: list[str] = []
    labels = np.empty((n, len(SHAPES)), dtype=np.uint8)
    for i in range(n):
        rng = item_rng(seed, STREAM_PAIRS, i)
        scene = sample_scene(rng, max_objects)
        images[i] = np.asarray(render_scene(scene, rng, size))
        captions.append(_caption_with_labels(scene, rng, synonyms, colour_p, synonym_p, drop_group_p)[0])
        labels[i] = scene.labels
    return images, captions, labels


def generate_captions(n: int, seed: int, *, max_objects: int = 3, colour_p: float = 0.15,
                      synonym_p: float = 0.2, drop_group_p: float = 0.1,
                      ) -> tuple[list[str], np.ndarray]:
    """``n`` captions for prompt tuning (no images), from stream ``STREAM_CAPTIONS``.

    Returns the captions and uint8 [n, 14] labels of the classes each caption mentions, which is
    what a perfect caption labeller would read off the text.
    """
    synonyms = _spoken_synonyms(load_synonyms())
    captions: list[str] = []
    labels = np.empty((n, len(SHAPES)), dtype=np.uint8)
    for i in range(n):
        rng = item_rng(seed, STREAM_CAPTIONS, i)
        scene = sample_scene(rng, max_objects)
        caption, labels[i] = _caption_with_labels(scene, rng, synonyms, colour_p, synonym_p,
                                                  drop_group_p)
        captions.append(caption)
    return captions, labels


def generate_images(n: int, seed: int, size: int = 64, *, max_objects: int = 3,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` held-out test images and their labels, from stream ``STREAM_IMAGES``.

    Returns uint8 images [n, size, size, 3] and uint8 labels [n, 14].
    """
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty((n, len(SHAPES)), dtype=np.uint8)
    for i in range(n):
        rng = item_rng(seed, STREAM_IMAGES, i)
        scene = sample_scene(rng, max_objects)
        images[i] = np.asarray(render_scene(scene, rng, size))
        labels[i] = scene.labels
    return images, labels


def contact_sheet(images: np.ndarray | Sequence[Image.Image], captions: Sequence[str],
                  cols: int = 4, scale: int = 3, text_lines: int = 4) -> Image.Image:
    """A grid of images (upscaled by ``scale``) with their wrapped captions, for eyeballing."""
    import textwrap

    tiles = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]
    if not tiles:
        raise ValueError("no images")
    w, h = tiles[0].width * scale, tiles[0].height * scale
    line_h, text_w = 11, max(24, w // 6)
    cell_w, cell_h = w + 8, h + 6 + line_h * text_lines
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (tile, cap) in enumerate(zip(tiles, captions)):
        x, y = (k % cols) * cell_w + 4, (k // cols) * cell_h + 2
        sheet.paste(tile.resize((w, h), Image.Resampling.NEAREST), (x, y))
        for j, line in enumerate(textwrap.wrap(cap, text_w)[:text_lines]):
            draw.text((x, y + h + 2 + j * line_h), line, fill=(0, 0, 0))
    return sheet
