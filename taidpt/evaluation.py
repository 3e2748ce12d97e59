"""Score a test set with an :class:`~taidpt.model.ImageScorer` and turn the scores into results.

Images are decoded and preprocessed by DataLoader workers (numpy + PIL, identical to Dassl's test
transform); the class embeddings live inside the scorer, computed once per evaluation. An image
that cannot be read is skipped, named in the log and counted in the results, never fatal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from .image_data import ImageSetDataset, make_test_loader, split_ok
from .metrics import evaluate_multilabel
from .model import ImageScorer
from .preprocess import PreprocessConfig
from .testsets import ImageSet

log = logging.getLogger(__name__)


@dataclass
class ScoredSet:
    """Per-image logits of the images that loaded, their targets, and what was skipped."""

    global_logits: np.ndarray  # [N, C]
    local_logits: np.ndarray  # [N, C]
    targets: np.ndarray  # [N, C] int8
    indices: np.ndarray  # [N] positions in the ImageSet
    skipped: list[str] = field(default_factory=list)


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
    scorer.eval()
    dataset = ImageSetDataset(image_set, preprocess)
    loader = make_test_loader(dataset, batch_size, num_workers, seed)
    glob, loc, targets, indices, skipped = [], [], [], [], []
    for batch in tqdm(loader, desc="evaluating", unit="batch", disable=not progress, leave=False):
        batch, bad = split_ok(batch)
        for i in bad:
            skipped.append(dataset.path(i))
        if batch["img"].shape[0] == 0:
            continue
        _, z_g, z_l = scorer(batch["img"].to(device))
        glob.append(z_g.float().cpu().numpy())
        loc.append(z_l.float().cpu().numpy())
        targets.append(batch["label"].numpy().astype(np.int8))
        indices.append(np.asarray(batch["index"]))
    if skipped:
        log.warning("skipped %d unreadable image(s), e.g. %s", len(skipped), ", ".join(skipped[:3]))
    if not glob:
        raise RuntimeError(f"no image of {image_set.name} could be read ({len(skipped)} skipped)")
    return ScoredSet(np.concatenate(glob), np.concatenate(loc), np.concatenate(targets), np.concatenate(indices),
                     skipped)


def results_from_scores(scored: ScoredSet, classnames, merge_rate: float, threshold: float | None,
                        image_set: ImageSet | None = None) -> dict:
    """The metrics dict of :func:`taidpt.metrics.evaluate_multilabel` plus skipped/missing images."""
    results = evaluate_multilabel(scored.global_logits, scored.local_logits, scored.targets, list(classnames),
                                  merge_rate=merge_rate, threshold=threshold)
    results["skipped_images"] = list(scored.skipped)
    results["n_skipped_images"] = len(scored.skipped)
    if image_set is not None:
        results["missing_images"] = list(image_set.missing)
        results["n_missing_images"] = len(image_set.missing)
    return results
