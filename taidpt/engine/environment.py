"""The process a run executes in: random seeds and the compute device."""

from __future__ import annotations

import random

import numpy as np
import torch
from yacs.config import CfgNode


def set_random_seed(seed: int) -> None:
    """Seed Python, numpy and torch (all devices), as Dassl's ``set_random_seed`` does."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def select_device(cfg: CfgNode) -> torch.device:
    """CUDA when available and ``USE_CUDA``, else CPU."""
    return torch.device("cuda" if cfg.USE_CUDA and torch.cuda.is_available() else "cpu")


__all__ = ["select_device", "set_random_seed"]
