"""Every seed recipe of taidpt: which generator each random draw uses, and what it is keyed by.

Each draw has its own small generator keyed by what it is about (seed, epoch, image index, ...), so it does
not depend on what ran before, on the number of DataLoader workers or on a resume. One named function per
recipe keeps them auditable; ``tests/test_seeding.py`` pins their values. A negative run seed means
unseeded, as in CoOp (:func:`is_seeded`), and the keyed recipes then use 0 (:func:`seed_or_zero`). The
recipes that seed torch import it when called, so numpy-only callers never load it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


# ----------------------------------------------------------------------------- the run seed
def is_seeded(seed: int) -> bool:
    """Whether a run seed fixes the random numbers: a negative seed means unseeded (CoOp's rule)."""
    return int(seed) >= 0


def seed_or_zero(seed: int) -> int:
    """The number a recipe keys its generator with: the seed itself, or 0 for an unseeded run.

    An unseeded run still orders its captions, splits its validation captions, augments, samples
    and masks with its own generators; drawing them as seed 0 keeps those reproducible.
    """
    return int(seed) if is_seeded(seed) else 0


def label_seed(configured: int, seed: int) -> int:
    """The seed of the partial-label mask and the few-shot sample: ``DATASET.LABEL_SEED`` when set
    (non-negative), else the run seed (0 when unseeded).

    A separate seed lets runs with different prompt seeds share one mask and one few-shot subset.
    """
    return int(configured) if is_seeded(configured) else seed_or_zero(seed)


def set_random_seed(seed: int) -> None:
    """Seed Python, numpy and torch (all devices), as Dassl's ``set_random_seed`` does.

    The global generators feed what has no recipe of its own (the prompt initialisation, random
    CLIP weights); a run calls this only when :func:`is_seeded`.
    """
    import torch  # noqa: PLC0415 - this module stays importable without torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


# ----------------------------------------------------------------------------- training order and data
def epoch_order_seed(seed: int, epoch: int) -> int:
    """The torch seed of the training order of ``epoch``: a pure function of ``(seed, epoch)``.

    Keyed by the epoch, not drawn from a running stream, so a run resumed at epoch ``e`` sees
    exactly the batches an uninterrupted run sees, and no global generator is consumed.
    """
    return (seed_or_zero(seed) * 1_000_003 + int(epoch)) % (2**63 - 1)


def epoch_order_generator(seed: int, epoch: int) -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`epoch_order_seed` (caption and training-image order)."""
    import torch  # noqa: PLC0415 - this module stays importable without torch

    g = torch.Generator()
    g.manual_seed(epoch_order_seed(seed, epoch))
    return g


def validation_split_rng(seed: int) -> np.random.Generator:
    """The generator of the held-out caption split (``DATASET.VAL_CAPTIONS``): a function of the
    run seed only (offset by the constant 7919), so every epoch and a resumed run hold out the same
    captions."""
    return np.random.default_rng(seed_or_zero(seed) + 7919)


def augmentation_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one image's augmentation: a function of ``(seed, epoch, index)`` only.

    An image's pixels then do not depend on DataLoader workers, batch composition or what ran
    before, and a resumed run sees the same pixels as an uninterrupted one.
    """
    return np.random.default_rng(np.random.SeedSequence([seed_or_zero(seed), int(epoch), int(index)]))


def few_shot_rng(seed: int, k: int) -> np.random.Generator:
    """The generator of the few-shot sample's image order: a function of ``(label seed, k)``, so
    a run (or a resumed one) with the same label seed and shot count trains on the same images."""
    return np.random.default_rng(np.random.SeedSequence([seed_or_zero(seed), int(k)]))


def partial_mask_rng(seed: int, proportion: float) -> np.random.Generator:
    """The generator of a partial-label mask: a function of ``(label seed, proportion)`` only
    (the proportion in millionths), so every run with that setting hides the same labels."""
    return np.random.default_rng(
        np.random.SeedSequence([seed_or_zero(seed), int(round(float(proportion) * 1_000_000))]))


def caption_sample_rng(seed: int) -> np.random.Generator:
    """The generator of the COCO captions-per-image draw, seeded with ``DATASET.CAPTION_SAMPLE_SEED``
    (not ``SEED``): every training seed then sees the same caption corpus, and one corpus cache."""
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- evaluation
def loader_generator(seed: int) -> torch.Generator:
    """The explicitly seeded ``torch.Generator`` of a test loader.

    The runners pass :func:`seed_or_zero` of the run seed, so the loader draws the same numbers
    (its workers' seeds) on every code path, the Dassl plugin and the core runner alike.
    """
    import torch  # noqa: PLC0415 - this module stays importable without torch

    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator


def synthetic_images_rng(seed: int) -> np.random.Generator:
    """The generator of the export parity check's synthetic images (``seed`` 0 by default), so a
    check run twice compares the same inputs."""
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- the offline demo
def demo_item_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of a demo stream (pretraining pairs, captions, test images).

    Seeded with ``SeedSequence(seed, spawn_key=(stream, index))``: streams with different spawn
    keys are statistically independent, so the test images are never drawn from the pretraining
    pool, and item ``i`` does not depend on how many items a call generates.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream, index))))


def seed_demo_clip_init(seed: int) -> None:
    """Seed torch's global generator (``torch.manual_seed``) before the demo CLIP is built, so its
    initial weights are a function of the pretraining seed alone."""
    import torch  # noqa: PLC0415 - this module stays importable without torch

    torch.manual_seed(seed)


def demo_pretraining_order_rng(seed: int) -> np.random.Generator:
    """The generator of the demo pretraining's batch order (a fresh permutation of the pool per
    pass), keyed by the pretraining seed and kept apart from torch's global generator."""
    return np.random.Generator(np.random.PCG64(seed))


__all__ = [
    "augmentation_rng",
    "caption_sample_rng",
    "demo_item_rng",
    "demo_pretraining_order_rng",
    "epoch_order_generator",
    "epoch_order_seed",
    "few_shot_rng",
    "is_seeded",
    "label_seed",
    "loader_generator",
    "partial_mask_rng",
    "seed_demo_clip_init",
    "seed_or_zero",
    "set_random_seed",
    "synthetic_images_rng",
    "validation_split_rng",
]
