"""TaI-DPT and the dense zero-shot CLIP baseline on top of a frozen CLIP.

Training uses a caption's EOT feature as the whole-image embedding and its token features as the image
locations; testing uses the image's attention-pool and dense value-path features (the logits:
docs/method.md). At test time :meth:`TaIDPTModel.image_scorer` computes the class embeddings once into an
:class:`ImageScorer` whose only input is the image batch; the ONNX export traces that same module, so
evaluation and deployment share one code path.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from taidpt.clip.image_encoder import DenseImageEncoder, build_dense_encoder
from taidpt.networks.prompts import DoublePromptLearner, clean_classname
from taidpt.networks.merge import merge_scores
from taidpt.clip.text_encoder import TextTower, eot_positions

MASK_VALUE = -1e4
ZEROSHOT_TEMPLATE = "a photo of a {}."


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Divide by the L2 norm along the last dimension (CLIP's cosine convention)."""
    return x / x.norm(dim=-1, keepdim=True)


def global_logits(features: torch.Tensor, text: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """``scale * cos``: features [B, D] and text [C, D], both L2-normalised -> [B, C]."""
    return scale * features @ text.t()


def local_logits(
    dense: torch.Tensor,
    text: torch.Tensor,
    tau: float | torch.Tensor,
    scale: float | torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax-weighted mean similarity over locations.

    Args:
        dense: L2-normalised location features [B, L, D].
        text: L2-normalised class embeddings [C, D].
        tau: spatial softmax temperature (50 for captions, 40 or 4 for images).
        scale: logit scale ``s``.
        mask: [B, L] bool, True for real positions; padded positions get weight zero.
    Returns:
        [B, C] local logits.
    """
    sim = dense @ text.t()  # [B, L, C]
    if mask is not None:
        sim = sim + (~mask).unsqueeze(-1).to(sim.dtype) * MASK_VALUE
    weights = torch.softmax(sim * tau, dim=1)
    return scale * (sim * weights).sum(dim=1)


@dataclasses.dataclass
class CaptionFeatures:
    """Frozen text-tower features of a caption batch, L2-normalised.

    ``tokens`` holds every position up to the batch's longest caption; ``mask`` marks real tokens
    (id != 0). Cached features (fp16 on disk) are passed in the same structure.
    """

    global_: torch.Tensor  # [B, D]
    tokens: torch.Tensor  # [B, L, D]
    mask: torch.Tensor  # [B, L] bool

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "CaptionFeatures":
        return CaptionFeatures(self.global_.to(device, dtype), self.tokens.to(device, dtype), self.mask.to(device))


class ImageScorer(nn.Module):
    """Image batch in, ``(scores, global_logits, local_logits)`` out; class embeddings are constants.

    ``scores = merge_rate * global + (1 - merge_rate) * local``. Used for evaluation and traced by
    the ONNX export.
    """

    def __init__(
        self,
        encoder: DenseImageEncoder,
        text_global: torch.Tensor,
        text_local: torch.Tensor,
        *,
        scale: float,
        tau: float,
        use_pos: bool,
        merge_rate: float,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("text_global", text_global.detach().clone())
        self.register_buffer("text_local", text_local.detach().clone())
        self.scale, self.tau, self.use_pos, self.merge_rate = float(scale), float(tau), bool(use_pos), float(merge_rate)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        glob, dense = self.encoder(images, use_pos=self.use_pos)
        z_g = global_logits(l2_normalize(glob), self.text_global, self.scale)
        z_l = local_logits(l2_normalize(dense), self.text_local, self.tau, self.scale)
        scores = merge_scores(z_g, z_l, self.merge_rate)
        return scores, z_g, z_l


class FrozenCLIPModule(nn.Module):
    """Base for models holding a frozen CLIP: its towers (``text``, ``image``) are shared views of
    ``clip``, no CLIP parameter trains, and CLIP stays in eval mode (RN BatchNorm) whatever mode
    the wrapper is switched to."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str]) -> None:
        super().__init__()
        self.clip = clip_model
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.text = TextTower(clip_model)
        self.image = build_dense_encoder(clip_model)
        self.classnames = tuple(classnames)

    def train(self, mode: bool = True) -> "FrozenCLIPModule":
        super().train(mode)
        self.clip.eval()
        return self


@dataclasses.dataclass(frozen=True)
class PromptSettings:
    """Everything a :class:`TaIDPTModel` is built with besides CLIP and the classes, built once from a
    method's config node (e.g. ``TaIDPT.prompt_settings(cfg)``); the defaults are the paper's."""

    n_ctx: int = 16
    csc: bool = False
    ctx_init: str = ""
    class_token_position: str = "end"
    logit_scale: float = 4.0
    tau_text: float = 50.0
    tau_image: float = 40.0
    merge_rate: float = 0.5
    use_pos_embed: bool = False
    trim_tokens: bool = True  # exact speed-ups: cut sequences to the longest real length ...
    shared_prefix: bool = True  # ... and encode the common SOS + context prefix once


class TaIDPTModel(FrozenCLIPModule):
    """Frozen CLIP + double-grained prompts; only ``prompt_learner`` has trainable parameters.

    Built from a :class:`PromptSettings` (``settings``); keyword arguments override single fields."""

    prompt_learner_class: type[DoublePromptLearner] = DoublePromptLearner  # subclasses may swap the learner

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], settings: PromptSettings | None = None,
                 **overrides: object) -> None:
        super().__init__(clip_model, classnames)
        s = dataclasses.replace(settings or PromptSettings(), **overrides)
        self.settings = s
        self.prompt_learner = self.prompt_learner_class(
            classnames, self.text, n_ctx=s.n_ctx, csc=s.csc, ctx_init=s.ctx_init,
            class_token_position=s.class_token_position)
        self.logit_scale, self.tau_text, self.tau_image = float(s.logit_scale), float(s.tau_text), float(s.tau_image)
        self.merge_rate, self.use_pos_embed, self.trim_tokens = float(s.merge_rate), bool(s.use_pos_embed), bool(s.trim_tokens)
        self.shared_prefix = bool(s.shared_prefix) and self.prompt_learner.shares_prefix
        self.train()

    # ----------------------------------------------------------------- class side
    def class_embeddings(self, classes: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised (global, local) class embeddings [C, D] from the current contexts.

        With generic contexts the SOS + context prefix is encoded once per context set and shared
        by every class (exact under causal attention); otherwise each prompt runs in full.
        ``classes`` encodes only a contiguous range of classes (distributed training splits the
        prompts across processes); each row is the same as in the full computation.
        """
        pl = self.prompt_learner
        length = pl.length if self.trim_tokens else None
        if self.shared_prefix:
            out = []
            for ctx in (pl.ctx, pl.ctx_double):
                prefix, tails, eot = pl.prefix_and_tails(ctx, length)
                out.append(l2_normalize(self.text.forward_shared_prefix(prefix, tails[classes], eot[classes])))
            return out[0], out[1]
        prompts_g, prompts_l = (p[classes] for p in pl(length))
        eot = pl.eot[classes]
        both = self.text(torch.cat([prompts_g, prompts_l], dim=0), torch.cat([eot, eot], dim=0))
        t_g, t_l = both.split(len(eot), dim=0)
        return l2_normalize(t_g), l2_normalize(t_l)

    # ----------------------------------------------------------------- caption side
    @torch.no_grad()
    def encode_captions(self, token_ids: torch.Tensor) -> CaptionFeatures:
        """Frozen features of caption token ids [B, 77]: EOT feature and every position's feature."""
        feats, ids = self.text.encode_sequence(token_ids, trim=self.trim_tokens)
        glob = feats[torch.arange(ids.shape[0], device=ids.device), eot_positions(ids)]
        return CaptionFeatures(l2_normalize(glob), l2_normalize(feats), ids != 0)

    def caption_logits(
        self, feats: CaptionFeatures, text: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(global, local) logits [B, C] of a caption batch (training, tau = SPATIAL_SCALE_TEXT)."""
        t_g, t_l = text if text is not None else self.class_embeddings()
        z_g = global_logits(feats.global_, t_g, self.logit_scale)
        z_l = local_logits(feats.tokens, t_l, self.tau_text, self.logit_scale, feats.mask)
        return z_g, z_l

    # ----------------------------------------------------------------- image side
    @torch.no_grad()
    def image_scorer(self) -> ImageScorer:
        """Freeze the current class embeddings into an :class:`ImageScorer` (tau = SPATIAL_SCALE_IMAGE)."""
        t_g, t_l = self.class_embeddings()
        return ImageScorer(self.image, t_g, t_l, scale=self.logit_scale, tau=self.tau_image,
                           use_pos=self.use_pos_embed, merge_rate=self.merge_rate)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global, local) logits of an image batch with the current prompts."""
        t_g, t_l = self.class_embeddings()
        glob, dense = self.image(images, use_pos=self.use_pos_embed)
        return (global_logits(l2_normalize(glob), t_g, self.logit_scale),
                local_logits(l2_normalize(dense), t_l, self.tau_image, self.logit_scale))


class ZeroShotDenseModel(FrozenCLIPModule):
    """Zero-shot CLIP with global, dense-local and merged scores (``ZeroshotCLIPDense``).

    Prompt ``"a photo of a {}."``, CLIP's own logit scale (``exp(logit_scale)``, 100 for OpenAI
    weights) used both as the logit scale and as the spatial softmax temperature, attention pool
    *with* its positional embedding (the reference's ``ZeroshotCLIP_dense``).
    """

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], *, template: str = ZEROSHOT_TEMPLATE,
                 merge_rate: float = 0.5, use_pos_embed: bool = True) -> None:
        super().__init__(clip_model, classnames)
        self.template, self.merge_rate, self.use_pos_embed = template, float(merge_rate), bool(use_pos_embed)
        self.train()

    @torch.no_grad()
    def class_embeddings(self) -> torch.Tensor:
        device = self.text.token_embedding.weight.device
        ids = self.text.tokenize([self.template.format(clean_classname(c)) for c in self.classnames]).to(device)
        return l2_normalize(self.text.encode_ids(ids))

    @torch.no_grad()
    def image_scorer(self) -> ImageScorer:
        text = self.class_embeddings()
        scale = float(self.clip.logit_scale.exp().item())
        return ImageScorer(self.image, text, text, scale=scale, tau=scale, use_pos=self.use_pos_embed,
                           merge_rate=self.merge_rate)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, z_g, z_l = self.image_scorer()(images)
        return z_g, z_l
