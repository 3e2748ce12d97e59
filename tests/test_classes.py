"""Class lists (built-in reference lists and user files) and the template sentences."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from taidpt.captions.classes import ClassList, available_class_lists, load_class_list
from taidpt.captions.templates import DEFAULT_TEMPLATE, IMAGENET_TEMPLATES, template_sentences


@pytest.mark.parametrize(
    "name, n, first, last",
    [
        ("voc2007", 20, "aeroplane", "tvmonitor"),
        ("coco2014", 80, "person", "toothbrush"),
        ("nuswide", 81, "airport", "zebra"),
    ],
)
def test_builtin_counts_and_ends(name: str, n: int, first: str, last: str) -> None:
    cl = load_class_list(name)
    assert cl.dataset == name
    assert len(cl) == n == len(cl.names) == len(cl.synonyms)
    assert cl.names[0] == first and cl.names[-1] == last


@pytest.mark.parametrize("name", ["voc2007", "coco2014", "nuswide"])
def test_name_is_first_synonym_and_no_duplicates(name: str) -> None:
    cl = load_class_list(name)
    assert len(set(cl.names)) == len(cl)
    owner: dict[str, int] = {}
    for idx, (cname, syns) in enumerate(zip(cl.names, cl.synonyms)):
        assert syns[0] == cname
        assert len(set(syns)) == len(syns), f"{cname}: repeated synonym"
        # The matcher also uses each phrase's space-free form ("motor bike" -> "motorbike").
        forms = set(syns) | {s.replace(" ", "") for s in syns}
        for form in forms:
            assert owner.setdefault(form, idx) == idx, f"{form!r} marks two classes"


def test_voc_and_nuswide_orders_are_the_dataset_orders() -> None:
    # VOC's 20 categories and NUS-WIDE's Concepts81.txt are both in alphabetical order.
    voc = load_class_list("voc")
    nus = load_class_list("nus-wide")
    assert list(voc.names) == sorted(voc.names)
    assert list(nus.names) == sorted(nus.names)
    assert {"diningtable", "motorbike", "pottedplant", "tvmonitor"} <= set(voc.names)
    # The VOC name comes first, then the reference synonyms ("table", "dining table", ...).
    assert voc.synonyms[voc.names.index("diningtable")][:3] == ("diningtable", "table", "dining table")
    assert {"birds", "swimmers", "whales", "nighttime"} <= set(nus.names)


def test_coco_names_follow_category_id_order_with_reference_spellings() -> None:
    coco = load_class_list("coco")
    # Reference spellings, at the index of the COCO category they stand for.
    assert coco.names[3] == "motor bike"  # motorcycle
    assert coco.names[4] == "aeroplane"  # airplane
    assert coco.names[57] == "couch"
    assert coco.names[62] == "tv"
    assert coco.names[78] == "hair drier"
    assert coco.names[52] == "hot dog"
    assert coco.names[67] == "cell phone"


def test_aliases_and_available() -> None:
    avail = available_class_lists()
    assert {"coco2014", "nuswide", "voc2007"} <= set(avail) and avail == sorted(avail)
    for name in avail:
        assert load_class_list(name).dataset == name
    assert load_class_list("COCO") == load_class_list("coco2014")
    assert load_class_list("nus-wide") == load_class_list("nuswide")
    assert load_class_list("voc") == load_class_list("voc2007")


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="voc2007") as info:
        load_class_list("imagenet")
    assert "coco2014" in str(info.value) and "nuswide" in str(info.value)


def test_json_file_roundtrip(tmp_path) -> None:
    path = tmp_path / "shapes.json"
    path.write_text(
        json.dumps(
            {
                "dataset": "shapes",
                "classes": [
                    {"name": "square", "synonyms": ["square", "hollow square"]},
                    {"name": "circle", "synonyms": ["ring shape"]},  # name gets put first
                ],
            }
        )
    )
    cl = load_class_list(str(path))
    assert cl.dataset == "shapes"
    assert cl.names == ("square", "circle")
    assert cl.synonyms == (("square", "hollow square"), ("circle", "ring shape"))


def test_text_file(tmp_path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("# my classes\ntraffic_light, stop light\n\ndog , puppy,doggy\ncat\n")
    cl = load_class_list(path)
    assert cl.dataset == "mine"
    assert cl.names == ("traffic_light", "dog", "cat")
    assert cl.synonyms[1] == ("dog", "puppy", "doggy")
    assert cl.synonyms[2] == ("cat",)


def test_text_file_errors_name_the_line(tmp_path) -> None:
    path = tmp_path / "dup.txt"
    path.write_text("dog\ncat\ndog, puppy\n")
    with pytest.raises(ValueError, match=r"dup\.txt:3: class 'dog' already defined on line 1"):
        load_class_list(path)
    path.write_text("dog,, puppy\n")
    with pytest.raises(ValueError, match=r"dup\.txt:1: empty entry"):
        load_class_list(path)
    path.write_text("\n# nothing\n")
    with pytest.raises(ValueError, match="no classes found"):
        load_class_list(path)


def test_json_file_errors(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"dataset": "x",\n "classes": [\n')
    with pytest.raises(ValueError, match=r"bad\.json:\d+: invalid json"):
        load_class_list(path)
    path.write_text(json.dumps({"classes": [{"name": "a"}, {"synonyms": ["b"]}]}))
    with pytest.raises(ValueError, match=r"classes\[1\] must be an object with a string \"name\""):
        load_class_list(path)
    path.write_text(json.dumps({"classes": [{"name": "a"}, {"name": "a"}]}))
    with pytest.raises(ValueError, match="duplicate class name 'a'"):
        load_class_list(path)


def test_classlist_validates_first_synonym() -> None:
    with pytest.raises(ValueError, match="must start with the class name"):
        ClassList(dataset="x", names=("dog",), synonyms=(("puppy", "dog"),))
    with pytest.raises(ValueError, match="2 names but 1 synonym lists"):
        ClassList(dataset="x", names=("dog", "cat"), synonyms=(("dog",),))
    assert ClassList.from_names("x", ["dog", "cat"]).synonyms == (("dog",), ("cat",))


def test_imagenet_templates() -> None:
    assert len(IMAGENET_TEMPLATES) == 80
    assert len(set(IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert DEFAULT_TEMPLATE == "a photo of a {}."
    assert DEFAULT_TEMPLATE in IMAGENET_TEMPLATES


def test_template_sentences_89_per_class() -> None:
    cl = load_class_list("voc2007")
    sents = template_sentences(cl)
    assert len(sents) == 89 * 20
    per_class = Counter(c for _, c in sents)
    assert set(per_class.values()) == {89}
    dog = cl.names.index("dog")
    dog_sents = [s for s, c in sents if c == dog]
    assert Counter(dog_sents)["a photo of a dog."] == 10
    assert dog_sents[:9] == ["a photo of a dog."] * 9
    assert dog_sents[9:] == [t.format("dog") for t in IMAGENET_TEMPLATES]
    # Class blocks follow class-list order.
    assert [c for _, c in sents] == [i for i in range(20) for _ in range(89)]


def test_template_sentences_replace_underscores() -> None:
    sents = template_sentences(ClassList.from_names("x", ["traffic_light"]))
    assert sents[0] == ("a photo of a traffic light.", 0)


def test_one_answer_to_which_classes_a_config_means(tmp_path, voc_root):
    """``class_list_of``: DATASET.CLASS_LIST first, then the dataset's built-in list, then its test set's."""
    from taidpt.engine.config import get_cfg_default
    from taidpt.engine.run import class_names_of
    from taidpt.images.registry import class_list_of, load_test_set

    cfg = get_cfg_default()
    with pytest.raises(ValueError, match="no DATASET.CLASS_LIST or DATASET.NAME"):
        class_list_of(cfg)
    cfg.DATASET.NAME = "COCO2014"
    assert class_list_of(cfg).names == load_class_list("coco2014").names  # built-in, nothing read from disk
    custom = tmp_path / "mine.txt"
    custom.write_text("forklift\npallet\n", encoding="utf-8")
    cfg.DATASET.CLASS_LIST = str(custom)
    assert list(class_list_of(cfg).names) == ["forklift", "pallet"] == class_names_of(cfg)
    cfg.DATASET.NAME, cfg.DATASET.ROOT = "VOC2007", str(voc_root)
    cfg.DATASET.CLASS_LIST = str(voc_root / "classes.txt")
    assert class_list_of(cfg) == load_test_set(cfg)[1]  # what the test set is read with, synonyms included
