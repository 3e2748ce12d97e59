"""Prompt models learned from labelled images: DualCoOp (partial labels) and CoOp (few-shot).

Both reuse TaI-DPT's machinery (frozen CLIP, prompts, causal cut, dense image features); only the scoring and
the trainable parts differ. DualCoOp scores positive minus negative prompt similarities, its local weights
taken from the *positive* similarity (the reference's formula); its parameter names follow the reference so
its checkpoints load (the negative context is ``ctx_double``, the reference's ``ctx_neg``). CoOp trained on
the global logits only scores the dense features with that same context, so every reported score comes
from a learned prompt. The formulas: docs/image-prompting.md.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from taidpt.networks.model import ImageScorer, PromptSettings, TaIDPTModel, l2_normalize
from taidpt.networks.merge import merge_scores
from taidpt.networks.prompts import DoublePromptLearner

LOGIT_SCALE_INIT = 50.0
SPATIAL_SCALE_INIT = 20.0


def dual_logits(glob: torch.Tensor, dense: torch.Tensor, t_pos: torch.Tensor, t_neg: torch.Tensor,
                scale: torch.Tensor | float, tau: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """DualCoOp's (global [B, C], local [B, C]) logits from L2-normalised features.

    ``glob`` [B, D], ``dense`` [B, L, D], class embeddings ``t_pos`` and ``t_neg`` [C, D].
    """
    z_g = scale * (glob @ t_pos.t() - glob @ t_neg.t())
    sim_pos = dense @ t_pos.t()  # [B, L, C]
    sim_neg = dense @ t_neg.t()
    weights = torch.softmax(tau * sim_pos, dim=1)
    z_l = scale * (weights * (sim_pos - sim_neg)).sum(dim=1)
    return z_g, z_l


class DualPromptLearner(DoublePromptLearner):
    """Positive (``ctx``) and negative (``ctx_double``) contexts plus the learnable log scales."""

    def __init__(self, classnames: Sequence[str], text: nn.Module, **kwargs) -> None:
        super().__init__(classnames, text, **kwargs)
        self.temperature = nn.Parameter(torch.tensor(math.log(LOGIT_SCALE_INIT), dtype=self.ctx.dtype))
        self.spatial_T = nn.Parameter(torch.tensor(math.log(SPATIAL_SCALE_INIT), dtype=self.ctx.dtype))

    @property
    def ctx_neg(self) -> nn.Parameter:
        """The negative context (the reference's name)."""
        return self.ctx_double

    def init_scales(self, logit_scale: float, spatial_scale: float) -> None:
        """Start the learnable scales at ``logit_scale`` and ``spatial_scale`` (stored as logs)."""
        if logit_scale <= 0 or spatial_scale <= 0:
            raise ValueError(f"initial scales must be positive, got {logit_scale} and {spatial_scale}")
        with torch.no_grad():
            self.temperature.fill_(math.log(logit_scale))
            self.spatial_T.fill_(math.log(spatial_scale))

    def scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logit scale, spatial scale)`` = ``exp`` of the learned logs (differentiable)."""
        return self.temperature.exp(), self.spatial_T.exp()

    def load_reference_state(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load ours or the reference's ``Caption_dual`` state (``ctx_neg`` -> ``ctx_double``)."""
        state = dict(state_dict)
        if "ctx_double" not in state and "ctx_neg" in state:
            state["ctx_double"] = state.pop("ctx_neg")
        missing = [k for k in ("temperature", "spatial_T") if k not in state]
        if missing:
            raise KeyError(f"DualCoOp prompt state is missing {missing}; found keys {sorted(state)[:8]}")
        super().load_reference_state(state)
        with torch.no_grad():
            for key in ("temperature", "spatial_T"):
                getattr(self, key).copy_(state[key].reshape(()).to(self.ctx.dtype))


class DualImageScorer(ImageScorer):
    """DualCoOp's image batch -> ``(scores, global, local)``; ``text_global`` holds the positive
    class embeddings and ``text_local`` the negative ones, ``scale`` / ``tau`` the learned scales."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        glob, dense = self.encoder(images, use_pos=self.use_pos)
        z_g, z_l = dual_logits(l2_normalize(glob), l2_normalize(dense), self.text_global, self.text_local,
                               self.scale, self.tau)
        return merge_scores(z_g, z_l, self.merge_rate), z_g, z_l


class DualCoOpModel(TaIDPTModel):
    """Frozen CLIP + DualCoOp's positive/negative prompts and learnable scales."""

    prompt_learner_class = DualPromptLearner

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], settings: PromptSettings | None = None, *,
                 logit_scale_init: float = LOGIT_SCALE_INIT, spatial_scale_init: float = SPATIAL_SCALE_INIT,
                 **overrides: object) -> None:
        super().__init__(clip_model, classnames, settings, **overrides)
        self.prompt_learner.init_scales(logit_scale_init, spatial_scale_init)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Both contexts and both scales."""
        return list(self.prompt_learner.parameters())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global, local) logits of an image batch with the current prompts and scales."""
        t_pos, t_neg = self.class_embeddings()
        glob, dense = self.image(images, use_pos=self.use_pos_embed)
        scale, tau = self.prompt_learner.scales()
        return dual_logits(l2_normalize(glob), l2_normalize(dense), t_pos, t_neg, scale, tau)

    @torch.no_grad()
    def image_scorer(self) -> DualImageScorer:
        """Freeze the class embeddings and the learned scales into a :class:`DualImageScorer`."""
        t_pos, t_neg = self.class_embeddings()
        scale, tau = (v.item() for v in self.prompt_learner.scales())
        return DualImageScorer(self.image, t_pos, t_neg, scale=scale, tau=tau, use_pos=self.use_pos_embed,
                               merge_rate=self.merge_rate)


class CoOpModel(TaIDPTModel):
    """TaI-DPT's prompts trained on images; with ``train_local`` False the local branch reuses the
    global context (CoOp: one learned prompt per class)."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], settings: PromptSettings | None = None, *,
                 train_local: bool = False, **overrides: object) -> None:
        super().__init__(clip_model, classnames, settings, **overrides)
        self.train_local = bool(train_local)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The global context, and the local one when it is trained."""
        pl = self.prompt_learner
        return [pl.ctx, pl.ctx_double] if self.train_local else [pl.ctx]

    def class_embeddings(self, classes: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        t_g, t_l = super().class_embeddings(classes)
        return (t_g, t_l) if self.train_local else (t_g, t_g)
