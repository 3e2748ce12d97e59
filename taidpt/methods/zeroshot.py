"""The zero-shot CLIP baseline with dense scores: global, dense-local and merged, nothing trained."""

from __future__ import annotations

from typing import Any

from yacs.config import CfgNode

from taidpt.methods.registry import Method, register


@register
class ZeroshotCLIPDense(Method):
    name = "ZeroshotCLIPDense"
    # CoOp registers its own "ZeroshotCLIP" in a CoOp checkout; the alias serves the core engine only.
    aliases = ("ZeroshotCLIP", "ZeroshotCLIP_dense")
    node = "ZEROSHOT"
    description = ("zero-shot CLIP: the template 'a photo of a {}.', CLIP's own logit scale, attention pooling "
                   "with positional embedding, plus dense-local and merged scores")
    trains_on = None

    @classmethod
    def config_defaults(cls) -> dict[str, Any]:
        return {"TEMPLATE": "a photo of a {}.", "MERGE_RATE": 0.5, "USE_POS_EMBED": True}

    @classmethod
    def generic_contexts(cls, cfg: CfgNode) -> bool:
        return True

    @classmethod
    def build_model(cls, cfg: CfgNode, clip_model: Any, classnames: list[str] | tuple[str, ...]) -> Any:
        from taidpt.networks.model import ZeroShotDenseModel

        z = cfg.TRAINER.ZEROSHOT
        return ZeroShotDenseModel(clip_model, list(classnames), template=z.TEMPLATE, merge_rate=float(z.MERGE_RATE),
                                  use_pos_embed=bool(z.USE_POS_EMBED))
