"""The one way a method's model is built from a configuration: CLIP loaded and its input size checked,
the method's model made, a checkpoint's prompts checked against the run and loaded.

Training (:class:`taidpt.engine.runner.Runner`), evaluation of a run folder and the export
(:class:`taidpt.engine.run.Run`) all build through here. The rebuilt model says where it came from
(:meth:`TrainedModel.provenance`) and how its images are preprocessed (:attr:`TrainedModel.preprocess`).
Torch loads inside the functions, so importing this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from yacs.config import CfgNode

from taidpt.engine.checkpoint import check_meta
from taidpt.methods import Method


def load_backbone(cfg: CfgNode, device: Any = "cpu") -> tuple[Any, Any]:
    """``(clip_model, clip_info)`` of ``MODEL.BACKBONE`` on ``device``; refuses an ``INPUT.SIZE`` it cannot take."""
    from taidpt.clip.loader import load_clip  # noqa: PLC0415 - torch loads with the model
    from taidpt.engine.checks import check_image_size  # noqa: PLC0415

    clip_model, info = load_clip(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PRETRAINED, device=device,
                                 allow_torchscript_code=cfg.MODEL.BACKBONE.ALLOW_TORCHSCRIPT_CODE)
    check_image_size(cfg, info)
    return clip_model, info


def load_prompts(method: type[Method], model: Any, ckpt: dict[str, Any], classnames: Sequence[str], backbone: str,
                 path: Path | str) -> None:
    """Load a checkpoint's learned prompts into ``model`` after checking it was trained for these classes
    on this backbone."""
    check_meta(ckpt.get("meta"), {"classnames": list(classnames), "backbone": backbone}, path)
    method.load_trained(model, ckpt["state_dict"])


def provenance(cfg: CfgNode, method: type[Method], clip_info: Any) -> dict[str, str]:
    """Where a model comes from: method, dataset, backbone, its weights and the taidpt version."""
    from taidpt import __version__  # noqa: PLC0415

    return {"trainer": method.name, "dataset": str(cfg.DATASET.NAME), "backbone": clip_info.name,
            "weights": clip_info.source, "pretrained": str(cfg.MODEL.BACKBONE.PRETRAINED),
            "taidpt_version": __version__}


@dataclass
class TrainedModel:
    """A run's model rebuilt on a device, with where its weights came from and its preprocessing."""

    model: Any
    method: type[Method]
    classnames: list[str]
    clip_info: Any
    checkpoint: Path | None  # None for a method that trains nothing
    epoch: int | None
    notes: list[str]
    cfg: CfgNode | None = field(default=None, repr=False)

    def scorer(self) -> Any:
        """The frozen image scorer (images in; merged, global and local logits out)."""
        return self.method.scorer(self.model)

    @property
    def preprocess(self) -> Any:
        """The test-time :class:`~taidpt.images.preprocess.PreprocessConfig` of ``INPUT.*``."""
        from taidpt.engine.checks import preprocess_config  # noqa: PLC0415

        return preprocess_config(self.cfg)

    def provenance(self) -> dict[str, str]:
        """:func:`provenance` of this model's configuration."""
        return provenance(self.cfg, self.method, self.clip_info)


def build_model(cfg: CfgNode, method: type[Method], classnames: list[str], ckpt: dict[str, Any] | None,
                path: Path | None, device: str = "cpu") -> TrainedModel:
    """The method's model with frozen CLIP weights of ``MODEL.BACKBONE`` and, given, a checkpoint's prompts.

    Random CLIP weights (``PRETRAINED ''``) are rebuilt from ``SEED`` as the run drew them; an
    unseeded run's cannot be, and is refused.
    """
    import torch  # noqa: PLC0415

    from taidpt.clip.loader import RANDOM_WEIGHTS  # noqa: PLC0415
    from taidpt.utils.seeding import is_seeded, set_random_seed  # noqa: PLC0415

    notes: list[str] = []
    pretrained = str(cfg.MODEL.BACKBONE.PRETRAINED)
    if pretrained.strip().lower() in RANDOM_WEIGHTS:
        if not is_seeded(cfg.SEED):
            raise ValueError("the run used random CLIP weights (MODEL.BACKBONE.PRETRAINED '') without a seed, so "
                             "they cannot be rebuilt: set MODEL.BACKBONE.PRETRAINED to a weights file")
        set_random_seed(int(cfg.SEED))
        notes.append(f"random CLIP weights rebuilt from SEED {int(cfg.SEED)}: scores are chance level")
    clip_model, info = load_backbone(cfg, "cpu")
    with torch.no_grad():
        model = method.build_model(cfg, clip_model, classnames)
        if ckpt is not None:
            load_prompts(method, model, ckpt, classnames, info.name, path)
    model = model.to(device).eval()
    epoch = int(ckpt.get("epoch", 0)) if ckpt is not None else None
    return TrainedModel(model, method, classnames, info, path, epoch, notes, cfg)
