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
    def config_defaults(cls) -> dict[str, Any]:
        # DualCoOp's settings as the TaI-DPT reference runs them (Caption_dual/rn101.yaml, trainers/utils.py)
        return {
            "N_CTX": 16,
            "CSC": True,  # class-specific positive and negative contexts
            "CTX_INIT": "",
            "CLASS_TOKEN_POSITION": "end",
            "PREC": "fp32",
            "LOGIT_SCALE_INIT": 50.0,  # learned as exp(temperature)
            "SPATIAL_SCALE_INIT": 20.0,  # learned as exp(spatial_T)
            "LOSS": "asl",  # asl | bce | ranking, on partial targets (0 = unknown, ignored)
            "LOSS_ON": "local",  # global | local | both
            "ASL_GAMMA_NEG": 2.0,
            "ASL_GAMMA_POS": 1.0,
            "ASL_CLIP": 0.05,
            "MERGE_RATE": 0.0,  # headline score = local only (the reference's "only_local")
            "USE_POS_EMBED": False,
        }

    @classmethod
    def build_model(cls, cfg: CfgNode, clip_model: Any, classnames: list[str] | tuple[str, ...]) -> Any:
        from taidpt.networks.image_prompt_models import DualCoOpModel

        t = cls.settings(cfg)
        return DualCoOpModel(clip_model, list(classnames), cls.prompt_settings(cfg),
                             logit_scale_init=float(t.LOGIT_SCALE_INIT), spatial_scale_init=float(t.SPATIAL_SCALE_INIT))

    @classmethod
    def describe_model(cls, model: Any) -> dict[str, Any]:
        scale, tau = (v.item() for v in model.prompt_learner.scales())
        return {"learned_scales": {"logit_scale": round(scale, 6), "spatial_scale": round(tau, 6)}}
