"""Config keys of the image-prompting trainers (``DualCoOp``, ``CoOpMultiLabel``) and their data.

:func:`extend_image_cfg` is called by :func:`taidpt.engine.config.extend_cfg`, so the keys exist on both
engines. ``TRAINER.COOP`` is CoOp's own node (``N_CTX``, ``CSC``, ``CTX_INIT``, ``PREC``,
``CLASS_TOKEN_POSITION``): in a CoOp checkout it already exists and only the missing keys are
added, so CoOp's trainers keep their values. The defaults are DualCoOp's settings as the TaI-DPT
reference runs them (``configs/trainers/Caption_dual/rn101.yaml``, ``trainers/utils.py``).
"""

from __future__ import annotations

from typing import Any

from yacs.config import CfgNode as CN


def _add_missing(node: CN, values: dict[str, Any]) -> None:
    """Set each key that ``node`` does not hold yet (never overwrite another plugin's value)."""
    for key, value in values.items():
        if key not in node:
            node[key] = value


def extend_image_cfg(cfg: CN) -> CN:
    """Add the partial-label / few-shot data keys and the ``DUALCOOP`` and ``COOP`` trainer nodes."""
    cfg.DATASET.TRAIN_SPLIT = ""  # "" = trainval (VOC2007), train2014 (COCO2014), Train (NUS-WIDE)
    cfg.DATASET.TRAIN_ANNOTATION = ""  # training json / CSV for COCOFormat and CSV datasets
    cfg.DATASET.PARTIAL_PROPORTION = 1.0  # fraction of the training labels kept known (1 = all)
    cfg.DATASET.PARTIAL_LABEL_FILE = ""  # "" = OUTPUT_DIR/partial_labels.npz; reused when present (paths as OUTPUT_DIR)
    cfg.DATASET.LABEL_SEED = -1  # seed of the partial-label mask and the few-shot sample; -1 = SEED
    # DATASET.NUM_SHOTS (Dassl's key, -1 = all images) selects k labelled images per class.

    cfg.TRAINER.DUALCOOP = CN()
    cfg.TRAINER.DUALCOOP.N_CTX = 16
    cfg.TRAINER.DUALCOOP.CSC = True  # class-specific positive and negative contexts
    cfg.TRAINER.DUALCOOP.CTX_INIT = ""
    cfg.TRAINER.DUALCOOP.CLASS_TOKEN_POSITION = "end"
    cfg.TRAINER.DUALCOOP.PREC = "fp32"
    cfg.TRAINER.DUALCOOP.LOGIT_SCALE_INIT = 50.0  # learned as exp(temperature)
    cfg.TRAINER.DUALCOOP.SPATIAL_SCALE_INIT = 20.0  # learned as exp(spatial_T)
    cfg.TRAINER.DUALCOOP.LOSS = "asl"  # asl | bce | ranking, on partial targets (0 = unknown, ignored)
    cfg.TRAINER.DUALCOOP.LOSS_ON = "local"  # global | local | both
    cfg.TRAINER.DUALCOOP.ASL_GAMMA_NEG = 2.0
    cfg.TRAINER.DUALCOOP.ASL_GAMMA_POS = 1.0
    cfg.TRAINER.DUALCOOP.ASL_CLIP = 0.05
    cfg.TRAINER.DUALCOOP.MERGE_RATE = 0.0  # headline score = local only (the reference's "only_local")
    cfg.TRAINER.DUALCOOP.USE_POS_EMBED = False

    if "COOP" not in cfg.TRAINER:
        cfg.TRAINER.COOP = CN()
    _add_missing(cfg.TRAINER.COOP, {
        "N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp32", "CLASS_TOKEN_POSITION": "end",
        "LOGIT_SCALE": 4.0,  # s in s * cos (TaI-DPT's value; the ranking margin is 1)
        "SPATIAL_SCALE_IMAGE": 40.0,  # tau of the dense (local) score
        "LOSS": "ranking",  # ranking | bce | asl, on partial targets
        "LOSS_ON": "global",  # global (CoOp: the local branch reuses the global prompt) | both
        "MERGE_RATE": 1.0,  # headline score = global
        "USE_POS_EMBED": False,
    })
    return cfg
