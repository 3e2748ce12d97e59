"""Contrastive pretraining of the demo's small CLIP on generated (image, caption) pairs.

The demo must run where no pretrained weights can be downloaded, so it pretrains open_clip's ``CLIP`` with a
ModifiedResNet tower (a 2x2 dense map at 64 px, so the local branch has real locations) on its own stream
of scenes. It is deterministic for a seed: a fixed step count (never a time budget), a fixed thread count
and seeded generators (:mod:`taidpt.utils.seeding`). The weights are cached by :func:`cached_demo_clip`,
keyed by the settings, the recipe version and a digest of the scene generator.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from taidpt.engine.checkpoint import atomic_torch_save
from taidpt.clip.loader import build_clip
from taidpt.images.preprocess import CLIP_MEAN, CLIP_STD
from taidpt.clip.tokenizer import tokenize
from taidpt.utils.seeding import demo_pretraining_order_rng, seed_demo_clip_init
from . import scenes

__all__ = [
    "DEMO_CLIP_CFG",
    "PRETRAIN_DEFAULTS",
    "PRETRAIN_VERSION",
    "cache_key",
    "cached_demo_clip",
    "demo_cache_dir",
    "pretrain_clip",
]

log = logging.getLogger("taidpt.demo")

# The demo's small CLIP as an open_clip config (4,647,705 parameters). Vision: ModifiedResNet
# with one bottleneck per stage, stem width 16 -> 512 channels at layer4, attention pool with 16
# heads of width 32; 64 px in -> 2x2 feature map. Text: width 64, 4 heads, 3 layers, context 32.
DEMO_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"layers": [1, 1, 1, 1], "width": 16, "head_width": 32, "image_size": 64},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
    "quick_gelu": True,
}

# The recipe the demo's published numbers were measured with; ``pretrain_clip``'s keyword
# defaults are these values.
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 1400,
    "batch_size": 128,
    "pool_size": 30000,
    "lr": 3e-3,
    "weight_decay": 0.1,
    "warmup_steps": 100,
}

# Part of the cache key, with the settings and a digest of the scene generator's source. Bump it
# whenever a change to this module changes the weights it produces (loss, optimiser, schedule,
# sampling, preprocessing); edits that do not change the weights keep existing caches valid.
PRETRAIN_VERSION = 1

_MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps its learnable temperature at 100


def demo_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$XDG_CACHE_HOME/taidpt`` or ``~/.cache/taidpt``.

    The same default root as the core's caption-corpus cache (``DATASET.CACHE_DIR``); the demo
    passes this root on as ``DATASET.CACHE_DIR`` so one ``--cache-dir`` relocates both.
    """
    if cache_dir:
        return Path(os.path.expanduser(str(cache_dir)))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "taidpt"


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``steps``."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's rule: no weight decay on gains, biases, norms and the logit scale (1-D tensors)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _normalise(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] with CLIP's mean/std."""
    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def clip_loss(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch with the model's learnable logit scale."""
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(model.encode_text(tokens), dim=-1)
    logits = model.logit_scale.exp() * img @ txt.t()
    target = torch.arange(images.shape[0])
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def pretrain_clip(
    out_path: str | os.PathLike,
    *,
    seed: int = 0,
    steps: int = PRETRAIN_DEFAULTS["steps"],
    batch_size: int = PRETRAIN_DEFAULTS["batch_size"],
    pool_size: int = PRETRAIN_DEFAULTS["pool_size"],
    lr: float = PRETRAIN_DEFAULTS["lr"],
    weight_decay: float = PRETRAIN_DEFAULTS["weight_decay"],
    warmup_steps: int = PRETRAIN_DEFAULTS["warmup_steps"],
    threads: int = 2,
    progress: bool = True,
) -> Path:
    """Pretrain the demo CLIP with InfoNCE and save it atomically to ``out_path``; returns the path.

    The pool of ``pool_size`` pairs comes from ``generate_pairs(pool_size, seed)``; batches are
    consecutive slices of a fresh permutation of the pool per pass (numpy ``Generator(seed)``).
    AdamW (no decay on 1-D tensors), linear warm-up then cosine decay, the logit scale clamped at
    ln(100) after every step as CLIP does. ``threads`` fixes torch's intra-op thread count for
    the run (restored afterwards), which together with the fixed step count makes the weights a
    function of the settings alone.
    """
    from tqdm.auto import tqdm

    for name, value in (("steps", steps), ("batch_size", batch_size), ("pool_size", pool_size), ("threads", threads)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if batch_size > pool_size:
        raise ValueError(f"batch_size {batch_size} exceeds pool_size {pool_size}")
    out_path = Path(out_path)
    settings = {"seed": int(seed), "steps": int(steps), "batch_size": int(batch_size), "pool_size": int(pool_size),
                "lr": float(lr), "weight_decay": float(weight_decay), "warmup_steps": int(warmup_steps),
                "threads": int(threads)}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        t0 = time.time()
        images, captions, _ = scenes.generate_pairs(pool_size, seed)
        tokens = tokenize(captions, DEMO_CLIP_CFG["text_cfg"]["context_length"])
        t_data = time.time() - t0
        log.info("pretraining pool: %d pairs generated in %.1f s", pool_size, t_data)

        seed_demo_clip_init(seed)
        model = build_clip(DEMO_CLIP_CFG)
        model.train()
        opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
        rng = demo_pretraining_order_rng(seed)
        order, cursor = rng.permutation(pool_size), 0
        losses: list[float] = []
        t1 = time.time()
        bar = tqdm(range(steps), desc="pretrain demo CLIP", disable=not progress, mininterval=1.0)
        for step in bar:
            if cursor + batch_size > pool_size:
                order, cursor = rng.permutation(pool_size), 0
            idx = np.sort(order[cursor:cursor + batch_size])
            cursor += batch_size
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, steps, lr, warmup_steps)
            loss = clip_loss(model, _normalise(images[idx]), tokens[torch.from_numpy(idx)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, _MAX_LOGIT_SCALE)
            losses.append(float(loss.item()))
            if progress and (step % 20 == 0 or step + 1 == steps):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
        t_train = time.time() - t1
        model.eval()
        meta = {
            **settings,
            "pretrain_version": PRETRAIN_VERSION,
            "loss_first": losses[0],
            "loss_last50": float(np.mean(losses[-50:])),
            "loss_curve": [round(v, 4) for v in losses],
            "logit_scale": float(model.logit_scale.exp().item()),
            "seconds_data": round(t_data, 1),
            "seconds_train": round(t_train, 1),
            "seconds_per_step": round(t_train / steps, 4),
            "torch": str(torch.__version__),
            "stream": "taidpt.demo.scenes.STREAM_PAIRS",
        }
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        atomic_torch_save({"model_cfg": json.loads(json.dumps(DEMO_CLIP_CFG)), "state_dict": state, "meta": meta}, out_path)
        log.info("pretrained demo CLIP: %d steps in %.1f s (%.3f s/step), loss %.3f -> %.3f, logit scale %.1f; "
                 "saved %s", steps, t_train, t_train / steps, losses[0], meta["loss_last50"], meta["logit_scale"],
                 out_path)
    finally:
        torch.set_num_threads(old_threads)
    return out_path


def cache_key(seed: int = 0, **settings: Any) -> str:
    """Hex key of a pretraining run: seed, settings (defaults filled in), model config, recipe version
    and scene-generator digest."""
    unknown = set(settings) - set(PRETRAIN_DEFAULTS) - {"threads"}
    if unknown:
        raise ValueError(f"unknown pretraining settings: {', '.join(sorted(unknown))}")
    full = {**PRETRAIN_DEFAULTS, "threads": 2, **settings, "seed": int(seed)}
    payload = {"settings": {k: full[k] for k in sorted(full)}, "model_cfg": DEMO_CLIP_CFG,
               "version": PRETRAIN_VERSION, "scenes": scenes.code_digest()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def cached_demo_clip(seed: int = 0, cache_dir: str | os.PathLike | None = None, *, progress: bool = True,
                     **settings: Any) -> Path:
    """Path of the pretrained demo CLIP for ``seed`` and ``settings``, pretraining only when missing.

    The file is ``<cache>/demo/clip-<key>.pt`` (see :func:`demo_cache_dir` and :func:`cache_key`);
    ``settings`` are :func:`pretrain_clip`'s keywords. Whether the file was reused or trained is
    logged.
    """
    key = cache_key(seed, **settings)
    path = demo_cache_dir(cache_dir) / "demo" / f"clip-{key}.pt"
    if path.is_file():
        log.info("demo CLIP: reusing cached weights %s", path)
        return path
    log.info("demo CLIP: no cached weights at %s, pretraining (seed %d)", path, seed)
    return pretrain_clip(path, seed=seed, progress=progress, **settings)
