"""Shared fixtures: small random CLIP models of the real architectures, offline hub, fixed threads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# open_clip retries the hub for ~45 s before failing on a pretrained tag; the tests never download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture(scope="session")
def tiny_rn():
    """A randomly initialised TinyRN CLIP (ModifiedResNet + text transformer), frozen, eval mode."""
    import torch

    from taidpt.clip.loader import load_clip

    torch.manual_seed(0)
    model, _ = load_clip("TinyRN", "")
    return model


@pytest.fixture(scope="session")
def tiny_vit():
    import torch

    from taidpt.clip.loader import load_clip

    torch.manual_seed(0)
    model, _ = load_clip("TinyViT", "")
    return model


@pytest.fixture(scope="session")
def tiny_rn_openai_file(tmp_path_factory, tiny_rn):
    """The TinyRN weights saved as an OpenAI-format state dict (what the reference's clip.build_model reads)."""
    import torch

    from taidpt.clip.loader import openai_state_dict

    path = tmp_path_factory.mktemp("weights") / "tiny_rn_openai.pt"
    torch.save(openai_state_dict(tiny_rn), path)
    return path
