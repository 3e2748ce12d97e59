"""Build a frozen CLIP model (open_clip classes) from a backbone name and a weights source.

``MODEL.BACKBONE.PRETRAINED`` is ``""`` / ``"none"`` / ``"random"`` (random weights, logged loudly), an
open_clip tag (:mod:`taidpt.clip.pretrained`) or a local file: a TorchScript archive (read as data by
:mod:`taidpt.clip.torchscript_weights` unless ``allow_torchscript_code``), a state dict or ``.safetensors``.
OpenAI-format state dicts are rebuilt with every size inferred from the tensors; a
``{"model_cfg", "state_dict"}`` checkpoint (what :mod:`taidpt.demo` writes) carries its own config.
See docs/training.md, "CLIP weights", and docs/robustness.md, "Weights files".
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from taidpt.clip.errors import ClipLoadError
from taidpt.clip.pretrained import load_pretrained_tag
from taidpt.utils.safe_pickle import first_line
from taidpt.clip.torchscript_weights import TorchScriptReadError, is_torchscript_archive, read_torchscript_weights

log = logging.getLogger(__name__)

RANDOM_WEIGHTS = ("", "none", "random")

# Entries of OpenAI's archives and open_clip models that are not weights (sizes, the causal mask).
_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")

# CoOp/Dassl spell ViT names with a slash; open_clip with a dash.
_NAME_ALIASES = {"ViT-B/16": "ViT-B-16", "ViT-B/32": "ViT-B-32", "ViT-L/14": "ViT-L-14"}
SUPPORTED_BACKBONES = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-16", "ViT-B-32", "ViT-L-14")

# Small real-architecture configs for tests, the demo and quick benchmarks (random weights).
# Head sizes follow OpenAI's rules (text heads = width // 64, vision head width 64), so these
# models survive a round trip through an OpenAI-format state dict.
TINY_CONFIGS: dict[str, dict] = {
    "TinyRN": dict(
        embed_dim=64,
        vision_cfg=dict(layers=(1, 1, 1, 1), width=16, head_width=64, image_size=64),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=3),
        quick_gelu=True,
    ),
    "TinyViT": dict(
        embed_dim=64,
        vision_cfg=dict(layers=2, width=64, head_width=64, patch_size=16, image_size=64),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=2),
        quick_gelu=True,
    ),
}


@dataclasses.dataclass(frozen=True)
class ClipInfo:
    """What was loaded: enough to describe the model in logs, checkpoints and ONNX metadata."""

    name: str
    pretrained: str
    image_size: int
    is_resnet: bool
    embed_dim: int
    context_length: int
    source: str  # "random", "open_clip-tag", "openai-state-dict", "torchscript", "open_clip-state-dict", "taidpt"


def normalize_backbone_name(name: str) -> str:
    """Map CoOp-style names (``ViT-B/16``) to open_clip's (``ViT-B-16``) and check they exist."""
    import open_clip

    canonical = _NAME_ALIASES.get(name, name)
    known = set(open_clip.list_models()) | set(TINY_CONFIGS)
    if canonical not in known:
        raise ClipLoadError(
            f"unknown backbone {name!r}: expected one of {', '.join(SUPPORTED_BACKBONES + tuple(TINY_CONFIGS))} "
            f"(or another open_clip CLIP architecture name)"
        )
    return canonical


def is_openai_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """OpenAI's CLIP keeps the text tower at the top level and has ``text_projection``."""
    return "text_projection" in state_dict and "token_embedding.weight" in state_dict


def infer_openai_config(
    state_dict: Mapping[str, torch.Tensor], *, text_heads: int = 0, vision_head_width: int = 64
) -> dict:
    """Infer an open_clip ``CLIP`` config from an OpenAI-format state dict.

    Every size comes from tensor shapes. Head counts are not stored in the weights; OpenAI's rule
    is ``heads = width // 64`` (text) and head width 64 (vision). ``text_heads`` and
    ``vision_head_width`` override that rule for models trained with other head sizes.
    """
    vit = "visual.proj" in state_dict
    if vit:
        width = state_dict["visual.conv1.weight"].shape[0]
        layers = len({k.split(".")[3] for k in state_dict if k.startswith("visual.transformer.resblocks.")})
        patch = state_dict["visual.conv1.weight"].shape[-1]
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_cfg = dict(layers=layers, width=width, patch_size=patch, image_size=patch * grid,
                          head_width=vision_head_width)
    else:
        layers = tuple(
            len({k.split(".")[2] for k in state_dict if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4)
        )
        width = state_dict["visual.layer1.0.conv1.weight"].shape[0]
        n_pos = state_dict["visual.attnpool.positional_embedding"].shape[0]
        grid = round((n_pos - 1) ** 0.5)
        if grid * grid + 1 != n_pos:
            raise ClipLoadError(f"attention-pool positional embedding has {n_pos} rows, not a square grid + 1")
        vision_cfg = dict(layers=layers, width=width, image_size=grid * 32, head_width=vision_head_width)
    text_width = state_dict["ln_final.weight"].shape[0]
    text_cfg = dict(
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        width=text_width,
        heads=text_heads or max(1, text_width // 64),
        layers=len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks.")}),
    )
    return dict(embed_dim=state_dict["text_projection"].shape[1], vision_cfg=vision_cfg, text_cfg=text_cfg,
                quick_gelu=True)


def build_clip(model_cfg: Mapping[str, Any]) -> CLIP:
    """Instantiate open_clip's ``CLIP`` from a plain-dict config (embed_dim, vision_cfg, text_cfg, quick_gelu)."""
    cfg = dict(model_cfg)
    return CLIP(
        embed_dim=int(cfg["embed_dim"]),
        vision_cfg=CLIPVisionCfg(**cfg["vision_cfg"]),
        text_cfg=CLIPTextCfg(**cfg["text_cfg"]),
        quick_gelu=bool(cfg.get("quick_gelu", True)),
    )


def _random_model(canonical: str) -> CLIP:
    """Randomly initialised CLIP of a known architecture (OpenAI's QuickGELU activation)."""
    if canonical in TINY_CONFIGS:
        return build_clip(TINY_CONFIGS[canonical])
    import open_clip

    return open_clip.create_model(canonical, pretrained=None, force_quick_gelu=True)


def _read_weights_file(path: Path, *, allow_torchscript_code: bool) -> tuple[dict, str, dict | None]:
    """Return (state_dict, source kind, embedded model config or None) for a local weights file."""
    if path.stat().st_size == 0:
        raise ClipLoadError(f"weights file {path} is empty")
    if path.suffix == ".safetensors":
        return _read_safetensors(path), "state-dict", None
    if is_torchscript_archive(path):
        return _read_torchscript(path, allow_torchscript_code=allow_torchscript_code), "torchscript", None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/format error becomes one clear line
        raise ClipLoadError(f"cannot read CLIP weights from {path}: {type(exc).__name__}: {first_line(exc)}") from exc
    if not isinstance(obj, dict):
        raise ClipLoadError(f"{path} holds a {type(obj).__name__}, expected a state dict")
    model_cfg = obj.get("model_cfg") if isinstance(obj.get("model_cfg"), dict) else None
    if isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}
    return sd, "state-dict", model_cfg


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for bad bytes
        raise ClipLoadError(f"cannot read CLIP weights from {path}: not a valid .safetensors file "
                            f"({type(exc).__name__}: {first_line(exc)})") from exc


def _read_torchscript(path: Path, *, allow_torchscript_code: bool) -> dict[str, torch.Tensor]:
    """A TorchScript archive's state dict: read as data, or with ``torch.jit.load`` when its code may run."""
    if not allow_torchscript_code:
        try:
            return read_torchscript_weights(path)
        except TorchScriptReadError as exc:
            hint = (" (MODEL.BACKBONE.ALLOW_TORCHSCRIPT_CODE True would run its code: only for a file you trust)"
                    if exc.needs_code else "")
            raise ClipLoadError(f"cannot read CLIP weights from TorchScript archive {exc}{hint}") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, archives still exist
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except Exception as exc:  # noqa: BLE001 - errors raised by the archive's own code vary
        raise ClipLoadError(f"cannot load TorchScript archive {path}: {type(exc).__name__}: {first_line(exc)}") from exc


def _load_from_file(name: str, path: Path, *, text_heads: int, vision_head_width: int,
                    allow_torchscript_code: bool) -> tuple[CLIP, str]:
    try:
        return _build_and_fill(name, path, text_heads=text_heads, vision_head_width=vision_head_width,
                               allow_torchscript_code=allow_torchscript_code)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        if isinstance(exc, ClipLoadError):
            raise
        raise ClipLoadError(f"{path} is not a loadable CLIP checkpoint "
                            f"({type(exc).__name__}: {first_line(exc)})") from exc


def _build_and_fill(name: str, path: Path, *, text_heads: int, vision_head_width: int,
                    allow_torchscript_code: bool) -> tuple[CLIP, str]:
    sd, kind, model_cfg = _read_weights_file(path, allow_torchscript_code=allow_torchscript_code)
    sd = {k: v for k, v in sd.items() if k not in _NON_WEIGHT_KEYS}
    if model_cfg is not None:
        model, source = build_clip(model_cfg), "taidpt"
    elif is_openai_state_dict(sd):
        cfg = infer_openai_config(sd, text_heads=text_heads, vision_head_width=vision_head_width)
        model = build_clip(cfg)
        source = "torchscript" if kind == "torchscript" else "openai-state-dict"
        log.info("architecture inferred from %s: embed %d, vision %s, text %s", path.name, cfg["embed_dim"],
                 cfg["vision_cfg"], cfg["text_cfg"])
    else:
        model, source = _random_model(normalize_backbone_name(name)), "open_clip-state-dict"
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "attn_mask"]
    if missing or unexpected:
        raise ClipLoadError(
            f"{path} does not match the CLIP architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    return model, source


def load_clip(
    name: str,
    pretrained: str = "",
    *,
    device: str | torch.device = "cpu",
    text_heads: int = 0,
    vision_head_width: int = 64,
    allow_torchscript_code: bool = False,
) -> tuple[CLIP, ClipInfo]:
    """Load a CLIP model in fp32 eval mode with every parameter frozen.

    Args:
        name: backbone name (``RN50``, ``RN101``, ``ViT-B-16``, ``ViT-B/16``, ...). Ignored for the
            architecture when the weights file describes its own (OpenAI format or taidpt).
        pretrained: weights source, see the module docstring.
        device: where to put the model.
        text_heads / vision_head_width: head-size overrides for OpenAI-format files whose heads do
            not follow OpenAI's width // 64 rule.
        allow_torchscript_code: load TorchScript archives with ``torch.jit.load``, which runs the
            code they carry (``MODEL.BACKBONE.ALLOW_TORCHSCRIPT_CODE``); by default their tensors
            are read without running anything.
    """
    pretrained = (pretrained or "").strip()
    path = Path(os.path.expanduser(pretrained)) if pretrained.lower() not in RANDOM_WEIGHTS else None
    if path is not None and (path.exists() or os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors", ".tar"))):
        if not path.is_file():
            raise ClipLoadError(f"CLIP weights file not found: {path}")
        model, source = _load_from_file(name, path, text_heads=text_heads, vision_head_width=vision_head_width,
                                        allow_torchscript_code=allow_torchscript_code)
    else:
        canonical = normalize_backbone_name(name)
        if path is None:
            log.warning(
                "RANDOM CLIP WEIGHTS: %s is randomly initialised (MODEL.BACKBONE.PRETRAINED is empty). "
                "Every score it produces is chance level; set MODEL.BACKBONE.PRETRAINED to 'openai' "
                "or a weights file for real numbers.", canonical)
            model, source = _random_model(canonical), "random"
        elif canonical in TINY_CONFIGS:
            raise ClipLoadError(f"{canonical} is a test-size architecture with no published weights: set "
                                f"MODEL.BACKBONE.PRETRAINED to '' (random) or to a weights file")
        else:
            model, source = load_pretrained_tag(canonical, pretrained), "open_clip-tag"
    model = model.float().eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    visual = model.visual
    image_size = visual.image_size
    image_size = int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size)
    info = ClipInfo(
        name=name,
        pretrained=pretrained,
        image_size=image_size,
        is_resnet=hasattr(visual, "attnpool"),
        embed_dim=int(model.text_projection.shape[1]),
        context_length=int(model.context_length),
        source=source,
    )
    return model, info


def openai_state_dict(model: CLIP) -> dict[str, torch.Tensor]:
    """Export an open_clip ``CLIP`` (non-custom text) as an OpenAI-format state dict.

    open_clip's ``CLIP`` already uses OpenAI's key names; this drops the non-persistent mask and
    returns detached CPU tensors, ready for ``torch.save``.
    """
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k != "attn_mask"}
