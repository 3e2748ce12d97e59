"""Pieces of a TaI-DPT training epoch shared by the core runner and the Dassl trainer.

* :class:`CaptionIndexDataset` + :class:`EpochPermutationSampler` give a DataLoader of caption
  indices and labels whose order depends only on ``(seed, epoch)``: resuming at epoch ``e`` sees
  exactly the batches an uninterrupted run sees, and no global RNG is consumed.
* :class:`CaptionBatchEncoder` turns a batch of indices into :class:`CaptionFeatures`, either from
  the feature cache or by running the frozen text tower (the reference's behaviour, kept
  selectable so parity stays testable).
* :func:`caption_loss` is the loss of one batch, :func:`train_step` one optimisation step;
  :func:`caption_map` scores held-out captions for model selection (never the test images).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from taidpt.captions.features import CaptionFeatureStore
from taidpt.networks.losses import double_loss
from taidpt.networks.merge import merge_scores
from taidpt.evaluation.metrics import mean_ap
from taidpt.networks.model import CaptionFeatures, TaIDPTModel
from taidpt.utils.seeding import epoch_order_generator, validation_split_rng


class CaptionIndexDataset(Dataset):
    """Items ``{"index": i, "label": multi-hot float [C]}`` for a subset of corpus rows."""

    def __init__(self, labels: np.ndarray, rows: np.ndarray | None = None) -> None:
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        self.rows = np.arange(len(labels)) if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        row = int(self.rows[i])
        return {"index": row, "label": self.labels[row]}


class EpochPermutationSampler(Sampler[int]):
    """Random order that is a pure function of ``(seed, epoch)``; call :meth:`set_epoch` each epoch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=epoch_order_generator(self.seed, self.epoch)).tolist())

    def __len__(self) -> int:
        return self.n


def make_caption_loader(labels: np.ndarray, rows: np.ndarray, batch_size: int, seed: int) -> DataLoader:
    """Training loader over caption rows; drops the last partial batch when at least one full
    batch exists (Dassl's rule)."""
    dataset = CaptionIndexDataset(labels, rows)
    if len(dataset) == 0:
        raise ValueError("no training captions: the corpus is empty after the validation split")
    sampler = EpochPermutationSampler(len(dataset), seed)
    return DataLoader(dataset, batch_size=int(batch_size), sampler=sampler, num_workers=0,
                      drop_last=len(dataset) >= int(batch_size))


def split_validation(n_captions: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministically hold out ``fraction`` of the caption rows (templates always train).

    Returns ``(train_rows, val_rows)`` over caption indices ``0..n_captions-1``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"DATASET.VAL_CAPTIONS must be in [0, 1), got {fraction}")
    n_val = int(round(n_captions * fraction))
    if fraction > 0 and n_val == 0:
        n_val = 1
    perm = validation_split_rng(seed).permutation(n_captions)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class CaptionBatchEncoder:
    """Features of caption rows: from a :class:`CaptionFeatureStore` or encoded on the fly.

    Both give the same features and the same mask: token id != 0, the reference's rule, which also
    leaves out a real token whose id is 0, not only the padding.
    """

    def __init__(self, model: TaIDPTModel, token_ids: torch.Tensor, store: CaptionFeatureStore | None,
                 device: torch.device | str) -> None:
        self.model, self.token_ids, self.store, self.device = model, token_ids, store, device

    def __call__(self, rows: torch.Tensor | np.ndarray) -> CaptionFeatures:
        if self.store is not None:
            return self.store.batch(np.asarray(rows, dtype=np.int64), self.device)
        ids = self.token_ids[torch.as_tensor(rows, dtype=torch.long)].to(self.device)
        return self.model.encode_captions(ids)


def caption_loss(
    model: TaIDPTModel,
    encoder: CaptionBatchEncoder,
    batch: dict[str, torch.Tensor],
    loss_name: str,
    text: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Loss of one caption batch, not yet back-propagated; raises on a non-finite loss.

    The core's :func:`train_step` and the Dassl trainer's ``forward_backward`` both start here, so
    the two engines compute the same loss for the same batch. ``text`` passes class embeddings
    computed elsewhere (the distributed step gathers them across processes).
    """
    feats = encoder(batch["index"])
    targets = batch["label"].to(feats.global_.device)
    z_g, z_l = model.caption_logits(feats, text)
    loss = double_loss(loss_name, z_g, z_l, targets)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()}: lower OPTIM.LR or check the captions")
    return loss


def train_step(
    model: TaIDPTModel,
    encoder: CaptionBatchEncoder,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    loss_name: str,
) -> float:
    """One SGD step on a caption batch; returns the loss value. Raises on a non-finite loss."""
    return apply_loss(caption_loss(model, encoder, batch, loss_name), optimizer)


def apply_loss(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
    """Back-propagate ``loss`` from fresh gradients and take one optimiser step; returns its value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.item())


@torch.no_grad()
def caption_map(model: TaIDPTModel, encoder: CaptionBatchEncoder, rows: np.ndarray, labels: np.ndarray,
                batch_size: int = 512) -> float:
    """Merged-score mAP (percent) on held-out caption rows: the model-selection metric."""
    text = model.class_embeddings()
    scores = []
    for start in range(0, len(rows), batch_size):
        z_g, z_l = model.caption_logits(encoder(rows[start : start + batch_size]), text)
        scores.append(merge_scores(z_g, z_l, model.merge_rate).float().cpu().numpy())
    return mean_ap(np.concatenate(scores), np.asarray(labels[rows], dtype=np.int8))
