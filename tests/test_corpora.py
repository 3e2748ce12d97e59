"""Caption readers, corpus building (templates, exclusion, rarest assignment, caps), caption recipes
(every caption, a caption-id file, k per image) and the disk cache."""

from __future__ import annotations

import collections
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from taidpt.captions.classes import ClassList, load_class_list
from taidpt.engine.config import get_cfg_default, merge_files_and_opts
from taidpt.captions.builder import assign_rarest, build_corpus, source_defaults
from taidpt.captions.corpus import CaptionCorpus
from taidpt.captions.selection import CaptionSelection
from taidpt.captions.sources import (
    read_caption_ids,
    read_coco_captions,
    read_coco_image_ids,
    read_localized_narratives,
    read_text_file,
)
from taidpt.images.registry import load_caption_corpus
from taidpt.captions.labelling import CaptionLabeller
from taidpt.captions.lemmatize import get_lemmatizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lemmatizer():
    return get_lemmatizer("lemminflect")


@pytest.fixture(scope="module")
def coco(lemmatizer):
    cl = load_class_list("coco2014")
    return cl, CaptionLabeller(cl, lemmatizer)


@pytest.fixture(scope="module")
def toy(lemmatizer):
    cl = ClassList(
        dataset="toy",
        names=("person", "dog", "cat"),
        synonyms=(("person", "man", "woman", "people"), ("dog",), ("cat",)),
    )
    return cl, CaptionLabeller(cl, lemmatizer)


def write_coco_captions(path: Path) -> Path:
    anns = [
        (11, 100, "A dog sleeping on a couch."),
        (12, 100, "A brown dog lies on the sofa"),
        (13, 200, "An empty street at night."),  # no class
        (14, 300, "A man riding a motor bike."),
        (15, 300, "   "),  # blank
        (16, 400, "A hot dog on a plate"),
    ]
    data = {
        "info": {},
        "images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (100, 200, 300, 400)],
        "annotations": [{"id": a, "image_id": im, "caption": c} for a, im, c in anns],
    }
    path.write_text(json.dumps(data))
    return path


LN_LINES = [
    '{"dataset_id": "oi", "image_id": "a", "caption": "A dog and a man."}',  # dog, person -> dog
    '{"image_id": "b", "caption": "A man sitting on a bench."}',  # person
    '{"image_id": "c", "caption": "A cat next to a dog and a woman."}',  # all three -> cat
    "",
    '{"image_id": "d", "caption": "Two dogs."}',  # dog
    '{"image_id": "e", "caption": "People in a park."}',  # person
    '{"image_id": "f", "caption": "A woman."}',  # person, over a cap of 2
    '{"image_id": "g", "caption": "A tree."}',  # no class
    '{"image_id": "h", "caption": ""}',  # blank caption
]


def write_ln(path: Path, lines: list[str] = LN_LINES) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- readers


def test_read_coco_captions_and_exclusion(tmp_path) -> None:
    path = write_coco_captions(tmp_path / "captions_train2017.json")
    stats: dict = {}
    texts = read_coco_captions(path, stats=stats)
    assert texts[0] == "A dog sleeping on a couch." and len(texts) == 5
    assert stats == {"caption_recipe": "every caption", "sentences_read": 6, "selected_captions": 6,
                     "excluded_test_image_captions": 0, "dropped_empty": 1}
    stats = {}
    texts = read_coco_captions(path, exclude_image_ids={100, 999}, stats=stats)
    assert texts == ["An empty street at night.", "A man riding a motor bike.", "A hot dog on a plate"]
    assert stats["excluded_test_image_captions"] == 2
    assert read_coco_image_ids(path) == {100, 200, 300, 400}


def test_read_coco_captions_errors(tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"annotations": [\n{"image_id": 1, "caption": "x"},\n')
    with pytest.raises(ValueError, match=r"c\.json:3:\d+: invalid json"):
        read_coco_captions(path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match=r'c\.json: expected a COCO captions json object with an "annotations" list'):
        read_coco_captions(path)
    path.write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "a"}, {"image_id": 2}]}))
    with pytest.raises(ValueError, match=r"c\.json: annotations\[1\]: expected an object with a string \"caption\""):
        read_coco_captions(path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_coco_captions(tmp_path / "nope.json")
    with pytest.raises(TypeError, match="integer image ids"):
        read_coco_captions(write_coco_captions(path), exclude_image_ids=["100"])


def test_read_localized_narratives(tmp_path) -> None:
    stats: dict = {}
    texts = read_localized_narratives(write_ln(tmp_path / "ln.jsonl"), stats=stats)
    assert texts[0] == "A dog and a man." and texts[-1] == "A tree."
    assert len(texts) == 7
    assert stats == {"sentences_read": 8, "dropped_empty": 1}


def test_read_localized_narratives_bad_line(tmp_path) -> None:
    path = write_ln(tmp_path / "bad.jsonl", LN_LINES[:2] + ['{"caption": "a dog"'] + LN_LINES[2:])
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: invalid json"):
        read_localized_narratives(path)
    path = write_ln(tmp_path / "bad.jsonl", LN_LINES[:4] + ['{"image_id": "z"}'])
    with pytest.raises(ValueError, match=r'bad\.jsonl:5: expected a json object with a string "caption"'):
        read_localized_narratives(path)
    path.write_bytes(b'{"caption": "ok"}\n{"caption": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not UTF-8"):
        read_localized_narratives(path)


def test_read_text_file_blank_lines_and_invalid_bytes(tmp_path) -> None:
    path = tmp_path / "s.txt"
    path.write_bytes(b"\xef\xbb\xbfa dog\n\n   \r\na cat \xff\xfe sits\r\ncaf\xc3\xa9 table\nlast line")
    stats: dict = {}
    texts = read_text_file(path, stats=stats)
    assert texts == ["a dog", "a cat \ufffd\ufffd sits", "caf\u00e9 table", "last line"]
    assert stats == {"sentences_read": 4, "blank_lines": 2, "invalid_utf8_lines": 1}


# ----------------------------------------------------------------------------- build_corpus


def test_coco_corpus_with_templates(tmp_path, coco) -> None:
    cl, lab = coco
    path = write_coco_captions(tmp_path / "captions.json")
    corpus = build_corpus("coco_captions", path, cl, lab, progress=False)
    assert corpus.n_captions == 4 and corpus.n_templates == 89 * 80
    assert len(corpus) == 4 + 89 * 80
    assert corpus.texts[:4] == [
        "A dog sleeping on a couch.",
        "A brown dog lies on the sofa",
        "A man riding a motor bike.",
        "A hot dog on a plate",
    ]
    idx = cl.names.index
    assert corpus.labels[0].nonzero()[0].tolist() == sorted([idx("dog"), idx("couch")])
    assert corpus.labels[2].nonzero()[0].tolist() == sorted([idx("person"), idx("motor bike")])
    assert corpus.labels[3].nonzero()[0].tolist() == [idx("hot dog")]
    # Templates: one-hot, 89 per class, in class order.
    t = corpus.labels[4:]
    assert (t.sum(axis=1) == 1).all() and (t.sum(axis=0) == 89).all()
    assert corpus.texts[4] == "a photo of a person." and corpus.texts[-1] == "a tattoo of the toothbrush."
    assert corpus.classnames == cl.names and corpus.source == "coco_captions"
    assert corpus.lemmatizer == "lemminflect"
    s = corpus.stats
    assert (s["sentences_read"], s["dropped_empty"], s["labelled"], s["dropped_no_class"]) == (6, 1, 4, 1)
    assert s["captions"] == 4 and s["templates"] == 89 * 80 and s["total"] == len(corpus)
    assert s["caption_class_counts"][idx("dog")] == 2


def test_coco_corpus_exclude_test_images(tmp_path, coco) -> None:
    cl, lab = coco
    path = write_coco_captions(tmp_path / "captions.json")
    corpus = build_corpus(
        "coco_captions", path, cl, lab, exclude_image_ids={100, 400}, add_templates=False, progress=False
    )
    assert corpus.texts == ["A man riding a motor bike."]
    assert corpus.stats["excluded_test_image_captions"] == 3
    assert corpus.n_templates == 0 and corpus.labels.shape == (1, 80)


def test_assign_rarest_ties_by_class_index() -> None:
    labels = np.array(
        [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]], dtype=np.uint8
    )
    # counts: 3, 3, 2, 1 -> ranking 3, 2, 0, 1 (classes 0 and 1 tie: lower index first)
    assert assign_rarest(labels).tolist() == [0, 0, 2, 1, -1, 3]


def test_localized_narratives_rarest_assignment_and_cap(tmp_path, toy) -> None:
    cl, lab = toy
    path = write_ln(tmp_path / "ln.jsonl")
    corpus = build_corpus(
        "localized_narratives", path, cl, lab, per_class_cap=2, add_templates=False, progress=False
    )
    # person: 5 narratives, dog: 3, cat: 1 -> each narrative goes to its rarest class.
    # dog keeps "A dog and a man." and "Two dogs.", person keeps its first two, cat its one.
    assert corpus.texts == [
        "A dog and a man.",
        "A man sitting on a bench.",
        "A cat next to a dog and a woman.",
        "Two dogs.",
        "People in a park.",
    ]
    assert corpus.stats["assigned_per_class"] == [3, 2, 1]
    assert corpus.stats["dropped_by_cap"] == 1 and corpus.stats["dropped_no_class"] == 1
    # Labels stay multi-label.
    assert corpus.labels[2].tolist() == [1, 1, 1]
    assert corpus.stats["caption_class_counts"] == [4, 3, 1]

    # Without rarest assignment the cap counts each narrative against its first class.
    plain = build_corpus(
        "localized_narratives", path, cl, lab, per_class_cap=2, rarest_assignment=False,
        add_templates=False, progress=False,
    )
    assert plain.texts == ["A dog and a man.", "A man sitting on a bench.", "Two dogs."]
    # No cap keeps every labelled narrative.
    everything = build_corpus(
        "localized_narratives", path, cl, lab, per_class_cap=None, add_templates=False, progress=False
    )
    assert everything.n_captions == 6 and everything.stats["dropped_by_cap"] == 0


def test_localized_narratives_defaults_truncate_to_77_words(tmp_path, toy) -> None:
    cl, lab = toy
    long = "word " * 80 + "and a cat."
    path = write_ln(tmp_path / "ln.jsonl", [json.dumps({"caption": long}), json.dumps({"caption": "a dog"})])
    assert source_defaults("localized_narratives") == {"rarest_assignment": True, "per_class_cap": 1000, "max_words": 77}
    assert source_defaults("text") == {"rarest_assignment": False, "per_class_cap": None, "max_words": None}
    corpus = build_corpus("localized_narratives", path, cl, lab, add_templates=False, progress=False)
    assert corpus.texts == ["a dog"]
    whole = build_corpus("localized_narratives", path, cl, lab, max_words=None, add_templates=False, progress=False)
    assert whole.texts == [long.strip(), "a dog"]  # the stored text is never truncated


def test_text_corpus(tmp_path, toy) -> None:
    cl, lab = toy
    path = tmp_path / "s.txt"
    path.write_bytes(b"a dog\n\nno class here\nthe cats \xff and a woman\n")
    corpus = build_corpus("text", path, cl, lab, progress=False)
    assert corpus.texts[:2] == ["a dog", "the cats \ufffd and a woman"]
    assert corpus.labels[1].tolist() == [1, 0, 1]
    assert corpus.n_templates == 3 * 89 and corpus.stats["invalid_utf8_lines"] == 1
    assert corpus.stats["blank_lines"] == 1 and corpus.stats["dropped_no_class"] == 1


def test_empty_corpus_is_an_error(tmp_path, toy) -> None:
    cl, lab = toy
    path = tmp_path / "nothing.txt"
    path.write_text("a tree\na house\n")
    with pytest.raises(ValueError, match=r"nothing\.txt.*class list 'toy'"):
        build_corpus("text", path, cl, lab, add_templates=False, progress=False)
    # With templates the corpus is not empty.
    assert build_corpus("text", path, cl, lab, progress=False).n_captions == 0


def test_bad_arguments(tmp_path, toy, coco) -> None:
    cl, lab = toy
    path = tmp_path / "s.txt"
    path.write_text("a dog\n")
    with pytest.raises(ValueError, match="coco_captions, localized_narratives, text"):
        build_corpus("captions", path, cl, lab)
    with pytest.raises(ValueError, match="'coco_captions' source only"):
        build_corpus("text", path, cl, lab, exclude_image_ids={1})
    with pytest.raises(ValueError, match="per_class_cap must be a positive integer"):
        build_corpus("text", path, cl, lab, per_class_cap=0)
    with pytest.raises(ValueError, match="max_words must be a positive integer"):
        build_corpus("text", path, cl, lab, max_words=-3)
    with pytest.raises(ValueError, match="rarest_assignment must be"):
        build_corpus("text", path, cl, lab, rarest_assignment="yes")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        build_corpus("text", tmp_path / "missing.txt", cl, lab)
    with pytest.raises(ValueError, match="built for class list 'coco2014', not 'toy'"):
        build_corpus("text", path, cl, coco[1])


def test_corpus_validates_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[2, 3\]"):
        CaptionCorpus(["a", "b"], np.zeros((2, 2)), ("x", "y", "z"), "text", "lemminflect", 0, {})


# ----------------------------------------------------------------------------- cache


def test_cache_hit_reuses_files(tmp_path, coco) -> None:
    cl, lab = coco
    path = write_coco_captions(tmp_path / "captions.json")
    cache = tmp_path / "cache"
    first = build_corpus("coco_captions", path, cl, lab, cache_dir=cache, progress=False)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].startswith("corpus-") and files[0].endswith(".json")
    assert files[1] == files[0][:-5] + ".npz"
    key = files[0][len("corpus-") : -len(".json")]
    assert len(key) == 64 and int(key, 16) >= 0
    mtimes = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}

    second = build_corpus("coco_captions", path, cl, lab, cache_dir=cache, progress=False)
    assert second == first and second is not first
    assert second.labels.dtype == np.uint8
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == mtimes
    stored = json.loads((cache / files[0]).read_text())
    assert stored["settings"]["labeller"] == lab.settings()
    assert stored["settings"]["path"] == str(path.resolve())


def test_cache_invalidation(tmp_path, coco) -> None:
    cl, lab = coco
    path = write_coco_captions(tmp_path / "captions.json")
    cache = tmp_path / "cache"

    def n_entries() -> int:
        return len(list(cache.glob("corpus-*.json")))

    base = build_corpus("coco_captions", path, cl, lab, cache_dir=cache, progress=False)
    assert n_entries() == 1
    excl = build_corpus("coco_captions", path, cl, lab, cache_dir=cache, exclude_image_ids={100}, progress=False)
    assert n_entries() == 2 and excl.n_captions == 2
    build_corpus("coco_captions", path, cl, lab, cache_dir=cache, exclude_image_ids={100, 300}, progress=False)
    assert n_entries() == 3
    build_corpus("coco_captions", path, cl, lab, cache_dir=cache, add_templates=False, progress=False)
    assert n_entries() == 4
    build_corpus("coco_captions", path, cl, lab, cache_dir=cache, max_words=3, progress=False)
    assert n_entries() == 5
    voc = load_class_list("voc")
    build_corpus("coco_captions", path, voc, CaptionLabeller(voc, lab.lemmatizer), cache_dir=cache, progress=False)
    assert n_entries() == 6
    # progress is not a setting: no new entry.
    build_corpus("coco_captions", path, cl, lab, cache_dir=cache, progress=True)
    assert n_entries() == 6

    # A changed caption file is a new key, and its new content is read.
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 99, "image_id": 500, "caption": "a cat"})
    path.write_text(json.dumps(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    changed = build_corpus("coco_captions", path, cl, lab, cache_dir=cache, progress=False)
    assert n_entries() == 7
    assert changed.n_captions == base.n_captions + 1 and changed.texts[base.n_captions] == "a cat"


def test_cache_validates_stored_settings_and_survives_corruption(tmp_path, toy, caplog) -> None:
    cl, lab = toy
    path = write_ln(tmp_path / "ln.jsonl")
    cache = tmp_path / "cache"
    built = build_corpus("localized_narratives", path, cl, lab, cache_dir=cache, progress=False)
    entry = next(cache.glob("corpus-*.json"))

    # Stored settings that differ from the requested ones are not trusted.
    payload = json.loads(entry.read_text())
    payload["settings"]["options"]["per_class_cap"] = 5
    payload["texts"] = ["tampered"] * len(payload["texts"])
    entry.write_text(json.dumps(payload))
    with caplog.at_level("WARNING", logger="taidpt.captions.corpus"):
        again = build_corpus("localized_narratives", path, cl, lab, cache_dir=cache, progress=False)
    assert again == built
    assert any("other settings" in r.getMessage() for r in caplog.records)
    assert json.loads(entry.read_text())["texts"] == built.texts  # rewritten

    # A truncated labels file is rebuilt, not a crash.
    npz = entry.with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[:20])
    caplog.clear()
    with caplog.at_level("WARNING", logger="taidpt.captions.corpus"):
        assert build_corpus("localized_narratives", path, cl, lab, cache_dir=cache, progress=False) == built
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert not list(cache.glob("*.tmp"))


# ----------------------------------------------------------------------------- caption recipes

# (caption id, image id, caption): images 1..6 with five captions each, in a shuffled file order,
# plus image 7 whose only caption is blank.
MANY = [(1000 + 10 * im + k, im, f"a dog number {k} of image {im}") for im in range(1, 7) for k in range(5)]
MANY = [MANY[i] for i in np.random.default_rng(1).permutation(len(MANY))] + [(2000, 7, "  ")]


def write_many(path: Path, anns: list[tuple[int, int, str]] = MANY) -> Path:
    data = {"images": [{"id": im} for im in sorted({a[1] for a in anns})],
            "annotations": [{"id": a, "image_id": im, "caption": c} for a, im, c in anns]}
    path.write_text(json.dumps(data))
    return path


def write_ids(folder: Path, ids: list[int]) -> dict[str, Path]:
    """The same ids as a json list, one per line, and the reference's pickle (protocol 3, like its file)."""
    files = {"json": folder / "ids.json", "text": folder / "ids.txt", "pickle": folder / "ids.pkl"}
    files["json"].write_text(json.dumps(ids))
    files["text"].write_text("\n".join(map(str, ids)) + "\n\n")
    files["pickle"].write_bytes(pickle.dumps(ids, protocol=3))
    return files


def test_caption_ids_in_three_formats_give_exactly_those_captions(tmp_path, coco) -> None:
    cl, lab = coco
    path = write_coco_captions(tmp_path / "captions.json")
    for kind, ids_file in write_ids(tmp_path, [16, 11, 14]).items():
        ids = read_caption_ids(ids_file)
        assert ids == (16, 11, 14), kind
        selection = CaptionSelection(ids=ids, ids_file=str(ids_file))
        stats: dict = {}
        texts = read_coco_captions(path, selection=selection, stats=stats)
        assert texts == ["A hot dog on a plate", "A dog sleeping on a couch.", "A man riding a motor bike."], kind
        assert stats["selected_captions"] == 3 and stats["sentences_read"] == 6
        corpus = build_corpus("coco_captions", path, cl, lab, selection=selection, add_templates=False,
                              progress=False)
        assert corpus.texts == texts
        assert corpus.stats["caption_recipe"] == f"3 caption ids from {ids_file}"
        assert corpus.stats["selected_captions"] == 3
    everything = build_corpus("coco_captions", path, cl, lab, add_templates=False, progress=False)
    assert everything.n_captions == 4 and everything.stats["caption_recipe"] == "every caption"
    assert everything.stats["selected_captions"] == 6


def test_caption_id_files_are_checked_in_one_line(tmp_path) -> None:
    path = write_coco_captions(tmp_path / "captions.json")
    ids_file = tmp_path / "ids.pkl"
    ids_file.write_bytes(pickle.dumps(np.array([11, 14])))
    with pytest.raises(ValueError, match=r"ids\.pkl: refers to numpy\.\S+; only plain data") as exc:
        read_caption_ids(ids_file)
    assert "\n" not in str(exc.value)
    ids_file.write_bytes(pickle.dumps({11, 14}, protocol=3))  # a set is pickled through builtins.set
    with pytest.raises(ValueError, match=r"ids\.pkl: refers to builtins\.set"):
        read_caption_ids(ids_file)
    cases = {
        "a.json": ('[11, "14"]', r"a\.json: item 1: expected an integer caption id, got '14'"),
        "b.json": ('{"ids": [11]}', r"b\.json: expected a json list of integer caption ids, got dict"),
        "c.txt": ("11\nfourteen\n", r"c\.txt:2: expected one integer caption id per line, got 'fourteen'"),
        "d.txt": ("11\n14\n11\n", r"d\.txt: caption id 11 is listed more than once"),
        "e.txt": ("\n\n", r"e\.txt: lists no caption id"),
        "f.json": ("[11, 14", r"f\.json:1:\d+: invalid json"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match=message):
            read_caption_ids(tmp_path / name)
    (tmp_path / "g.txt").write_bytes(b"11\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"g\.txt: not UTF-8 text"):
        read_caption_ids(tmp_path / "g.txt")
    with pytest.raises(FileNotFoundError, match="caption id file not found: .*nope.txt"):
        read_caption_ids(tmp_path / "nope.txt")
    selection = CaptionSelection(ids=(11, 999, 14, 998), ids_file="ids.txt")
    with pytest.raises(ValueError, match=r"^ids\.txt: caption id 999 \(and 1 more of its 4 ids\) is not in .*captions\.json$"):
        read_coco_captions(path, selection=selection)


def test_per_image_sampler_is_seeded_and_takes_one_caption_per_image(tmp_path, toy) -> None:
    path = write_many(tmp_path / "captions.json")
    owner = {c: im for _, im, c in MANY}

    def pick(seed: int, per_image: int = 1, file: Path = path) -> list[str]:
        stats: dict = {}
        texts = read_coco_captions(file, selection=CaptionSelection(per_image=per_image, seed=seed), stats=stats)
        assert stats["selected_captions"] == len(texts)
        return texts

    first = pick(0)
    assert first == pick(0)  # deterministic per seed
    assert sorted(owner[c] for c in first) == [1, 2, 3, 4, 5, 6]  # one per image; the blank-only image has none
    order = [c for _, _, c in MANY]
    assert first == sorted(first, key=order.index)  # kept in file order
    assert len({tuple(pick(seed)) for seed in range(6)}) > 1  # the seed matters
    # the draw does not depend on the order of the annotations in the file
    reordered = write_many(tmp_path / "reordered.json", sorted(MANY))
    assert sorted(pick(3, file=reordered)) == sorted(pick(3))
    two = pick(0, per_image=2)
    assert len(two) == 12 and all(sum(owner[c] == im for c in two) == 2 for im in range(1, 7))
    assert len(pick(0, per_image=9)) == 30  # every caption of an image that has fewer
    # exclusion after the draw: the other images keep their captions
    kept = read_coco_captions(path, exclude_image_ids={2}, selection=CaptionSelection(per_image=1))
    assert kept == [c for c in first if owner[c] != 2]
    cl, lab = toy
    corpus = build_corpus("coco_captions", path, cl, lab, selection=CaptionSelection(per_image=1, seed=0),
                          add_templates=False, progress=False)
    assert corpus.texts == first
    assert corpus.stats["caption_recipe"] == "1 caption per image (seed 0)"
    assert corpus.stats["selected_captions"] == 6 and corpus.stats["sentences_read"] == 31
    with pytest.raises(ValueError, match="captions per image must be 0"):
        CaptionSelection(per_image=-1)
    with pytest.raises(ValueError, match="not both"):
        CaptionSelection(ids=(1,), per_image=1)
    with pytest.raises(ValueError, match="'coco_captions' source only"):
        build_corpus("text", write_ln(tmp_path / "x.txt", ["a dog"]), cl, lab, selection=CaptionSelection(per_image=1))


def test_corpus_cache_is_keyed_by_the_caption_recipe(tmp_path, toy) -> None:
    cl, lab = toy
    path = write_many(tmp_path / "captions.json")
    ids_file = write_ids(tmp_path, [1011, 1020, 1064])["json"]
    cache = tmp_path / "cache"
    recipes = [None, CaptionSelection(per_image=1, seed=0), CaptionSelection(per_image=1, seed=1),
               CaptionSelection(per_image=2, seed=0), CaptionSelection(ids=read_caption_ids(ids_file))]
    built = [build_corpus("coco_captions", path, cl, lab, selection=r, cache_dir=cache, add_templates=False,
                          progress=False) for r in recipes]
    assert len(list(cache.glob("corpus-*.json"))) == len(recipes)
    assert [c.n_captions for c in built] == [30, 6, 6, 12, 3]
    again = [build_corpus("coco_captions", path, cl, lab, selection=r, cache_dir=cache, add_templates=False,
                          progress=False) for r in recipes]
    assert again == built and len(list(cache.glob("corpus-*.json"))) == len(recipes)


def _dataset_cfg(root: Path, *files: str, opts: tuple[str, ...] | list[str] = ()):
    cfg = merge_files_and_opts(get_cfg_default(), files, list(opts))
    cfg.merge_from_list(["DATASET.NAME", "COCO2014", "DATASET.ROOT", str(root), "DATASET.LEMMATIZER", "lemminflect",
                         "DATASET.CACHE_DIR", str(root / "cache")])
    return cfg


def test_config_recipes_generic_default_reference_configs_and_ids_file(tmp_path, caplog) -> None:
    (tmp_path / "COCO" / "annotations").mkdir(parents=True)
    write_many(tmp_path / "COCO" / "annotations" / "captions_train2017.json")
    classes = load_class_list("coco2014")
    generic = load_caption_corpus(_dataset_cfg(tmp_path), classes, progress=False)
    assert generic.n_captions == 30 and generic.stats["caption_recipe"] == "every caption"
    for name in ("rn50_coco2014", "rn50_voc2007"):
        reference_cfg = _dataset_cfg(tmp_path, str(ROOT / "configs" / "trainers" / "TaIDPT" / f"{name}.yaml"))
        assert reference_cfg.DATASET.CAPTIONS_PER_IMAGE == 1
        corpus = load_caption_corpus(reference_cfg, classes, progress=False)
        assert corpus.n_captions == 6 and corpus.stats["caption_recipe"] == "1 caption per image (seed 0)"
    write_ids(tmp_path, [1011, 1020, 1064])
    with_ids = _dataset_cfg(tmp_path, str(ROOT / "configs" / "trainers" / "TaIDPT" / "rn50_coco2014.yaml"),
                            opts=["DATASET.CAPTION_IDS", "ids.pkl"])  # relative to DATASET.ROOT; wins over the sampler
    corpus = load_caption_corpus(with_ids, classes, progress=False)
    assert corpus.texts[:3] == ["a dog number 1 of image 1", "a dog number 0 of image 2", "a dog number 4 of image 6"]
    assert corpus.stats["caption_recipe"] == f"3 caption ids from {tmp_path / 'ids.pkl'}"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(collections.OrderedDict(a=1)))
    with pytest.raises(ValueError, match=r"evil\.pkl: refers to collections\.OrderedDict") as exc:
        load_caption_corpus(_dataset_cfg(tmp_path, opts=["DATASET.CAPTION_IDS", "evil.pkl"]), classes, progress=False)
    assert "\n" not in str(exc.value)
    with pytest.raises(FileNotFoundError, match="caption id file not found: .*missing.txt"):
        load_caption_corpus(_dataset_cfg(tmp_path, opts=["DATASET.CAPTION_IDS", "missing.txt"]), classes)
    with pytest.raises(ValueError, match="CAPTIONS_PER_IMAGE must be 0"):
        load_caption_corpus(_dataset_cfg(tmp_path, opts=["DATASET.CAPTIONS_PER_IMAGE", "-1"]), classes)
    (tmp_path / "captions.txt").write_text("a dog\na cat\n")
    text_opts = ["DATASET.CAPTION_FILE", "captions.txt"]
    with caplog.at_level("WARNING", logger="taidpt.images.registry"):
        text = load_caption_corpus(_dataset_cfg(tmp_path, opts=[*text_opts, "DATASET.CAPTIONS_PER_IMAGE", "1"]),
                                   classes, progress=False)
    assert text.n_captions == 2 and "CAPTIONS_PER_IMAGE 1 is ignored" in caplog.text
    with pytest.raises(ValueError, match="DATASET.CAPTION_IDS applies to COCO captions only"):
        load_caption_corpus(_dataset_cfg(tmp_path, opts=[*text_opts, "DATASET.CAPTION_IDS", "ids.txt"]), classes)


def test_undecodable_lines_are_a_log_warning_built_or_cached(tmp_path, toy, caplog) -> None:
    cl, lab = toy
    path = tmp_path / "random.txt"
    path.write_bytes(b"a dog on the grass\n\x93\xfa\x07 a cat \xc3\n\xff\xfe\xfd\xb0 person \x80\nthe cat\n")
    for _ in ("built", "cached"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="taidpt.captions.builder"):
            corpus = build_corpus("text", path, cl, lab, cache_dir=tmp_path / "cache", progress=False)
        assert corpus.n_captions == 4 and corpus.stats["invalid_utf8_lines"] == 2
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "random.txt: 2 lines are not valid UTF-8" in warnings[0]


def test_a_corpus_recipe_is_one_object_resolved_per_source():
    from taidpt.captions.builder import CorpusRecipe

    narratives = CorpusRecipe().resolve("localized_narratives")
    assert (narratives.rarest_assignment, narratives.per_class_cap, narratives.max_words) == (True, 1000, 77)
    coco = CorpusRecipe(per_class_cap=5, exclude_image_ids=[3, 1]).resolve("coco_captions")
    assert coco.per_class_cap == 5 and coco.exclude_image_ids == {1, 3} and coco.rarest_assignment is False
    with pytest.raises(ValueError, match="coco_captions"):
        CorpusRecipe(exclude_image_ids=[1]).resolve("text")
