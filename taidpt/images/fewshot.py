"""A deterministic multi-label few-shot sampler: at least ``k`` labelled images per class.

Classes are visited from the rarest; each takes unchosen positives from a seeded shuffle until the
images already chosen hold ``k`` of its positives, so every class has ``min(k, #positives)`` and the
set stays small (at most ``k * C`` images). See docs/image-prompting.md.
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
