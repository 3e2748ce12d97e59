"""Few-shot CoOp for multi-label recognition: one prompt set trained on k labelled images per class."""

from __future__ import annotations

import dataclasses
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
    def config_defaults(cls) -> dict[str, Any]:
        # TRAINER.COOP is CoOp's own node: in a CoOp checkout only the keys it lacks are added
        return {
            "N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp32", "CLASS_TOKEN_POSITION": "end",
            "LOGIT_SCALE": 4.0,  # s in s * cos (TaI-DPT's value; the ranking margin is 1)
            "SPATIAL_SCALE_IMAGE": 40.0,  # tau of the dense (local) score
            "LOSS": "ranking",  # ranking | bce | asl, on partial targets
            "LOSS_ON": "global",  # global (CoOp: the local branch reuses the global prompt) | both
            "MERGE_RATE": 1.0,  # headline score = global
            "USE_POS_EMBED": False,
        }

    @classmethod
    def build_model(cls, cfg: CfgNode, clip_model: Any, classnames: list[str] | tuple[str, ...]) -> Any:
        from taidpt.networks.image_prompt_models import CoOpModel

        t = cls.settings(cfg)
        settings = dataclasses.replace(cls.prompt_settings(cfg), logit_scale=float(t.LOGIT_SCALE),
                                       tau_image=float(t.SPATIAL_SCALE_IMAGE))
        return CoOpModel(clip_model, list(classnames), settings, train_local=t.LOSS_ON == "both")
