"""Tests of the procedural demo world: scenes, images, captions, the VOC writer, and the caption
labeller's precision/recall on generated captions."""

from __future__ import annotations

import hashlib
import inspect
import json
import re

import numpy as np
import pytest
from PIL import Image

from taidpt.demo import grammar, scenes
from taidpt.demo.grammar import _caption_with_labels
from taidpt.demo.scenes import (
    CLASS_FILE,
    COLOURS,
    SHAPES,
    THEMES,
    Scene,
    caption_scene,
    generate_captions,
    generate_images,
    generate_pairs,
    load_synonyms,
    render_scene,
    sample_scene,
)
from taidpt.demo.voc_writer import write_caption_file, write_voc_dataset
from taidpt.utils.seeding import demo_item_rng


def _digest(images: np.ndarray, captions: list[str] | None = None) -> str:
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    if captions is not None:
        h.update("\n".join(captions).encode("utf-8"))
    return h.hexdigest()


# --------------------------------------------------------------------------- class file


def test_class_file_matches_shapes_and_synonyms_do_not_collide():
    data = json.loads(CLASS_FILE.read_text(encoding="utf-8"))
    assert data["dataset"] == "shapes14"
    assert tuple(c["name"] for c in data["classes"]) == SHAPES
    owner: dict[str, str] = {}
    for c in data["classes"]:
        assert c["synonyms"][0] == c["name"]
        for s in c["synonyms"]:
            assert s == s.lower().strip() and s not in owner, s
            owner[s] = c["name"]
    # The labeller also matches the space-free form of a multi-word synonym as one word.
    for s in owner:
        if " " in s:
            assert "".join(s.split()) not in owner, s


def test_grammar_words_are_not_class_synonyms():
    words = scenes.caption_vocabulary()
    synonym_words = {w for syns in load_synonyms() for s in syns for w in s.split()}
    assert not words & synonym_words, words & synonym_words


def test_constants():
    assert len(SHAPES) == 14 and len(set(SHAPES)) == 14
    assert len(COLOURS) == 9 and len({c.name for c in COLOURS}) == 9
    assert len(THEMES) == 5
    assert {s for t in THEMES.values() for s in t} <= set(SHAPES)
    assert {s for t in THEMES.values() for s in t} == set(SHAPES)


# --------------------------------------------------------------------------- scenes and images


def test_scene_labels_match_objects():
    rng = np.random.default_rng(0)
    for _ in range(500):
        scene = sample_scene(rng)
        assert isinstance(scene, Scene)
        assert 1 <= len(scene.objects) <= 3
        assert scene.labels.dtype == np.uint8 and scene.labels.shape == (14,)
        expected = np.zeros(14, dtype=np.uint8)
        for obj in scene.objects:
            expected[SHAPES.index(obj.shape)] = 1
            assert obj.colour_name in {c.name for c in COLOURS}
            assert all(0 <= v <= 255 for v in obj.rgb)
            assert 0.0 < obj.cx - obj.size and obj.cx + obj.size < 1.0
            assert 0.0 < obj.cy - obj.size and obj.cy + obj.size < 1.0
        np.testing.assert_array_equal(scene.labels, expected)
        if scene.theme is not None:
            assert {o.shape for o in scene.objects} <= set(THEMES[scene.theme])


def test_every_shape_renders_and_differs():
    """Each class draws something visible, and no two classes draw the same mask."""
    masks = {}
    for shape in SHAPES:
        obj = scenes.SceneObject(shape, "white", (255, 255, 255), 0.5, 0.5, 0.3, 10.0)
        scene = Scene([obj], np.zeros(14, dtype=np.uint8))
        img = np.asarray(render_scene(scene, np.random.default_rng(0), 64)).astype(int)
        bg = np.asarray(render_scene(Scene([], np.zeros(14, np.uint8)), np.random.default_rng(0), 64)).astype(int)
        mask = np.abs(img - bg).sum(axis=2) > 150
        assert mask.sum() > 60, shape
        masks[shape] = mask
    for a in SHAPES:
        for b in SHAPES:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.9, (a, b, iou)


def test_images_are_64px_rgb():
    img = render_scene(sample_scene(np.random.default_rng(1)), np.random.default_rng(2))
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (64, 64)
    images, captions, labels = generate_pairs(8, seed=3)
    assert images.shape == (8, 64, 64, 3) and images.dtype == np.uint8
    assert len(captions) == 8 and labels.shape == (8, 14) and labels.dtype == np.uint8
    assert labels.sum(axis=1).min() >= 1
    test_images, test_labels = generate_images(4, seed=3, size=32)
    assert test_images.shape == (4, 32, 32, 3) and test_labels.shape == (4, 14)


def test_determinism_and_seed_sensitivity():
    a = generate_pairs(12, seed=7)
    b = generate_pairs(12, seed=7)
    c = generate_pairs(12, seed=8)
    assert _digest(a[0], a[1]) == _digest(b[0], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(a[0], c[0]) and a[1] != c[1]
    assert generate_captions(50, seed=7)[0] == generate_captions(50, seed=7)[0]
    assert generate_captions(50, seed=7)[0] != generate_captions(50, seed=8)[0]
    assert _digest(generate_images(6, seed=7)[0]) == _digest(generate_images(6, seed=7)[0])
    # Item i does not depend on n: a longer call extends a shorter one.
    longer = generate_pairs(20, seed=7)
    assert _digest(longer[0][:12], longer[1][:12]) == _digest(a[0], a[1])


def test_streams_are_disjoint():
    """Test images, pretraining pairs and tuning captions come from different random streams."""
    pairs_img, pairs_caps, _ = generate_pairs(200, seed=0)
    test_img, _ = generate_images(200, seed=0)
    caps, _ = generate_captions(200, seed=0)
    pool = {hashlib.sha256(im.tobytes()).digest() for im in pairs_img}
    assert not any(hashlib.sha256(im.tobytes()).digest() in pool for im in test_img)
    assert caps != pairs_caps
    assert demo_item_rng(0, scenes.STREAM_PAIRS, 0).random() != demo_item_rng(0, scenes.STREAM_IMAGES, 0).random()


def test_global_rng_is_not_used():
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    generate_pairs(3, seed=0)
    generate_captions(3, seed=0)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


# --------------------------------------------------------------------------- captions


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def test_captions_mention_only_present_classes():
    rng = np.random.default_rng(11)
    synonyms = load_synonyms()
    dropped = 0
    for _ in range(2000):
        scene = sample_scene(rng)
        caption, mentioned = _caption_with_labels(scene, rng)
        assert caption.endswith(".") and not caption[0].islower()
        assert mentioned.dtype == np.uint8 and mentioned.shape == (14,)
        assert mentioned.sum() >= 1
        assert np.all(mentioned <= scene.labels), caption
        dropped += int(mentioned.sum() < scene.labels.sum())
        # Every mentioned class appears as one of its synonyms (singular or plural).
        text = " " + " ".join(_words(caption)) + " "
        for k in np.flatnonzero(mentioned):
            forms = [s for s in synonyms[k]] + [grammar._pluralize(s) for s in synonyms[k]]
            assert any(f" {f} " in text for f in forms), (SHAPES[k], caption)
    assert 0 < dropped < 2000 * 0.1


def test_caption_grammar_exercises_counts_plurals_and_synonyms():
    caps, _ = generate_captions(3000, seed=5)
    text = " ".join(caps).lower()
    for needle in ("a photo of", "two ", "three ", "a pair of", "crosses", "hearts", "moons",
                   "half circle", "plus sign", "hollow square", "picture frame", "to the left of",
                   "above"):
        assert needle in text, needle
    assert "a bars" not in text and " an bar" not in text


def test_colour_is_rare_and_bounded():
    caps, _ = generate_captions(2000, seed=2)
    colour_words = {c.name for c in COLOURS}
    with_colour = sum(any(w in colour_words for w in _words(c)) for c in caps)
    assert with_colour / len(caps) < 0.35
    caps0, _ = generate_captions(300, seed=2, colour_p=0.0)
    assert not any(w in colour_words for c in caps0 for w in _words(c))
    with pytest.raises(ValueError):
        caption_scene(sample_scene(np.random.default_rng(0)), np.random.default_rng(0), colour_p=0.5)


def test_caption_scene_accepts_class_list_forms():
    scene = sample_scene(np.random.default_rng(4))
    from_file = caption_scene(scene, np.random.default_rng(5), CLASS_FILE)
    assert caption_scene(scene, np.random.default_rng(5)) == from_file
    assert caption_scene(scene, np.random.default_rng(5), load_synonyms()) == from_file
    classes = pytest.importorskip("taidpt.captions.classes")
    class_list = classes.load_class_list(CLASS_FILE)
    assert caption_scene(scene, np.random.default_rng(5), class_list) == from_file


# --------------------------------------------------------------------------- VOC writer


def test_voc_writer_layout(tmp_path):
    images, labels = generate_images(3, seed=1)
    labels[1] = 0  # an image with no positive is allowed
    voc = write_voc_dataset(tmp_path, images, labels, SHAPES, split="test")
    assert voc == tmp_path / "VOCdevkit" / "VOC2007"
    main = voc / "ImageSets" / "Main"
    assert (main / "test.txt").read_text() == "000001\n000002\n000003\n"
    for k in range(3):
        with Image.open(voc / "JPEGImages" / f"{k + 1:06d}.jpg") as im:
            assert im.format == "JPEG" and im.size == (64, 64) and im.mode == "RGB"
    for c, name in enumerate(SHAPES):
        lines = (main / f"{name}_test.txt").read_text().splitlines()
        assert lines == [f"{k + 1:06d} {' 1' if labels[k, c] else '-1'}" for k in range(3)]
        assert all(re.fullmatch(r"\d{6} ( 1|-1)", line) for line in lines)
    assert sorted(p.name for p in main.iterdir()) == sorted(["test.txt"] + [f"{n}_test.txt" for n in SHAPES])

    pil_images = [Image.fromarray(im) for im in images]
    voc2 = write_voc_dataset(tmp_path / "b", pil_images, labels, list(SHAPES))
    assert (voc2 / "JPEGImages" / "000003.jpg").is_file()
    with pytest.raises(ValueError):
        write_voc_dataset(tmp_path / "c", images, labels[:, :5], SHAPES)
    with pytest.raises(ValueError):
        write_voc_dataset(tmp_path / "c", images, labels[:, :2], ["hot dog", "cat"])


def test_voc_writer_roundtrip_through_reader(tmp_path):
    """If the VOC reader accepts a class list, it must read back what the writer wrote."""
    testsets = pytest.importorskip("taidpt.images.readers.voc")
    params = inspect.signature(testsets.read_voc2007).parameters
    key = next((k for k in ("classnames", "class_names", "classes", "class_list") if k in params), None)
    if key is None:
        pytest.skip("taidpt.images.readers.voc.read_voc2007 does not take a class list yet")
    images, labels = generate_images(5, seed=2)
    write_voc_dataset(tmp_path, images, labels, SHAPES)
    data = testsets.read_voc2007(tmp_path, split="test", **{key: list(SHAPES)})
    assert tuple(data.classnames) == SHAPES
    np.testing.assert_array_equal(np.asarray(data.targets) == 1, labels == 1)


def test_caption_file(tmp_path):
    caps, _ = generate_captions(5, seed=0)
    path = write_caption_file(tmp_path / "sub" / "captions.txt", caps + ["ünïcode"])
    assert path.read_text(encoding="utf-8").splitlines() == caps + ["ünïcode"]
    with pytest.raises(ValueError):
        write_caption_file(tmp_path / "bad.txt", ["two\nlines"])


# --------------------------------------------------------------------------- labeller


def _labeller():
    try:
        from taidpt.captions.classes import load_class_list
        from taidpt.captions.labelling import CaptionLabeller
        from taidpt.captions.lemmatize import get_lemmatizer
    except ImportError as exc:
        pytest.skip(f"caption labeller not importable yet: {exc}")
    return CaptionLabeller(load_class_list(CLASS_FILE), get_lemmatizer("lemminflect"))


def test_labeller_precision_and_recall_on_generated_captions():
    labeller = _labeller()
    captions, mentioned = generate_captions(2000, seed=123)
    predicted = labeller.label_many(captions)
    assert predicted.shape == mentioned.shape
    tp = int((predicted & mentioned).sum())
    false_pos = [(c, [SHAPES[k] for k in np.flatnonzero(p & ~m)])
                 for c, p, m in zip(captions, predicted, mentioned) if (p & ~m).any()]
    assert not false_pos, false_pos[:10]
    assert tp / int(predicted.sum()) == 1.0
    recall = tp / int(mentioned.sum())
    assert recall >= 0.99, recall


def test_labeller_reads_every_synonym_as_its_own_class():
    """Singular and plural of every synonym, inside a grammar sentence, give exactly its class
    (multi-word synonyms such as "half circle" must not also fire "circle")."""
    labeller = _labeller()
    for k, syns in enumerate(grammar._spoken_synonyms(load_synonyms())):
        for s in syns:
            for sentence in (f"A photo of a {s} on a noisy background.", f"There are two {grammar._pluralize(s)}."):
                assert labeller.label(sentence) == [k], (sentence, labeller.lemmas(sentence))
