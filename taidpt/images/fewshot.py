"""A deterministic multi-label few-shot sampler: at least ``k`` labelled images per class.

Single-label few-shot sampling (CoOp, Dassl's ``generate_fewshot_dataset``) draws ``k`` images of
each class. With several labels per image that is ill-defined: an image drawn for "person" is also
a "dog" image. The rule used here:

1. shuffle the image order with a generator seeded by ``seed`` (and ``k``);
2. visit the classes from the rarest to the most frequent (ties by class index);
3. for each class, count the images already chosen that are positive for it, and add the next
   unchosen positives in the shuffled order until there are ``k`` (or no more).

Every class thus has at least ``min(k, #positives)`` positive images; an image counts for all its
labels, so frequent classes usually get more than ``k`` and the set holds at most ``k * C``
images. Visiting rare classes first keeps the set small: the images picked for a rare class often
carry frequent labels too and fill those classes' quota. The chosen images keep all their labels.
"""

from __future__ import annotations

import numpy as np

from taidpt.utils.seeding import few_shot_rng

SHOTS = (1, 2, 4, 8, 16)


def sample_few_shot(targets: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Sorted row indices of a few-shot subset; ``targets`` is [N, C] with 1 marking a positive."""
    if int(k) < 1:
        raise ValueError(f"DATASET.NUM_SHOTS must be >= 1 for few-shot sampling, got {k}")
    positive = np.asarray(targets) == 1
    order = few_shot_rng(seed, k).permutation(positive.shape[0])
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    chosen = np.zeros(positive.shape[0], dtype=bool)
    counts = positive.sum(axis=0)
    for c in np.argsort(counts, kind="stable"):
        have = int((positive[:, c] & chosen).sum())
        if have >= k:
            continue
        candidates = np.flatnonzero(positive[:, c] & ~chosen)
        candidates = candidates[np.argsort(rank[candidates])]
        chosen[candidates[: k - have]] = True
    return np.flatnonzero(chosen)
