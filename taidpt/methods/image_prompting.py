"""What the methods that tune prompts on labelled images share (DualCoOp, few-shot CoOp).

They train on the dataset's training images (optionally few-shot, optionally with a fraction of
labels kept), put their loss on the branches they declare, and select the last epoch: there is no
held-out image split, and selecting on test images is not allowed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from yacs.config import CfgNode

from taidpt.methods.registry import IMAGES, SHARED_TRAINING_KEYS, Method

_DATA_KEYS = ("INPUT.SIZE", "INPUT.TRANSFORMS", "INPUT.RRCROP_SCALE", "INPUT.CUTOUT_N", "INPUT.CUTOUT_LEN",
              "DATASET.CLASS_LIST", "DATASET.TRAIN_SPLIT", "DATASET.TRAIN_ANNOTATION", "DATASET.PARTIAL_PROPORTION",
              "DATASET.LABEL_SEED", "DATASET.NUM_SHOTS")
PROMPT_KEYS = ("N_CTX", "CSC", "CTX_INIT", "CLASS_TOKEN_POSITION", "LOSS", "LOSS_ON")


class ImagePromptMethod(Method):
    """A method whose prompts are trained on labelled images."""

    trains_on = IMAGES
    branches: ClassVar[tuple[str, ...]] = ("global", "both")  # where LOSS_ON may put the loss
    node_keys: ClassVar[tuple[str, ...]] = PROMPT_KEYS  # TRAINER.<node> keys that define a run

    @classmethod
    def training_keys(cls) -> tuple[str, ...]:
        return (*SHARED_TRAINING_KEYS, *_DATA_KEYS, *(f"TRAINER.{cls.node}.{k}" for k in cls.node_keys))

    @classmethod
    def check_config(cls, cfg: CfgNode) -> None:
        from taidpt.images.train_data import augment_config
        from taidpt.networks.partial_losses import PARTIAL_LOSSES

        node = cls.settings(cfg)
        if cfg.TEST.FINAL_MODEL != "last_step":
            raise ValueError(f"TEST.FINAL_MODEL must be last_step for {cls.name}, got {cfg.TEST.FINAL_MODEL!r}: there "
                             f"is no held-out image split, and selecting on test images is not allowed")
        if node.LOSS not in PARTIAL_LOSSES:
            raise ValueError(f"TRAINER.{cls.node}.LOSS must be one of {', '.join(PARTIAL_LOSSES)}, got {node.LOSS!r}")
        if node.LOSS_ON not in cls.branches:
            raise ValueError(f"TRAINER.{cls.node}.LOSS_ON must be one of {', '.join(cls.branches)}, "
                             f"got {node.LOSS_ON!r}")
        if not 0.0 < float(cfg.DATASET.PARTIAL_PROPORTION) <= 1.0:
            raise ValueError(f"DATASET.PARTIAL_PROPORTION must be in (0, 1], got {cfg.DATASET.PARTIAL_PROPORTION}")
        if int(cfg.DATASET.NUM_SHOTS) == 0 or int(cfg.DATASET.NUM_SHOTS) < -1:
            raise ValueError(f"DATASET.NUM_SHOTS must be -1 (all images) or >= 1, got {cfg.DATASET.NUM_SHOTS}")
        augment_config(cfg)  # refuses unknown INPUT.TRANSFORMS and bad crop scales

    @classmethod
    def prompt_settings(cls, cfg: CfgNode) -> Any:
        """The :class:`~taidpt.networks.model.PromptSettings` both image-prompt models take from ``TRAINER.<node>``."""
        from taidpt.networks.model import PromptSettings

        t = cls.settings(cfg)
        return PromptSettings(n_ctx=int(t.N_CTX), csc=bool(t.CSC), ctx_init=t.CTX_INIT,
                              class_token_position=t.CLASS_TOKEN_POSITION, merge_rate=float(t.MERGE_RATE),
                              use_pos_embed=bool(t.USE_POS_EMBED), trim_tokens=True, shared_prefix=True)
