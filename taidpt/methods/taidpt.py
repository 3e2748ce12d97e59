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
    "DATASET.GENERATED_SENTENCES", "DATASET.GENERATED_SEED", "DATASET.GENERATED_MIX", "DATASET.GENERATED_FREQUENCIES",
    "DATASET.GENERATED_PAIRS",
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
    def config_defaults(cls) -> dict[str, Any]:
        return {
            "N_CTX": 16,
            "CSC": False,
            "CTX_INIT": "",
            "CLASS_TOKEN_POSITION": "end",
            "PREC": "fp32",  # CoOp's key, accepted; taidpt always computes in fp32 (other values are logged)
            "LOGIT_SCALE": 4.0,
            "SPATIAL_SCALE_TEXT": 50.0,
            "SPATIAL_SCALE_IMAGE": 40.0,
            "MERGE_RATE": 0.5,
            "LOSS": "double_ranking",
            "USE_POS_EMBED": False,  # the reference switches the pool's position embedding off
            "CAPTION_CACHE": True,  # encode each caption once and reuse its features
            "CACHE_DTYPE": "fp32",  # fp32 | fp16 storage of cached caption features
            "TRIM_TOKENS": True,  # cut sequences to the longest real length (exact, causal)
            "SHARED_PREFIX": True,  # encode the common SOS + generic-context prefix once (exact)
        }

    @classmethod
    def caption_cache_dtype(cls, cfg: CfgNode) -> str | None:
        t = cls.settings(cfg)
        return str(t.CACHE_DTYPE) if t.CAPTION_CACHE else None

    @classmethod
    def report_settings(cls, cfg: CfgNode) -> dict[str, Any]:
        return {"spatial_scale_image": float(cls.settings(cfg).SPATIAL_SCALE_IMAGE)}

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

        return TaIDPTModel(clip_model, list(classnames), cls.prompt_settings(cfg))

    @classmethod
    def prompt_settings(cls, cfg: CfgNode) -> Any:
        """The model's :class:`~taidpt.networks.model.PromptSettings`, built once from ``TRAINER.TAIDPT``."""
        from taidpt.networks.model import PromptSettings

        t = cls.settings(cfg)
        return PromptSettings(
            n_ctx=int(t.N_CTX), csc=bool(t.CSC), ctx_init=t.CTX_INIT, class_token_position=t.CLASS_TOKEN_POSITION,
            logit_scale=float(t.LOGIT_SCALE), tau_text=float(t.SPATIAL_SCALE_TEXT),
            tau_image=float(t.SPATIAL_SCALE_IMAGE), merge_rate=float(t.MERGE_RATE),
            use_pos_embed=bool(t.USE_POS_EMBED), trim_tokens=bool(t.TRIM_TOKENS), shared_prefix=bool(t.SHARED_PREFIX))

    @classmethod
    def trainable_parameters(cls, model: Any) -> Any:
        return model.prompt_learner.parameters()

    @classmethod
    def checkpoint_meta(cls, cfg: CfgNode, classnames: list[str] | tuple[str, ...]) -> dict[str, Any]:
        meta = super().checkpoint_meta(cfg, classnames)
        meta.pop("trainer")  # the reference layout's meta, as earlier taidpt versions wrote it
        return meta
