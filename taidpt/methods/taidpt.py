"""TaI-DPT: double-grained prompts (global and local) tuned on captions as stand-ins for images."""

from __future__ import annotations

from typing import Any

from yacs.config import CfgNode

from taidpt.methods.registry import CAPTIONS, SHARED_TRAINING_KEYS, Method, register

# What a caption-trained run computes beyond the shared keys. OPTIM.MAX_EPOCH may change (extending
# a run), and the exact speed switches (CAPTION_CACHE, TRIM_TOKENS, SHARED_PREFIX) may too.
CAPTION_TRAINING_KEYS = (
    "TRAINER.TAIDPT.N_CTX", "TRAINER.TAIDPT.CSC", "TRAINER.TAIDPT.CTX_INIT", "TRAINER.TAIDPT.CLASS_TOKEN_POSITION",
    "TRAINER.TAIDPT.LOGIT_SCALE", "TRAINER.TAIDPT.SPATIAL_SCALE_TEXT", "TRAINER.TAIDPT.LOSS",
    "DATASET.CLASS_LIST", "DATASET.CAPTION_FILE", "DATASET.CAPTION_SOURCE", "DATASET.CAPTION_CAP",
    "DATASET.EXCLUDE_TEST_CAPTIONS", "DATASET.ADD_TEMPLATES", "DATASET.LEMMATIZER", "DATASET.VAL_CAPTIONS",
    "DATASET.CAPTION_IDS", "DATASET.CAPTIONS_PER_IMAGE", "DATASET.CAPTION_SAMPLE_SEED",
)


@register
class TaIDPT(Method):
    name = "TaIDPT"
    aliases = ("Caption_distill_double",)
    node = "TAIDPT"
    description = ("TaI-DPT: global and local prompt contexts trained on captions (texts as images), "
                   "tested on images; the paper's method")
    trains_on = CAPTIONS

    @classmethod
    def check_config(cls, cfg: CfgNode) -> None:
        if cfg.TEST.FINAL_MODEL == "best_val" and float(cfg.DATASET.VAL_CAPTIONS) <= 0:
            raise ValueError("TEST.FINAL_MODEL best_val needs held-out captions: set DATASET.VAL_CAPTIONS > 0 "
                             "(selecting on test images is what the reference did, and is not allowed here)")

    @classmethod
    def training_keys(cls) -> tuple[str, ...]:
        return (*SHARED_TRAINING_KEYS, *CAPTION_TRAINING_KEYS)

    @classmethod
    def build_model(cls, cfg: CfgNode, clip_model: Any, classnames: list[str] | tuple[str, ...]) -> Any:
        from taidpt.networks.model import TaIDPTModel

        t = cfg.TRAINER.TAIDPT
        return TaIDPTModel(
            clip_model, list(classnames), n_ctx=int(t.N_CTX), csc=bool(t.CSC), ctx_init=t.CTX_INIT,
            class_token_position=t.CLASS_TOKEN_POSITION, logit_scale=float(t.LOGIT_SCALE),
            tau_text=float(t.SPATIAL_SCALE_TEXT), tau_image=float(t.SPATIAL_SCALE_IMAGE),
            merge_rate=float(t.MERGE_RATE), use_pos_embed=bool(t.USE_POS_EMBED), trim_tokens=bool(t.TRIM_TOKENS),
            shared_prefix=bool(t.SHARED_PREFIX),
        )

    @classmethod
    def trainable_parameters(cls, model: Any) -> Any:
        return model.prompt_learner.parameters()

    @classmethod
    def checkpoint_meta(cls, cfg: CfgNode, classnames: list[str] | tuple[str, ...]) -> dict[str, Any]:
        meta = super().checkpoint_meta(cfg, classnames)
        meta.pop("trainer")  # the reference layout's meta, as earlier taidpt versions wrote it
        return meta
