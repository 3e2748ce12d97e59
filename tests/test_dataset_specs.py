"""Adding a dataset is one entry: a DatasetSpec, registered once, reaches every place that names datasets.

A toy dataset (a TSV per split, written in ``tmp_path``) is registered for one test and removed after;
the test set reader, the training-split reader, the class list, the caption corpus, the Dassl dataset
class (where Dassl imports) and run.sh's table all follow from that one entry.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dassl_support import require_dassl
from test_train_cli import CLASSES, write_voc_fixture
from taidpt.engine.config import get_cfg_default
from taidpt.images.datasets_cli import main as datasets_cli_main, run_sh_table
from taidpt.images.readers.common import ImageSet
from taidpt.images.registry import (DATASETS, DatasetSpec, caption_source_and_path, class_list_of, get_spec,
                                    load_split, load_test_set, register_dataset)
from taidpt.images.train_data import load_train_set

ROOT = Path(__file__).resolve().parents[1]
TOY_CLASSES = ("kite", "boat")

# The built-in table, as run.sh's case statement and train_data.TRAIN_SPLITS spelled it before the specs.
RUN_SH_TABLE = (
    "voc2007\tvoc2007,voc\tVOCdevkit/VOC2007/ImageSets/Main/test.txt\tCOCO/annotations/captions_train2017.json\n"
    "coco2014\tcoco,coco2014\tCOCO/annotations/instances_val2014.json\tCOCO/annotations/captions_train2017.json\n"
    "nuswide\tnuswide,nus-wide\tNUSWIDE/Concepts81.txt\tOpenImages/captions/open_images_train_v6_captions.jsonl\n"
)
SPLITS = {"VOC2007": ("test", "trainval"), "COCO2014": ("val2014", "train2014"), "NUSWIDE": ("Test", "Train")}


def read_toy(cfg, split: str, classes) -> ImageSet:
    """``ROOT/toy/<split>.tsv``: a header of class names, then ``image<TAB>flags`` per line."""
    path = Path(cfg.DATASET.ROOT) / "toy" / f"{split}.tsv"
    header, *rows = path.read_text().splitlines()
    cells = [row.split("\t") for row in rows]
    return ImageSet([str(path.parent / c[0]) for c in cells], np.array([[int(v) for v in c[1].split()] for c in cells]),
                    tuple(header.split("\t")), f"toy_{split}")


TOY = DatasetSpec("ToyTSV", "A toy TSV set under ``DATASET.ROOT/toy`` (2 classes).", read_toy,
                  caption_file="toy/captions.txt", test_split="test", train_split="train", config="toy",
                  run_names=("toy", "toy-tsv"), run_needs=("toy/test.tsv",))

SITECUSTOMIZE = f'''
from taidpt.images.registry import DatasetSpec, register_dataset
register_dataset(DatasetSpec("ToyTSV", "toy", lambda cfg, split, classes: None, caption_file="toy/captions.txt",
                             config="toy", run_names=("toy", "toy-tsv"), run_needs=("toy/test.tsv",)))
'''


def write_toy(root: Path) -> None:
    toy = root / "toy"
    toy.mkdir(parents=True)
    for split, rows in {"test": ["a.jpg\t1 0", "b.jpg\t0 1", "c.jpg\t1 1"], "train": ["d.jpg\t0 1", "e.jpg\t1 0"],
                        "val": ["f.jpg\t1 1"]}.items():
        (toy / f"{split}.tsv").write_text("\n".join(["\t".join(TOY_CLASSES), *rows]) + "\n")
        for row in rows:
            (toy / row.split("\t")[0]).write_bytes(b"jpeg")
    (toy / "captions.txt").write_text("a kite above a boat\n")


@pytest.fixture
def toy():
    """The toy spec, registered for one test."""
    register_dataset(TOY)
    try:
        yield TOY
    finally:
        DATASETS.pop(TOY.name)


def cfg_for(root: Path, name: str, **dataset):
    cfg = get_cfg_default()
    cfg.DATASET.NAME, cfg.DATASET.ROOT = name, str(root)
    for key, value in dataset.items():
        setattr(cfg.DATASET, key, value)
    return cfg


# ----------------------------------------------------------------------------- the built-in table
def test_built_in_specs_keep_their_names_splits_configs_and_run_sh_rows():
    assert list(DATASETS) == ["VOC2007", "COCO2014", "NUSWIDE", "COCOFormat", "CSV"]
    assert {name: (s.test_split, s.train_split) for name, s in DATASETS.items() if not s.annotation} == SPLITS
    assert {name: s.annotation for name, s in DATASETS.items() if s.annotation} == {
        "COCOFormat": "COCO-format json", "CSV": "CSV"}
    assert run_sh_table() == RUN_SH_TABLE
    for spec in DATASETS.values():
        if spec.config:  # run.sh runs the dataset yaml and rn50_<config> of TaIDPT
            data = yaml.safe_load((ROOT / "configs" / "datasets" / f"{spec.config}.yaml").read_text())
            assert data["DATASET"]["NAME"] == spec.name
            assert (ROOT / "configs" / "trainers" / "TaIDPT" / f"rn50_{spec.config}.yaml").is_file()


def test_the_cli_prints_the_table(capsys):
    assert datasets_cli_main(["--run-sh-table"]) == 0
    assert capsys.readouterr().out == RUN_SH_TABLE


def test_the_training_split_is_passed_to_the_reader_not_written_into_the_config(tmp_path):
    write_voc_fixture(tmp_path)
    main = tmp_path / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    for name in ["", *(f"{c}_" for c in CLASSES)]:  # trainval = the test images with the labels flipped
        lines = (main / f"{name}test.txt").read_text().splitlines()
        flipped = [f"{line.split()[0]} {'-1' if line.split()[-1] == '1' else ' 1'}" if name else line for line in lines]
        (main / f"{name}trainval.txt").write_text("\n".join(flipped) + "\n")
    cfg = cfg_for(tmp_path, "VOC2007", CLASS_LIST=str(tmp_path / "classes.txt"))
    cfg.freeze()  # nothing is cloned or overwritten
    test, classes = load_test_set(cfg)
    train = load_train_set(cfg, classes)
    assert train.name == "voc2007_trainval" and test.name == "voc2007_test" and train.paths == test.paths
    assert np.array_equal(train.targets, 1 - test.targets)
    assert np.array_equal(load_split(cfg, "trainval")[0].targets, train.targets)


def test_split_errors_name_the_key_to_set(tmp_path):
    with pytest.raises(ValueError, match="DATASET.NAME CSV has no training split: set DATASET.TRAIN_ANNOTATION "
                                         "to a CSV of labelled training images"):
        get_spec("CSV").split(cfg_for(tmp_path, "CSV"), train=True)
    with pytest.raises(ValueError, match="TRAIN_ANNOTATION to a COCO-format json"):
        load_train_set(cfg_for(tmp_path, "COCOFormat"), class_list_of(cfg_for(tmp_path, "VOC2007")))
    with pytest.raises(ValueError, match="DATASET.NAME COCOFormat needs DATASET.ANNOTATION to be set"):
        load_test_set(cfg_for(tmp_path, "COCOFormat"))
    csv = cfg_for(tmp_path, "CSV", ANNOTATION="t.csv", TRAIN_ANNOTATION="x.csv")
    assert (get_spec("CSV").split(csv), get_spec("CSV").split(csv, train=True)) == ("t.csv", "x.csv")
    assert get_spec("NUSWIDE").split(cfg_for(tmp_path, "NUSWIDE", TEST_SPLIT="Val")) == "Val"


# ----------------------------------------------------------------------------- one entry, everything follows
def test_one_spec_reaches_the_readers_class_list_and_captions(tmp_path, toy):
    write_toy(tmp_path)
    cfg = cfg_for(tmp_path, "ToyTSV")
    image_set, classes = load_test_set(cfg)
    assert image_set.name == "toy_test" and image_set.targets.tolist() == [[1, 0], [0, 1], [1, 1]]
    assert tuple(classes.names) == TOY_CLASSES == tuple(class_list_of(cfg).names)
    train = load_train_set(cfg, classes)
    assert train.name == "toy_train" and train.targets.tolist() == [[0, 1], [1, 0]]
    cfg.DATASET.TEST_SPLIT, cfg.DATASET.TRAIN_SPLIT = "val", "val"
    assert load_test_set(cfg)[0].name == load_train_set(cfg, classes).name == "toy_val"
    assert caption_source_and_path(cfg) == ("text", os.path.join(str(tmp_path), "toy", "captions.txt"))
    assert run_sh_table() == RUN_SH_TABLE + "toy\ttoy,toy-tsv\ttoy/test.tsv\ttoy/captions.txt\n"


def test_removed_spec_is_gone_and_taken_names_are_refused(toy):
    with pytest.raises(KeyError, match="already registered"):
        register_dataset(TOY)
    for run_names in (("voc",), ("demo",), ("toy-tsv",)):
        with pytest.raises(KeyError, match="are taken"):
            register_dataset(DatasetSpec("Other", "o", read_toy, config="other", run_names=run_names))
    with pytest.raises(ValueError, match="without tabs"):
        register_dataset(DatasetSpec("Other", "o", read_toy, config="other", run_needs=("a\tb",)))
    with pytest.raises(ValueError, match="Python identifier"):
        register_dataset(DatasetSpec("my-set", "o", read_toy))
    assert "Other" not in DATASETS
    DATASETS.pop(TOY.name)
    try:
        with pytest.raises(ValueError, match="unknown DATASET.NAME 'ToyTSV'"):
            get_spec("ToyTSV")
        assert run_sh_table() == RUN_SH_TABLE
    finally:
        register_dataset(TOY)  # the fixture removes it


def test_one_spec_becomes_a_dassl_dataset_class(tmp_path):
    require_dassl()
    from dassl.data.datasets import DATASET_REGISTRY, build_dataset

    import datasets.taidpt_datasets as ds_mod

    for name, spec in DATASETS.items():  # built in: generated at import, named after the spec, its doc as docstring
        assert DATASET_REGISTRY.get(name) is getattr(ds_mod, name) and getattr(ds_mod, name).__doc__ == spec.doc
    register_dataset(TOY)  # registered after the import: register_datasets adds it
    try:
        assert ds_mod.register_datasets() == ["ToyTSV"] and ds_mod.register_datasets() == []
        toy_class = DATASET_REGISTRY.get("ToyTSV")
        assert toy_class is ds_mod.ToyTSV and toy_class.__doc__ == TOY.doc
        assert issubclass(toy_class, ds_mod.MultiLabelTestSet) and toy_class.__module__ == ds_mod.__name__
        write_toy(tmp_path)
        dataset = build_dataset(cfg_for(tmp_path, "ToyTSV"))
        assert dataset.num_classes == 2 and dataset.classnames == list(TOY_CLASSES)
        assert [d.label.tolist() for d in dataset.test] == [[1, 0], [0, 1], [1, 1]]
    finally:
        DATASETS.pop(TOY.name)
        DATASET_REGISTRY._obj_map.pop("ToyTSV", None)
        vars(ds_mod).pop("ToyTSV", None)
    register_dataset(DatasetSpec("CIFAR10", "o", read_toy))  # a name Dassl already uses is refused
    try:
        with pytest.raises(KeyError, match="Dassl already has a dataset named 'CIFAR10'"):
            ds_mod.register_datasets()
    finally:
        DATASETS.pop("CIFAR10")


def _run_sh(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """run.sh, its Python registering the toy spec at start-up (a sitecustomize, as a plugin would)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    full = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), **env}
    return subprocess.run(["bash", "run.sh", *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)


def test_run_sh_reads_its_datasets_from_the_specs(tmp_path):
    builtin = subprocess.run(["bash", "run.sh", "--help"], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHON": sys.executable})
    assert builtin.returncode == 0
    assert builtin.stderr.startswith("usage: bash run.sh {demo|app|voc2007|coco|nuswide} [CFG] [SEEDS]")
    proc = _run_sh(tmp_path, "--help")
    assert proc.returncode == 0 and "{demo|app|voc2007|coco|nuswide|toy} [CFG]" in proc.stderr
    data = tmp_path / "data"
    proc = _run_sh(tmp_path, "toy-tsv", DATA=str(data))
    assert proc.returncode == 2 and f"{data}/toy/test.tsv is missing: toy needs it" in proc.stderr
    write_toy(data)
    (data / "toy" / "captions.txt").unlink()
    proc = _run_sh(tmp_path, "toy", DATA=str(data))
    assert proc.returncode == 2 and f"{data}/toy/captions.txt is missing" in proc.stderr
