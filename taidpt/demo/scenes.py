"""The demo's three datasets, one random stream each, and the public face of the demo world.

``generate_pairs`` (CLIP pretraining), ``generate_captions`` (prompt tuning) and ``generate_images`` (test
images) draw item ``i`` from its own generator (:func:`taidpt.utils.seeding.demo_item_rng`): scene, then
image and/or caption, so an item is fixed by (seed, stream, index). ``code_digest`` fingerprints the
generator's source for the caches of generated data. The world's public names are re-exported here.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import numpy as np

from . import grammar, rendering, world
from .grammar import _caption_with_labels, _spoken_synonyms, caption_scene, caption_vocabulary, load_synonyms
from .rendering import contact_sheet, render_scene
from .world import (
    CLASS_FILE,
    COLOURS,
    SHAPES,
    STREAM_CAPTIONS,
    STREAM_IMAGES,
    STREAM_PAIRS,
    THEMES,
    Colour,
    Scene,
    SceneObject,
    sample_scene,
)
from taidpt.utils.seeding import demo_item_rng

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
    "code_digest",
    "load_synonyms",
    "sample_scene",
    "render_scene",
    "caption_scene",
    "generate_pairs",
    "generate_captions",
    "generate_images",
    "contact_sheet",
]


def code_digest() -> str:
    """Digest of the scene generator's source (this module, ``world``, ``rendering``, ``grammar``,
    and the item generator's recipe, ``demo_item_rng``): any change to it may change the generated data."""
    h = hashlib.sha256()
    for module in (world, rendering, grammar):
        h.update(Path(module.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    h.update(inspect.getsource(demo_item_rng).encode("utf-8"))
    return h.hexdigest()[:16]


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
        rng = demo_item_rng(seed, STREAM_PAIRS, i)
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
        rng = demo_item_rng(seed, STREAM_CAPTIONS, i)
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
        rng = demo_item_rng(seed, STREAM_IMAGES, i)
        scene = sample_scene(rng, max_objects)
        images[i] = np.asarray(render_scene(scene, rng, size))
        labels[i] = scene.labels
    return images, labels
