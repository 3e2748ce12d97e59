"""Global and dense image features from CLIP's image tower (ResNet: the reference's backbones; ViT: beyond it).

ResNet: the global feature is the attention pool's output with or without its positional embedding; dense
features apply the pool's value and output projections to every location (DenseCLIP/MaskCLIP). ViT: dense
features take the last block's value path per patch, without residual or MLP. Positional embeddings are
interpolated for other input sizes with the reference's scale factor, so numbers match it at 448 px.
The computation: docs/method.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def interpolate_grid_embedding(pos: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a [1 + n*n, C] (class + grid) positional embedding to [1 + height*width, C].

    Bicubic with the reference's scale factor ``(side + 0.1) / n`` (the +0.1 guards against
    floor rounding, as DINO does). Returns ``pos`` unchanged at the native size.
    """
    n_grid = pos.shape[0] - 1
    side = int(round(math.sqrt(n_grid)))
    if side * side != n_grid:
        raise ValueError(f"positional embedding of {pos.shape[0]} rows is not class + square grid")
    if height == side and width == side:
        return pos
    dim = pos.shape[1]
    grid = pos[1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), scale_factor=((height + 0.1) / side, (width + 0.1) / side), mode="bicubic")
    if grid.shape[-2:] != (height, width):
        raise ValueError(f"interpolated positional grid {tuple(grid.shape[-2:])} != {(height, width)}")
    grid = grid.permute(0, 2, 3, 1).reshape(height * width, dim).to(pos.dtype)
    return torch.cat([pos[:1], grid], dim=0)


class DenseImageEncoder(nn.Module):
    """Common interface: ``forward(images, use_pos) -> (global [B, D], dense [B, L, D])``, unnormalised."""

    def __init__(self) -> None:
        super().__init__()
        self._pos_cache: dict[tuple[int, int, str], torch.Tensor] = {}

    def _pos(self, pos: torch.Tensor, height: int, width: int) -> torch.Tensor:
        # int(): under ONNX tracing the sizes arrive as tensors; the grid is fixed per export anyway
        height, width = int(height), int(width)
        key = (height, width, str(pos.device))
        if key not in self._pos_cache:
            self._pos_cache[key] = interpolate_grid_embedding(pos.detach(), height, width)
        return self._pos_cache[key]


class ResNetDenseEncoder(DenseImageEncoder):
    """Global (attention pool) and dense (value path) features of open_clip's ModifiedResNet."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.pool = visual.attnpool
        self.num_heads = int(self.pool.num_heads)

    def dense_grid(self, image_size: int) -> tuple[int, int]:
        """Height and width of the dense feature grid for a square input of ``image_size`` px."""
        side = image_size // 32
        return side, side

    def trunk(self, images: torch.Tensor) -> torch.Tensor:
        """Feature map [B, C, H, W] after layer4 (7x7 at 224 px for RN50)."""
        v = self.visual
        x = v.stem(images.to(v.conv1.weight.dtype))
        return v.layer4(v.layer3(v.layer2(v.layer1(x))))

    def global_feature(self, fmap: torch.Tensor, use_pos: bool) -> torch.Tensor:
        """Attention-pool output for the mean token (CLIP's image embedding when ``use_pos``)."""
        b, c, h, w = fmap.shape
        tokens = fmap.flatten(2).transpose(1, 2)  # [B, HW, C]
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        if use_pos:
            tokens = tokens + self._pos(self.pool.positional_embedding, h, w).to(tokens.dtype)
        head_dim = c // self.num_heads
        q = self.pool.q_proj(tokens[:, :1]).reshape(b, 1, self.num_heads, head_dim).transpose(1, 2)
        k = self.pool.k_proj(tokens).reshape(b, -1, self.num_heads, head_dim).transpose(1, 2)
        v = self.pool.v_proj(tokens).reshape(b, -1, self.num_heads, head_dim).transpose(1, 2)
        attn = torch.softmax((q * head_dim ** -0.5) @ k.transpose(-2, -1), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, c)
        return self.pool.c_proj(out)

    def dense_features(self, fmap: torch.Tensor) -> torch.Tensor:
        """Per-location features [B, HW, D]: c_proj(v_proj(x)) for every spatial vector."""
        tokens = fmap.flatten(2).transpose(1, 2)
        return self.pool.c_proj(self.pool.v_proj(tokens))

    def forward(self, images: torch.Tensor, use_pos: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.trunk(images)
        return self.global_feature(fmap, use_pos), self.dense_features(fmap)


class ViTDenseEncoder(DenseImageEncoder):
    """Global (class token) and dense (last-block value path) features of open_clip's VisionTransformer."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        patch = visual.conv1.kernel_size
        self.patch = int(patch[0] if isinstance(patch, tuple) else patch)

    def dense_grid(self, image_size: int) -> tuple[int, int]:
        """Height and width of the patch grid for a square input of ``image_size`` px."""
        side = image_size // self.patch
        return side, side

    def forward(self, images: torch.Tensor, use_pos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        # A ViT cannot work without its positional embedding; ``use_pos`` is accepted for interface parity.
        v = self.visual
        x = v.conv1(images.to(v.conv1.weight.dtype))
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1) + self._pos(v.positional_embedding, h, w).to(x.dtype)
        x = v.ln_pre(x)
        blocks = v.transformer.resblocks
        for block in blocks[:-1]:
            x = block(x)
        last = blocks[-1]
        y = last.ln_1(x[:, 1:])
        width = y.shape[-1]
        attn = last.attn
        v_w = attn.in_proj_weight[2 * width:]
        v_b = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
        dense = attn.out_proj(F.linear(y, v_w, v_b))
        dense = v.ln_post(dense) @ v.proj
        x = last(x)
        glob = v.ln_post(x[:, 0]) @ v.proj
        return glob, dense


def build_dense_encoder(clip_model: nn.Module) -> DenseImageEncoder:
    """Pick the dense encoder that matches the CLIP image tower (ResNet or ViT)."""
    visual = clip_model.visual
    if hasattr(visual, "attnpool"):
        return ResNetDenseEncoder(visual)
    if hasattr(visual, "class_embedding") and hasattr(visual, "transformer"):
        return ViTDenseEncoder(visual)
    raise TypeError(f"unsupported CLIP image tower {type(visual).__name__}: expected ModifiedResNet or VisionTransformer")
