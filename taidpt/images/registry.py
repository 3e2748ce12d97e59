"""The datasets ``DATASET.NAME`` can name: one :class:`DatasetSpec` each, registered in one place.

A spec says everything about a dataset: how to read one of its splits, its default test and training
splits, its class list and caption corpus, and how ``run.sh`` runs it. Everything else follows from it:
:func:`load_test_set`, the training-split reader (:func:`taidpt.images.train_data.load_train_set`), the
Dassl dataset classes (``datasets/taidpt_datasets.py``) and ``run.sh``'s list of datasets
(:mod:`taidpt.images.datasets_cli`). :data:`BUILT_IN` is the table; :func:`register_dataset` adds one.

``DATASET.CLASS_LIST`` replaces the class list (e.g. the demo's shapes in VOC layout), and
``DATASET.CAPTION_FILE`` / ``CAPTION_SOURCE`` replace the caption corpus. Of COCO captions,
``DATASET.CAPTION_IDS`` (a file of caption ids) or ``DATASET.CAPTIONS_PER_IMAGE`` (k per image, drawn
with ``DATASET.CAPTION_SAMPLE_SEED``) choose the captions used; by default all of them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from yacs.config import CfgNode

from taidpt.captions.builder import CorpusRecipe, build_corpus
from taidpt.captions.classes import ClassList, load_class_list
from taidpt.captions.corpus import CaptionCorpus
from taidpt.captions.generated_cache import generated_caption_file
from taidpt.captions.generator import GeneratorRecipe, recipe_from_files
from taidpt.captions.labelling import CaptionLabeller
from taidpt.captions.lemmatize import get_lemmatizer
from taidpt.captions.selection import CaptionSelection
from taidpt.captions.sources import read_caption_ids, read_coco_image_ids
from taidpt.images.readers.coco import read_coco2014, read_coco_format
from taidpt.images.readers.common import ImageSet
from taidpt.images.readers.csv import read_csv
from taidpt.images.readers.nuswide import read_nuswide
from taidpt.images.readers.voc import read_voc2007

log = logging.getLogger(__name__)

COCO_CAPTIONS = "COCO/annotations/captions_train2017.json"
NARRATIVES = "OpenImages/captions/open_images_train_v6_captions.jsonl"
GENERATED = "generated"  # DATASET.CAPTION_SOURCE: sentences written from the class list, no caption file

# (cfg, split, class list or None) -> images; ``split`` is a split name, or the annotation file of an
# ``annotation`` dataset as the config writes it.
SplitReader = Callable[[CfgNode, str, ClassList | None], ImageSet]


def _under_root(cfg: CfgNode, value: str) -> str:
    """A path from the config: absolute or ``~`` paths as given, others relative to DATASET.ROOT."""
    value = os.path.expanduser(value)
    return value if os.path.isabs(value) else os.path.join(os.path.expanduser(cfg.DATASET.ROOT), value)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: what ``DATASET.NAME`` means. Field by field, see docs/datasets.md, "Adding a dataset"."""

    name: str  # DATASET.NAME, and the name of its Dassl dataset class
    doc: str  # one line, what and where: the Dassl class's docstring
    read_split: SplitReader
    class_list: str | None = None  # built-in class list; None: DATASET.CLASS_LIST or the test set's own
    caption_file: str | None = None  # default corpus under DATASET.ROOT; None: DATASET.CAPTION_FILE is required
    test_split: str = ""  # default DATASET.TEST_SPLIT
    train_split: str = ""  # default DATASET.TRAIN_SPLIT; "" = no training split
    annotation: str = ""  # kind of file read from DATASET.ANNOTATION / TRAIN_ANNOTATION (no named splits)
    coco_test_ids: str | None = None  # instances json whose image ids EXCLUDE_TEST_CAPTIONS drops
    config: str = ""  # run.sh runs configs/datasets/<config>.yaml into output/<config>; "" = not in run.sh
    run_names: tuple[str, ...] = ()  # more names run.sh accepts; the first is the one its usage shows
    run_needs: tuple[str, ...] = ()  # files under $DATA run.sh checks before it starts (+ caption_file)

    def split(self, cfg: CfgNode, train: bool = False) -> str:
        """The split ``cfg`` reads: ``DATASET.TEST_SPLIT`` / ``TRAIN_SPLIT`` or this dataset's default;
        for an ``annotation`` dataset, ``DATASET.ANNOTATION`` / ``TRAIN_ANNOTATION``."""
        if self.annotation:
            key = "TRAIN_ANNOTATION" if train else "ANNOTATION"
            value = cfg.DATASET.get(key, "")
            if value:
                return value
            if train:
                raise ValueError(f"DATASET.NAME {self.name} has no training split: set DATASET.TRAIN_ANNOTATION "
                                 f"to a {self.annotation} of labelled training images")
            raise ValueError(f"DATASET.NAME {self.name} needs DATASET.{key} to be set")
        split = (cfg.DATASET.get("TRAIN_SPLIT", "") or self.train_split) if train else \
            (cfg.DATASET.TEST_SPLIT or self.test_split)
        if not split:
            raise ValueError(f"DATASET.NAME {self.name} has no {'training' if train else 'test'} split: "
                             f"set DATASET.{'TRAIN' if train else 'TEST'}_SPLIT")
        return split

    def read_test(self, cfg: CfgNode, classes: ClassList | None) -> ImageSet:
        """The test images of ``cfg`` (:meth:`split`)."""
        return self.read_split(cfg, self.split(cfg), classes)

    def shell_names(self) -> tuple[str, ...]:
        """The names ``bash run.sh NAME`` accepts (none unless ``config`` is set)."""
        if not self.config:
            return ()
        return tuple(dict.fromkeys((*self.run_names, self.config)))

    def shell_needs(self) -> tuple[str, ...]:
        """The files under ``$DATA`` run.sh checks: ``run_needs``, then the caption corpus."""
        return (*self.run_needs, *((self.caption_file,) if self.caption_file else ()))


def _voc(cfg: CfgNode, split: str, classes: ClassList | None) -> ImageSet:
    return read_voc2007(cfg.DATASET.ROOT, split=split, difficult=cfg.DATASET.VOC_DIFFICULT,
                        classnames=classes.names if classes is not None else None)


def _coco(cfg: CfgNode, split: str, classes: ClassList | None) -> ImageSet:
    return read_coco2014(cfg.DATASET.ROOT, split=split)


def _nus(cfg: CfgNode, split: str, classes: ClassList | None) -> ImageSet:
    return read_nuswide(cfg.DATASET.ROOT, split=split)


def _coco_format(cfg: CfgNode, annotation: str, classes: ClassList | None) -> ImageSet:
    return read_coco_format(_under_root(cfg, annotation), _under_root(cfg, cfg.DATASET.IMAGE_DIR or "."))


def _csv(cfg: CfgNode, annotation: str, classes: ClassList | None) -> ImageSet:
    image_root = _under_root(cfg, cfg.DATASET.IMAGE_DIR) if cfg.DATASET.IMAGE_DIR else None
    return read_csv(_under_root(cfg, annotation), classnames=classes.names if classes is not None else None,
                    image_root=image_root, labels=cfg.DATASET.CSV_LABELS)


BUILT_IN: tuple[DatasetSpec, ...] = (
    DatasetSpec("VOC2007", "PASCAL VOC 2007 test split under ``DATASET.ROOT/VOCdevkit/VOC2007`` (20 classes).",
                _voc, "voc2007", COCO_CAPTIONS, test_split="test", train_split="trainval",
                config="voc2007", run_names=("voc2007", "voc"),
                run_needs=("VOCdevkit/VOC2007/ImageSets/Main/test.txt",)),
    DatasetSpec("COCO2014", "MS-COCO 2014 validation images under ``DATASET.ROOT/COCO`` (80 classes).",
                _coco, "coco2014", COCO_CAPTIONS, test_split="val2014", train_split="train2014",
                coco_test_ids="COCO/annotations/instances_val2014.json",
                config="coco2014", run_names=("coco", "coco2014"),
                run_needs=("COCO/annotations/instances_val2014.json",)),
    DatasetSpec("NUSWIDE", "NUS-WIDE test split under ``DATASET.ROOT/NUSWIDE`` (81 concepts).",
                _nus, "nuswide", NARRATIVES, test_split="Test", train_split="Train",
                config="nuswide", run_names=("nuswide", "nus-wide"), run_needs=("NUSWIDE/Concepts81.txt",)),
    DatasetSpec("COCOFormat", "Any COCO-format instances json (``DATASET.ANNOTATION``, images in "
                "``DATASET.IMAGE_DIR``).", _coco_format, annotation="COCO-format json"),
    DatasetSpec("CSV", "A CSV of image paths and labels (``DATASET.ANNOTATION``; classes from "
                "``DATASET.CLASS_LIST``).", _csv, annotation="CSV"),
)

DATASETS: dict[str, DatasetSpec] = {}
RESERVED_SHELL_NAMES = ("demo", "-h", "--help")  # run.sh's own targets


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Make ``spec`` what ``DATASET.NAME`` = ``spec.name`` means; a name (or run.sh name) already taken
    is refused. Returns ``spec``."""
    if spec.name in DATASETS:
        raise KeyError(f"a dataset named {spec.name!r} is already registered")
    taken = {n for other in DATASETS.values() for n in other.shell_names()} | set(RESERVED_SHELL_NAMES)
    if set(spec.shell_names()) & taken:
        raise KeyError(f"run.sh name(s) {sorted(set(spec.shell_names()) & taken)} of {spec.name} are taken")
    if not spec.name.isidentifier():
        raise ValueError(f"dataset name {spec.name!r} must be a Python identifier (it names a Dassl class)")
    if any(not field or any(c in field for c in "\t\n\r,") for field in (*spec.shell_names(), *spec.shell_needs())):
        raise ValueError(f"dataset {spec.name}: run.sh names and files must be non-empty, without tabs, "
                         f"newlines or commas")
    DATASETS[spec.name] = spec
    return spec


for _spec in BUILT_IN:
    register_dataset(_spec)


def get_spec(name: str) -> DatasetSpec:
    """The spec registered under ``DATASET.NAME``; a clear error lists the known names."""
    if name not in DATASETS:
        raise ValueError(f"unknown DATASET.NAME {name!r}: expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def load_split(cfg: CfgNode, split: str) -> tuple[ImageSet, ClassList]:
    """Read the images of ``split`` (see :meth:`DatasetSpec.split`) and the class list of ``cfg.DATASET``.

    The class list is ``DATASET.CLASS_LIST`` when set, else the dataset's own, else the one the split
    defines; its length must match the split's label columns (the prompt class names come from it).
    """
    spec = get_spec(cfg.DATASET.NAME)
    custom = load_class_list(_class_list_arg(cfg.DATASET.CLASS_LIST)) if cfg.DATASET.CLASS_LIST else None
    image_set = spec.read_split(cfg, split, custom)
    if custom is not None:
        classes = custom
    elif spec.class_list is not None:
        classes = load_class_list(spec.class_list)
    else:
        classes = ClassList.from_names(spec.name, list(image_set.classnames))
    if len(classes) != image_set.targets.shape[1]:
        raise ValueError(f"class list {classes.dataset!r} has {len(classes)} classes but the {spec.name} test set "
                         f"has {image_set.targets.shape[1]} label columns")
    return image_set, classes


def load_test_set(cfg: CfgNode) -> tuple[ImageSet, ClassList]:
    """Read the test images (``DATASET.TEST_SPLIT`` or the default) and the class list of ``cfg.DATASET``."""
    return load_split(cfg, get_spec(cfg.DATASET.NAME).split(cfg))


def class_list_of(cfg: CfgNode) -> ClassList:
    """The class list (names and synonyms) a configuration means: ``DATASET.CLASS_LIST``, else the
    dataset's built-in list, else the one its test set defines (read from disk only in that case).
    Training, evaluation, export and calibration all ask this one function."""
    if cfg.DATASET.CLASS_LIST:
        return load_class_list(_class_list_arg(cfg.DATASET.CLASS_LIST))
    if not cfg.DATASET.NAME:
        raise ValueError("cannot tell the class names: the config has no DATASET.CLASS_LIST or DATASET.NAME; "
                         "pass --classes or a dataset config file")
    spec = get_spec(cfg.DATASET.NAME)
    if spec.class_list:
        return load_class_list(spec.class_list)
    return load_test_set(cfg)[1]


def _class_list_arg(value: str) -> str:
    """Built-in names pass through; anything that looks like a path resolves like other data paths."""
    return value if os.sep not in value and not value.endswith((".json", ".txt")) else os.path.expanduser(value)


def default_cache_dir(cfg: CfgNode) -> Path:
    """``DATASET.CACHE_DIR`` or ``$XDG_CACHE_HOME/taidpt`` (``~/.cache/taidpt``)."""
    if cfg.DATASET.CACHE_DIR:
        return Path(os.path.expanduser(cfg.DATASET.CACHE_DIR))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "taidpt"


def caption_source_and_path(cfg: CfgNode) -> tuple[str, str]:
    """The caption source kind and absolute path for this config (explicit keys win)."""
    spec = get_spec(cfg.DATASET.NAME)
    file = cfg.DATASET.CAPTION_FILE or spec.caption_file
    if not file:
        raise ValueError(f"DATASET.NAME {spec.name} has no default caption corpus: set DATASET.CAPTION_FILE")
    path = _under_root(cfg, file)
    source = cfg.DATASET.CAPTION_SOURCE
    if not source:
        source = ("coco_captions" if path.endswith(".json") else
                  "localized_narratives" if path.endswith(".jsonl") else "text")
    return source, path


def caption_selection(cfg: CfgNode, source: str) -> CaptionSelection | None:
    """Which COCO captions ``cfg`` trains on: ``DATASET.CAPTION_IDS`` when set, else
    ``DATASET.CAPTIONS_PER_IMAGE`` captions per image (0 = every caption).

    Other sources have no caption ids: ``CAPTION_IDS`` is an error there, ``CAPTIONS_PER_IMAGE``
    (set by the reference-named configs) is ignored with a warning.
    """
    ids_file, per_image = cfg.DATASET.CAPTION_IDS, int(cfg.DATASET.CAPTIONS_PER_IMAGE)
    if per_image < 0:
        raise ValueError(f"DATASET.CAPTIONS_PER_IMAGE must be 0 (every caption) or a positive number, got {per_image}")
    if source != "coco_captions":
        if ids_file:
            raise ValueError(f"DATASET.CAPTION_IDS applies to COCO captions only; the caption source is {source!r}")
        if per_image:
            log.warning("DATASET.CAPTIONS_PER_IMAGE %d is ignored: the %s caption source has no images", per_image,
                        source)
        return None
    if ids_file:
        path = _under_root(cfg, ids_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"caption id file not found: {path} (DATASET.CAPTION_IDS, relative to "
                                    f"DATASET.ROOT={cfg.DATASET.ROOT!r})")
        if per_image:
            log.info("DATASET.CAPTION_IDS is set: its ids are used instead of %d caption(s) per image", per_image)
        return CaptionSelection(ids=read_caption_ids(path), ids_file=path)
    return CaptionSelection(per_image=per_image, seed=int(cfg.DATASET.CAPTION_SAMPLE_SEED))


def generator_recipe(cfg: CfgNode, classes: ClassList) -> GeneratorRecipe:
    """The corpus generator's recipe of ``cfg`` (``DATASET.GENERATED_*``; files relative to DATASET.ROOT)."""
    d = cfg.DATASET
    return recipe_from_files(classes, n=int(d.GENERATED_SENTENCES), seed=int(d.GENERATED_SEED),
                             mix=tuple(d.GENERATED_MIX),
                             frequencies=_under_root(cfg, d.GENERATED_FREQUENCIES) if d.GENERATED_FREQUENCIES else "",
                             pairs=_under_root(cfg, d.GENERATED_PAIRS) if d.GENERATED_PAIRS else "")


def _sentence_file(cfg: CfgNode, classes: ClassList, labeller: CaptionLabeller) -> tuple[str, str, dict | None]:
    """``(source, path, how the sentences were generated or None)`` of the caption corpus of ``cfg``."""
    if cfg.DATASET.CAPTION_SOURCE != GENERATED:
        return (*caption_source_and_path(cfg), None)
    if cfg.DATASET.CAPTION_FILE:
        log.warning("DATASET.CAPTION_FILE %s is not read: CAPTION_SOURCE generated writes its own sentences "
                    "(train on a file of captions plus generated ones with CAPTION_SOURCE text)",
                    cfg.DATASET.CAPTION_FILE)
    file, generated = generated_caption_file(default_cache_dir(cfg) / "generated", classes, labeller,
                                             generator_recipe(cfg, classes))
    return GENERATED, str(file), generated


def load_caption_corpus(cfg: CfgNode, classes: ClassList, progress: bool = True) -> CaptionCorpus:
    """Build (or reuse from the cache) the labelled caption corpus for ``cfg``; with ``CAPTION_SOURCE
    generated``, of sentences written from the class list, recorded in the stats (``generator``)."""
    spec = get_spec(cfg.DATASET.NAME)
    labeller = CaptionLabeller(classes, get_lemmatizer(cfg.DATASET.LEMMATIZER))
    source, path, generated = _sentence_file(cfg, classes, labeller)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"caption file not found: {path} (set DATASET.CAPTION_FILE, relative to "
                                f"DATASET.ROOT={cfg.DATASET.ROOT!r})")
    exclude = None
    if cfg.DATASET.EXCLUDE_TEST_CAPTIONS:
        if spec.coco_test_ids is None:
            log.warning("DATASET.EXCLUDE_TEST_CAPTIONS has no effect for %s: its test images are not COCO images",
                        spec.name)
        else:
            exclude = read_coco_image_ids(_under_root(cfg, spec.coco_test_ids))
            log.info("excluding captions of %d test images", len(exclude))
    cap = int(cfg.DATASET.CAPTION_CAP)
    recipe = CorpusRecipe(add_templates=bool(cfg.DATASET.ADD_TEMPLATES), exclude_image_ids=exclude,
                          per_class_cap="auto" if cap < 0 else (cap or None), selection=caption_selection(cfg, source))
    corpus = build_corpus(source, path, classes, labeller, recipe, cache_dir=default_cache_dir(cfg) / "corpora",
                          progress=progress)
    if corpus.n_captions == 0:
        raise ValueError(f"no sentence of {path} names a class of {classes.dataset!r} ({corpus.stats.get('dropped_no_class', 0)} sentences "
                         f"without a class, lemmatizer {corpus.lemmatizer}): check DATASET.CAPTION_FILE and DATASET.CLASS_LIST")
    if generated is not None:
        corpus.stats = {**corpus.stats, "generator": generated}
    return corpus
