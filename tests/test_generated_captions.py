"""``DATASET.CAPTION_SOURCE generated``: a caption corpus from the class list alone, cached per recipe,
recorded in the run, and train.py running without any caption file."""

from __future__ import annotations

import json

import pytest
import yaml

from cli_support import common, run_train
from taidpt.captions.classes import load_class_list
from taidpt.captions.labelling import CaptionLabeller
from taidpt.captions.lemmatize import get_lemmatizer
from taidpt.engine.config import get_cfg_default
from taidpt.images.registry import load_caption_corpus


def generated_cfg(root, *opts: str):
    cfg = get_cfg_default()
    cfg.merge_from_list(["DATASET.NAME", "VOC2007", "DATASET.ROOT", str(root), "DATASET.CACHE_DIR", str(root / "cache"),
                         "DATASET.LEMMATIZER", "lemminflect", "DATASET.CAPTION_SOURCE", "generated",
                         "DATASET.GENERATED_SENTENCES", "300", *opts])
    return cfg


def test_generated_corpus_is_labelled_cached_and_recorded(tmp_path):
    classes = load_class_list("voc2007")
    corpus = load_caption_corpus(generated_cfg(tmp_path), classes, progress=False)
    assert corpus.source == "generated" and corpus.n_captions == 300 and corpus.n_templates == 89 * 20
    made = corpus.stats["generator"]
    assert made["settings"]["recipe"]["n"] == 300 and made["settings"]["recipe"]["seed"] == 0
    assert made["settings"]["grammar"]["name"] == "photographs" and made["stats"]["sentences"] == 300
    relabelled = CaptionLabeller(classes, get_lemmatizer("lemminflect")).label_many(corpus.texts[:300])
    assert (relabelled == corpus.labels[:300]).all() and relabelled.any(axis=1).all()
    files = sorted((tmp_path / "cache" / "generated").iterdir())
    stamp = [f.stat().st_mtime_ns for f in files]
    again = load_caption_corpus(generated_cfg(tmp_path), classes, progress=False)
    assert again.texts == corpus.texts and [f.stat().st_mtime_ns for f in files] == stamp  # reused, not rewritten
    other = load_caption_corpus(generated_cfg(tmp_path, "DATASET.GENERATED_SEED", "1"), classes, progress=False)
    assert other.texts[:300] != corpus.texts[:300] and len(list((tmp_path / "cache" / "generated").iterdir())) == 4


def test_generated_recipe_files_resolve_against_root_and_bad_lines_name_them(tmp_path):
    classes = load_class_list("voc2007")
    (tmp_path / "pairs.txt").write_text("person, horse, 5\n")
    corpus = load_caption_corpus(generated_cfg(tmp_path, "DATASET.GENERATED_PAIRS", "pairs.txt",
                                               "DATASET.GENERATED_MIX", "0,1"), classes, progress=False)
    person, horse = classes.names.index("person"), classes.names.index("horse")
    both = corpus.labels[:300, person] & corpus.labels[:300, horse]
    assert corpus.labels[:300].sum(axis=1).tolist() == [2] * 300 and both.sum() > 150
    (tmp_path / "freq.txt").write_text("person, lots\n")
    with pytest.raises(ValueError, match=r"freq\.txt:1: expected a frequency >= 0, got 'lots'"):
        load_caption_corpus(generated_cfg(tmp_path, "DATASET.GENERATED_FREQUENCIES", "freq.txt"), classes)


def test_train_py_runs_from_a_class_list_alone(shared_voc, tiny_rn_openai_file, tmp_path):
    args = common(shared_voc, tiny_rn_openai_file)
    at = args.index("DATASET.CAPTION_FILE")
    del args[at:at + 2]  # no caption file at all
    out = tmp_path / "run"
    run_train(["--engine", "core", "--trainer", "TaIDPT", "--output-dir", str(out), *args, "OPTIM.MAX_EPOCH", "1",
               "DATASET.CAPTION_SOURCE", "generated", "DATASET.GENERATED_SENTENCES", "200",
               "DATASET.GENERATED_SEED", "4"], tmp_path)
    results = json.loads((out / "results.json").read_text())
    captions = results["captions"]
    assert captions["source"] == "generated" and captions["n_captions"] == 200
    assert captions["stats"]["generator"]["settings"]["recipe"]["seed"] == 4
    saved = yaml.safe_load((out / "config.yaml").read_text())["DATASET"]
    assert saved["CAPTION_SOURCE"] == "generated" and saved["GENERATED_SENTENCES"] == 200
    assert 0.0 <= results["mAP"]["merged"] <= 100.0
