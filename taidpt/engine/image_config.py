"""Data keys of the image-trained methods (``DualCoOp``, ``CoOpMultiLabel``): the training split, partial
labels and the label seed. :func:`extend_image_cfg` is called by :func:`taidpt.engine.config.extend_cfg`,
so the keys exist on both engines; the methods' own ``TRAINER.<node>`` keys live in their method files.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN


def extend_image_cfg(cfg: CN) -> CN:
    """Add the partial-label / few-shot data keys (the methods declare their own nodes)."""
    cfg.DATASET.TRAIN_SPLIT = ""  # "" = trainval (VOC2007), train2014 (COCO2014), Train (NUS-WIDE)
    cfg.DATASET.TRAIN_ANNOTATION = ""  # training json / CSV for COCOFormat and CSV datasets
    cfg.DATASET.PARTIAL_PROPORTION = 1.0  # fraction of the training labels kept known (1 = all)
    cfg.DATASET.PARTIAL_LABEL_FILE = ""  # "" = OUTPUT_DIR/partial_labels.npz; reused when present (paths as OUTPUT_DIR)
    cfg.DATASET.LABEL_SEED = -1  # seed of the partial-label mask and the few-shot sample; -1 = SEED
    # DATASET.NUM_SHOTS (Dassl's key, -1 = all images) selects k labelled images per class.
    return cfg
