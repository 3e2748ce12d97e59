"""Tokenizing, lemmatizer backends and caption labelling."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from taidpt.captions.classes import ClassList, load_class_list
from taidpt.captions.labelling import CaptionLabeller
from taidpt.captions.lemmatize import (
    NLTK_DOWNLOAD_COMMAND,
    LemmatizerUnavailable,
    get_lemmatizer,
    missing_nltk_data,
    nltk_data_available,
    tokenize,
)

_NLTK_SKIP = pytest.mark.skipif(
    not nltk_data_available(),
    reason=f"NLTK tagger/WordNet data not installed (missing: {', '.join(missing_nltk_data())}); "
    f"`{NLTK_DOWNLOAD_COMMAND}` enables these tests",
)
BACKENDS = ["lemminflect", pytest.param("nltk", marks=_NLTK_SKIP)]


@pytest.fixture(scope="module", params=BACKENDS)
def lemmatizer(request):
    return get_lemmatizer(request.param)


@pytest.fixture(scope="module")
def coco(lemmatizer):
    cl = load_class_list("coco2014")
    return cl, CaptionLabeller(cl, lemmatizer)


def names(cl: ClassList, idx: list[int]) -> set[str]:
    return {cl.names[i] for i in idx}


# ----------------------------------------------------------------------------- tokenizer


def test_tokenize_lowercases_and_splits_punctuation() -> None:
    assert tokenize("A Man's DOG, sitting!") == ["a", "man", "'s", "dog", ",", "sitting", "!"]
    assert tokenize("It isn't (really) a cat?") == ["it", "is", "n't", "(", "really", ")", "a", "cat", "?"]


def test_tokenize_splits_inner_sentence_periods() -> None:
    assert tokenize("A dog. A cat.") == ["a", "dog", ".", "a", "cat", "."]
    assert tokenize("we see a dog.in the back") == ["we", "see", "a", "dog", ".", "in", "the", "back"]
    # Abbreviations and numbers stay whole.
    assert tokenize("the u.s. flag, 3.5 m") == ["the", "u.s.", "flag", ",", "3.5", "m"]


# ----------------------------------------------------------------------------- backends


def test_lemminflect_backend_lemmas() -> None:
    lem = get_lemmatizer("lemminflect")
    assert lem.name == "lemminflect" and lem.version
    got = lem.lemmatize_tokens(["dogs", "men", "glasses", "leaves", "frisbees", "was", "'s", "is", ".", "3", "scissors"])
    assert got == ["dog", "man", "glass", "leaf", "frisbee", "was", "'s", "is", ".", "3", "scissors"]
    assert lem.lemmatize_tokens([]) == []


@_NLTK_SKIP
def test_nltk_backend_lemmas() -> None:
    lem = get_lemmatizer("nltk")
    assert lem.name == "nltk"
    assert lem.lemmatize_tokens(tokenize("two dogs are sitting on the benches")) == [
        "two", "dog", "be", "sit", "on", "the", "bench"
    ]


def test_nltk_backend_without_data_names_the_download(monkeypatch, tmp_path) -> None:
    import nltk.data

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    assert set(missing_nltk_data()) == {"averaged_perceptron_tagger_eng", "wordnet"}
    with pytest.raises(LemmatizerUnavailable) as info:
        get_lemmatizer("nltk")
    assert NLTK_DOWNLOAD_COMMAND in str(info.value)
    assert NLTK_DOWNLOAD_COMMAND == "python -m nltk.downloader averaged_perceptron_tagger_eng wordnet"


def test_auto_falls_back_to_lemminflect_and_logs_once(monkeypatch, tmp_path, caplog) -> None:
    import nltk.data

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with caplog.at_level(logging.INFO, logger="taidpt.captions.lemmatize"):
        lem = get_lemmatizer("auto")
    assert lem.name == "lemminflect"
    lines = [r for r in caplog.records if r.name == "taidpt.captions.lemmatize"]
    assert len(lines) == 1 and "lemminflect" in lines[0].getMessage()


def test_auto_matches_installed_data() -> None:
    assert get_lemmatizer().name == ("nltk" if nltk_data_available() else "lemminflect")


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="auto, nltk, lemminflect"):
        get_lemmatizer("spacy")


# ----------------------------------------------------------------------------- labelling


def test_compound_removed_before_single_words(coco) -> None:
    cl, lab = coco
    assert names(cl, lab.label("A hot dog on a plate.")) == {"hot dog"}
    assert names(cl, lab.label("a dog eating a hot dog")) == {"hot dog", "dog"}
    assert names(cl, lab.label("a teddy bear and a bear")) == {"teddy bear", "bear"}
    assert names(cl, lab.label("a teddy bear on a bed")) == {"teddy bear", "bed"}
    assert names(cl, lab.label("a tennis racket")) == {"tennis racket"}


def test_motor_bike_spellings(coco) -> None:
    cl, lab = coco
    moto = cl.names.index("motor bike")
    assert lab.label("a man on a motor bike") == sorted([moto, cl.names.index("person")])
    assert lab.label("A MOTORBIKE parked outside") == [moto]
    assert lab.label("two motor bikes") == [moto]
    # "bike" alone is a bicycle; inside "motor bike" it must not fire.
    assert names(cl, lab.label("a bike and a motor bike")) == {"bicycle", "motor bike"}


def test_plurals_and_punctuation(coco) -> None:
    cl, lab = coco
    assert names(cl, lab.label("Two dogs")) == {"dog"}
    assert names(cl, lab.label("Look at the dog.")) == {"dog"}
    assert names(cl, lab.label("A dog. Then cats, sheep; and knives!")) == {"dog", "cat", "sheep", "knife"}
    assert names(cl, lab.label("several giraffes and zebras")) == {"giraffe", "zebra"}
    assert names(cl, lab.label('a "laptop" (open)')) == {"laptop"}


def test_whole_tokens_only(coco) -> None:
    cl, lab = coco
    # "cat" inside "category" / "dog" inside "dogma" are not matches.
    assert lab.label("a category of dogma") == []
    assert lab.label("a landscape with mountains") == []


def test_label_many_and_dropped(coco) -> None:
    cl, lab = coco
    y = lab.label_many(["a cat on a couch", "an empty room", "a person"])
    assert y.dtype == np.uint8 and y.shape == (3, 80)
    assert y[0].nonzero()[0].tolist() == sorted([cl.names.index("cat"), cl.names.index("couch")])
    assert y[1].sum() == 0
    assert y[2].nonzero()[0].tolist() == [0]


def test_max_words(coco) -> None:
    cl, lab = coco
    assert lab.label("a quiet street with a dog", max_words=3) == []
    assert names(cl, lab.label("a quiet street with a dog", max_words=6)) == {"dog"}


def test_progress_bar_for_large_inputs(coco, capsys) -> None:
    _, lab = coco
    y = lab.label_many(["a dog"] * 2001, progress=True)
    assert y[:, 16].all()
    assert "labelling" in capsys.readouterr().err
    lab.label_many(["a dog"] * 10, progress=True)
    assert capsys.readouterr().err == ""


def test_phrase_matching_order_is_deterministic(lemmatizer) -> None:
    # Overlapping phrases: the longer one wins ("big red ball" before "red ball").
    cl = ClassList(
        dataset="toy",
        names=("red ball", "big red ball", "ball"),
        synonyms=(("red ball",), ("big red ball",), ("ball",)),
    )
    lab = CaptionLabeller(cl, lemmatizer)
    assert lab.label("a big red ball") == [1]
    assert lab.label("a red ball and a ball") == [0, 2]
    assert lab.label("big red ball ball") == [1, 2]


def test_removed_phrase_leaves_a_gap(lemmatizer) -> None:
    # "hot dog" (same length as "red dog", earlier alphabetically) is removed first;
    # its neighbours "red" and "dog" must not then join into "red dog".
    cl = ClassList(dataset="toy", names=("hot dog", "red dog"), synonyms=(("hot dog",), ("red dog",)))
    lab = CaptionLabeller(cl, lemmatizer)
    assert lab.label("a red hot dog dog") == [0]
    assert lab.label("a red dog and a hot dog") == [0, 1]


def test_shared_synonym_labels_every_class_listing_it(lemmatizer) -> None:
    cl = ClassList(dataset="toy", names=("chair", "bench"), synonyms=(("chair", "bench"), ("bench",)))
    assert CaptionLabeller(cl, lemmatizer).label("a wooden bench") == [0, 1]


def test_underscore_names_match_as_phrases(lemmatizer) -> None:
    cl = ClassList.from_names("toy", ["traffic_light"])
    lab = CaptionLabeller(cl, lemmatizer)
    assert lab.label("a traffic light at night") == [0]
    assert lab.label("a trafficlight") == [0]


def test_unmatchable_class_warns(lemmatizer, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="taidpt.captions.labelling"):
        CaptionLabeller(ClassList.from_names("toy", ["glasses", "dog"]), lemmatizer)
    msgs = [r.getMessage() for r in caplog.records if r.name == "taidpt.captions.labelling"]
    assert len(msgs) == 1 and "'glasses'" in msgs[0]


def test_settings_identify_labeller(lemmatizer) -> None:
    voc, coco = load_class_list("voc"), load_class_list("coco")
    s1 = CaptionLabeller(voc, lemmatizer).settings()
    s2 = CaptionLabeller(voc, lemmatizer).settings()
    s3 = CaptionLabeller(coco, lemmatizer).settings()
    renamed = ClassList("voc2007", voc.names, voc.synonyms[:-1] + (("tvmonitor", "monitor"),))
    s4 = CaptionLabeller(renamed, lemmatizer).settings()
    assert s1 == s2
    assert s1["lemmatizer"] == lemmatizer.name
    assert s1["class_list"]["dataset"] == "voc2007" and s1["class_list"]["n_classes"] == 20
    assert s1["class_list"]["sha256"] != s3["class_list"]["sha256"]
    assert s1["class_list"]["sha256"] != s4["class_list"]["sha256"]
    import json

    assert json.loads(json.dumps(s1)) == s1


def test_labeller_rejects_wrong_types() -> None:
    with pytest.raises(TypeError, match="ClassList"):
        CaptionLabeller(["dog"], get_lemmatizer("lemminflect"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Lemmatizer"):
        CaptionLabeller(load_class_list("voc"), object())  # type: ignore[arg-type]
