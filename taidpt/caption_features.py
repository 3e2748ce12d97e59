"""Caption features computed once and reused every epoch (the caption branch has no trainable part).

Each caption keeps its global (EOT) feature and the features of its real tokens (SOS .. EOT), stored
ragged: ``tokens`` concatenates every caption's token features and ``offsets[i]:offsets[i+1]``
selects caption ``i``. A batch is gathered and right-padded to its longest caption, with a mask, so
the training step sees exactly what the uncached path computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from .model import CaptionFeatures, TaIDPTModel
from .text_encoder import eot_positions

DTYPES = {"fp32": np.float32, "fp16": np.float16}


@dataclass
class CaptionFeatureStore:
    """Ragged store of L2-normalised caption features (numpy arrays, possibly memory-mapped)."""

    global_: np.ndarray  # [N, D]
    tokens: np.ndarray  # [T, D]
    offsets: np.ndarray  # [N + 1] int64

    def __len__(self) -> int:
        return int(self.global_.shape[0])

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        model: TaIDPTModel,
        token_ids: torch.Tensor,
        *,
        batch_size: int = 256,
        dtype: str = "fp32",
        device: torch.device | str = "cpu",
        progress: bool = True,
    ) -> "CaptionFeatureStore":
        """Encode every caption once with the frozen text tower (cut to each batch's real length)."""
        if dtype not in DTYPES:
            raise ValueError(f"CACHE_DTYPE must be one of {', '.join(DTYPES)}, got {dtype!r}")
        np_dtype = DTYPES[dtype]
        lengths = (eot_positions(token_ids) + 1).numpy().astype(np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        dim = int(model.text.text_projection.shape[1])
        glob = np.empty((len(lengths), dim), dtype=np_dtype)
        toks = np.empty((int(offsets[-1]), dim), dtype=np_dtype)
        # Sorting by length keeps each batch's cut short; results are scattered back by index.
        order = np.argsort(lengths, kind="stable")
        bar = tqdm(total=len(order), desc="encoding captions", unit="cap", disable=not progress, leave=False)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids = token_ids[torch.as_tensor(idx)].to(device)
            feats = model.encode_captions(ids)
            glob[idx] = feats.global_.float().cpu().numpy().astype(np_dtype)
            tok = feats.tokens.float().cpu().numpy()
            for row, i in enumerate(idx):
                toks[offsets[i] : offsets[i + 1]] = tok[row, : lengths[i]].astype(np_dtype)
            bar.update(len(idx))
        bar.close()
        return cls(glob, toks, offsets)

    def batch(self, index: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> CaptionFeatures:
        """Features of captions ``index``, token features right-padded to the batch's longest caption."""
        index = np.asarray(index, dtype=np.int64)
        starts, ends = self.offsets[index], self.offsets[index + 1]
        lengths = ends - starts
        max_len = int(lengths.max())
        positions = np.arange(max_len)
        mask = positions[None, :] < lengths[:, None]
        flat = np.where(mask, starts[:, None] + positions[None, :], 0)
        tokens = np.asarray(self.tokens[flat.reshape(-1)]).reshape(len(index), max_len, -1)
        tokens = np.where(mask[..., None], tokens, 0)
        return CaptionFeatures(
            torch.from_numpy(np.asarray(self.global_[index], dtype=np.float32)).to(device),
            torch.from_numpy(tokens.astype(np.float32, copy=False)).to(device),
            torch.from_numpy(mask).to(device),
        )
