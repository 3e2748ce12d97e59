"""The demo world's vocabulary and its scene sampler: 14 shape classes, colours, themes, scenes.

A scene holds 1-3 objects (jittered colour, position, size, rotation); 70% draw their shapes from one of 5
co-occurrence themes, so labels have structure as in real data. ``rendering`` draws scenes, ``grammar``
describes them, ``scenes`` generates the datasets. Item ``i`` uses its own generator keyed by
``(seed, stream, i)`` with spawn keys, one stream per purpose: streams are independent, so test images
never come from the pretraining pool, and item ``i`` does not depend on how many items are drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    "sample_scene",
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
