"""The built-in corpus generator: sentences labelled exactly as written, determinism, the recipe's
inputs (mix, frequencies, pairs) and the ``taidpt.captions.generate`` command."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from taidpt.captions.check import main as check_main
from taidpt.captions.classes import ClassList, load_class_list
from taidpt.captions.generate import main as generate_main
from taidpt.captions.generator import GeneratorRecipe, generate_sentences, parse_mix, recipe_from_files
from taidpt.captions.labelling import CaptionLabeller
from taidpt.captions.lemmatize import get_lemmatizer, nltk_data_available
from taidpt.captions.sources import read_text_file

BACKENDS = ["lemminflect", pytest.param("nltk", marks=pytest.mark.skipif(not nltk_data_available(),
                                                                          reason="NLTK data not installed"))]

SITE = ClassList("site", ["car", "car seat", "hard hat", "hat", "forklift", "pallet", "bus", "sheep", "knife"],
                 [("car",), ("car seat", "child seat"), ("hard hat", "helmet"), ("hat",), ("forklift", "fork lift"),
                  ("pallet",), ("bus",), ("sheep",), ("knife",)])
# Names that the grammar's own words would name, or that an adjective turns into another class.
CLASHING = ClassList.from_names("clash", ["red car", "car", "kitchen", "photo", "background", "dog", "hot dog",
                                          "someone"])
CLASS_LISTS = {"site": SITE, "clash": CLASHING, "shapes14": load_class_list("shapes14"),
               "voc2007": load_class_list("voc2007")}


@pytest.fixture(scope="module", params=BACKENDS)
def lemmatizer(request):
    return get_lemmatizer(request.param)


@pytest.mark.parametrize("name", sorted(CLASS_LISTS))
def test_every_sentence_is_labelled_as_written_over_seeds(name, lemmatizer):
    classes = CLASS_LISTS[name]
    fresh = CaptionLabeller(classes, lemmatizer)  # not the generator's instance
    for seed in range(4):
        out = generate_sentences(classes, CaptionLabeller(classes, lemmatizer), GeneratorRecipe(n=250, seed=seed))
        assert len(out.sentences) == 250
        assert [tuple(fresh.label(s)) for s in out.sentences] == out.classes
        assert {len(c) for c in out.classes} == {1, 2, 3}
        assert out.stats["naming_1_2_3"] == [sum(len(c) == k for c in out.classes) for k in (1, 2, 3)]
        assert all(s[0].isupper() and s.endswith(".") for s in out.sentences)
        assert out.stats["repeated_sentences"] < 5
        if name != "clash":  # the grammar writes what it intends: the labeller's check rejects nothing
            assert out.stats["redrawn_mislabelled"] == 0


def test_nested_names_plurals_and_clashes(lemmatizer):
    out = generate_sentences(SITE, CaptionLabeller(SITE, lemmatizer), GeneratorRecipe(n=1500, seed=3))
    text = "\n".join(out.sentences).lower()
    for plural in ("car seats", "hard hats", "buses", "knives", "pallets"):
        assert re.search(rf"\b{plural}\b", text), plural
    assert not re.search(r"\b(sheeps|knifes|busses)\b", text)
    names = SITE.names
    both = [s for s, c in zip(out.sentences, out.classes) if {names.index("car"), names.index("car seat")} <= set(c)]
    assert both  # "car" and "car seat" named in one sentence, each labelled
    car_often = tuple(20.0 if n == "car" else 1.0 for n in CLASHING.names)
    clash = generate_sentences(CLASHING, CaptionLabeller(CLASHING, lemmatizer),
                               GeneratorRecipe(n=1000, seed=1, frequencies=car_often))
    words = "\n".join(clash.sentences).lower()
    assert "in a kitchen" not in words and "a photo of" not in words and "someone holding" not in words
    assert clash.stats["redrawn_mislabelled"] > 0  # "a red car" for "car" is drawn, read as "red car" and redrawn


def test_same_seed_same_sentences_other_seed_others(lemmatizer):
    classes = CLASS_LISTS["voc2007"]
    lab = CaptionLabeller(classes, lemmatizer)
    a = generate_sentences(classes, lab, GeneratorRecipe(n=200, seed=7))
    b = generate_sentences(classes, CaptionLabeller(classes, lemmatizer), GeneratorRecipe(n=200, seed=7))
    c = generate_sentences(classes, lab, GeneratorRecipe(n=200, seed=8))
    assert a.sentences == b.sentences and a.classes == b.classes
    assert len(set(a.sentences) & set(c.sentences)) < 10


def test_mix_frequencies_and_pairs_shape_the_corpus(tmp_path, lemmatizer):
    lab = CaptionLabeller(SITE, lemmatizer)
    only_two = generate_sentences(SITE, lab, GeneratorRecipe(n=200, seed=0, mix=(0, 1)))
    assert {len(c) for c in only_two.classes} == {2}
    default = generate_sentences(SITE, lab, GeneratorRecipe(n=2000, seed=0)).stats["naming_1_2_3"]
    assert default == pytest.approx([1000, 700, 300], abs=60)  # repeats are redrawn with the same classes
    (tmp_path / "freq.txt").write_text("# weights\ncar, 10\ncar seat, 1\nhard hat,1\nhat, 0\nforklift, 1\n"
                                       "pallet, 1\nbus, 1\nsheep, 1\nknife, 1\n")
    (tmp_path / "pairs.txt").write_text("forklift, pallet, 3\nbus, sheep\n")
    recipe = recipe_from_files(SITE, n=2000, seed=0, mix="0.2,0.8", frequencies=str(tmp_path / "freq.txt"),
                               pairs=str(tmp_path / "pairs.txt"))
    out = generate_sentences(SITE, lab, recipe)
    mentions = Counter(i for c in out.classes for i in c)
    idx = SITE.names.index
    assert mentions[idx("hat")] == 0
    assert mentions[idx("car")] > 3 * mentions[idx("knife")]
    pairs = Counter(c for c in out.classes if len(c) == 2)
    fork_pallet = (idx("forklift"), idx("pallet"))
    assert pairs[fork_pallet] > 0.4 * sum(pairs.values())  # 3/4 of the 75% drawn from the prior
    assert pairs[(idx("bus"), idx("sheep"))] > 0.1 * sum(pairs.values())


@pytest.mark.parametrize("text", ["", "1,x", "-1,2", "0,0", "1,1,1,1"])
def test_bad_mix_is_refused(text):
    with pytest.raises(ValueError, match="one to three shares"):
        parse_mix(text)


def test_command_writes_the_corpus_the_labeller_reads(tmp_path, capsys):
    (tmp_path / "classes.txt").write_text("forklift, fork lift\npallet\nhard hat, helmet\ncar\ncar seat\n")
    out = tmp_path / "sub" / "corpus.txt"
    args = ["--class-list", str(tmp_path / "classes.txt"), "--n", "300", "--seed", "5", "--out", str(out),
            "--lemmatizer", "lemminflect"]
    assert generate_main(args) == 0
    assert "wrote 300 sentences" in capsys.readouterr().out
    sentences = read_text_file(out)
    classes = load_class_list(tmp_path / "classes.txt")
    expected = generate_sentences(classes, CaptionLabeller(classes, get_lemmatizer("lemminflect")),
                                  GeneratorRecipe(n=300, seed=5))
    assert sentences == expected.sentences
    labels = CaptionLabeller(classes, get_lemmatizer("lemminflect")).label_many(sentences)
    assert labels.any(axis=1).all() and list(map(tuple, (r.nonzero()[0] for r in labels))) == expected.classes
    assert not list(out.parent.glob(".*tmp*"))  # the atomic write left no temporary file


@pytest.mark.parametrize("case, message", [
    ("missing", r"missing\.txt"),
    ("empty", r"empty\.txt: no classes found"),
    ("bad_frequency", r"freq\.txt:3: expected a frequency >= 0, got 'often'"),
    ("unknown_class", r"freq\.txt:1: unknown class 'truck'"),
    ("bad_pair", r"pairs\.txt:1: expected 'class name, class name\[, weight > 0\]'"),
    ("bad_n", r"--n: expected a positive whole number"),
])
def test_bad_input_is_one_line_and_exit_code_2(case, message, tmp_path, capsys):
    (tmp_path / "classes.txt").write_text("car\nbus\n")
    (tmp_path / "empty.txt").write_text("# no class yet\n\n")
    files = {"freq.txt": "truck, 1\n" if case == "unknown_class" else "car, 1\n# comment\nbus, often\n",
             "pairs.txt": "car\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    class_list = {"missing": "missing.txt", "empty": "empty.txt"}.get(case, "classes.txt")
    args = ["--class-list", str(tmp_path / class_list), "--out", str(tmp_path / "c.txt"),
            "--n", "0" if case == "bad_n" else "10"]
    if case in ("bad_frequency", "unknown_class"):
        args += ["--frequencies", str(tmp_path / "freq.txt")]
    if case == "bad_pair":
        args += ["--pairs", str(tmp_path / "pairs.txt")]
    code = run_command(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and re.search(message, err[-1]), err
    assert "Traceback" not in "\n".join(err) and (case == "bad_n" or len(err) == 1)
    assert not (tmp_path / "c.txt").exists()


def run_command(args: list[str]) -> int:
    """The command's exit code, whether ``main`` returns it or argparse exits with it."""
    try:
        return generate_main(args)
    except SystemExit as exc:
        return int(exc.code)


def test_check_reports_the_sentences_that_name_no_class(tmp_path, capsys):
    (tmp_path / "classes.txt").write_text("forklift, fork lift\npallet\nhard hat\n")
    (tmp_path / "written.txt").write_text("A fork lift carrying two pallets.\n\nAn empty loading dock at dawn.\n"
                                          "Workers in hard hats.\nRain on a window.\n")
    args = ["--class-list", str(tmp_path / "classes.txt"), "--lemmatizer", "lemminflect"]
    assert check_main([str(tmp_path / "written.txt"), *args, "--show", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "4 sentences: 2 name a class, 2 name none (dropped by training)"
    assert [ln.split() for ln in out[2:5]] == [["1", "forklift"], ["1", "pallet"], ["1", "hard", "hat"]]
    assert out[5:] == ["first 1 sentences naming no class:", "  An empty loading dock at dawn."]
    assert check_main([str(tmp_path / "missing.txt"), *args]) == 2
    assert "missing.txt" in capsys.readouterr().err
