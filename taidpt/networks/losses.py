"""Multi-label losses on (global, local) logits. None of them modifies its inputs in place."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def ranking_loss(logits: torch.Tensor, targets: torch.Tensor, margin: float = 1.0,
                 negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise hinge ranking loss, averaged over the batch.

    For one sample: ``sum_{p positive, n negative} max(0, margin - z_p + z_n)``.
    ``targets`` is multi-hot {0, 1}; anything else than 1 counts as negative, unless a
    ``negatives`` mask [B, C] says which entries are negatives (partial labels: the rest is unknown).
    """
    y = (targets > 0.5).to(logits.dtype)
    neg = 1 - y if negatives is None else negatives.to(logits.dtype)
    # hinge[b, n, p] = margin - z_p + z_n
    hinge = (margin - logits.unsqueeze(1) + logits.unsqueeze(2)).clamp_min(0)
    weights = y.unsqueeze(1) * neg.unsqueeze(2)
    return (hinge * weights).sum(dim=(1, 2)).mean()


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, mean over samples and classes."""
    return F.binary_cross_entropy_with_logits(logits, (targets > 0.5).to(logits.dtype))


def asl_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma_neg: float = 2.0,
    gamma_pos: float = 1.0,
    clip: float = 0.05,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al. 2021) on fully labelled targets, mean over all entries.

    The focusing weights are treated as constants (no gradient through them), like the
    reference implementation's default.
    """
    y = (targets > 0.5).to(logits.dtype)
    return asl_terms(logits, y, 1 - y, gamma_neg, gamma_pos, clip, eps).mean()


def asl_terms(logits: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, gamma_neg: float,
              gamma_pos: float, clip: float, eps: float) -> torch.Tensor:
    """Per-entry asymmetric loss [B, C] for float masks of positives and negatives (0 where neither).

    Positive: ``-(1 - p)^gamma_pos * log(p)``; negative, with ``p_m = min(1, 1 - p + clip)``:
    ``-(1 - p_m)^gamma_neg * log(p_m)``; the focusing weights carry no gradient.
    """
    p = torch.sigmoid(logits)
    p_neg = (1 - p + clip).clamp(max=1) if clip > 0 else 1 - p
    loss = positives * torch.log(p.clamp(min=eps)) + negatives * torch.log(p_neg.clamp(min=eps))
    with torch.no_grad():
        pt = p * positives + p_neg * negatives
        gamma = gamma_pos * positives + gamma_neg * negatives
        weight = torch.pow(1 - pt, gamma)
    return -(loss * weight)


_SINGLE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ranking": ranking_loss,
    "bce": bce_loss,
    "asl": asl_loss,
}
LOSSES = ("double_ranking", "double_bce", "double_asl", "ranking", "bce", "asl")


def double_loss(name: str, global_logits: torch.Tensor, local_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Loss selected by ``TRAINER.TAIDPT.LOSS``.

    ``double_<x>`` sums loss ``x`` over the global and the local logits (the reference's
    ``double_ranking``); a bare ``<x>`` trains the global branch only.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: expected one of {', '.join(LOSSES)}")
    if name.startswith("double_"):
        fn = _SINGLE[name[len("double_"):]]
        return fn(global_logits, targets) + fn(local_logits, targets)
    return _SINGLE[name](global_logits, targets)
