"""The small exported model the serving tests score: a TinyRN TaI-DPT scorer with random contexts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from taidpt.export.tracing import export_scorer
from taidpt.images.preprocess import CLIP_MEAN, CLIP_STD
from taidpt.networks.model import TaIDPTModel
from taidpt.serve.metadata import ModelMetadata


def export_tiny_taidpt(clip: Any, classes: Sequence[str], path: Path, *, seed: int, size: int = 64,
                       **meta: Any) -> tuple[Any, Path]:
    """(frozen scorer, ONNX path): contexts drawn N(0, 0.5) from ``seed``; ``meta`` overrides metadata fields."""
    torch.manual_seed(seed)
    model = TaIDPTModel(clip, list(classes))
    with torch.no_grad():
        model.prompt_learner.ctx.normal_(0, 0.5)
        model.prompt_learner.ctx_double.normal_(0, 0.5)
    scorer = model.eval().image_scorer().eval()
    fields = dict(classnames=tuple(classes), image_size=(size, size), mean=CLIP_MEAN, std=CLIP_STD,
                  interpolation="bicubic", merge_rate=0.5, backbone="TinyRN", trainer="TaIDPT", weights="random",
                  taidpt_version="test")
    return scorer, export_scorer(scorer, path, ModelMetadata(**{**fields, **meta}))
