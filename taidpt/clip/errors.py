"""The one error type of CLIP loading, shared by the loader and the pretrained-tag resolution."""

from __future__ import annotations

__all__ = ["ClipLoadError"]


class ClipLoadError(RuntimeError):
    """A CLIP model could not be built or loaded; the message is one line that says why."""
