"""yacs configuration with Dassl's key names, types and defaults, plus the method's own keys.

The core mirrors the subset of Dassl's defaults (``dassl/config/defaults.py``) that our yaml files
and code read, with the same values, so a yaml file means the same thing with and without Dassl.
:func:`extend_cfg` adds the TaI-DPT keys; the Dassl path calls the same function on Dassl's own
defaults. Keys are documented in docs/configuration.md.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Iterable

import yaml
from yacs.config import CfgNode as CN

from taidpt.engine.image_config import extend_image_cfg


def dassl_defaults() -> CN:
    """The Dassl default keys that taidpt reads, with Dassl's values (Dassl.pytorch c61a1b5)."""
    _C = CN()
    _C.VERSION = 1
    _C.OUTPUT_DIR = "./output"
    _C.RESUME = ""
    _C.SEED = -1
    _C.USE_CUDA = True
    _C.VERBOSE = True

    _C.INPUT = CN()
    _C.INPUT.SIZE = (224, 224)
    _C.INPUT.INTERPOLATION = "bilinear"
    _C.INPUT.TRANSFORMS = ()
    _C.INPUT.NO_TRANSFORM = False
    _C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
    _C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
    _C.INPUT.RRCROP_SCALE = (0.08, 1.0)
    _C.INPUT.CUTOUT_N = 1
    _C.INPUT.CUTOUT_LEN = 16

    _C.DATASET = CN()
    _C.DATASET.ROOT = ""
    _C.DATASET.NAME = ""
    _C.DATASET.SOURCE_DOMAINS = ()
    _C.DATASET.TARGET_DOMAINS = ()
    _C.DATASET.NUM_LABELED = -1
    _C.DATASET.NUM_SHOTS = -1
    _C.DATASET.VAL_PERCENT = 0.1

    _C.DATALOADER = CN()
    _C.DATALOADER.NUM_WORKERS = 4
    _C.DATALOADER.K_TRANSFORMS = 1
    _C.DATALOADER.RETURN_IMG0 = False
    _C.DATALOADER.TRAIN_X = CN()
    _C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
    _C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
    _C.DATALOADER.TRAIN_X.N_DOMAIN = 0
    _C.DATALOADER.TRAIN_X.N_INS = 16
    _C.DATALOADER.TEST = CN()
    _C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
    _C.DATALOADER.TEST.BATCH_SIZE = 32

    _C.MODEL = CN()
    _C.MODEL.INIT_WEIGHTS = ""
    _C.MODEL.BACKBONE = CN()
    _C.MODEL.BACKBONE.NAME = ""
    _C.MODEL.BACKBONE.PRETRAINED = True
    _C.MODEL.HEAD = CN()
    _C.MODEL.HEAD.NAME = ""

    _C.OPTIM = CN()
    _C.OPTIM.NAME = "adam"
    _C.OPTIM.LR = 0.0003
    _C.OPTIM.WEIGHT_DECAY = 5e-4
    _C.OPTIM.MOMENTUM = 0.9
    _C.OPTIM.SGD_DAMPNING = 0
    _C.OPTIM.SGD_NESTEROV = False
    _C.OPTIM.RMSPROP_ALPHA = 0.99
    _C.OPTIM.ADAM_BETA1 = 0.9
    _C.OPTIM.ADAM_BETA2 = 0.999
    _C.OPTIM.STAGED_LR = False
    _C.OPTIM.NEW_LAYERS = ()
    _C.OPTIM.BASE_LR_MULT = 0.1
    _C.OPTIM.LR_SCHEDULER = "single_step"
    _C.OPTIM.STEPSIZE = (-1,)
    _C.OPTIM.GAMMA = 0.1
    _C.OPTIM.MAX_EPOCH = 10
    _C.OPTIM.WARMUP_EPOCH = -1
    _C.OPTIM.WARMUP_TYPE = "linear"
    _C.OPTIM.WARMUP_CONS_LR = 1e-5
    _C.OPTIM.WARMUP_MIN_LR = 1e-5
    _C.OPTIM.WARMUP_RECOUNT = True

    _C.TRAIN = CN()
    _C.TRAIN.CHECKPOINT_FREQ = 0
    _C.TRAIN.PRINT_FREQ = 10
    _C.TRAIN.COUNT_ITER = "train_x"

    _C.TEST = CN()
    _C.TEST.EVALUATOR = "Classification"
    _C.TEST.PER_CLASS_RESULT = False
    _C.TEST.COMPUTE_CMAT = False
    _C.TEST.NO_TEST = False
    _C.TEST.SPLIT = "test"
    _C.TEST.FINAL_MODEL = "last_step"

    _C.TRAINER = CN()
    _C.TRAINER.NAME = ""
    return _C


def extend_cfg(cfg: CN) -> CN:
    """Add taidpt's keys to a Dassl-style config (ours or Dassl's own) and return it."""
    # Dassl declares PRETRAINED as a bool (ImageNet weights for its CNNs); for CLIP it names the
    # weights: an open_clip tag ("openai"), a file path, or "" for random initialisation.
    cfg.MODEL.BACKBONE.PRETRAINED = "openai"
    # A TorchScript weights file (OpenAI's RN50.pt) is read as data, without running its code. True loads it with
    # torch.jit.load instead, which runs the code it carries (it can write files): only for files you trust.
    cfg.MODEL.BACKBONE.ALLOW_TORCHSCRIPT_CODE = False

    cfg.DATASET.CLASS_LIST = ""  # "" = the dataset's own; a name (voc2007, coco2014, nuswide) or a file
    # "" = the dataset's default; coco_captions | localized_narratives | text | generated (no caption file)
    cfg.DATASET.CAPTION_SOURCE = ""
    cfg.DATASET.CAPTION_FILE = ""  # "" = the dataset's default path; relative paths resolve against ROOT
    cfg.DATASET.EXCLUDE_TEST_CAPTIONS = False  # drop COCO captions of test images (the reference keeps them)
    cfg.DATASET.CAPTION_IDS = ""  # COCO caption ids to train on (json list, one per line, or a pickled list); wins over CAPTIONS_PER_IMAGE
    cfg.DATASET.CAPTIONS_PER_IMAGE = 0  # COCO: k captions per image drawn with CAPTION_SAMPLE_SEED; 0 = every caption
    cfg.DATASET.CAPTION_SAMPLE_SEED = 0  # seed of that draw (fixed, not SEED: every training seed sees the same corpus)
    cfg.DATASET.GENERATED_SENTENCES = 10000  # CAPTION_SOURCE generated: sentences written from the class list
    cfg.DATASET.GENERATED_SEED = 0  # ... the generator's seed (not SEED: every training seed sees the same corpus)
    cfg.DATASET.GENERATED_MIX = (0.5, 0.35, 0.15)  # ... shares of sentences naming 1, 2, 3 classes
    cfg.DATASET.GENERATED_FREQUENCIES = ""  # ... file of "class, weight" lines (relative to ROOT); "" = equal
    cfg.DATASET.GENERATED_PAIRS = ""  # ... file of "class, class[, weight]" lines: classes seen together
    cfg.DATASET.CAPTION_CAP = -1  # per-class cap after rarest-class assignment; -1 = source default
    cfg.DATASET.ADD_TEMPLATES = True  # add the 89 template sentences per class
    cfg.DATASET.LEMMATIZER = "auto"  # auto | nltk | lemminflect
    cfg.DATASET.VAL_CAPTIONS = 0.0  # fraction of captions held out for model selection (best_val)
    cfg.DATASET.TEST_SPLIT = ""  # "" = the dataset's default test split
    cfg.DATASET.VOC_DIFFICULT = "negative"  # negative (reference) | ignore (official VOC protocol)
    cfg.DATASET.ANNOTATION = ""  # COCOFormat json / CSV file (relative to ROOT)
    cfg.DATASET.IMAGE_DIR = ""  # image folder for COCOFormat / CSV (relative to ROOT)
    cfg.DATASET.CSV_LABELS = "auto"  # per-class CSV values: auto | voc (-1 neg, 0 ignored) | binary (0 neg)
    cfg.DATASET.CACHE_DIR = ""  # "" = ~/.cache/taidpt (caption corpora and features)

    cfg.INPUT.EXIF_TRANSPOSE = False  # apply EXIF orientation tags (Dassl and the reference do not)

    cfg.TEST.THRESHOLD = 0.0  # CP/CR/CF1 also at merged score >= THRESHOLD (0 = sigmoid 0.5), besides top-3

    extend_image_cfg(cfg)  # the image-trained methods' data keys (taidpt/engine/image_config.py)
    return add_method_nodes(cfg)


def add_method_nodes(cfg: CN) -> CN:
    """Add the ``TRAINER.<node>`` of every registered method from its own declaration
    (:meth:`taidpt.methods.Method.config_defaults`). A node that exists already (CoOp's ``TRAINER.COOP``
    in a CoOp checkout) only gains the keys it lacks, so another plugin's values stay."""
    from taidpt.methods import get_method, method_names  # noqa: PLC0415 - the registry imports no engine module

    for name in method_names():
        method = get_method(name)
        defaults = method.config_defaults()
        if defaults is None:
            continue
        if method.node not in cfg.TRAINER:
            cfg.TRAINER[method.node] = CN()
        node = cfg.TRAINER[method.node]
        for key, value in defaults.items():
            if key not in node:
                node[key] = value
    return cfg


def get_cfg_default() -> CN:
    """Dassl-equivalent defaults extended with taidpt's keys (the core path's starting point)."""
    return extend_cfg(dassl_defaults())


def lookup(cfg: CN, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, CN) or part not in node:
            return None
        node = node[part]
    return node


def _ints_to_floats(cfg: CN, other: CN, prefix: str = "") -> None:
    """Turn integers in ``other`` into floats where ``cfg`` holds a float (``LR: 1``, ``... 20``).

    yacs refuses an int for a float key; the intent is never in doubt, so accept it.
    """
    for key, value in other.items():
        target = lookup(cfg, prefix + key)
        if isinstance(value, CN):
            _ints_to_floats(cfg, value, f"{prefix}{key}.")
        elif isinstance(target, float) and isinstance(value, int) and not isinstance(value, bool):
            other[key] = float(value)


def _coerce_opts(cfg: CN, opts: list[str]) -> list[str]:
    """``KEY 20`` -> ``KEY 20.0`` for float keys (same reason as :func:`_ints_to_floats`)."""
    out = list(opts)
    for i in range(0, len(out) - 1, 2):
        if isinstance(lookup(cfg, out[i]), float) and re.fullmatch(r"[+-]?\d+", str(out[i + 1]).strip()):
            out[i + 1] = f"{int(out[i + 1])}.0"
    return out


def _one_line(exc: Exception) -> str:
    """yacs's type-mismatch message (which dumps a whole config node) as one line naming the key."""
    text = str(exc)
    found = re.search(r"Type mismatch \((.*?) vs\. (.*?)\) with values .* for config key: (\S+)", text, re.S)
    if found:
        return f"{found.group(3)} has the wrong type: expected {_type_name(found.group(1))}, got {_type_name(found.group(2))}"
    return text.splitlines()[0] if text else type(exc).__name__


def _type_name(yacs_type: str) -> str:
    name = re.sub(r"<class '(?:[\w.]*\.)?(\w+)'>", r"\1", yacs_type)
    return "a mapping of keys" if name == "CfgNode" else name


class DuplicateKeyError(ValueError):
    """A yaml mapping gives one key twice; the message names the file, the line and the key."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, except that a key given twice in one mapping (nested ones too) is an error
    instead of the last value silently winning. ``path`` names the file in the message."""

    path = "<yaml>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            if key in first:
                raise DuplicateKeyError(f"{self.path}:{line}: key {key} is given twice in one mapping (first on "
                                        f"line {first[key]}); expected each key once")
            first[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, path: str) -> Any:
    """Parse yaml ``text`` read from ``path`` with :class:`UniqueKeyLoader` (duplicate keys refused)."""
    loader = UniqueKeyLoader(text)
    loader.path = path
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_cfg_file(cfg: CN, path: str) -> CN:
    """Parse one yaml config file, with one-line errors naming the file (and line) for what cannot be read."""
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder; expected a yaml config file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                         f"expected a UTF-8 yaml config file") from None
    try:
        loaded = type(cfg)(load_yaml(text, path))  # what yacs' load_cfg does, with our loader
    except DuplicateKeyError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{where}: malformed yaml ({problem}); expected KEY: VALUE mappings") from None
    except (AssertionError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a config mapping ({exc}); expected nested KEY: VALUE mappings "
                         "such as 'OPTIM: {LR: 0.001}'") from None
    return loaded


def merge_files_and_opts(cfg: CN, files: Iterable[str], opts: list[str] | None) -> CN:
    """Merge yaml files in order, then ``KEY VALUE`` pairs, with one-line errors for bad keys.

    Integers are accepted for float keys (``OPTIM.LR 1``, ``SPATIAL_SCALE_IMAGE 20``).
    """
    for path in files:
        if not path:
            continue
        other = read_cfg_file(cfg, path)
        try:
            _ints_to_floats(cfg, other)
            cfg.merge_from_other_cfg(other)
        except KeyError as exc:
            raise KeyError(f"{path}: {exc.args[0] if exc.args else exc}") from None
        except ValueError as exc:
            raise ValueError(f"{path}: {_one_line(exc)}") from None
    if opts:
        if len(opts) % 2:
            raise ValueError(f"trailing options must be KEY VALUE pairs, got an odd list: {opts}")
        try:
            cfg.merge_from_list(_coerce_opts(cfg, list(opts)))
        except AssertionError as exc:  # yacs asserts on unknown keys
            raise KeyError(f"{exc} (check the spelling; keys are listed in docs/configuration.md)") from None
        except ValueError as exc:
            raise ValueError(f"bad override in {' '.join(opts)}: {_one_line(exc)}") from None
    return cfg


def merge_saved_config(cfg: CN, path: str | os.PathLike) -> list[str]:
    """Merge a run's saved ``config.yaml`` into ``cfg`` (not frozen); returns the keys skipped because
    ``cfg`` lacks them (a run written by the other engine may carry keys this one does not know)."""
    saved = read_cfg_file(cfg, str(path))
    skipped: list[str] = []
    _merge_known(cfg, saved, "", skipped, str(path))
    return skipped


def _merge_known(cfg: CN, saved: CN, prefix: str, skipped: list[str], path: str) -> None:
    for key, value in saved.items():
        name = f"{prefix}{key}"
        if key not in cfg:
            skipped.append(name)
        elif isinstance(value, CN) and isinstance(cfg[key], CN):
            _merge_known(cfg[key], value, f"{name}.", skipped, path)
        else:
            cfg[key] = _saved_value(cfg[key], value, name, path)


def _saved_value(current: Any, value: Any, name: str, path: str) -> Any:
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if current is not None and value is not None and type(current) is not type(value):
        raise ValueError(f"{path}: {name} has type {type(value).__name__}, expected {type(current).__name__}")
    return value


def assemble_config(base: CN, *, saved: str | os.PathLike | None = None, files: Iterable[str] = (),
                    opts: list[str] | None = None, flags: Callable[[CN], None] | None = None) -> CN:
    """The one way a configuration is put together, frozen: ``base`` (the defaults) <- a run's saved
    ``config.yaml`` <- yaml ``files`` in order <- command-line ``flags`` <- ``KEY VALUE`` ``opts``."""
    cfg = base
    if saved is not None:
        merge_saved_config(cfg, saved)
    merge_files_and_opts(cfg, list(files), None)
    if flags is not None:
        flags(cfg)
    merge_files_and_opts(cfg, [], list(opts) if opts else None)
    cfg.freeze()
    return cfg
