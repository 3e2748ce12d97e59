"""Caption features computed once by the frozen text tower and reused every epoch, run and seed.

Each caption's global (EOT) feature and its token features SOS .. EOT are stored ragged (``tokens`` with
``offsets``) as memory-mapped ``.npy`` files in a folder named by a hash of everything they depend on; an
interrupted build resumes, and a second process waits for the first one's (:class:`CaptionFeatureStore`).
``token_mask`` keeps the reference's rule "token id != 0", which also drops a real token with id 0 (``!``
inside a word), so a cached batch is exactly what the uncached path computes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from taidpt.utils.atomic import atomic_write_text
from taidpt.networks.model import CaptionFeatures, TaIDPTModel
from taidpt.utils.runlock import FolderLock
from taidpt.clip.text_encoder import eot_positions

log = logging.getLogger(__name__)

DTYPES = {"fp32": np.float32, "fp16": np.float16}
# 2: token_mask.npy (token id != 0) beside the features; format 1 masked by caption length only.
FORMAT_VERSION = 2
DATA_FILES = ("global.npy", "tokens.npy", "offsets.npy", "token_mask.npy")


def text_tower_fingerprint(model: TaIDPTModel) -> str:
    """sha256 of every text-tower tensor (the features depend on nothing else of CLIP)."""
    h = hashlib.sha256()
    text = model.text
    named = [("token_embedding", text.token_embedding.weight), ("positional_embedding", text.positional_embedding),
             ("text_projection", text.text_projection if isinstance(text.text_projection, torch.Tensor)
              else text.text_projection.weight)]
    named += [(f"transformer.{k}", v) for k, v in text.transformer.state_dict().items()]
    named += [(f"ln_final.{k}", v) for k, v in text.ln_final.state_dict().items()]
    for name, tensor in named:
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def corpus_fingerprint(texts: Sequence[str]) -> str:
    """sha256 of the caption texts in order."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _lengths_offsets(token_ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    lengths = (eot_positions(token_ids) + 1).cpu().numpy().astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return lengths, offsets


def _token_mask(token_ids: torch.Tensor, lengths: np.ndarray) -> np.ndarray:
    """Ragged [T] bool, in the layout of the stored tokens: True where the token id is not 0."""
    ids = token_ids.cpu().numpy()
    within = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    return ids[within] != 0


@torch.no_grad()
def _encode_into(model: TaIDPTModel, token_ids: torch.Tensor, rows: np.ndarray, lengths: np.ndarray,
                 offsets: np.ndarray, glob: np.ndarray, toks: np.ndarray, batch_size: int,
                 device: torch.device | str) -> None:
    """Encode caption ``rows`` and write their features into ``glob`` / ``toks`` (arrays or memmaps)."""
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        feats = model.encode_captions(token_ids[torch.as_tensor(idx)].to(device))
        glob[idx] = feats.global_.float().cpu().numpy().astype(glob.dtype)
        tok = feats.tokens.float().cpu().numpy()
        for row, i in enumerate(idx):
            toks[offsets[i] : offsets[i + 1]] = tok[row, : lengths[i]].astype(toks.dtype)


def _write_manifest(folder: Path, manifest: dict) -> None:
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1))


def _clear(folder: Path) -> None:
    """Remove a cache folder's data (manifest first, so a crash half-way leaves no complete-looking
    cache); the lock files stay, the folder is still held."""
    for name in ("manifest.json", *DATA_FILES):
        (folder / name).unlink(missing_ok=True)


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class CaptionFeatureStore:
    """Ragged store of L2-normalised caption features (numpy arrays, possibly memory-mapped).

    ``token_mask`` [T] marks the stored tokens that take part in the local softmax (id != 0); a
    store built without it (synthetic benchmarks) lets every token up to the EOT take part.
    """

    global_: np.ndarray  # [N, D]
    tokens: np.ndarray  # [T, D]
    offsets: np.ndarray  # [N + 1] int64
    token_mask: np.ndarray | None = None  # [T] bool

    def __len__(self) -> int:
        return int(self.global_.shape[0])

    @classmethod
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
        """Encode every caption once, in memory (small corpora and tests)."""
        np_dtype = _np_dtype(dtype)
        lengths, offsets = _lengths_offsets(token_ids)
        dim = int(model.text.text_projection.shape[1])
        glob = np.empty((len(lengths), dim), dtype=np_dtype)
        toks = np.empty((int(offsets[-1]), dim), dtype=np_dtype)
        order = np.argsort(lengths, kind="stable")  # similar lengths per batch keep the causal cut short
        for start in tqdm(range(0, len(order), batch_size * 8), desc="encoding captions", unit="chunk",
                          disable=not progress, leave=False):
            _encode_into(model, token_ids, order[start : start + batch_size * 8], lengths, offsets, glob, toks,
                         batch_size, device)
        return cls(glob, toks, offsets, _token_mask(token_ids, lengths))

    @classmethod
    def open_or_build(
        cls,
        cache_root: str | Path,
        model: TaIDPTModel,
        texts: Sequence[str],
        token_ids: torch.Tensor,
        *,
        dtype: str = "fp32",
        device: torch.device | str = "cpu",
        batch_size: int = 256,
        chunk_size: int = 4096,
        progress: bool = True,
    ) -> "CaptionFeatureStore":
        """Memory-mapped features from ``cache_root/features/<key>``, building (or resuming) them first."""
        np_dtype = _np_dtype(dtype)
        if len(texts) != token_ids.shape[0]:
            raise ValueError(f"{len(texts)} captions but {token_ids.shape[0]} token rows")
        settings = {
            "format": FORMAT_VERSION,
            "text_tower": text_tower_fingerprint(model),
            "captions": corpus_fingerprint(texts),
            "n": len(texts),
            "context_length": int(token_ids.shape[1]),
            "dtype": dtype,
        }
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]
        folder = Path(cache_root).expanduser() / "features" / key
        with FolderLock(folder, what="caption-feature cache", timeout=None):
            manifest = _read_manifest(folder)
            if manifest is not None and manifest.get("settings") != settings:
                log.warning("caption feature cache %s does not match its settings; rebuilding", folder)
                manifest = None
            if manifest is None or not manifest.get("complete"):
                cls._build_on_disk(folder, manifest, settings, model, token_ids, np_dtype, device, batch_size,
                                   chunk_size, progress)
            else:
                log.info("caption features: reusing %s (%d captions)", folder, len(texts))
        return cls(np.load(folder / "global.npy", mmap_mode="r"), np.load(folder / "tokens.npy", mmap_mode="r"),
                   np.load(folder / "offsets.npy"), np.load(folder / "token_mask.npy"))

    @staticmethod
    def _build_on_disk(folder: Path, manifest: dict | None, settings: dict, model: TaIDPTModel,
                       token_ids: torch.Tensor, np_dtype: type, device: torch.device | str, batch_size: int,
                       chunk_size: int, progress: bool) -> None:
        lengths, offsets = _lengths_offsets(token_ids)
        dim = int(model.text.text_projection.shape[1])
        n_chunks = (len(lengths) + chunk_size - 1) // chunk_size
        resumable = (manifest is not None and manifest.get("chunk_size") == chunk_size
                     and all((folder / f).is_file() for f in DATA_FILES))
        if resumable:
            glob = np.load(folder / "global.npy", mmap_mode="r+")
            toks = np.load(folder / "tokens.npy", mmap_mode="r+")
            done = int(manifest["chunks_done"])
            log.info("caption features: resuming the build in %s at chunk %d/%d", folder, done, n_chunks)
        else:
            _clear(folder)
            np.save(folder / "offsets.npy", offsets)
            np.save(folder / "token_mask.npy", _token_mask(token_ids, lengths))
            glob = np.lib.format.open_memmap(folder / "global.npy", mode="w+", dtype=np_dtype,
                                             shape=(len(lengths), dim))
            toks = np.lib.format.open_memmap(folder / "tokens.npy", mode="w+", dtype=np_dtype,
                                             shape=(int(offsets[-1]), dim))
            done = 0
            manifest = {"settings": settings, "chunk_size": chunk_size, "n_chunks": n_chunks, "chunks_done": 0,
                        "complete": False, "dim": dim, "n_tokens": int(offsets[-1])}
            _write_manifest(folder, manifest)
            log.info("caption features: encoding %d captions into %s", len(lengths), folder)
        order = np.argsort(lengths, kind="stable")  # fixed chunk order: a resumed build fills the same rows
        bar = tqdm(total=n_chunks, initial=done, desc="caption features", unit="chunk", disable=not progress,
                   leave=False)
        for chunk in range(done, n_chunks):
            rows = order[chunk * chunk_size : (chunk + 1) * chunk_size]
            _encode_into(model, token_ids, rows, lengths, offsets, glob, toks, batch_size, device)
            glob.flush()
            toks.flush()
            manifest["chunks_done"] = chunk + 1
            _write_manifest(folder, manifest)
            bar.update(1)
        bar.close()
        manifest["complete"] = True
        _write_manifest(folder, manifest)
        del glob, toks

    def batch(self, index: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> CaptionFeatures:
        """Features of captions ``index``, token features right-padded to the batch's longest caption.

        The mask is the uncached path's ``token_ids != 0``; masked positions hold zeros.
        """
        index = np.asarray(index, dtype=np.int64)
        starts, ends = self.offsets[index], self.offsets[index + 1]
        lengths = ends - starts
        max_len = int(lengths.max())
        positions = np.arange(max_len)
        within = positions[None, :] < lengths[:, None]
        flat = np.where(within, starts[:, None] + positions[None, :], 0)
        mask = within if self.token_mask is None else within & np.asarray(self.token_mask[flat])
        tokens = np.asarray(self.tokens[flat.reshape(-1)], dtype=np.float32).reshape(len(index), max_len, -1)
        tokens[~mask] = 0
        return CaptionFeatures(
            torch.from_numpy(np.asarray(self.global_[index], dtype=np.float32)).to(device),
            torch.from_numpy(tokens).to(device),
            torch.from_numpy(mask).to(device),
        )


def _np_dtype(dtype: str) -> type:
    if dtype not in DTYPES:
        raise ValueError(f"TRAINER.TAIDPT.CACHE_DTYPE must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]
