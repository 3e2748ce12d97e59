"""The merged score: one weighted mix of the global and local logits, for tensors and arrays alike.

Every place that turns (global, local) into the headline score calls :func:`merge_scores`, so the
training metric, the traced scorer, the evaluation tables and the plots cannot drift apart.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

# The weight a trainer that names no merge rate gets (TaI-DPT's own default).
DEFAULT_MERGE_RATE = 0.5


def merge_scores(global_scores: T, local_scores: T, rate: float) -> T:
    """``rate * global + (1 - rate) * local``; works on torch tensors and numpy arrays (no torch import)."""
    return rate * global_scores + (1 - rate) * local_scores
