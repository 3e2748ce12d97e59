"""DualCoOp: positive and negative prompt pairs with learned logit and spatial scales, trained on
images with partial labels."""

from __future__ import annotations

from typing import Any

from yacs.config import CfgNode

from taidpt.methods.image_prompting import PROMPT_KEYS, ImagePromptMethod
from taidpt.methods.registry import register


@register
class DualCoOp(ImagePromptMethod):
    name = "DualCoOp"
    aliases = ("Caption_dual",)
    node = "DUALCOOP"
    description = "DualCoOp: dual (positive/negative) prompts trained on labelled images, partial labels allowed"
    branches = ("global", "local", "both")
    node_keys = (*PROMPT_KEYS, "LOGIT_SCALE_INIT", "SPATIAL_SCALE_INIT", "ASL_GAMMA_NEG", "ASL_GAMMA_POS", "ASL_CLIP")

    @classmethod
    def build_model(cls, cfg: CfgNode, clip_model: Any, classnames: list[str] | tuple[str, ...]) -> Any:
        from taidpt.networks.image_prompt_models import DualCoOpModel

        t = cls.settings(cfg)
        return DualCoOpModel(clip_model, list(classnames), logit_scale_init=float(t.LOGIT_SCALE_INIT),
                             spatial_scale_init=float(t.SPATIAL_SCALE_INIT), **cls.prompt_settings(cfg))

    @classmethod
    def describe_model(cls, model: Any) -> dict[str, Any]:
        scale, tau = (v.item() for v in model.prompt_learner.scales())
        return {"learned_scales": {"logit_scale": round(scale, 6), "spatial_scale": round(tau, 6)}}
