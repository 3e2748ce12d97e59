"""``MultiLabelEvaluator``: Dassl's evaluator interface over the core's multi-label metrics.

Selected with ``TEST.EVALUATOR: "MultiLabelEvaluator"`` (set in ``configs/trainers/*``). It collects
the global and local logits of each test batch in a :class:`taidpt.evaluation.scoring.ScoreAccumulator`,
the same collector the core runner fills, and scores them with
:func:`taidpt.evaluation.scoring.results_from_scores`, so both engines report the same numbers.
``evaluate()`` returns Dassl's ordered dict of floats, headline first (merged mAP, which Dassl's
``test()`` returns), prints CoOp's ``=> result`` block (``parse_test_res.py --keyword mAP``
reads it) and keeps the full results (per-class AP, P/R/F1 variants) in :attr:`results`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
from dassl.evaluation import EVALUATOR_REGISTRY, EvaluatorBase

from taidpt.evaluation.scoring import ScoreAccumulator, ScoredSet, results_from_scores
from taidpt.evaluation.metrics import format_coop_lines
from taidpt.methods import get_method
from taidpt.networks.merge import DEFAULT_MERGE_RATE

HEADLINE_KEYS = ("mAP", "mAP_global", "mAP_local", "CF1", "OF1")


def split_output(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(global, local) logits from a model output.

    Accepts ``(merged, global, local)`` (an ``ImageScorer``), ``(global, local)`` (a TaI-DPT
    model) or one ``[B, C]`` tensor (any single-score model: local is then None).
    """
    if isinstance(output, torch.Tensor):
        return output, None
    if isinstance(output, (tuple, list)) and len(output) in (2, 3):
        return output[-2], output[-1]
    raise TypeError(f"MultiLabelEvaluator expects logits [B, C], (global, local) or (merged, global, local); "
                    f"got {type(output).__name__}")


def _merge_rate(cfg: Any) -> float:
    """The method's merge rate (``TRAINER.<node>.MERGE_RATE``); the default for a trainer taidpt does not know."""
    try:
        return get_method(cfg.TRAINER.NAME).merge_rate(cfg)
    except (ValueError, KeyError, AttributeError):
        return DEFAULT_MERGE_RATE


@EVALUATOR_REGISTRY.register()
class MultiLabelEvaluator(EvaluatorBase):
    """mAP (merged, global, local), CF1 and OF1 (top-3) of multi-hot targets, in percent."""

    def __init__(self, cfg: Any, lab2cname: dict[int, str] | None = None, **kwargs: Any) -> None:
        super().__init__(cfg)
        self._classnames = [lab2cname[k] for k in sorted(lab2cname)] if lab2cname else None
        self._acc = ScoreAccumulator()
        self.results: dict[str, Any] | None = None
        self.scored: ScoredSet | None = None  # the logits behind ``results`` (for predictions.npz)

    def reset(self) -> None:
        self._acc.reset()
        self.results = None
        self.scored = None

    def skip(self, paths: list[str]) -> None:
        """Record images that could not be read; they are listed in the results, not scored."""
        self._acc.skip(paths)

    def process(self, mo: Any, gt: torch.Tensor) -> None:
        """Add one batch: the model output (see :func:`split_output`) and targets ``[B, C]``."""
        z_g, z_l = split_output(mo)
        self._acc.add(z_g, z_l, gt)

    def evaluate(self) -> "OrderedDict[str, float]":
        scored = self.scored = self._acc.result()
        names = self._classnames or [str(i) for i in range(scored.targets.shape[1])]
        threshold = float(self.cfg.TEST.get("THRESHOLD", 0.0))
        self.results = results_from_scores(scored, names, _merge_rate(self.cfg), threshold)
        print(format_coop_lines(self.results))
        m = self.results["mAP"]
        values = (m["merged"], m["global"], m["local"], self.results["CF1"], self.results["OF1"])
        return OrderedDict((k, math.nan if v is None else float(v)) for k, v in zip(HEADLINE_KEYS, values))
