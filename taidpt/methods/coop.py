"""Few-shot CoOp for multi-label recognition: one prompt set trained on k labelled images per class."""

from __future__ import annotations

from typing import Any

from yacs.config import CfgNode

from taidpt.methods.image_prompting import PROMPT_KEYS, ImagePromptMethod
from taidpt.methods.registry import register


@register
class CoOpMultiLabel(ImagePromptMethod):
    name = "CoOpMultiLabel"
    node = "COOP"
    description = "CoOp for multi-label images: learned contexts trained on (few-shot) labelled images"
    branches = ("global", "both")
    node_keys = (*PROMPT_KEYS, "LOGIT_SCALE")

    @classmethod
    def build_model(cls, cfg: CfgNode, clip_model: Any, classnames: list[str] | tuple[str, ...]) -> Any:
        from taidpt.networks.image_prompt_models import CoOpModel

        t = cls.settings(cfg)
        return CoOpModel(clip_model, list(classnames), train_local=t.LOSS_ON == "both", logit_scale=float(t.LOGIT_SCALE),
                         tau_image=float(t.SPATIAL_SCALE_IMAGE), **cls.prompt_settings(cfg))
