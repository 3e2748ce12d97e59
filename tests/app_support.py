"""The models and images the app tests use: a TinyRN TaI-DPT export with open vocabulary (random contexts),
optionally with stored thresholds, and small image files written in real formats."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from taidpt.engine.config import get_cfg_default
from taidpt.engine.run import TrainedModel
from taidpt.export.open_vocab import export_open_vocabulary, open_vocabulary_metadata
from taidpt.export.parity import parity_inputs
from taidpt.export.scorer_loading import LoadedScorer
from taidpt.export.tracing import export_scorer
from taidpt.images.preprocess import CLIP_MEAN, CLIP_STD
from taidpt.methods import get_method
from taidpt.serve.metadata import ModelMetadata

CLASSES = ["dog", "cat", "car", "traffic light", "person"]


def export_open_tiny(clip, out: Path, *, classes: Sequence[str] = CLASSES, seed: int = 3,
                     thresholds: dict[str, float] | None = None, open_vocabulary: bool = True) -> Path:
    """``out`` (and its open-vocabulary companions): a TaI-DPT scorer on ``clip`` with contexts drawn from
    ``seed``; ``thresholds`` are stored as a calibration would store them."""
    method = get_method("TaIDPT")
    cfg = get_cfg_default()
    torch.manual_seed(seed)
    model = method.build_model(cfg, clip, list(classes)).eval()
    with torch.no_grad():
        model.prompt_learner.ctx.normal_(0, 0.5)
        model.prompt_learner.ctx_double.normal_(0, 0.5)
    scorer = method.scorer(model).float().eval()
    meta = ModelMetadata(classnames=tuple(classes), image_size=(64, 64), mean=CLIP_MEAN, std=CLIP_STD,
                         interpolation="bicubic", merge_rate=0.5, backbone="TinyRN", trainer="TaIDPT",
                         weights="random", taidpt_version="test", exported="2026-12-07T12:00:00+00:00")
    if thresholds:
        meta = meta.replace(thresholds=tuple(thresholds.items()), calibration="label-free: test rates",
                            calibration_images=40)
    loaded = LoadedScorer(scorer, meta, [], TrainedModel(model, method, list(classes), None, None, None, []), cfg)
    if open_vocabulary:
        meta = open_vocabulary_metadata(loaded, out)
    export_scorer(scorer, out, meta)
    if open_vocabulary:
        report = export_open_vocabulary(loaded, out, parity_inputs(meta, 2), opset=17, batch_sizes=[1, 2])
        assert report.ok, report.table()
    return out


def write_images(folder: Path, n: int = 3, seed: int = 0, size: tuple[int, int] = (80, 60)) -> list[Path]:
    """``n`` random-noise JPEG and PNG files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.{'jpg' if i % 2 == 0 else 'png'}"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def write_bomb(path: Path, side: int = 12000) -> Path:
    """A PNG whose header declares ``side x side`` pixels (a few KB on disk: one colour)."""
    Image.new("1", (side, side)).save(path)
    return path
