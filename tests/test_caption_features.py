"""The caption feature cache: equality with on-the-fly encoding, disk reuse, resumable builds, and
training parity between the fast path (cache + causal cut + shared prefix) and the reference path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import taidpt.caption_features as cf
from taidpt.caption_features import CaptionFeatureStore
from taidpt.metrics import mean_ap
from taidpt.model import TaIDPTModel
from taidpt.optim import build_optimizer
from taidpt.config import get_cfg_default
from taidpt.training import CaptionBatchEncoder, make_caption_loader, train_step

CLASSES = ["dog", "cat", "car", "person"]
TEXTS = [
    "a dog sleeping on the couch", "two cats", "a man driving a red car down a long road in the rain",
    "a person walking a dog", "cats and dogs", "a car", "people near a parked car with a cat on the roof",
    "a puppy", "the person", "a dog, a cat and a car", "a very long sentence about a person who rides a bicycle "
    "past a row of parked cars while a dog barks at a cat sitting on a fence", "car",
]


def _labels(texts):
    return np.array([[int(c in t) for c in CLASSES] for t in texts], dtype=np.uint8)


@pytest.fixture()
def model(tiny_rn):
    torch.manual_seed(0)
    return TaIDPTModel(tiny_rn, CLASSES, n_ctx=4)


def test_cached_batches_equal_on_the_fly_features(model):
    ids = model.text.tokenize(TEXTS)
    store = CaptionFeatureStore.build(model, ids, batch_size=5, progress=False)
    rows = np.array([10, 0, 2, 7])
    cached = store.batch(rows)
    live = model.encode_captions(ids[torch.as_tensor(rows)])
    assert cached.tokens.shape == live.tokens.shape
    assert torch.equal(cached.mask, live.mask)
    assert torch.allclose(cached.global_, live.global_, atol=1e-5)
    assert torch.allclose(cached.tokens[cached.mask], live.tokens[live.mask], atol=1e-5)
    assert torch.all(cached.tokens[~cached.mask] == 0)
    half = CaptionFeatureStore.build(model, ids, dtype="fp16", progress=False)
    assert half.tokens.dtype == np.float16
    assert torch.allclose(half.batch(rows).global_, live.global_, atol=2e-3)
    with pytest.raises(ValueError, match="CACHE_DTYPE"):
        CaptionFeatureStore.build(model, ids, dtype="int8", progress=False)


def test_disk_cache_is_reused_and_keyed_by_inputs(model, tmp_path):
    ids = model.text.tokenize(TEXTS)
    store = CaptionFeatureStore.open_or_build(tmp_path, model, TEXTS, ids, chunk_size=4, progress=False)
    assert isinstance(store.tokens, np.memmap)
    folders = list((tmp_path / "features").iterdir())
    folders = [f for f in folders if f.is_dir()]
    assert len(folders) == 1
    stamp = (folders[0] / "tokens.npy").stat().st_mtime_ns
    again = CaptionFeatureStore.open_or_build(tmp_path, model, TEXTS, ids, chunk_size=4, progress=False)
    assert (folders[0] / "tokens.npy").stat().st_mtime_ns == stamp
    assert np.array_equal(np.asarray(again.tokens), np.asarray(store.tokens))
    memory = CaptionFeatureStore.build(model, ids, progress=False)
    assert np.allclose(np.asarray(store.tokens), memory.tokens, atol=1e-6)
    other = TEXTS[:-1] + ["a different caption"]
    CaptionFeatureStore.open_or_build(tmp_path, model, other, model.text.tokenize(other), progress=False)
    assert len([f for f in (tmp_path / "features").iterdir() if f.is_dir()]) == 2


def test_interrupted_build_resumes(model, tmp_path, monkeypatch):
    ids = model.text.tokenize(TEXTS)
    real = cf._encode_into
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(cf, "_encode_into", flaky)
    with pytest.raises(KeyboardInterrupt):
        CaptionFeatureStore.open_or_build(tmp_path, model, TEXTS, ids, chunk_size=5, progress=False)
    folder = next(f for f in (tmp_path / "features").iterdir() if f.is_dir())
    manifest = cf._read_manifest(folder)
    assert manifest["chunks_done"] == 1 and not manifest["complete"]
    monkeypatch.setattr(cf, "_encode_into", real)
    resumed_calls = {"n": 0}

    def counting(*args, **kwargs):
        resumed_calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(cf, "_encode_into", counting)
    store = CaptionFeatureStore.open_or_build(tmp_path, model, TEXTS, ids, chunk_size=5, progress=False)
    assert resumed_calls["n"] == 2  # chunks 2 and 3 of 3: the first was not redone
    fresh = CaptionFeatureStore.build(model, ids, progress=False)
    assert np.allclose(np.asarray(store.tokens), fresh.tokens, atol=1e-6)
    assert np.allclose(np.asarray(store.global_), fresh.global_, atol=1e-6)


def test_fast_path_matches_reference_path_step_by_step(tiny_rn):
    """Cache + causal cut + shared prefix vs the reference loop (77 tokens, re-encoded every step)."""
    texts = TEXTS * 4
    labels = _labels(texts)
    cfg = get_cfg_default()
    cfg.merge_from_list(["OPTIM.NAME", "sgd", "OPTIM.LR", "0.05"])
    images = torch.randn(8, 3, 64, 64)
    targets = np.random.default_rng(0).integers(0, 2, (8, len(CLASSES))).astype(np.int8)
    targets[:4] = np.eye(4, dtype=np.int8)
    runs = {}
    for fast in (True, False):
        torch.manual_seed(5)
        model = TaIDPTModel(tiny_rn, CLASSES, n_ctx=4, trim_tokens=fast, shared_prefix=fast)
        ids = model.text.tokenize(texts)
        store = CaptionFeatureStore.build(model, ids, progress=False) if fast else None
        encoder = CaptionBatchEncoder(model, ids, store, "cpu")
        loader = make_caption_loader(labels, np.arange(len(texts)), batch_size=8, seed=3)
        opt = build_optimizer(model.prompt_learner.parameters(), cfg.OPTIM)
        losses = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            for batch in loader:
                losses.append(train_step(model, encoder, batch, opt, "double_ranking"))
        with torch.no_grad():
            scores, _, _ = model.image_scorer()(images)
        runs[fast] = (np.array(losses), scores.numpy())
    fast_losses, slow_losses = runs[True][0], runs[False][0]
    assert len(fast_losses) == 12
    assert np.max(np.abs(fast_losses - slow_losses)) < 1e-4
    assert np.std(fast_losses) > 1e-3  # the loss actually moves
    assert np.allclose(runs[True][1], runs[False][1], atol=1e-4)
    assert mean_ap(runs[True][1], targets) == pytest.approx(mean_ap(runs[False][1], targets), abs=1e-9)
