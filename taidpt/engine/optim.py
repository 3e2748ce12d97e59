"""Optimiser and learning-rate schedule with Dassl's semantics, on modern torch.

Dassl's warm-up wrappers neither build nor reload on current torch; :class:`EpochLR` computes the
same per-epoch rates in closed form with a primitive-only state (loadable with ``weights_only=True``):
warm-up (constant ``WARMUP_CONS_LR``, or linear from ``WARMUP_MIN_LR`` to ``LR``) for ``W`` epochs,
then cosine, single_step or multi_step counted from ``e - W`` (``WARMUP_RECOUNT``) or from ``e``.
"""

from __future__ import annotations

import bisect
import math
from typing import Iterable

import torch
from torch.optim.lr_scheduler import LRScheduler
from yacs.config import CfgNode

OPTIMIZERS = ("sgd", "adam", "adamw", "amsgrad", "rmsprop")
SCHEDULERS = ("cosine", "single_step", "multi_step")


def build_optimizer(params: Iterable[torch.nn.Parameter], optim_cfg: CfgNode) -> torch.optim.Optimizer:
    """Optimiser named by ``OPTIM.NAME`` over the given (trainable) parameters."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters were given to the optimiser")
    name, lr, wd = optim_cfg.NAME.lower(), float(optim_cfg.LR), float(optim_cfg.WEIGHT_DECAY)
    betas = (float(optim_cfg.ADAM_BETA1), float(optim_cfg.ADAM_BETA2))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(optim_cfg.MOMENTUM), weight_decay=wd,
                               dampening=float(optim_cfg.SGD_DAMPNING), nesterov=bool(optim_cfg.SGD_NESTEROV))
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas, amsgrad=name == "amsgrad")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=float(optim_cfg.MOMENTUM), weight_decay=wd,
                                   alpha=float(optim_cfg.RMSPROP_ALPHA))
    raise ValueError(f"unknown OPTIM.NAME {optim_cfg.NAME!r}: expected one of {', '.join(OPTIMIZERS)}")


def epoch_lr(epoch: int, base_lr: float, optim_cfg: CfgNode) -> float:
    """Learning rate in force during ``epoch`` (0-based) under Dassl's schedule semantics."""
    warmup = int(optim_cfg.WARMUP_EPOCH)
    if warmup > 0 and epoch < warmup:
        if optim_cfg.WARMUP_TYPE == "constant":
            return float(optim_cfg.WARMUP_CONS_LR)
        if optim_cfg.WARMUP_TYPE == "linear":
            return float(optim_cfg.WARMUP_MIN_LR) if epoch == 0 else base_lr * epoch / warmup
        raise ValueError(f"unknown OPTIM.WARMUP_TYPE {optim_cfg.WARMUP_TYPE!r}: expected constant or linear")
    t = epoch - warmup if (warmup > 0 and optim_cfg.WARMUP_RECOUNT) else epoch
    name = optim_cfg.LR_SCHEDULER
    if name == "cosine":
        return base_lr * (1 + math.cos(math.pi * t / int(optim_cfg.MAX_EPOCH))) / 2
    if name == "single_step":
        step = int(optim_cfg.STEPSIZE[-1])
        step = int(optim_cfg.MAX_EPOCH) if step <= 0 else step
        return base_lr * float(optim_cfg.GAMMA) ** (t // step)
    if name == "multi_step":
        return base_lr * float(optim_cfg.GAMMA) ** bisect.bisect_right(sorted(int(s) for s in optim_cfg.STEPSIZE), t)
    raise ValueError(f"unknown OPTIM.LR_SCHEDULER {name!r}: expected one of {', '.join(SCHEDULERS)}")


class EpochLR(LRScheduler):
    """Closed-form per-epoch schedule (see module docstring); ``step()`` once per epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, optim_cfg: CfgNode) -> None:
        self.schedule = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in optim_cfg.items()}
        epoch_lr(0, 1.0, optim_cfg)  # validate names before the first step
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        cfg = CfgNode(self.schedule)
        return [epoch_lr(self.last_epoch, base, cfg) for base in self.base_lrs]

    def sync_optimizer(self) -> None:
        """Set the optimiser's LRs to this epoch's values (after a resume under a changed config)."""
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """Progress only (epoch count, base LRs); the schedule itself comes from the current config."""
        return {k: v for k, v in super().state_dict().items() if k != "schedule"}


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg: CfgNode) -> EpochLR:
    """Scheduler for ``OPTIM.LR_SCHEDULER`` with warm-up, Dassl semantics."""
    return EpochLR(optimizer, optim_cfg)
