"""The caption feature cache: equality with on-the-fly encoding (and its token-id-0 mask), disk reuse,
resumable builds, the build lock, and training parity between the fast path (cache + causal cut +
shared prefix) and the reference path."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import taidpt.captions.features as cf
from taidpt.captions.features import CaptionFeatureStore
from taidpt.engine.config import get_cfg_default
from taidpt.evaluation.metrics import mean_ap
from taidpt.networks.model import TaIDPTModel, l2_normalize, local_logits
from taidpt.engine.optim import build_optimizer
from taidpt.utils.runlock import LOCK_NAME, FolderLock
from taidpt.clip.text_encoder import eot_positions
from taidpt.engine.caption_training import CaptionBatchEncoder, make_caption_loader, train_step

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


def _reference_local_logits(model, ids, t_l):
    """The reference's computation: every one of the 77 positions, id 0 masked with -1e4 before the softmax."""
    feats, _ = model.text.encode_sequence(ids, trim=False)
    sim = l2_normalize(feats) @ t_l.t()  # [B, 77, C]
    sim = sim + (ids == 0).unsqueeze(-1).to(sim.dtype) * -1e4
    weights = torch.softmax(sim * model.tau_text, dim=1)
    return (model.logit_scale * sim * weights).sum(dim=1)


def test_token_id_zero_inside_a_caption_is_masked_cached_and_uncached(model, tmp_path):
    texts = ["a !~", "a dog !~", "a cat", "a dog! a car !? and a person"]
    ids = model.text.tokenize(texts)
    eot = eot_positions(ids)
    assert (ids[0, : eot[0]] == 0).any()  # "!" inside a word is token id 0, before the caption's end
    rows = np.arange(len(texts))
    with torch.no_grad():
        text = model.class_embeddings()
        live = model.caption_logits(model.encode_captions(ids), text)[1]
        reference = _reference_local_logits(model, ids, text[1])
        in_memory = model.caption_logits(CaptionFeatureStore.build(model, ids, progress=False).batch(rows), text)[1]
        on_disk = CaptionFeatureStore.open_or_build(tmp_path, model, texts, ids, progress=False)
        cached = model.caption_logits(on_disk.batch(rows), text)[1]
        # format 1's rule, padding only (positions after the EOT): the real token with id 0 counts
        by_length = local_logits(model.encode_captions(ids).tokens, text[1], model.tau_text, model.logit_scale,
                                 torch.arange(int(eot.max()) + 1)[None, :] <= eot[:, None])
    for z in (live, in_memory, cached):
        assert torch.allclose(z, reference, atol=1e-6, rtol=0)
    assert (by_length - reference).abs().max() > 1e-2


def test_cache_build_waits_for_the_process_holding_its_folder(model, tmp_path):
    ids = model.text.tokenize(TEXTS)
    CaptionFeatureStore.open_or_build(tmp_path, model, TEXTS, ids, progress=False)
    folder = next(f for f in (tmp_path / "features").iterdir() if f.is_dir())
    (folder / "manifest.json").unlink()  # the next call must rebuild
    done = threading.Event()

    def build():
        CaptionFeatureStore.open_or_build(tmp_path, model, TEXTS, ids, progress=False)
        done.set()

    with FolderLock(folder, what="caption-feature cache") as held:
        assert (folder / LOCK_NAME).exists() and held.held
        worker = threading.Thread(target=build, daemon=True)
        worker.start()
        assert not done.wait(1.0)  # waits for the holder instead of building beside it
        assert not (folder / "manifest.json").exists()
    assert done.wait(60)
    worker.join()
    assert cf._read_manifest(folder)["complete"]
    assert "fcntl" not in cf.__dict__
