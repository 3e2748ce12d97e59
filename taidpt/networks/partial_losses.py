"""Multi-label losses on *partial* targets: 1 positive, -1 negative, 0 unknown (ignored).

The image-prompting trainers learn from images whose labels may be partly unknown; an unknown entry
contributes nothing. Unlike :mod:`taidpt.networks.losses` (multi-hot targets), these read the reference's
and DualCoOp's convention. None modifies its inputs in place. :func:`image_prompt_loss` picks the loss and
its branch as ``TRAINER.DUALCOOP.LOSS`` / ``LOSS_ON`` (and the ``TRAINER.COOP`` pair) say.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from taidpt.networks.losses import asl_terms, ranking_loss

BRANCHES = ("global", "local", "both")


def known_masks(targets: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive, negative)`` float masks of partial targets (1 / -1; 0 is in neither)."""
    return (targets > 0.5).to(dtype), (targets < -0.5).to(dtype)


def partial_asl_loss(logits: torch.Tensor, targets: torch.Tensor, gamma_neg: float = 2.0, gamma_pos: float = 1.0,
                     clip: float = 0.05, eps: float = 1e-8) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al. 2021) over the known entries, summed and divided by the batch size.

    The per-entry terms are :func:`taidpt.networks.losses.asl_terms`; unknown entries add 0. Normalising
    by the batch size, not by the number of known entries, is DualCoOp's choice: a sample with
    fewer known labels weighs less.
    """
    pos, neg = known_masks(targets, logits.dtype)
    return asl_terms(logits, pos, neg, gamma_neg, gamma_pos, clip, eps).sum() / logits.shape[0]


def partial_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over the known entries only."""
    pos, neg = known_masks(targets, logits.dtype)
    known = pos + neg
    total = F.binary_cross_entropy_with_logits(logits, pos, weight=known, reduction="sum")
    return total / known.sum().clamp_min(1.0)


def partial_ranking_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise hinge ranking loss over (known positive, known negative) pairs, batch mean."""
    pos, neg = known_masks(targets, logits.dtype)
    return ranking_loss(logits, pos, negatives=neg)


PARTIAL_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "asl": partial_asl_loss,
    "bce": partial_bce_loss,
    "ranking": partial_ranking_loss,
}


def image_prompt_loss(
    name: str,
    branch: str,
    global_logits: torch.Tensor,
    local_logits: torch.Tensor,
    targets: torch.Tensor,
    **asl_options: float,
) -> torch.Tensor:
    """Loss ``name`` (asl | bce | ranking) on the ``branch`` logits (global | local | both: summed).

    ``asl_options`` (``gamma_neg``, ``gamma_pos``, ``clip``) reach the ASL only.
    """
    if name not in PARTIAL_LOSSES:
        raise ValueError(f"unknown loss {name!r}: expected one of {', '.join(PARTIAL_LOSSES)}")
    if branch not in BRANCHES:
        raise ValueError(f"unknown loss branch {branch!r}: expected one of {', '.join(BRANCHES)}")
    fn = PARTIAL_LOSSES[name]
    options = asl_options if name == "asl" else {}
    parts = {"global": (global_logits,), "local": (local_logits,), "both": (global_logits, local_logits)}[branch]
    return sum((fn(z, targets, **options) for z in parts[1:]), fn(parts[0], targets, **options))
