"""Loading CLIP weights: OpenAI-format state dicts with inferred sizes, TorchScript, open_clip files, errors."""

from __future__ import annotations

import warnings

import pytest
import torch

from taidpt.clip_loader import (
    ClipLoadError,
    infer_openai_config,
    is_openai_state_dict,
    load_clip,
    normalize_backbone_name,
    openai_state_dict,
)


def _outputs(model):
    torch.manual_seed(123)
    x = torch.randn(2, 3, 64, 64)
    ids = torch.zeros(2, 77, dtype=torch.long)
    ids[:, 0], ids[0, 1:4], ids[0, 4], ids[1, 1], ids[1, 2] = 49406, torch.tensor([320, 1929, 530]), 49407, 320, 49407
    with torch.no_grad():
        return model.encode_image(x), model.encode_text(ids)


def test_openai_state_dict_sizes_are_inferred(tiny_rn):
    sd = openai_state_dict(tiny_rn)
    assert is_openai_state_dict(sd)
    cfg = infer_openai_config(sd)
    assert cfg["embed_dim"] == 64
    assert cfg["vision_cfg"]["layers"] == (1, 1, 1, 1)
    assert cfg["vision_cfg"]["width"] == 16
    assert cfg["vision_cfg"]["image_size"] == 64
    assert cfg["text_cfg"]["width"] == 64 and cfg["text_cfg"]["layers"] == 3 and cfg["text_cfg"]["heads"] == 1


def test_load_openai_format_file_reproduces_outputs(tiny_rn, tiny_rn_openai_file):
    model, info = load_clip("RN50", str(tiny_rn_openai_file))  # the name is overridden by the file
    assert info.source == "openai-state-dict"
    assert info.is_resnet and info.image_size == 64 and info.embed_dim == 64
    a, b = _outputs(tiny_rn), _outputs(model)
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[1], b[1], atol=1e-6)
    assert not any(p.requires_grad for p in model.parameters())


def test_load_wrapped_and_module_prefixed_state_dict(tmp_path, tiny_rn):
    sd = {"module." + k: v for k, v in openai_state_dict(tiny_rn).items()}
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": sd}, path)
    model, info = load_clip("RN50", str(path))
    assert torch.allclose(_outputs(model)[1], _outputs(tiny_rn)[1], atol=1e-6)


class _Tree(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _scripted_archive(state_dict):
    """A TorchScript module whose state dict has OpenAI's dotted names, like OpenAI's released archives."""
    root = _Tree()
    for name, tensor in state_dict.items():
        *parents, leaf = name.split(".")
        node = root
        for part in parents:
            if part not in node._modules:
                node.add_module(part, _Tree())
            node = node._modules[part]
        node.register_buffer(leaf, tensor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(root)


def test_load_torchscript_archive(tmp_path, tiny_rn):
    path = tmp_path / "clip_archive.pt"
    _scripted_archive(openai_state_dict(tiny_rn)).save(str(path))
    model, info = load_clip("RN50", str(path))
    assert info.source == "torchscript"
    assert torch.allclose(_outputs(model)[0], _outputs(tiny_rn)[0], atol=1e-6)
    assert torch.allclose(_outputs(model)[1], _outputs(tiny_rn)[1], atol=1e-6)


def test_open_clip_format_and_taidpt_format(tmp_path, tiny_rn):
    from taidpt.clip_loader import TINY_CONFIGS

    path = tmp_path / "with_cfg.pt"
    torch.save({"model_cfg": TINY_CONFIGS["TinyRN"], "state_dict": tiny_rn.state_dict()}, path)
    model, info = load_clip("TinyRN", str(path))
    assert info.source == "taidpt"
    assert torch.allclose(_outputs(model)[0], _outputs(tiny_rn)[0], atol=1e-6)


def test_safetensors_file(tmp_path, tiny_rn):
    from safetensors.torch import save_file

    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in openai_state_dict(tiny_rn).items()}, str(path))
    model, _ = load_clip("RN50", str(path))
    assert torch.allclose(_outputs(model)[1], _outputs(tiny_rn)[1], atol=1e-6)


def test_errors_are_one_clear_line(tmp_path):
    with pytest.raises(ClipLoadError, match="unknown backbone 'RN5O'"):
        load_clip("RN5O", "")
    with pytest.raises(ClipLoadError, match="not found"):
        load_clip("RN50", str(tmp_path / "missing.pt"))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ClipLoadError, match="empty"):
        load_clip("RN50", str(empty))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ClipLoadError, match="cannot read CLIP weights"):
        load_clip("RN50", str(junk))
    bad = tmp_path / "bad.pt"
    torch.save({"text_projection": torch.zeros(2, 2)}, bad)
    with pytest.raises(ClipLoadError, match="not a loadable CLIP checkpoint"):
        load_clip("RN50", str(bad))
    with pytest.raises(ClipLoadError, match="no published weights"):
        load_clip("TinyRN", "openai")


def test_pretrained_tag_offline_fails_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ClipLoadError) as err:
        load_clip("RN50", "openai")
    assert "\n" not in str(err.value)
    assert "MODEL.BACKBONE.PRETRAINED" in str(err.value)


def test_backbone_names():
    assert normalize_backbone_name("ViT-B/16") == "ViT-B-16"
    assert normalize_backbone_name("RN101") == "RN101"
