"""Dassl trainers ``DualCoOp`` and ``CoOpMultiLabel``: prompts learned from labelled images.

Thin adapters like ``trainers/taidpt.py``: every hook delegates to the core runner
(``taidpt.engine.image_runner.ImagePromptRunner``, chosen by ``taidpt.engine.runner.runner_class``), so the
Dassl path and ``train.py --engine core`` share the training images, partial labels, few-shot
sample, augmentation, loader order, model, loss, schedule, checkpoints and metrics, and give the
same numbers for a seed. The hooks are TaI-DPT's (``before_train`` builds the loader,
``forward_backward`` takes the core's loss, ``after_epoch`` writes checkpoints, ``test`` writes
``results.json`` and ``predictions.npz``); only the core runner behind them differs.

The training images come from the dataset's training split read by the core (not from a Dassl
``DatasetBase.train_x``), as the caption corpus does for TaI-DPT: the registered dataset classes
(``datasets/taidpt_datasets.py``) stay test-set readers, and the training set is identical on both
engines by construction. Import this module once (``import trainers.image_prompting``).
"""

from __future__ import annotations

from dassl.engine import TRAINER_REGISTRY

from .taidpt import TaIDPT


@TRAINER_REGISTRY.register()
class DualCoOp(TaIDPT):
    """DualCoOp: class-specific positive/negative prompts trained on partially labelled images."""

    kind = "DualCoOp"


@TRAINER_REGISTRY.register()
class CoOpMultiLabel(TaIDPT):
    """CoOp for multi-label recognition: generic prompts trained on few labelled images."""

    kind = "CoOpMultiLabel"
