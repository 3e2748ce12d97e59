"""The method registry: every method taidpt runs is one registered :class:`Method` class.

A method declares what the engine needs to run it; nothing outside ``taidpt/methods`` compares method
names, everything looks a method up (:func:`get_method`) and asks it. Methods import their networks inside
:meth:`Method.build_model`, so listing them (``train.py --help``) stays fast. Adding a method:
docs/methods.md.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from yacs.config import CfgNode

log = logging.getLogger("taidpt")

CAPTIONS, IMAGES = "captions", "images"  # what a method trains on (``Method.trains_on``)

# Settings every trained method's checkpoint records: resuming under other values is refused.
SHARED_TRAINING_KEYS = (
    "SEED", "MODEL.BACKBONE.NAME", "MODEL.BACKBONE.PRETRAINED", "DATALOADER.TRAIN_X.BATCH_SIZE",
    "OPTIM.NAME", "OPTIM.LR", "OPTIM.WEIGHT_DECAY", "OPTIM.MOMENTUM", "OPTIM.LR_SCHEDULER", "OPTIM.WARMUP_EPOCH",
    "OPTIM.WARMUP_TYPE", "OPTIM.WARMUP_CONS_LR", "OPTIM.STEPSIZE", "OPTIM.GAMMA",
)


class Method:
    """One method: its name, config node, model factory, training data, loss, checkpoint keys and scorer.

    Class attributes say what the method is; class methods take the merged config. Subclasses set
    ``name``, ``node`` and ``description`` at least.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()  # other spellings (CoOp's, the reference code's)
    node: ClassVar[str] = ""  # its settings live in TRAINER.<node>
    description: ClassVar[str] = ""
    trains_on: ClassVar[str | None] = None  # CAPTIONS, IMAGES, or None (nothing is trained)
    loss_key: ClassVar[str] = "LOSS"  # TRAINER.<node>.<loss_key> names the training loss

    # ------------------------------------------------------------------ what the engine asks
    @classmethod
    def trains(cls) -> bool:
        """Whether the method has prompts to train: an optimiser, checkpoints, ``--model-dir`` to evaluate."""
        return cls.trains_on is not None

    @classmethod
    def trains_on_images(cls) -> bool:
        """Whether training reads images, so that train-time image settings (augmentation, sampler) apply."""
        return cls.trains_on == IMAGES

    # ------------------------------------------------------------------ configuration
    @classmethod
    def config_defaults(cls) -> dict[str, Any] | None:
        """The keys and defaults of ``TRAINER.<node>`` (None: the node comes from elsewhere, e.g. a plugin)."""
        return None

    @classmethod
    def caption_cache_dtype(cls, cfg: CfgNode) -> str | None:
        """Storage dtype of the caption feature cache a caption-trained run uses, None for no cache."""
        return None

    @classmethod
    def report_settings(cls, cfg: CfgNode) -> dict[str, Any]:
        """Settings ``results.json`` records for a trained run of this method (e.g. a test-time scale)."""
        return {}

    @classmethod
    def settings(cls, cfg: CfgNode) -> CfgNode:
        """The method's own config node ``TRAINER.<node>``."""
        return cfg.TRAINER[cls.node]

    @classmethod
    def check_config(cls, cfg: CfgNode) -> None:
        """Refuse settings this method cannot honour (before anything is built or written)."""

    @classmethod
    def merge_rate(cls, cfg: CfgNode) -> float:
        """Weight of the global score in ``merged = w * global + (1 - w) * local``."""
        return float(cls.settings(cfg).MERGE_RATE)

    @classmethod
    def loss_name(cls, cfg: CfgNode) -> str:
        """The training loss's name (``TRAINER.<node>.LOSS``)."""
        return str(cls.settings(cfg)[cls.loss_key])

    @classmethod
    def training_keys(cls) -> tuple[str, ...]:
        """The config keys that define what a run computes; stored in every checkpoint."""
        return SHARED_TRAINING_KEYS

    @classmethod
    def generic_contexts(cls, cfg: CfgNode) -> bool:
        """Whether the learned contexts are shared by all classes (so a new class name can be embedded)."""
        settings = cls.settings(cfg)
        return not bool(settings.get("CSC", False))

    # ------------------------------------------------------------------ model
    @classmethod
    def build_model(cls, cfg: CfgNode, clip_model: Any, classnames: list[str] | tuple[str, ...]) -> Any:
        """The method's model around a frozen CLIP, for ``classnames``."""
        raise TypeError(f"method {cls.name} declares no model factory (build_model)")

    @classmethod
    def trainable_parameters(cls, model: Any) -> Any:
        """The parameters the optimiser updates (the prompts)."""
        return model.trainable_parameters()

    @classmethod
    def load_trained(cls, model: Any, state_dict: dict[str, Any]) -> None:
        """Put a checkpoint's ``state_dict`` into ``model``."""
        model.prompt_learner.load_reference_state(state_dict)

    @classmethod
    def scorer(cls, model: Any) -> Any:
        """The frozen image scorer that evaluation and export run (images in, logits out)."""
        return model.image_scorer()

    @classmethod
    def describe_model(cls, model: Any) -> dict[str, Any]:
        """What ``results.json`` reports about a trained model beyond its scores (e.g. learned scales)."""
        return {}

    @classmethod
    def checkpoint_meta(cls, cfg: CfgNode, classnames: list[str] | tuple[str, ...]) -> dict[str, Any]:
        """The prompt settings a checkpoint must agree on with the model that loads it (primitives)."""
        settings = cls.settings(cfg)
        return {"trainer": cls.name, "n_ctx": int(settings.N_CTX) if not settings.CTX_INIT else None,
                "csc": bool(settings.CSC), "class_token_position": settings.CLASS_TOKEN_POSITION}


_METHODS: dict[str, type[Method]] = {}
_ALIASES: dict[str, str] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add ``cls`` to the registry under its ``name`` and ``aliases``."""
    if not cls.name or not cls.node:
        raise ValueError(f"{cls.__name__}: a method needs a name and a config node")
    for key in (cls.name, *cls.aliases):
        owner = _METHODS.get(key) or _METHODS.get(_ALIASES.get(key, ""))
        if owner is not None and owner is not cls:
            raise ValueError(f"method name {key!r} is taken by {owner.__name__}")
    _METHODS[cls.name] = cls
    _ALIASES.update({alias: cls.name for alias in cls.aliases})
    return cls


def unregister(name: str) -> None:
    """Remove a method (tests that register a toy method clean up with this)."""
    cls = _METHODS.pop(name, None)
    if cls is not None:
        for alias in cls.aliases:
            _ALIASES.pop(alias, None)


def method_names() -> tuple[str, ...]:
    """The registered methods' names, in registration order."""
    return tuple(_METHODS)


def canonical_name(name: str) -> str:
    """A registered name for ``name`` (aliases resolved, with a log line); unknown names are refused."""
    if name in _METHODS:
        return name
    if name in _ALIASES:
        log.info("trainer %s is run as %s", name, _ALIASES[name])
        return _ALIASES[name]
    raise ValueError(f"unknown trainer {name!r}: expected one of {', '.join(_METHODS)}")


def get_method(name: str) -> type[Method]:
    """The method registered as ``name`` (or one of its aliases)."""
    return _METHODS[canonical_name(name)]


__all__ = ["CAPTIONS", "IMAGES", "Method", "SHARED_TRAINING_KEYS", "canonical_name", "get_method", "method_names",
           "register", "unregister"]
