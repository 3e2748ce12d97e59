"""Score a test set with an :class:`~taidpt.networks.model.ImageScorer` and turn the scores into results.

Images are decoded and preprocessed by DataLoader workers (numpy + PIL, identical to Dassl's test
transform); the class embeddings live inside the scorer, computed once per evaluation. An image
that cannot be read is skipped, named in the log and counted in the results, never fatal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from taidpt.images.loaders import ImageSetDataset, make_test_loader, split_ok
from taidpt.evaluation.metrics import evaluate_multilabel
from taidpt.networks.model import ImageScorer
from taidpt.images.preprocess import PreprocessConfig
from taidpt.images.readers.common import ImageSet

log = logging.getLogger(__name__)


@dataclass
class ScoredSet:
    """Per-image logits of the images that loaded, their targets, and what was skipped."""

    global_logits: np.ndarray  # [N, C]
    local_logits: np.ndarray | None  # [N, C]; None for a model with one score per class
    targets: np.ndarray  # [N, C] int8
    indices: np.ndarray | None  # [N] positions in the ImageSet, when the caller knows them
    skipped: list[str] = field(default_factory=list)


class ScoreAccumulator:
    """Collects the logits and targets of an evaluation batch by batch.

    The core loop (:func:`score_batches`) and the Dassl ``MultiLabelEvaluator`` both fill one
    of these, so the two engines turn the same batches into the same arrays.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything collected so far."""
        self._global: list[np.ndarray] = []
        self._local: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []
        self._indices: list[np.ndarray] = []
        self._has_indices = True
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return sum(len(t) for t in self._targets)

    def add(self, global_logits: torch.Tensor, local_logits: torch.Tensor | None, targets: torch.Tensor,
            indices: torch.Tensor | np.ndarray | list[int] | None = None) -> None:
        """Append one batch: logits [B, C] (local may be None) and targets [B, C] (1/0/-1)."""
        if self._global and (local_logits is None) != (not self._local):
            raise ValueError("either every batch or no batch has local logits")
        self._global.append(global_logits.detach().float().cpu().numpy())
        if local_logits is not None:
            self._local.append(local_logits.detach().float().cpu().numpy())
        self._targets.append(targets.detach().cpu().numpy().astype(np.int8))
        if indices is None:
            self._has_indices = False
        else:
            self._indices.append(np.asarray(indices))

    def skip(self, paths: list[str]) -> None:
        """Record images that could not be read (named in the results, left out of the metrics)."""
        self.skipped.extend(paths)

    def result(self, name: str = "the test set") -> ScoredSet:
        """The collected arrays; raises when no image was scored."""
        if self.skipped:
            log.warning("skipped %d unreadable image(s), e.g. %s", len(self.skipped), ", ".join(self.skipped[:3]))
        if not self._global:
            raise RuntimeError(f"no image of {name} could be read ({len(self.skipped)} skipped)")
        return ScoredSet(
            np.concatenate(self._global),
            np.concatenate(self._local) if self._local else None,
            np.concatenate(self._targets),
            np.concatenate(self._indices) if self._has_indices and self._indices else None,
            list(self.skipped),
        )


@torch.no_grad()
def score_image_set(
    scorer: ImageScorer,
    image_set: ImageSet,
    preprocess: PreprocessConfig,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> ScoredSet:
    """Run ``scorer`` over every image of ``image_set``; unreadable images are skipped and listed."""
    dataset = ImageSetDataset(image_set, preprocess)
    loader = make_test_loader(dataset, batch_size, num_workers, seed)
    return score_batches(scorer, loader, image_set.paths, device=device, progress=progress).result(image_set.name)


@torch.no_grad()
def score_batches(scorer: ImageScorer, loader: torch.utils.data.DataLoader, paths: Sequence[str], *,
                  device: torch.device | str = "cpu", progress: bool = True) -> ScoreAccumulator:
    """Score the batches of ``loader`` (over an image set, or a block of it) into an accumulator.

    ``paths`` are the image set's paths, indexed by the batches' ``index`` (to name unreadable
    images). Distributed evaluation runs this on each process's share of the test set.
    """
    scorer.eval()
    acc = ScoreAccumulator()
    for batch in tqdm(loader, desc="evaluating", unit="batch", disable=not progress, leave=False):
        batch, bad = split_ok(batch)
        acc.skip([paths[i] for i in bad])
        if batch["img"].shape[0] == 0:
            continue
        _, z_g, z_l = scorer(batch["img"].to(device))
        acc.add(z_g, z_l, batch["label"], batch["index"])
    return acc


def results_from_scores(scored: ScoredSet, classnames, merge_rate: float, threshold: float | None,
                        image_set: ImageSet | None = None) -> dict:
    """The metrics dict of :func:`taidpt.evaluation.metrics.evaluate_multilabel` plus the skipped images and, given
    the image set, its :meth:`~taidpt.images.readers.common.ImageSet.result_fields` (missing images, CSV label convention)."""
    results = evaluate_multilabel(scored.global_logits, scored.local_logits, scored.targets, list(classnames),
                                  merge_rate=merge_rate, threshold=threshold)
    results["skipped_images"] = list(scored.skipped)
    results["n_skipped_images"] = len(scored.skipped)
    if image_set is not None:
        results.update(image_set.result_fields())
    return results
