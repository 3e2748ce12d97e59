"""The compute device a run executes on (its random seeds: :mod:`taidpt.utils.seeding`)."""

from __future__ import annotations

import torch
from yacs.config import CfgNode


def select_device(cfg: CfgNode) -> torch.device:
    """CUDA when available and ``USE_CUDA``, else CPU."""
    return torch.device("cuda" if cfg.USE_CUDA and torch.cuda.is_available() else "cpu")


__all__ = ["select_device"]
